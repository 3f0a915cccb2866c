//! Safe header values: everything that came from the chat is flattened to one
//! line and encoded by mail-builder, so nothing in a name, room or message can
//! start a header of its own.

use chrono::NaiveDate;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
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

pub fn participant_header(participant: &Participant) -> Text<'static> {
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
    Text::new(value)
}

fn quote(value: &str) -> String {
    format!(
        "\"{}\"",
        one_line(value).replace('\\', "\\\\").replace('"', "\\\"")
    )
}

pub fn subject(conversation: &Conversation, source_label: &str, day: NaiveDate) -> Text<'static> {
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
    Text::new(format!("{}: {} ({day})", one_line(source_label), topic))
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

    #[test]
    fn file_names_lose_paths_and_breaks() {
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("a\r\nb.pdf"), "a b.pdf");
        assert_eq!(file_name(".."), "attachment.bin");
    }
}
