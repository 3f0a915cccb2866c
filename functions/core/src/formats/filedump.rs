//! The FileDump vocabulary of chat compliance exports: the Actiance form
//! (`<FileDump><Conversation Perspective=...>` with `<RoomID>`,
//! `<StartTimeUTC>`, `<ParticipantEntered>`, `<Message>`, ... whose fields are
//! child elements) and Bloomberg's IB form (the same family, each event with
//! a nested `<User>` block). The streaming, recording and recovery of the
//! reader are shared with the ICE dialect ([`super::ice::IceReader`]); this
//! module maps one event element's fields to the chat model.
//!
//! See `docs/filedump-format.md` for what is read and what is kept only in
//! the attached original XML.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::model::{AttachmentRef, ChatEvent, EventKind, Participant};

/// Name of the root element of a FileDump export.
pub const ROOT: &str = "FileDump";

/// An event element of a FileDump conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpEvent {
    Message,
    Entered,
    Left,
    Disclaimer,
    FileTransferStarted,
    FileTransferEnded,
    Attachment,
    Invite,
    History,
    SystemMessage,
}

impl DumpEvent {
    pub fn from_tag(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"Message" => Self::Message,
            b"ParticipantEntered" => Self::Entered,
            b"ParticipantLeft" => Self::Left,
            b"Disclaimer" => Self::Disclaimer,
            b"FileTransferStarted" => Self::FileTransferStarted,
            b"FileTransferEnded" => Self::FileTransferEnded,
            b"Attachment" => Self::Attachment,
            b"Invite" => Self::Invite,
            b"History" => Self::History,
            b"SystemMessage" => Self::SystemMessage,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "Message",
            Self::Entered => "ParticipantEntered",
            Self::Left => "ParticipantLeft",
            Self::Disclaimer => "Disclaimer",
            Self::FileTransferStarted => "FileTransferStarted",
            Self::FileTransferEnded => "FileTransferEnded",
            Self::Attachment => "Attachment",
            Self::Invite => "Invite",
            Self::History => "History",
            Self::SystemMessage => "SystemMessage",
        }
    }
}

/// The fields of one event element: its child elements' text, a nested
/// `<User>` block flattened into it (Bloomberg), first value of a name wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub fields: Vec<(String, String)>,
    /// The element carried a `<User>` block (Bloomberg's form).
    pub has_user_block: bool,
}

impl Record {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

/// A time as exporters of this family write it, in UTC:
/// - ISO 8601 / RFC 3339 (`2026-11-20T08:01:02Z`, an offset, or no zone);
/// - epoch seconds or epoch milliseconds, mixed within one file: a whole
///   number from 100,000,000,000 up is milliseconds (as seconds that would be
///   the year 5138; as milliseconds it is any time since March 1973), below
///   it seconds;
/// - `MM/DD/YYYY HH:MM:SS` (Bloomberg's `DateTime`), read as UTC: the
///   reader prefers the `...UTC` field when the element has one.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let number: i64 = value.parse().ok()?;
        return if number >= 100_000_000_000 {
            Utc.timestamp_millis_opt(number).single()
        } else {
            Utc.timestamp_opt(number, 0).single()
        };
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%m/%d/%Y %H:%M:%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
    .map(|time| time.and_utc())
}

/// The time of an event: `DateTimeUTC`, else `DateTime`.
pub fn event_time(record: &Record) -> Result<DateTime<Utc>, String> {
    let (field, value) = ["DateTimeUTC", "DateTime"]
        .iter()
        .find_map(|f| record.get(f).map(|v| (*f, v)))
        .ok_or_else(|| "has no DateTimeUTC or DateTime".to_string())?;
    parse_time(value).ok_or_else(|| {
        format!(
            "invalid {field} {value:?} (expected ISO 8601, epoch seconds or milliseconds, \
             or MM/DD/YYYY HH:MM:SS)"
        )
    })
}

/// Who acts in an event. The id is Bloomberg's `UUID` when given (stable
/// across name changes; the mapping CSV is keyed by it), else the
/// `LoginName`; the address prefers the corporate one.
pub fn participant(record: &Record) -> Option<Participant> {
    let im_id = record.owned("UUID").or_else(|| record.owned("LoginName"))?;
    let name = match (record.get("FirstName"), record.get("LastName")) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_string()),
        (None, None) => record.owned("LoginName").filter(|login| *login != im_id),
    };
    Some(Participant {
        im_id,
        name,
        company: record.owned("CompanyName"),
        email: record
            .owned("CorporateEmailAddress")
            .or_else(|| record.owned("CorporateEmailID"))
            .or_else(|| record.owned("EmailAddress")),
    })
}

/// The chat event of one event element.
pub fn event(kind: DumpEvent, record: &Record) -> Result<ChatEvent, String> {
    let time = event_time(record)?;
    let im_id = participant(record).map(|p| p.im_id).unwrap_or_default();
    let content = record.owned("Content").unwrap_or_default();
    let notice = |text: String| EventKind::Notice { text };
    let kind = match kind {
        DumpEvent::Message => EventKind::Message { text: content },
        DumpEvent::Entered => EventKind::Entered,
        DumpEvent::Left => EventKind::Left,
        DumpEvent::Disclaimer => EventKind::Disclaimer { text: content },
        DumpEvent::FileTransferStarted | DumpEvent::FileTransferEnded => {
            let phase = match kind {
                DumpEvent::FileTransferStarted => "started",
                _ => "ended",
            };
            notice(format!(
                "file transfer {phase}: {} (stored as {}{})",
                record.get("UserFileName").unwrap_or("unnamed file"),
                record.get("FileName").unwrap_or("unknown"),
                record
                    .get("Status")
                    .map(|s| format!(", status {s}"))
                    .unwrap_or_default()
            ))
        }
        DumpEvent::Attachment => match record.owned("FileID") {
            Some(file_id) => EventKind::Attachment(AttachmentRef {
                file_name: record.owned("FileName").unwrap_or_else(|| file_id.clone()),
                file_id,
                size: record.get("FileSize").and_then(|s| s.trim().parse().ok()),
            }),
            None => notice(format!(
                "sent attachment {} ({} bytes; no FileID, so its file cannot be found)",
                record.get("FileName").unwrap_or("unnamed file"),
                record.get("FileSize").unwrap_or("unknown"),
            )),
        },
        DumpEvent::Invite => notice(match content.is_empty() {
            true => "sent an invitation".to_string(),
            false => format!("sent an invitation: {content}"),
        }),
        DumpEvent::History => notice(format!("history: {content}")),
        DumpEvent::SystemMessage => notice(format!("system message: {content}")),
    };
    Ok(ChatEvent {
        id: record
            .owned("MessageID")
            .or_else(|| record.owned("EventID")),
        time,
        im_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[(&str, &str)]) -> Record {
        Record {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            has_user_block: false,
        }
    }

    #[test]
    fn times_in_every_form_exporters_mix() {
        let want = Utc.with_ymd_and_hms(2026, 11, 20, 8, 1, 2).single();
        for value in [
            "2026-11-20T08:01:02Z",
            "2026-11-20T09:01:02+01:00",
            "2026-11-20T08:01:02",
            "2026-11-20 08:01:02",
            "1795161662",
            "1795161662000",
            "11/20/2026 08:01:02",
        ] {
            assert_eq!(parse_time(value), want, "{value}");
        }
        let ms = parse_time("1795161662345").expect("milliseconds");
        assert_eq!(ms.timestamp_subsec_millis(), 345);
        // The boundary of the rule: 10^11 and up is milliseconds.
        assert_eq!(
            parse_time("99999999999").map(|t| t.timestamp()),
            Some(99_999_999_999)
        );
        assert_eq!(
            parse_time("100000000000").map(|t| t.timestamp_millis()),
            Some(100_000_000_000)
        );
        for bad in ["", "yesterday", "13/45/2026 08:00:00", "12e9"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bloomberg_users_map_by_uuid_and_corporate_address() {
        let user = record(&[
            ("LoginName", "jdoe12"),
            ("FirstName", "John"),
            ("LastName", "Doe"),
            ("CompanyName", "ACME"),
            ("EmailAddress", "john@gmail.example"),
            ("CorporateEmailAddress", "jdoe@acme.example"),
            ("UUID", "8812345"),
        ]);
        let p = participant(&user).expect("a participant");
        assert_eq!(p.im_id, "8812345");
        assert_eq!(p.name.as_deref(), Some("John Doe"));
        assert_eq!(p.email.as_deref(), Some("jdoe@acme.example"));
        let actiance = record(&[
            ("LoginName", "asmith"),
            ("CorporateEmailID", "asmith@acme.example"),
        ]);
        let p = participant(&actiance).expect("a participant");
        assert_eq!((p.im_id.as_str(), p.name), ("asmith", None));
        assert_eq!(p.email.as_deref(), Some("asmith@acme.example"));
    }

    #[test]
    fn events_need_a_time_and_say_which_field_is_wrong() {
        let message = record(&[
            ("LoginName", "a"),
            ("DateTimeUTC", "1795161662"),
            ("Content", "hi"),
        ]);
        let event = event(DumpEvent::Message, &message).expect("an event");
        assert_eq!(event.kind, EventKind::Message { text: "hi".into() });
        let undated = record(&[("LoginName", "a"), ("Content", "hi")]);
        assert!(super::event(DumpEvent::Message, &undated)
            .unwrap_err()
            .contains("no DateTimeUTC"));
        let bad = record(&[("DateTime", "20.11.2026")]);
        assert!(super::event(DumpEvent::Left, &bad)
            .unwrap_err()
            .contains("invalid DateTime \"20.11.2026\""));
    }
}
