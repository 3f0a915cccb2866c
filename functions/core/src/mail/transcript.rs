//! The human-readable transcript: plain text and HTML, times in UTC.

use chrono::NaiveDate;

use crate::model::{ChatEvent, Conversation, EventKind};

pub struct Transcript<'a> {
    pub conversation: &'a Conversation,
    pub events: &'a [&'a ChatEvent],
    pub day: NaiveDate,
    pub source_label: &'a str,
    pub disclaimer: &'a str,
}

/// One line of the transcript, before formatting.
struct Line {
    time: String,
    who: String,
    what: String,
    /// Chat text (as opposed to a system notice).
    is_message: bool,
}

impl Transcript<'_> {
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

    fn lines(&self) -> Vec<Line> {
        self.events
            .iter()
            .map(|event| {
                let (what, is_message) = match &event.kind {
                    EventKind::Message { text } => (text.clone(), true),
                    EventKind::Entered => ("entered the conversation".to_string(), false),
                    EventKind::Left => ("left the conversation".to_string(), false),
                    EventKind::Disclaimer { text } => (format!("Disclaimer: {text}"), false),
                    EventKind::FileTransfer(file) => (
                        format!(
                            "sent file \"{}\" ({} bytes, attached)",
                            file.file_name,
                            file.content.len()
                        ),
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
        for line in self.lines() {
            let marker = if line.is_message { ":" } else { " ***" };
            out.push_str(&format!(
                "[{}] {}{} {}\n",
                line.time, line.who, marker, line.what
            ));
        }
        if self.events.is_empty() {
            out.push_str("(no messages on this day)\n");
        }
        if !self.disclaimer.is_empty() {
            out.push_str(&format!("\n{}\n", self.disclaimer));
        }
        out
    }

    pub fn html(&self) -> String {
        let mut out =
            String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>");
        for (i, line) in self.heading().iter().enumerate() {
            let tag = if i == 0 { "h3" } else { "div" };
            out.push_str(&format!("<{tag}>{}</{tag}>", escape(line.trim_start())));
        }
        out.push_str("<table border=\"0\" cellpadding=\"3\"><tr><th>Time (UTC)</th><th>Who</th><th>What</th></tr>");
        for line in self.lines() {
            let what = if line.is_message {
                escape(&line.what)
            } else {
                format!("<i>{}</i>", escape(&line.what))
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&line.time),
                escape(&line.who),
                what
            ));
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

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br>"),
            _ => out.push(ch),
        }
    }
    out
}
