//! Safe header values: everything that came from the chat is flattened to one
//! line and encoded by mail-builder, so nothing in a name, room or message can
//! start a header of its own.

use chrono::{DateTime, NaiveDate, Utc};
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;

use crate::model::{Conversation, Participant};

/// Control characters (CR and LF above all) become spaces; runs of
/// whitespace collapse; the result is trimmed.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = true;
    for ch in text.chars() {
        let ch = if ch.is_control() || ch.is_whitespace() {
            ' '
        } else {
            ch
        };
        if ch == ' ' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(ch);
            last_space = false;
        }
    }
    out.trim_end().to_string()
}

/// A conservative `local@domain` check: ASCII, no spaces, no characters that
/// could end an angle-addr or a header.
pub fn is_plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let ok_char = |c: char| {
        c.is_ascii_graphic()
            && !matches!(
                c,
                '<' | '>' | '(' | ')' | ',' | ';' | ':' | '"' | '[' | ']' | '\\' | '@'
            )
    };
    !local.is_empty()
        && !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && local.chars().all(ok_char)
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The `X-Chat-*` headers that say which conversation-day of which source
/// file a mail holds, as every kind of mail (plain and RSMF) carries them.
/// Values as `String`s: a `Text` made here would tie the caller's
/// `MessageBuilder` to `'static`.
pub fn provenance_headers(
    conversation: &Conversation,
    day: NaiveDate,
    raw_key: &str,
) -> [(&'static str, String); 4] {
    [
        ("X-Chat-Conversation-Id", one_line(&conversation.id)),
        ("X-Chat-Day", day.to_string()),
        (
            "X-Chat-Dialect",
            conversation.original_format.dialect().to_string(),
        ),
        ("X-Chat-Source-File", one_line(raw_key)),
    ]
}

/// The participant's address, or a clearly fake one in the reserved
/// `.invalid` domain that names the ImId (never deliverable).
pub fn address_or_placeholder(participant: &Participant, connector: &str) -> String {
    match participant.email.as_deref().map(str::trim) {
        Some(email) if is_plausible_address(email) => email.to_string(),
        _ => {
            let local: String = participant
                .im_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let local = if local.trim_matches('.').is_empty() {
                "unknown".to_string()
            } else {
                local.trim_matches('.').to_string()
            };
            format!("{local}@{connector}-imid.invalid")
        }
    }
}

pub fn mailbox_address(participant: &Participant, connector: &str) -> Address<'static> {
    let email = address_or_placeholder(participant, connector);
    let name = participant
        .name
        .as_deref()
        .map(one_line)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| one_line(&participant.im_id));
    Address::new_address(Some(name), email)
}

pub fn participant_header(participant: &Participant) -> String {
    let mut value = format!("ImId={}", quote(&participant.im_id));
    if let Some(email) = &participant.email {
        value.push_str(&format!("; Email={}", quote(email)));
    }
    if let Some(name) = &participant.name {
        value.push_str(&format!("; Name={}", quote(name)));
    }
    if let Some(company) = &participant.company {
        value.push_str(&format!("; Company={}", quote(company)));
    }
    value
}

fn quote(value: &str) -> String {
    format!(
        "\"{}\"",
        one_line(value).replace('\\', "\\\\").replace('"', "\\\"")
    )
}

pub fn subject(
    conversation: &Conversation,
    source_label: &str,
    day: NaiveDate,
    part: Option<usize>,
) -> Text<'static> {
    let topic = conversation
        .room_name
        .as_deref()
        .map(one_line)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| {
            conversation
                .participants
                .iter()
                .map(|p| p.name.as_deref().unwrap_or(&p.im_id))
                .map(one_line)
                .collect::<Vec<_>>()
                .join(", ")
        });
    let part = part.map(|n| format!(", part {n}")).unwrap_or_default();
    Text::new(format!(
        "{}: {} ({day}{part})",
        one_line(source_label),
        topic
    ))
}

/// The mail date for a chat time: the same instant when a mail can state
/// it, else the nearest one that can. RFC 5322 dates start in 1900 (section
/// 3.3) and IMAP's INTERNALDATE has a four-digit year, so a time from bad
/// input (year 1, year 20000) would give a Date header readers misread
/// (year 0001 is read as 2001) and an APPEND the server refuses. The
/// transcript keeps the time as the source gave it.
pub fn mail_date(time: DateTime<Utc>) -> DateTime<Utc> {
    let first = NaiveDate::from_ymd_opt(1900, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|d| d.and_hms_opt(23, 59, 59));
    match (first, last) {
        (Some(first), Some(last)) => time.clamp(first.and_utc(), last.and_utc()),
        _ => time,
    }
}

/// The `Date` header, written here rather than by mail-builder, whose
/// formatting gives negative hours for instants before 1970.
pub fn date(time: DateTime<Utc>) -> Raw<'static> {
    Raw::new(
        mail_date(time)
            .format("%a, %d %b %Y %H:%M:%S +0000")
            .to_string(),
    )
}

/// A MIME type as given when it looks like one, else a safe default.
pub fn content_type(given: Option<&str>) -> ContentType<'static> {
    let valid = |t: &str| {
        let mut parts = t.splitn(2, '/');
        let token = |s: Option<&str>| {
            s.is_some_and(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
            })
        };
        token(parts.next()) && token(parts.next())
    };
    match given.map(str::trim) {
        Some(t) if valid(t) => ContentType::new(t.to_ascii_lowercase()),
        _ => ContentType::new("application/octet-stream"),
    }
}

/// A file name safe to put in a Content-Disposition: one line, no path.
pub fn file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned = one_line(base).replace('"', "'");
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "attachment.bin".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_line_breaks_and_controls() {
        assert_eq!(one_line("a\r\nBcc: x@y.z\tb\u{0}c "), "a Bcc: x@y.z b c");
    }

    #[test]
    fn addresses_are_checked_conservatively() {
        assert!(is_plausible_address("jane.doe+chat@acme.example"));
        for bad in [
            "jane",
            "a@b",
            "a b@c.d",
            "a@c.d>\r\nBcc: x",
            "<a@b.c>",
            "a@-b.c\n",
        ] {
            assert!(!is_plausible_address(bad), "{bad}");
        }
        let p = Participant {
            im_id: "j doe\r\n".into(),
            email: Some("bad".into()),
            ..Default::default()
        };
        assert_eq!(
            address_or_placeholder(&p, "ice"),
            "j_doe__@ice-imid.invalid"
        );
    }

    /// Found by `cargo fuzz run mail_builder` (tests/fuzz, input
    /// `regressions/mail_builder/year-0-date.bin`): a message in year 0 gave
    /// `Date: ... 0000`, which mail-parser reads as 2000; and mail-builder's
    /// own formatting gives negative hours before 1970.
    #[test]
    fn fuzz_dates_a_mail_cannot_state_are_clamped() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("valid")
                .with_timezone(&Utc)
        };
        let cases = [
            ("2026-11-20T08:01:02Z", "Fri, 20 Nov 2026 08:01:02 +0000"),
            ("1969-12-31T23:00:00Z", "Wed, 31 Dec 1969 23:00:00 +0000"),
            ("1900-01-01T00:00:00Z", "Mon, 01 Jan 1900 00:00:00 +0000"),
            ("0000-12-31T08:00:00Z", "Mon, 01 Jan 1900 00:00:00 +0000"),
            (
                "9999-12-31T23:59:59.999Z",
                "Fri, 31 Dec 9999 23:59:59 +0000",
            ),
        ];
        for (time, header) in cases {
            assert_eq!(date(at(time)).raw, header, "{time}");
        }
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(date(far).raw, "Fri, 31 Dec 9999 23:59:59 +0000");
        assert_eq!(
            date(DateTime::<Utc>::MIN_UTC).raw,
            "Mon, 01 Jan 1900 00:00:00 +0000"
        );
    }

    #[test]
    fn file_names_lose_paths_and_breaks() {
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("a\r\nb.pdf"), "a b.pdf");
        assert_eq!(file_name(".."), "attachment.bin");
    }
}
