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

/// An export of one conversation in which `mailbox`'s user sends one file
/// of `size` pseudo-random bytes, written as ICE writes it (base64 in
/// 76-character lines inside `<FileTransfer>`). Returns the SHA-256 of the
/// file and of the conversation's own XML (what its mail attaches).
pub fn write_file_transfer_export(
    path: &std::path::Path,
    size: usize,
    mailbox: &str,
) -> (String, String) {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    const MIB: usize = 1024 * 1024;
    let mut out = std::io::BufWriter::with_capacity(MIB, std::fs::File::create(path).unwrap());
    let mut original = Sha256::new();
    let mut both = |bytes: &[u8], out: &mut std::io::BufWriter<std::fs::File>| {
        original.update(bytes);
        out.write_all(bytes).unwrap();
    };
    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IceChatExport>\n")
        .unwrap();
    let head = format!(
        "<Conversation Id=\"room-big\" Type=\"OneToOne\" Start=\"2026-11-20T08:00:00Z\">\n\
         <Participants><Participant ImId=\"jdoe\" Name=\"J Doe\" Company=\"ACME\" Email=\"{mailbox}\"/>\n\
         <Participant ImId=\"cp\" Name=\"Counter Party\" Company=\"Other\" Email=\"cp@other.example\"/></Participants>\n\
         <Message Id=\"m1\" ImId=\"jdoe\" Timestamp=\"2026-11-20T08:00:05Z\">the deck follows</Message>\n\
         <FileTransfer Id=\"f1\" ImId=\"jdoe\" Timestamp=\"2026-11-20T08:01:00Z\" FileName=\"deck.bin\" \
         ContentType=\"application/octet-stream\" Size=\"{size}\">\n"
    );
    both(head.as_bytes(), &mut out);
    let mut file = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    // 57 bytes per line; a block of whole lines at a time.
    let mut block = vec![0u8; 57 * 16 * 1024];
    let mut text = String::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        for word in block[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        file.update(&block[..n]);
        text.clear();
        for line in block[..n].chunks(57) {
            base64::engine::general_purpose::STANDARD.encode_string(line, &mut text);
            text.push('\n');
        }
        both(text.as_bytes(), &mut out);
        left -= n;
    }
    both(
        b"</FileTransfer>\n<Message Id=\"m2\" ImId=\"cp\" Timestamp=\"2026-11-20T08:02:00Z\">got it</Message>\n</Conversation>",
        &mut out,
    );
    out.write_all(b"\n</IceChatExport>\n").unwrap();
    out.flush().unwrap();
    (
        hex::encode(file.finalize()),
        hex::encode(original.finalize()),
    )
}
