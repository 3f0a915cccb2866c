//! RSMF 2.0, the Relativity Short Message Format that review platforms read
//! chat in: an RFC 5322 file whose first header is `X-RSMF-Version: 2.0.0`,
//! whose text body is the extracted text, and whose one attachment,
//! `rsmf.zip`, holds `rsmf_manifest.json` (participants, conversations,
//! events) and every file the events name. One RSMF per conversation-day
//! (split past [`MAX_EVENTS`]); the source's own fields (ImId, company,
//! dialect, source file and its SHA-256) go under `custom`, never into
//! invented fields. [`validate`] checks a file as Relativity's validator does.

pub mod export;
pub mod validate;

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use serde::{Deserialize, Serialize};

use crate::config::ConnectorConfig;
use crate::error::{Error, Result};
use crate::mail::{headers, one_line, Lineage};
use crate::model::{ChatEvent, Content, Conversation, EventKind};

/// Relativity's recommended maximum of events in one RSMF.
pub const MAX_EVENTS: usize = 10_000;
pub const VERSION: &str = "2.0.0";
pub const ZIP_NAME: &str = "rsmf.zip";
pub const MANIFEST_NAME: &str = "rsmf_manifest.json";
const GENERATOR: &str = concat!("chat-archive ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custom {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestParticipant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Custom>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestConversation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    pub platform: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub participants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custodian: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Custom>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAttachment {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<ManifestAttachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Custom>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub participants: Vec<ManifestParticipant>,
    pub conversations: Vec<ManifestConversation>,
    pub events: Vec<ManifestEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventcollectionid: Option<String>,
}

/// One RSMF's share of a conversation: a conversation-day (or a tenth-
/// thousand slice of one), each event with its identity from the ledger.
pub struct RsmfPart<'a> {
    pub conversation: &'a Conversation,
    pub day: NaiveDate,
    pub events: Vec<&'a ChatEvent>,
    pub event_ids: Vec<String>,
    /// 1-based, and how many parts the day has.
    pub part: usize,
    pub parts: usize,
}

/// Splits a conversation-day's events into RSMF parts of at most
/// [`MAX_EVENTS`].
pub fn parts<'a>(
    conversation: &'a Conversation,
    day: NaiveDate,
    events: &[&'a ChatEvent],
    event_ids: &[String],
) -> Vec<RsmfPart<'a>> {
    let chunks: Vec<_> = events.chunks(MAX_EVENTS.max(1)).collect();
    let count = chunks.len().max(1);
    if chunks.is_empty() {
        return vec![RsmfPart {
            conversation,
            day,
            events: Vec::new(),
            event_ids: Vec::new(),
            part: 1,
            parts: 1,
        }];
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| RsmfPart {
            conversation,
            day,
            events: chunk.to_vec(),
            event_ids: event_ids[i * MAX_EVENTS..i * MAX_EVENTS + chunk.len()].to_vec(),
            part: i + 1,
            parts: count,
        })
        .collect()
}

/// What the file says about where it came from.
pub struct Provenance<'a> {
    pub config: &'a ConnectorConfig,
    pub lineage: &'a Lineage,
    /// The custodian's mailbox, when the RSMF is made for one.
    pub custodian: Option<&'a str>,
    /// The Message-ID it carries when it is imported as mail.
    pub message_id: Option<&'a str>,
}

fn custom(pairs: &[(&str, &str)]) -> Vec<Custom> {
    pairs
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(name, value)| Custom {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect()
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

/// The manifest of a part and the files its events carry (name in the zip,
/// bytes).
pub fn manifest<'a>(
    part: &RsmfPart<'a>,
    provenance: &Provenance<'_>,
) -> (Manifest, Vec<(String, &'a Content)>) {
    let conversation = part.conversation;
    let config = provenance.config;
    let mut participants: Vec<ManifestParticipant> = conversation
        .participants
        .iter()
        .map(|p| ManifestParticipant {
            id: p.im_id.clone(),
            display: Some(p.name.clone().unwrap_or_else(|| p.im_id.clone())),
            email: p.email.clone().filter(|e| headers::is_plausible_address(e)),
            account_id: Some(p.im_id.clone()),
            custom: custom(&[
                ("ImId", &p.im_id),
                ("Company", p.company.as_deref().unwrap_or("")),
                (
                    "Firm",
                    match p
                        .email
                        .as_deref()
                        .is_some_and(|e| config.in_firm_domains(e))
                    {
                        true => "internal",
                        false => "external",
                    },
                ),
            ]),
        })
        .collect();
    for event in &part.events {
        if !event.im_id.is_empty() && !participants.iter().any(|p| p.id == event.im_id) {
            participants.push(ManifestParticipant {
                id: event.im_id.clone(),
                display: Some(event.im_id.clone()),
                account_id: Some(event.im_id.clone()),
                custom: custom(&[("ImId", &event.im_id)]),
                ..ManifestParticipant::default()
            });
        }
    }
    let custodian = provenance.custodian.and_then(|address| {
        participants
            .iter()
            .find(|p| {
                p.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(address))
            })
            .map(|p| p.id.clone())
    });
    let direct = participants.len() <= 2
        && conversation.kind.as_deref().is_none_or(|k| {
            !k.to_ascii_lowercase().contains("room")
                && !k.to_ascii_lowercase().contains("group")
                && !k.to_ascii_lowercase().contains("persistent")
        });
    let lineage = provenance.lineage;
    let day = part.day.to_string();
    let part_label = format!("{} of {}", part.part, part.parts);
    let manifest_conversation = ManifestConversation {
        id: conversation.id.clone(),
        display: Some(
            conversation
                .room_name
                .clone()
                .unwrap_or_else(|| conversation.id.clone()),
        ),
        platform: config.source_label.clone(),
        kind: Some(if direct { "direct" } else { "channel" }.to_string()),
        participants: participants.iter().map(|p| p.id.clone()).collect(),
        custodian,
        custom: custom(&[
            ("Connector", &config.name),
            ("Dialect", conversation.original_format.dialect()),
            (
                "Conversation kind",
                conversation.kind.as_deref().unwrap_or(""),
            ),
            ("Day", &day),
            ("Part", &part_label),
            ("Source file", &lineage.raw_key),
            ("Source SHA-256", &lineage.raw_sha256),
            ("Plain file", &lineage.plain_key),
        ]),
    };
    let mut files: Vec<(String, &'a Content)> = Vec::new();
    let events = part
        .events
        .iter()
        .zip(&part.event_ids)
        .map(|(event, id)| {
            let (kind, body, attachments) = match &event.kind {
                EventKind::Message { text } => ("message", Some(text.clone()), Vec::new()),
                EventKind::Disclaimer { text } => ("disclaimer", Some(text.clone()), Vec::new()),
                EventKind::Entered => ("join", None, Vec::new()),
                EventKind::Left => ("leave", None, Vec::new()),
                EventKind::Notice { text } => ("unknown", Some(text.clone()), Vec::new()),
                EventKind::Attachment(attachment) => {
                    ("unknown", Some(attachment.describe()), Vec::new())
                }
                EventKind::FileTransfer(file) => {
                    let name = format!(
                        "{:04}-{}",
                        files.len() + 1,
                        headers::file_name(&file.file_name)
                    );
                    files.push((name.clone(), &file.content));
                    (
                        "message",
                        Some(format!("sent file {}", file.file_name)),
                        vec![ManifestAttachment {
                            id: name,
                            display: Some(file.file_name.clone()),
                            size: Some(file.content.len()),
                        }],
                    )
                }
            };
            ManifestEvent {
                id: Some(id.clone()),
                kind: kind.to_string(),
                participant: Some(event.im_id.clone()).filter(|p| !p.is_empty()),
                conversation: Some(conversation.id.clone()),
                timestamp: Some(timestamp(event.time)),
                body,
                attachments,
                custom: custom(&[("Source event id", event.id.as_deref().unwrap_or(""))]),
            }
        })
        .collect();
    let manifest = Manifest {
        version: VERSION.to_string(),
        participants,
        conversations: vec![manifest_conversation],
        events,
        eventcollectionid: Some(format!("{}:{}:{}", config.name, conversation.id, day)),
    };
    (manifest, files)
}

/// The RSMF file of a part: headers that agree with the manifest, the
/// transcript as text body, `rsmf.zip` as its one attachment.
pub fn build(part: &RsmfPart<'_>, provenance: &Provenance<'_>, text_body: &str) -> Result<Vec<u8>> {
    let (manifest, files) = manifest(part, provenance);
    build_from(part, provenance, &manifest, &files, text_body)
}

/// [`build`] with the part's manifest and files already made.
pub fn build_from(
    part: &RsmfPart<'_>,
    provenance: &Provenance<'_>,
    manifest: &Manifest,
    files: &[(String, &Content)],
    text_body: &str,
) -> Result<Vec<u8>> {
    let zip = zip_of(manifest, files)
        .map_err(|e| Error::io(format!("building rsmf.zip of {}", part.conversation.id), e))?;
    let conversation = part.conversation;
    let config = provenance.config;
    let to_address = |p: &ManifestParticipant| -> Address<'static> {
        match conversation.participant(&p.id) {
            Some(participant) => headers::mailbox_address(participant, &config.name),
            None => Address::new_address(
                p.display.clone(),
                format!("{}@{}.invalid", sanitize(&p.id), config.name),
            ),
        }
    };
    let first = part.events.first().map(|e| e.time);
    let last = part.events.last().map(|e| e.time);
    let mut builder = MessageBuilder::new()
        .header("X-RSMF-Version", Raw::new(VERSION))
        .header("X-RSMF-Generator", Text::new(GENERATOR))
        .header(
            "X-RSMF-EventCount",
            Raw::new(manifest.events.len().to_string()),
        )
        .header("X-RSMF-AttachmentCount", Raw::new(files.len().to_string()))
        .header(
            "X-RSMF-Application",
            Text::new(one_line(&config.source_label)),
        );
    if let (Some(first), Some(last)) = (first, last) {
        builder = builder
            .header("X-RSMF-BeginDate", Raw::new(timestamp(first)))
            .header("X-RSMF-EndDate", Raw::new(timestamp(last)));
    }
    if let Some(collection) = &manifest.eventcollectionid {
        builder = builder.header("X-RSMF-EventCollectionID", Text::new(one_line(collection)));
    }
    if let Some(custodian) = provenance.custodian {
        builder = builder.header("X-RSMF-Custodian", Text::new(one_line(custodian)));
    }
    builder = builder.header(
        "X-RSMF-Participants",
        Text::new(one_line(
            &manifest
                .participants
                .iter()
                .map(|p| p.display.clone().unwrap_or_else(|| p.id.clone()))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    );
    if let Some(message_id) = provenance.message_id {
        builder = builder.message_id(message_id.to_string());
    }
    let date = first
        .or(conversation.start)
        .unwrap_or_else(|| part.day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    builder = builder
        .header("Date", headers::date(headers::mail_date(date)))
        .subject(format!(
            "{} (RSMF{})",
            headers::subject(conversation, &config.source_label, part.day, None).text,
            match part.parts {
                1 => String::new(),
                n => format!(", part {} of {n}", part.part),
            }
        ));
    for (name, value) in
        headers::provenance_headers(conversation, part.day, &provenance.lineage.raw_key)
    {
        builder = builder.header(name, Text::new(value));
    }
    // One participant in From (the first who speaks), all of them in To, as
    // Relativity recommends.
    let speaker = part
        .events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::Message { .. } | EventKind::FileTransfer(_)
            )
        })
        .map(|e| e.im_id.as_str());
    if let Some(from) = manifest
        .participants
        .iter()
        .find(|p| Some(p.id.as_str()) == speaker)
        .or(manifest.participants.first())
    {
        builder = builder.from(to_address(from));
    }
    if !manifest.participants.is_empty() {
        builder = builder.to(manifest
            .participants
            .iter()
            .map(to_address)
            .collect::<Vec<_>>());
    }
    let body = MimePart::new(
        "multipart/mixed",
        vec![
            MimePart::new("text/plain; charset=utf-8", text_body.to_string()),
            // Binary: mail-builder encodes it as base64.
            MimePart::new("application/zip", zip).attachment(ZIP_NAME),
        ],
    );
    let mut raw = Vec::new();
    builder
        .body(body)
        .write_to(&mut raw)
        .map_err(|e| Error::io(format!("writing the RSMF of {}", conversation.id), e))?;
    Ok(raw)
}

fn sanitize(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.is_empty() {
        true => "participant".into(),
        false => clean,
    }
}

/// The zip is built in memory, a spooled file read into it from its spool.
fn zip_of(manifest: &Manifest, files: &[(String, &Content)]) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // A fixed time: the same conversation always gives the same bytes.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    zip.start_file(MANIFEST_NAME, options)?;
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    zip.write_all(&json)?;
    for (name, content) in files {
        zip.start_file(name.as_str(), options)?;
        std::io::copy(&mut content.open()?, &mut zip)?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileTransfer, OriginalFormat, Participant};

    fn conversation(events: usize) -> Conversation {
        let at = |s: i64| DateTime::from_timestamp(1_795_000_000 + s, 0).unwrap();
        let mut list = vec![
            ChatEvent {
                id: None,
                time: at(0),
                im_id: "zoe".into(),
                kind: EventKind::Entered,
            },
            ChatEvent {
                id: None,
                time: at(1),
                im_id: String::new(),
                kind: EventKind::Disclaimer {
                    text: "Recorded.".into(),
                },
            },
            ChatEvent {
                id: Some("f-1".into()),
                time: at(2),
                im_id: "jdoe".into(),
                kind: EventKind::FileTransfer(FileTransfer {
                    file_name: "levels.txt".into(),
                    content_type: Some("text/plain".into()),
                    content: b"5y 2.41".to_vec().into(),
                }),
            },
        ];
        for i in 0..events {
            list.push(ChatEvent {
                id: Some(format!("m-{i}")),
                time: at(10 + i as i64),
                im_id: "zoe".into(),
                kind: EventKind::Message {
                    text: format!("Grüß dich {i}"),
                },
            });
        }
        Conversation {
            id: "c-1".into(),
            kind: Some("Group".into()),
            room_name: Some("EUR rates".into()),
            start: Some(at(0)),
            participants: vec![
                Participant {
                    im_id: "jdoe".into(),
                    name: Some("John Doe".into()),
                    company: Some("ACME".into()),
                    email: Some("jdoe@acme.example".into()),
                },
                Participant {
                    im_id: "zoe".into(),
                    name: Some("Zoë Müller".into()),
                    company: Some("Globex".into()),
                    email: Some("zoe@globex.example".into()),
                },
            ],
            events: list,
            original_xml: Vec::new(),
            original_spilled: Vec::new(),
            original_format: OriginalFormat::IceXml,
            line: 1,
        }
    }

    fn rsmf_of(conversation: &Conversation) -> Vec<Vec<u8>> {
        let mut config = ConnectorConfig::ice();
        config.firm_domains = vec!["acme.example".into()];
        let events: Vec<&ChatEvent> = conversation.events.iter().collect();
        let ids = crate::ledger::event_ids(&conversation.id, &events);
        let day = events[0].time.date_naive();
        let lineage = Lineage::default();
        let provenance = Provenance {
            config: &config,
            lineage: &lineage,
            custodian: Some("jdoe@acme.example"),
            message_id: None,
        };
        parts(conversation, day, &events, &ids)
            .iter()
            .map(|part| build(part, &provenance, "transcript").unwrap())
            .collect()
    }

    #[test]
    fn a_built_rsmf_is_valid_and_each_kind_of_fault_is_found() {
        let built = rsmf_of(&conversation(3)).remove(0);
        assert_eq!(validate::validate(&built), Vec::<String>::new());
        assert!(built.starts_with(b"X-RSMF-Version: 2.0.0\r\n"));

        let text = String::from_utf8(built.clone()).unwrap();
        let wrong_count = text.replace("X-RSMF-EventCount: 6", "X-RSMF-EventCount: 7");
        assert_ne!(wrong_count, text);
        let problems = validate::validate(wrong_count.as_bytes());
        assert!(
            problems.iter().any(|p| p.contains("X-RSMF-EventCount")),
            "{problems:?}"
        );

        let not_first = format!("Subject: x\r\n{text}");
        assert!(validate::validate(not_first.as_bytes())
            .iter()
            .any(|p| p.contains("first header")));
    }

    #[test]
    fn the_cross_checks_find_what_the_schema_cannot() {
        let conversation = conversation(1);
        let mut config = ConnectorConfig::ice();
        config.firm_domains = vec!["acme.example".into()];
        let events: Vec<&ChatEvent> = conversation.events.iter().collect();
        let ids = crate::ledger::event_ids(&conversation.id, &events);
        let part = &parts(&conversation, events[0].time.date_naive(), &events, &ids)[0];
        let lineage = Lineage::default();
        let provenance = Provenance {
            config: &config,
            lineage: &lineage,
            custodian: None,
            message_id: None,
        };
        let (mut manifest, _) = manifest(part, &provenance);
        manifest.events[0].participant = Some("nobody".into());
        manifest.events[2].attachments[0].id = "missing.txt".into();
        let names: std::collections::BTreeSet<String> =
            [MANIFEST_NAME.to_string(), "0001-levels.txt".to_string()].into();
        let problems = validate::cross_check_for_tests(&manifest, &names);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"nobody\" is not defined")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("missing.txt")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("named by no event")),
            "{problems:?}"
        );
        // The external participant is marked; the firm's is internal.
        let firm = |id: &str| {
            manifest
                .participants
                .iter()
                .find(|p| p.id == id)
                .unwrap()
                .custom
                .iter()
                .find(|c| c.name == "Firm")
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(
            (firm("jdoe"), firm("zoe")),
            ("internal".into(), "external".into())
        );
    }

    #[test]
    fn past_ten_thousand_events_a_day_is_split_into_parts_each_valid() {
        let built = rsmf_of(&conversation(MAX_EVENTS));
        assert_eq!(built.len(), 2, "10,003 events");
        for file in &built {
            assert_eq!(validate::validate(file), Vec::<String>::new());
        }
        let second = String::from_utf8_lossy(&built[1]);
        assert!(second.contains("X-RSMF-EventCount: 3\r\n"), "the rest");
    }
}
