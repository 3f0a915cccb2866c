//! From chat to mail: splits a conversation into mails (per day or per
//! message), renders transcripts, and builds RFC 5322 messages.

pub(crate) mod headers;
pub mod oversize;
pub(crate) mod transcript;

use chrono::{DateTime, NaiveDate, Utc};
use mail_builder::encoders::base64::base64_encode_mime;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ConnectorConfig;
use crate::config::Output;
use crate::error::{Error, Result};
use crate::model::{ChatEvent, Conversation, EventKind, FileTransfer, Participant};

pub use headers::{address_or_placeholder, is_plausible_address, one_line};

/// Where a mail came from, down to the exact raw file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The raw object the data arrived in (`raw/...`).
    pub raw_key: String,
    pub raw_sha256: String,
    /// The decrypted object that was parsed (`plain/...`).
    pub plain_key: String,
    pub plain_sha256: String,
    /// The document inside the payload (`file` or `file!entry`) and the line
    /// of the conversation in it.
    pub document: String,
    pub line: u64,
}

/// What the import stage needs to know about a mail without parsing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSidecar {
    pub connector: String,
    pub item_id: String,
    /// Without angle brackets.
    pub message_id: String,
    pub day: NaiveDate,
    pub conversation_id: String,
    pub internal_date: DateTime<Utc>,
    pub folder: String,
    pub participants: Vec<Participant>,
    /// The ImIds that acted in this mail (sent, joined, left...).
    pub active_im_ids: Vec<String>,
    pub lineage: Lineage,
}

impl MailSidecar {
    /// The item's status record before any import: pending, no target yet.
    pub fn pending_record(&self) -> crate::status::ItemRecord {
        crate::status::ItemRecord {
            connector: self.connector.clone(),
            day: self.day.to_string(),
            item_id: self.item_id.clone(),
            subject: format!("conversation {}", self.conversation_id),
            source: self.lineage.raw_key.clone(),
            state: crate::status::ItemState::Pending,
            targets: Vec::new(),
            unmapped: Vec::new(),
            reason: None,
            attachments_kept: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuiltMail {
    pub sidecar: MailSidecar,
    pub raw: Vec<u8>,
}

/// The stable id of an item: same conversation and day (or message) gives
/// the same id in every run, whatever file it came from.
pub fn item_id(connector: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(connector.as_bytes());
    for part in parts {
        hasher.update([0u8]);
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

pub fn message_id(connector: &str, item_id: &str) -> String {
    format!("{item_id}@{connector}.chat-archive")
}

/// A continuation mail's link to the first mail of its conversation-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// Message-ID of the day's first mail (without angle brackets).
    pub first_message_id: String,
    /// 2 for the first continuation, and so on.
    pub part: usize,
}

/// One mail's share of a conversation: the events it carries.
#[derive(Debug, Clone)]
pub struct MailPart<'a> {
    pub item_id: String,
    pub day: NaiveDate,
    pub events: Vec<&'a ChatEvent>,
    pub continues: Option<Continuation>,
}

/// A conversation's events by UTC day (as positions in its event list),
/// days in order. A conversation with no event at all still has its day (its
/// start, else `fallback_day`), so that it is archived as a mail of its own.
pub fn events_by_day(
    conversation: &Conversation,
    fallback_day: NaiveDate,
) -> Vec<(NaiveDate, Vec<usize>)> {
    let mut days: Vec<(NaiveDate, Vec<usize>)> = Vec::new();
    for (i, event) in conversation.events.iter().enumerate() {
        let day = event.time.date_naive();
        match days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, events)) => events.push(i),
            None => days.push((day, vec![i])),
        }
    }
    if days.is_empty() {
        let day = conversation
            .start
            .map(|t| t.date_naive())
            .unwrap_or(fallback_day);
        days.push((day, Vec::new()));
    }
    days.sort_by_key(|(day, _)| *day);
    days
}

/// Every mail of a conversation as if none of its events had been archived
/// before (the event ledger decides that in the convert stage).
pub fn build_mails(
    conversation: &Conversation,
    config: &ConnectorConfig,
    lineage: &Lineage,
    fallback_day: NaiveDate,
) -> Result<Vec<BuiltMail>> {
    let mut mails = Vec::new();
    for (day, positions) in events_by_day(conversation, fallback_day) {
        let events: Vec<&ChatEvent> = positions.iter().map(|&i| &conversation.events[i]).collect();
        let ids = crate::ledger::event_ids(&conversation.id, &events);
        let planned = crate::ledger::plan_parts(
            &config.name,
            &conversation.id,
            day,
            config.granularity,
            &events,
            &ids,
            &Default::default(),
            true,
            crate::ledger::PartCap::NONE,
        );
        for part in planned {
            let part = MailPart {
                item_id: part.item_id,
                day,
                events: part.events.iter().map(|&i| events[i]).collect(),
                continues: None,
            };
            mails.push(build_mail(conversation, config, lineage, part)?);
        }
    }
    Ok(mails)
}

/// Builds the mail of one part of a conversation.
pub fn build_mail(
    conversation: &Conversation,
    config: &ConnectorConfig,
    lineage: &Lineage,
    slice: MailPart<'_>,
) -> Result<BuiltMail> {
    let item_id = slice.item_id.clone();
    let message_id = message_id(&config.name, &item_id);
    let internal_date = slice
        .events
        .first()
        .map(|e| e.time)
        .or(conversation.start)
        .unwrap_or_else(|| slice.day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    // The Date header and the IMAP INTERNALDATE can only state 1900..=9999.
    let internal_date = headers::mail_date(internal_date);
    let transcript = transcript::Transcript {
        conversation,
        events: &slice.events,
        day: slice.day,
        source_label: &config.source_label,
        disclaimer: &config.disclaimer,
        continues: slice.continues.as_ref(),
    };
    let mut active: Vec<String> = slice
        .events
        .iter()
        .map(|e| e.im_id.clone())
        .filter(|id| !id.is_empty())
        .collect();
    active.sort();
    active.dedup();

    let rsmf = match config.output {
        Output::Mail => None,
        Output::Rsmf | Output::Both => Some(rsmf_of(
            conversation,
            config,
            &slice,
            lineage,
            &message_id,
            &transcript,
        )?),
    };
    let raw = match (config.output, rsmf) {
        // The RSMF file is itself the mail (valid RFC 5322).
        (Output::Rsmf, Some(rsmf)) => rsmf,
        (_, rsmf) => render(
            conversation,
            config,
            &slice,
            &transcript,
            Envelope {
                message_id: &message_id,
                internal_date,
            },
            lineage,
            rsmf.as_deref(),
        )
        .map_err(|e| {
            Error::io(
                format!("building mail for conversation {}", conversation.id),
                e,
            )
        })?,
    };
    Ok(BuiltMail {
        sidecar: MailSidecar {
            connector: config.name.clone(),
            item_id,
            message_id,
            day: slice.day,
            conversation_id: conversation.id.clone(),
            internal_date,
            folder: config.folder.clone(),
            participants: conversation.participants.clone(),
            active_im_ids: active,
            lineage: lineage.clone(),
        },
        raw,
    })
}

/// The mail's identity and date, as its headers state them.
#[derive(Clone, Copy)]
struct Envelope<'a> {
    message_id: &'a str,
    internal_date: DateTime<Utc>,
}

/// The RSMF file of one mail's share of a conversation.
fn rsmf_of(
    conversation: &Conversation,
    config: &ConnectorConfig,
    slice: &MailPart<'_>,
    lineage: &Lineage,
    message_id: &str,
    transcript: &transcript::Transcript<'_>,
) -> Result<Vec<u8>> {
    let part = slice.continues.as_ref().map_or(1, |c| c.part);
    let rsmf_part = crate::rsmf::RsmfPart {
        conversation,
        day: slice.day,
        events: slice.events.clone(),
        event_ids: crate::ledger::event_ids(&conversation.id, &slice.events),
        part,
        parts: part,
    };
    let provenance = crate::rsmf::Provenance {
        config,
        lineage,
        custodian: None,
        message_id: Some(message_id),
    };
    crate::rsmf::build(&rsmf_part, &provenance, &transcript.text())
}

/// A file transfer as an attachment, byte for byte. mail-builder writes a
/// `text/*` part unencoded (7bit) when its lines look fine, yet passes a lone
/// CR or a NUL through, which break the mail's line framing (RFC 5322
/// section 2.3) and which mail servers reject or rewrite. Such a file is
/// base64-encoded here instead; every other file is left to mail-builder.
fn file_part(file: &FileTransfer) -> std::io::Result<MimePart<'_>> {
    let content_type = headers::content_type(file.content_type.as_deref());
    let name = headers::file_name(&file.file_name);
    let content = file.content.as_slice();
    let breaks_framing = || {
        content.contains(&0)
            || content
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\r' && content.get(i + 1) != Some(&b'\n'))
    };
    if content_type.is_text() && breaks_framing() {
        let mut encoded = Vec::with_capacity(content.len() / 3 * 4 + content.len() / 57 * 2 + 8);
        base64_encode_mime(content, &mut encoded, false)?;
        return Ok(MimePart::new(content_type, encoded)
            .transfer_encoding("base64")
            .attachment(name));
    }
    Ok(MimePart::new(content_type, content).attachment(name))
}

fn render(
    conversation: &Conversation,
    config: &ConnectorConfig,
    slice: &MailPart<'_>,
    transcript: &transcript::Transcript<'_>,
    envelope: Envelope<'_>,
    lineage: &Lineage,
    rsmf: Option<&[u8]>,
) -> std::io::Result<Vec<u8>> {
    let Envelope {
        message_id,
        internal_date,
    } = envelope;
    let sender = slice
        .events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::Message { .. } | EventKind::FileTransfer(_)
            )
        })
        .and_then(|e| conversation.participant(&e.im_id))
        .or_else(|| conversation.participants.first());
    let recipients: Vec<_> = conversation
        .participants
        .iter()
        .filter(|p| Some(*p) != sender)
        .map(|p| headers::mailbox_address(p, &config.name))
        .collect();

    let mut builder = MessageBuilder::new()
        .message_id(message_id.to_string())
        .subject(headers::subject(
            conversation,
            &config.source_label,
            slice.day,
            slice.continues.as_ref().map(|c| c.part),
        ))
        .header("Date", headers::date(internal_date))
        .header("X-Chat-Source", Text::new(one_line(&config.source_label)));
    for (name, value) in headers::provenance_headers(conversation, slice.day, &lineage.raw_key) {
        builder = builder.header(name, Text::new(value));
    }
    builder = builder
        .header(
            "X-Chat-Source-SHA256",
            Text::new(lineage.raw_sha256.clone()),
        )
        .headers(
            "X-Chat-Participant",
            conversation
                .participants
                .iter()
                .map(|p| Text::new(headers::participant_header(p))),
        );
    if let Some(continues) = &slice.continues {
        // Mail clients thread the parts of a conversation-day under its first.
        builder = builder
            .in_reply_to(continues.first_message_id.clone())
            .references(continues.first_message_id.clone())
            .header("X-Chat-Part", Text::new(continues.part.to_string()));
    }
    if let Some(sender) = sender {
        builder = builder.from(headers::mailbox_address(sender, &config.name));
    }
    if !recipients.is_empty() {
        builder = builder.to(recipients);
    }
    // The MIME tree of MessageBuilder's text_body + html_body + attachments,
    // with boundaries derived from the content instead of the clock: the same
    // chat always renders to the same bytes (a replayed convert rewrites
    // nothing), and no chat text can carry its own mail's boundary.
    let (text, html) = (transcript.text(), transcript.html());
    // Room for the whole mail up front: grown by doubling, a mail of
    // hundreds of MB (one huge message) would be copied and held twice over.
    // Unused capacity is never touched, so it costs no memory. Encoded bodies
    // grow by at most 4/3 plus line ends (base64; quoted-printable is only
    // chosen when shorter), headers by a few hundred bytes a participant.
    let attached: usize = slice
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FileTransfer(file) => Some(file.content.len()),
            _ => None,
        })
        .sum();
    let estimate = (text.len() + html.len() + attached + conversation.original_xml.len())
        .saturating_mul(7)
        / 5
        + conversation.participants.len().saturating_mul(512)
        + 64 * 1024;
    let mut digest = Sha256::new();
    digest.update(message_id.as_bytes());
    digest.update(text.as_bytes());
    digest.update(html.as_bytes());
    let mut attachments = Vec::new();
    for event in &slice.events {
        if let EventKind::FileTransfer(file) = &event.kind {
            digest.update(&file.content);
            attachments.push(file_part(file)?);
        }
    }
    let (original_name, original_type) = conversation
        .original_format
        .attachment(&headers::file_name(&conversation.id));
    digest.update(&conversation.original_xml);
    attachments.push(
        MimePart::new(original_type, conversation.original_xml.as_slice())
            .attachment(original_name),
    );
    if let Some(rsmf) = rsmf {
        digest.update(rsmf);
        let name = format!(
            "{}-{}.rsmf",
            headers::file_name(&conversation.id),
            slice.day
        );
        attachments.push(MimePart::new("application/octet-stream", rsmf).attachment(name));
    }
    let digest = hex::encode(&digest.finalize()[..12]);
    let alternative = MimePart::new(
        ContentType::new("multipart/alternative")
            .attribute("boundary", format!("chat-archive-{digest}-a")),
        vec![
            MimePart::new("text/plain", text),
            MimePart::new("text/html", html),
        ],
    );
    attachments.insert(0, alternative);
    builder = builder.body(MimePart::new(
        ContentType::new("multipart/mixed")
            .attribute("boundary", format!("chat-archive-{digest}-m")),
        attachments,
    ));
    let mut raw = Vec::with_capacity(estimate);
    builder.write_to(&mut raw)?;
    Ok(raw)
}

/// Inputs found by the fuzz targets in `tests/fuzz` (see docs/fuzzing.md).
#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use crate::formats::ice::IceReader;

    fn mails_of(xml: &str) -> Vec<BuiltMail> {
        let conversation = IceReader::new(xml.as_bytes(), "fuzz.xml")
            .next()
            .expect("a conversation")
            .expect("valid");
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid");
        build_mails(
            &conversation,
            &ConnectorConfig::ice(),
            &Lineage::default(),
            day,
        )
        .expect("built")
    }

    /// `mail_builder` target, `regressions/mail_builder/year-0-date.bin`:
    /// chat times a Date header cannot state (before 1900: year 0001 was
    /// written `0001` and read back as 2001) or that mail-builder formats
    /// wrongly (before 1970: negative hours) give a clamped, readable date.
    #[test]
    fn dates_before_1970_and_before_1900_are_readable() {
        let xml = |time: &str| {
            format!(
                "<IceChatExport><Conversation Id=\"c\"><Message ImId=\"a\" Timestamp=\"{time}\">x</Message></Conversation></IceChatExport>"
            )
        };
        for (time, want) in [
            ("1969-07-20T20:17:40Z", (1969, 7, 20, 20, 17, 40)),
            ("0001-01-01T00:00:00Z", (1900, 1, 1, 0, 0, 0)),
        ] {
            let mails = mails_of(&xml(time));
            let message = mail_parser::MessageParser::default()
                .parse(&mails[0].raw)
                .expect("parsed");
            let date = message.date().expect("a Date header");
            let got = (
                date.year,
                date.month,
                date.day,
                date.hour,
                date.minute,
                date.second,
            );
            assert_eq!(got, want, "{time}");
            let internal = mails[0].sidecar.internal_date.format("%Y").to_string();
            assert_eq!(internal, want.0.to_string(), "{time}");
            let transcript = String::from_utf8_lossy(&mails[0].raw).into_owned();
            assert!(
                transcript.contains(&time[..10]),
                "the transcript keeps {time}"
            );
        }
    }
}
