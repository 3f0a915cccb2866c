//! Structured input for the mail builder: a conversation with arbitrary
//! names, ids, texts, times, files and original bytes (built by `arbitrary`
//! from the fuzz bytes), plus the few settings and lineage fields that end up
//! in the mail. `build_mails` must succeed, and every mail must:
//! - parse with mail-parser (the reader the tests use);
//! - carry exactly the headers the builder writes, no more (nothing in the
//!   chat can start a header of its own), each singular one once, one
//!   `X-Chat-Participant` per participant;
//! - name its conversation in `X-Chat-Conversation-Id`, carry the
//!   sidecar's Message-ID and a Date header that is its internal date;
//! - keep its MIME tree: the transcripts, one part per file transfer and the
//!   original, the original's bytes unchanged;
//! - be the same bytes when built again from equal input, with the same
//!   Message-ID whatever file the conversation came from.
#![no_main]

use arbitrary::Arbitrary;
use chat_archive_core::config::{ConnectorConfig, Granularity};
use chat_archive_core::mail::{build_mails, one_line, BuiltMail, Lineage};
use chat_archive_core::model::{
    ChatEvent, Conversation, EventKind, FileTransfer, OriginalFormat, Participant,
};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use libfuzzer_sys::fuzz_target;
use mail_parser::{HeaderName, MessageParser, PartType};

#[derive(Debug, Arbitrary)]
struct Input {
    per_message: bool,
    xip: bool,
    source_label: String,
    disclaimer: String,
    raw_key: String,
    fallback_day: i32,
    conversation: FuzzConversation,
}

#[derive(Debug, Arbitrary)]
struct FuzzConversation {
    id: String,
    kind: Option<String>,
    room_name: Option<String>,
    start: Option<i64>,
    participants: Vec<FuzzParticipant>,
    events: Vec<FuzzEvent>,
    original: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct FuzzParticipant {
    im_id: String,
    name: Option<String>,
    company: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Arbitrary)]
struct FuzzEvent {
    id: Option<String>,
    time: i64,
    im_id: String,
    kind: FuzzKind,
}

#[derive(Debug, Arbitrary)]
enum FuzzKind {
    Message(String),
    Entered,
    Left,
    Disclaimer(String),
    FileTransfer {
        file_name: String,
        content_type: Option<String>,
        content: Vec<u8>,
    },
}

/// Any instant chrono can hold (ICE timestamps are parsed into this range).
fn time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0)
        .or_else(|| DateTime::from_timestamp(seconds % 8_000_000_000_000, 0))
        .unwrap_or_default()
}

fn conversation(input: FuzzConversation, xip: bool) -> Conversation {
    Conversation {
        id: input.id,
        kind: input.kind,
        room_name: input.room_name,
        start: input.start.map(time),
        participants: input
            .participants
            .into_iter()
            .map(|p| Participant {
                im_id: p.im_id,
                name: p.name,
                company: p.company,
                email: p.email,
            })
            .collect(),
        events: input
            .events
            .into_iter()
            .map(|e| ChatEvent {
                id: e.id,
                time: time(e.time),
                im_id: e.im_id,
                kind: match e.kind {
                    FuzzKind::Message(text) => EventKind::Message { text },
                    FuzzKind::Entered => EventKind::Entered,
                    FuzzKind::Left => EventKind::Left,
                    FuzzKind::Disclaimer(text) => EventKind::Disclaimer { text },
                    FuzzKind::FileTransfer {
                        file_name,
                        content_type,
                        content,
                    } => EventKind::FileTransfer(FileTransfer {
                        file_name,
                        content_type,
                        content,
                    }),
                },
            })
            .collect(),
        original_xml: input.original,
        original_format: if xip {
            OriginalFormat::XipItemJson
        } else {
            OriginalFormat::IceXml
        },
        line: 1,
    }
}

fn clamp_to_mail_dates(time: DateTime<Utc>) -> DateTime<Utc> {
    let at = |y, m, d, h, mi, s| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .expect("a valid instant")
            .and_utc()
    };
    time.clamp(at(1900, 1, 1, 0, 0, 0), at(9999, 12, 31, 23, 59, 59))
}

/// Header names written once per mail whatever the input.
const ONCE: [&str; 10] = [
    "Message-ID",
    "Subject",
    "Date",
    "X-Chat-Source",
    "X-Chat-Conversation-Id",
    "X-Chat-Day",
    "X-Chat-Source-File",
    "X-Chat-Source-SHA256",
    "MIME-Version",
    "Content-Type",
];

/// The names of the top-level header fields, read from the raw bytes (not
/// through a parser that might be lenient about a broken line).
fn header_names(raw: &[u8]) -> Vec<String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header/body separator");
    let head = std::str::from_utf8(&raw[..end]).expect("headers are ASCII");
    assert!(head.is_ascii(), "non-ASCII header: {head:?}");
    let mut names = Vec::new();
    for line in head.split("\r\n") {
        assert!(!line.contains(['\r', '\n']), "bare CR/LF in {line:?}");
        if line.starts_with([' ', '\t']) {
            continue; // folded continuation of the previous field
        }
        let (name, _) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("header line without a colon: {line:?}"));
        names.push(name.to_string());
    }
    names
}

/// Checks one mail; returns how many file transfers it carries.
fn check(mail: &BuiltMail, conv: &Conversation, per_day: bool) -> usize {
    if per_day {
        // One mail per day: dated by the day's first event, else by the
        // conversation's start, else the day's midnight; clamped to what a
        // mail can state.
        let day = mail.sidecar.day;
        let natural = conv
            .events
            .iter()
            .find(|e| e.time.date_naive() == day)
            .map(|e| e.time)
            .or(conv.start)
            .unwrap_or_else(|| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
        assert_eq!(mail.sidecar.internal_date, clamp_to_mail_dates(natural));
    }

    let names = header_names(&mail.raw);
    for name in &names {
        let known = ONCE.contains(&name.as_str())
            || matches!(name.as_str(), "From" | "To" | "X-Chat-Participant");
        assert!(known, "unexpected header {name:?}");
    }
    let count = |wanted: &str| names.iter().filter(|n| *n == wanted).count();
    for name in ONCE {
        assert_eq!(count(name), 1, "{name} in {names:?}");
    }
    assert_eq!(count("From"), usize::from(!conv.participants.is_empty()));
    assert!(count("To") <= 1);
    assert_eq!(count("X-Chat-Participant"), conv.participants.len());

    // Our X- headers are text (RFC 2047 encoded words); mail-parser keeps
    // unknown headers raw unless told.
    let message = MessageParser::new()
        .with_minimal_headers()
        .with_message_ids()
        .header_text(HeaderName::Other("X-Chat-Conversation-Id".into()))
        .parse(&mail.raw)
        .expect("mail-parser reads the mail");
    assert_eq!(message.message_id(), Some(mail.sidecar.message_id.as_str()));
    let id = message
        .header("X-Chat-Conversation-Id")
        .and_then(|v| v.as_text())
        .unwrap_or_default();
    assert_eq!(id.trim(), one_line(&conv.id).trim(), "conversation id");
    // The Date header is the mail's internal date, which a Date header and
    // an IMAP INTERNALDATE can both state (1900..=9999).
    let when = mail.sidecar.internal_date;
    assert!((1900..=9999).contains(&when.year()), "internal date {when}");
    let date = message.date().expect("a readable Date header");
    let got = (
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
        u32::from(date.hour),
        u32::from(date.minute),
        u32::from(date.second),
    );
    let want = (
        when.year(),
        when.month(),
        when.day(),
        when.hour(),
        when.minute(),
        when.second(),
    );
    assert_eq!(got, want, "Date header");
    if let Some(subject) = message.subject() {
        assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    }

    // multipart/mixed, multipart/alternative, text, html, the files, the
    // original: every part present and every boundary intact.
    let original = message.parts.last().expect("parts");
    if let PartType::Binary(bytes) | PartType::InlineBinary(bytes) = &original.body {
        assert_eq!(bytes.as_ref(), conv.original_xml.as_slice(), "original");
    }
    let parts = message.parts.len();
    assert!(parts >= 5, "{parts} parts");
    parts - 5
}

fuzz_target!(|input: Input| {
    let mut config = if input.xip {
        ConnectorConfig::xip()
    } else {
        ConnectorConfig::ice()
    };
    config.granularity = if input.per_message {
        Granularity::Message
    } else {
        Granularity::ConversationDay
    };
    config.source_label = input.source_label;
    config.disclaimer = input.disclaimer;
    let lineage = Lineage {
        raw_key: input.raw_key,
        ..Lineage::default()
    };
    let fallback = NaiveDate::from_num_days_from_ce_opt(input.fallback_day).unwrap_or_default();
    let conv = conversation(input.conversation, input.xip);

    let mails = build_mails(&conv, &config, &lineage, fallback).expect("mails are built");
    assert!(
        !mails.is_empty(),
        "every conversation gives at least one mail"
    );
    let per_day = config.granularity == Granularity::ConversationDay;
    let files: usize = mails.iter().map(|mail| check(mail, &conv, per_day)).sum();
    let transfers = conv
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::FileTransfer(_)))
        .count();
    assert_eq!(files, transfers, "each file transfer in exactly one mail");

    let again = build_mails(&conv.clone(), &config, &lineage, fallback).expect("built again");
    let elsewhere = Lineage {
        raw_key: "raw/ice/another-file.pgp".into(),
        ..lineage.clone()
    };
    let moved = build_mails(&conv, &config, &elsewhere, fallback).expect("built again");
    assert_eq!(again.len(), mails.len());
    assert_eq!(moved.len(), mails.len());
    for ((first, second), third) in mails.iter().zip(&again).zip(&moved) {
        assert_eq!(first.raw, second.raw, "same input, same bytes");
        assert_eq!(first.sidecar, second.sidecar);
        assert_eq!(first.sidecar.message_id, third.sidecar.message_id);
    }
});
