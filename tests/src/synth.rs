//! Synthetic ICE Chat exports of any size, written as a stream, for
//! benchmarks and volume tests.

use std::io::{self, Write};

pub struct Shape {
    pub conversations: u64,
    pub messages_per_conversation: u64,
    pub participants_per_conversation: u64,
    /// Approximate bytes of text per message.
    pub message_bytes: usize,
}

impl Shape {
    /// A shape of roughly `bytes` of XML with typical chat messages.
    pub fn of_size(bytes: u64) -> Self {
        let messages_per_conversation = 200;
        let per_conversation = messages_per_conversation * 230 + 600;
        Self {
            conversations: (bytes / per_conversation).max(1),
            messages_per_conversation,
            participants_per_conversation: 4,
            message_bytes: 80,
        }
    }

    pub fn messages(&self) -> u64 {
        self.conversations * self.messages_per_conversation
    }
}

/// Firm users are `trader{n}@acme.example`; odd participants are external.
pub fn participant_email(n: u64) -> String {
    if n.is_multiple_of(2) {
        format!("trader{n}@acme.example")
    } else {
        format!("broker{n}@globex.example")
    }
}

pub fn write_export(out: impl Write, shape: &Shape, day: &str, firm_users: u64) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">"
    )?;
    let text: String = "Bund axes tight, offer 2.41 / bid 2.40 & steady; "
        .chars()
        .cycle()
        .take(shape.message_bytes)
        .collect();
    let text = text.replace('&', "&amp;");
    for c in 0..shape.conversations {
        writeln!(out, "  <Conversation Id=\"conv-{c}\" Type=\"Group\" RoomName=\"Room {c}\" StartTime=\"{day}T08:00:00Z\">")?;
        writeln!(out, "    <Participants>")?;
        let members: Vec<u64> = (0..shape.participants_per_conversation)
            .map(|p| (c + p) % (firm_users * 2).max(2))
            .collect();
        for m in &members {
            writeln!(out, "      <Participant ImId=\"user{m}\" Name=\"User {m}\" Company=\"Co\" Email=\"{}\"/>", participant_email(*m))?;
        }
        writeln!(out, "    </Participants>")?;
        for i in 0..shape.messages_per_conversation {
            let who = members[(i % members.len() as u64) as usize];
            let (h, m, s) = (8 + (i / 3600) % 12, (i / 60) % 60, i % 60);
            writeln!(
                out,
                "    <Message Id=\"m-{c}-{i}\" ImId=\"user{who}\" Timestamp=\"{day}T{h:02}:{m:02}:{s:02}Z\">{text}</Message>"
            )?;
        }
        writeln!(out, "  </Conversation>")?;
    }
    writeln!(out, "</IceChatExport>")?;
    out.flush()
}
