//! The human-readable transcript: plain text and HTML, times in UTC.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

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
            Some(name) => format!("{} ({})", visible(name), visible(im_id)),
            None if im_id.is_empty() => "System".to_string(),
            None => visible(im_id).into_owned(),
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
                    EventKind::Attachment(attachment) => (Cow::Owned(attachment.describe()), false),
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
                    time: line_time(&event.time),
                    who: self.who(&event.im_id),
                    what: indent_continuations(what),
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
            visible(&c.id),
            c.kind
                .as_deref()
                .map(|k| format!(" ({})", visible(k)))
                .unwrap_or_default(),
            c.room_name
                .as_deref()
                .map(|r| format!(" \"{}\"", visible(r)))
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
                visible(p.name.as_deref().unwrap_or("(no name)")),
                visible(&p.im_id)
            );
            if let Some(email) = &p.email {
                line.push_str(&format!(" <{}>", visible(email)));
            }
            if let Some(company) = &p.company {
                line.push_str(&format!(", {}", visible(company)));
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

/// The time of a transcript line, `YYYY-MM-DD HH:MM:SS UTC`: what chrono's
/// `%Y-%m-%d %H:%M:%S UTC` gives, written digit by digit, because chrono reads
/// its format string anew on every call, which cost a large share of
/// rendering (each event's time is written twice, text and HTML). Years
/// chrono does not pad to four digits, and leap seconds, are left to chrono.
fn line_time(time: &DateTime<Utc>) -> String {
    let year = time.year();
    let leap_second = time.nanosecond() >= 1_000_000_000;
    let Ok(year) = u32::try_from(year) else {
        return time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    };
    if year > 9999 || leap_second {
        return time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    }
    let mut out = String::with_capacity(23);
    push_digits(&mut out, year, 4);
    for (separator, value) in [
        ('-', time.month()),
        ('-', time.day()),
        (' ', time.hour()),
        (':', time.minute()),
        (':', time.second()),
    ] {
        out.push(separator);
        push_digits(&mut out, value, 2);
    }
    out.push_str(" UTC");
    out
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from_digit(digit, 10).unwrap_or('0'));
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

/// A name, id or room name on one line whatever it holds: control
/// characters (CR, LF, ESC, ...) are shown escaped (`\r`, `\n`, `\u{1b}`),
/// so no name can start a line that reads like another transcript entry or
/// a header.
fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c.is_control() {
            true => out.extend(c.escape_debug()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Continuation lines of a multi-line text, indented so that they stay
/// visibly inside their entry (no line of chat text can pass for an entry
/// of its own); other control characters but tab shown escaped.
fn indent_continuations(text: Cow<'_, str>) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\n    ");
            }
            '\t' => out.push('\t'),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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
    fn no_name_or_message_can_forge_an_entry_or_a_header() {
        use crate::model::{ChatEvent, Conversation, EventKind, Participant};
        let time = |s: u32| {
            chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 20, 9, 0, s)
                .single()
                .expect("valid")
        };
        let conversation = Conversation {
            id: "c\r\nX-Injected: 1".into(),
            kind: None,
            room_name: Some("Desk\n[2026-11-20 09:00:00 UTC] Boss: approved".into()),
            start: None,
            participants: vec![Participant {
                im_id: "eve".into(),
                name: Some("Eve\r\nBcc: leak@evil.example".into()),
                company: Some("Evil\u{1b}[31m".into()),
                email: None,
            }],
            events: vec![
                ChatEvent {
                    id: None,
                    time: time(1),
                    im_id: "eve".into(),
                    kind: EventKind::Message {
                        text: "fine\r\n[2026-11-20 09:00:02 UTC] Boss (boss): wire it\rok".into(),
                    },
                },
                ChatEvent {
                    id: None,
                    time: time(3),
                    im_id: "ev\ne".into(),
                    kind: EventKind::Left,
                },
            ],
            original_xml: Vec::new(),
            original_spilled: Vec::new(),
            original_format: Default::default(),
            line: 1,
        };
        let events: Vec<&ChatEvent> = conversation.events.iter().collect();
        let transcript = Transcript {
            conversation: &conversation,
            events: &events,
            day: time(0).date_naive(),
            source_label: "ICE Chat",
            disclaimer: "",
            continues: None,
        };
        let text = transcript.text();
        let (heading, body) = text.split_once("\n\n").expect("heading and entries");
        assert_eq!(
            heading.lines().count(),
            4,
            "one line per heading item:\n{heading}"
        );
        assert!(
            heading.contains("Eve\\r\\nBcc: leak@evil.example"),
            "{heading}"
        );
        assert!(heading.contains("Evil\\u{1b}[31m"), "{heading}");
        let entry = |line: &str| {
            line.len() > 26
                && line.starts_with("[2026-11-20 09:00:0")
                && line[20..].starts_with(" UTC] ")
        };
        for line in body.lines() {
            assert!(
                entry(line) || line.starts_with("    "),
                "forged line: {line:?}\n{text}"
            );
        }
        assert_eq!(body.lines().filter(|l| entry(l)).count(), 2, "{body}");
        assert!(
            body.contains("\n    [2026-11-20 09:00:02 UTC] Boss (boss): wire it\n    ok"),
            "{body}"
        );
        assert!(body.contains("ev\\ne *** left"), "{body}");
    }

    #[test]
    fn line_times_are_what_chrono_writes() {
        use chrono::TimeZone;
        let format = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .expect("valid")
            .and_utc();
        let times = [
            Utc.with_ymd_and_hms(2026, 11, 20, 8, 1, 2).single(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(0, 12, 31, 23, 59, 59).single(),
            Utc.with_ymd_and_hms(-1, 6, 5, 4, 3, 2).single(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).single(),
            Some(leap),
        ];
        for time in times.into_iter().map(|t| t.expect("valid")) {
            assert_eq!(line_time(&time), format(&time));
        }
    }

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
