//! The human-readable transcript: plain text and HTML, times in UTC.

use std::borrow::Cow;

use chrono::NaiveDate;

use super::Continuation;
use crate::model::{ChatEvent, Conversation, EventKind};

pub struct Transcript<'a> {
    pub conversation: &'a Conversation,
    pub events: &'a [&'a ChatEvent],
    pub day: NaiveDate,
    pub source_label: &'a str,
    pub disclaimer: &'a str,
    /// Set for a continuation: the events of an earlier part are not repeated.
    pub continues: Option<&'a Continuation>,
}

/// One line of the transcript, before formatting. Chat text is borrowed:
/// a message may be hundreds of MB, and the transcript is made twice.
struct Line<'a> {
    time: String,
    who: String,
    what: Cow<'a, str>,
    /// Chat text (as opposed to a system notice).
    is_message: bool,
}

impl<'a> Transcript<'a> {
    fn who(&self, im_id: &str) -> String {
        match self
            .conversation
            .participant(im_id)
            .and_then(|p| p.name.as_deref())
        {
            Some(name) => format!("{name} ({im_id})"),
            None if im_id.is_empty() => "System".to_string(),
            None => im_id.to_string(),
        }
    }

    fn lines(&self) -> Vec<Line<'a>> {
        self.events
            .iter()
            .map(|&event| {
                let (what, is_message) = match &event.kind {
                    EventKind::Message { text } => (Cow::Borrowed(text.as_str()), true),
                    EventKind::Entered => (Cow::Borrowed("entered the conversation"), false),
                    EventKind::Left => (Cow::Borrowed("left the conversation"), false),
                    EventKind::Notice { text } => (Cow::Borrowed(text.as_str()), false),
                    EventKind::Disclaimer { text } => {
                        (Cow::Owned(format!("Disclaimer: {text}")), false)
                    }
                    EventKind::FileTransfer(file) => (
                        Cow::Owned(format!(
                            "sent file \"{}\" ({} bytes, attached)",
                            file.file_name,
                            file.content.len()
                        )),
                        false,
                    ),
                };
                Line {
                    time: event.time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    who: self.who(&event.im_id),
                    what,
                    is_message,
                }
            })
            .collect()
    }

    fn heading(&self) -> Vec<String> {
        let c = self.conversation;
        let mut head = vec![format!(
            "{} conversation {}{}{}",
            self.source_label,
            c.id,
            c.kind
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            c.room_name
                .as_deref()
                .map(|r| format!(" \"{r}\""))
                .unwrap_or_default(),
        )];
        head.push(format!("Day: {} - all times are UTC", self.day));
        if let Some(continues) = self.continues {
            head.push(format!(
                "Part {} of this conversation-day: it continues an earlier part \
                 (first part <{}>) with events that arrived later; \
                 events of earlier parts are not repeated.",
                continues.part, continues.first_message_id
            ));
        }
        head.push("Participants:".to_string());
        for p in &c.participants {
            let mut line = format!(
                "  {} [ImId {}]",
                p.name.as_deref().unwrap_or("(no name)"),
                p.im_id
            );
            if let Some(email) = &p.email {
                line.push_str(&format!(" <{email}>"));
            }
            if let Some(company) = &p.company {
                line.push_str(&format!(", {company}"));
            }
            head.push(line);
        }
        head
    }

    pub fn text(&self) -> String {
        let mut out = self.heading().join("\n");
        out.push_str("\n\n");
        let lines = self.lines();
        out.reserve(
            lines
                .iter()
                .map(|l| l.time.len() + l.who.len() + l.what.len() + 10)
                .sum(),
        );
        for line in lines {
            let marker = if line.is_message { ":" } else { " ***" };
            for piece in [
                "[", &line.time, "] ", &line.who, marker, " ", &line.what, "\n",
            ] {
                out.push_str(piece);
            }
        }
        if self.events.is_empty() {
            out.push_str("(no messages on this day)\n");
        }
        if !self.disclaimer.is_empty() {
            out.push_str(&format!("\n{}\n", self.disclaimer));
        }
        lf_line_breaks(out)
    }

    pub fn html(&self) -> String {
        let mut out =
            String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>");
        for (i, line) in self.heading().iter().enumerate() {
            let tag = if i == 0 { "h3" } else { "div" };
            out.push_str(&format!("<{tag}>{}</{tag}>", escape(line.trim_start())));
        }
        out.push_str("<table border=\"0\" cellpadding=\"3\"><tr><th>Time (UTC)</th><th>Who</th><th>What</th></tr>");
        let lines = self.lines();
        out.reserve(
            lines
                .iter()
                .map(|l| l.time.len() + l.who.len() + l.what.len() + 64)
                .sum(),
        );
        for line in lines {
            let (open, close) = match line.is_message {
                true => ("", ""),
                false => ("<i>", "</i>"),
            };
            out.push_str("<tr><td>");
            escape_into(&mut out, &line.time);
            out.push_str("</td><td>");
            escape_into(&mut out, &line.who);
            out.push_str("</td><td>");
            out.push_str(open);
            escape_into(&mut out, &line.what);
            out.push_str(close);
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
        if !self.disclaimer.is_empty() {
            out.push_str(&format!(
                "<p><small>{}</small></p>",
                escape(self.disclaimer)
            ));
        }
        out.push_str("</body></html>");
        out
    }
}

/// Chat text may break lines with CR LF, LF or a lone CR. A mail body may
/// only hold CR LF pairs (RFC 5322 section 2.3): mail-builder turns a lone LF
/// into CR LF but passes a lone CR through, which mail servers reject or
/// read as a line break of their own. So every line break becomes one LF
/// here; the exact original text stays in the attached original XML.
fn lf_line_breaks(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(cr) = rest.find('\r') {
        out.push_str(&rest[..cr]);
        out.push('\n');
        rest = &rest[cr + 1..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// Copies the runs between special characters whole (a message may be
/// hundreds of MB). They are all ASCII, so every cut is a char boundary.
fn escape_into(out: &mut String, text: &str) {
    // CR LF, LF and a lone CR are each one line break (see `lf_line_breaks`).
    let mut after_cr = false;
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let replacement = match byte {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'\n' if after_cr => "",
            b'\n' | b'\r' => "<br>",
            _ => {
                after_cr = false;
                continue;
            }
        };
        out.push_str(&text[start..i]);
        out.push_str(replacement);
        start = i + 1;
        after_cr = byte == b'\r';
    }
    out.push_str(&text[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_break_becomes_one_lf() {
        let text = "a\r\nb\rc\nd\r\r\ne".to_string();
        assert_eq!(lf_line_breaks(text), "a\nb\nc\nd\n\ne");
        assert_eq!(
            escape("a\r\nb\rc\nd\r\r\ne<"),
            "a<br>b<br>c<br>d<br><br>e&lt;"
        );
        assert_eq!(
            escape("Zoë \"<&>\" ☺\r"),
            "Zoë &quot;&lt;&amp;&gt;&quot; ☺<br>"
        );
    }
}
