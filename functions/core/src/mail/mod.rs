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
use crate::model::{ChatEvent, Content, Conversation, EventKind, FileTransfer, Participant};

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
    /// Parts too large to have been held in memory, where they are in the
    /// mail: a mail over a server's limit sheds them without being parsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spliced: Vec<SplicedPart>,
}

/// A part of a mail streamed in from a spool, by its place in the mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplicedPart {
    /// Byte offsets of the part (its headers to the end of its base64 body).
    pub start: u64,
    pub end: u64,
    /// Where its base64 body starts.
    pub body: u64,
    /// The file name it is attached under.
    pub name: String,
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
    /// The mail; when it has splices, without them (see [`BuiltMail::write_to`]).
    pub raw: Vec<u8>,
    /// Bodies streamed into `raw` at their offsets when the mail is written,
    /// in order.
    pub splices: Vec<Splice>,
}

/// A base64 body written from a spool at an offset of the mail.
#[derive(Debug, Clone)]
pub struct Splice {
    pub at: usize,
    pub source: SpliceSource,
}

#[derive(Debug, Clone)]
pub enum SpliceSource {
    /// A file transfer.
    File(Content),
    /// Original bytes with spilled runs to be filled in (see
    /// [`crate::spool::write_filled`]).
    Filled {
        bytes: std::sync::Arc<Vec<u8>>,
        holes: Vec<(usize, std::sync::Arc<crate::spool::Spool>)>,
    },
}

impl SpliceSource {
    /// Bytes before encoding.
    fn len(&self) -> u64 {
        match self {
            SpliceSource::File(content) => content.len(),
            SpliceSource::Filled { bytes, holes } => crate::spool::filled_len(bytes, holes),
        }
    }

    fn write_base64(&self, out: &mut dyn std::io::Write) -> std::io::Result<u64> {
        match self {
            SpliceSource::File(content) => {
                crate::spool::write_mime_base64(&mut content.open()?, out)
            }
            SpliceSource::Filled { bytes, holes } => {
                let mut reader: Box<dyn std::io::Read + Send> = Box::new(std::io::empty());
                let mut at = 0;
                for (place, spool) in holes {
                    let place = (*place).clamp(at, bytes.len());
                    let before = std::io::Cursor::new(bytes[at..place].to_vec());
                    reader = Box::new(std::io::Read::chain(
                        std::io::Read::chain(reader, before),
                        spool.open()?,
                    ));
                    at = place;
                }
                let rest = std::io::Cursor::new(bytes[at..].to_vec());
                crate::spool::write_mime_base64(&mut std::io::Read::chain(reader, rest), out)
            }
        }
    }
}

impl BuiltMail {
    /// Size of the mail as written.
    pub fn len(&self) -> u64 {
        let spliced: u64 = self
            .splices
            .iter()
            .map(|s| crate::spool::mime_base64_len(s.source.len()))
            .sum();
        self.raw.len() as u64 + spliced
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the mail, its splices streamed from their spools.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut at = 0;
        for splice in &self.splices {
            out.write_all(&self.raw[at..splice.at])?;
            let written = splice.source.write_base64(out)?;
            if written != crate::spool::mime_base64_len(splice.source.len()) {
                return Err(std::io::Error::other(
                    "a spooled part changed size while the mail was written",
                ));
            }
            at = splice.at;
        }
        out.write_all(&self.raw[at..])
    }
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
    let (raw, splices, spliced) = match (config.output, rsmf) {
        // The RSMF file is itself the mail (valid RFC 5322).
        (Output::Rsmf, Some(rsmf)) => (rsmf, Vec::new(), Vec::new()),
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
            spliced,
        },
        raw,
        splices,
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
fn file_part<'a>(file: &FileTransfer, content: &'a [u8]) -> std::io::Result<MimePart<'a>> {
    let content_type = headers::content_type(file.content_type.as_deref());
    let name = headers::file_name(&file.file_name);
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
) -> std::io::Result<(Vec<u8>, Vec<Splice>, Vec<SplicedPart>)> {
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
            EventKind::FileTransfer(file) => file.content.as_bytes().map(<[u8]>::len),
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
    let mut spliced = Spliced::default();
    for event in &slice.events {
        if let EventKind::FileTransfer(file) = &event.kind {
            match &file.content {
                Content::Bytes(bytes) => {
                    digest.update(bytes);
                    attachments.push(file_part(file, bytes)?);
                }
                spooled => {
                    digest.update(spooled.sha256());
                    let content_type = headers::content_type(file.content_type.as_deref());
                    let name = headers::file_name(&file.file_name);
                    let token = spliced.add(SpliceSource::File(spooled.clone()));
                    attachments.push(
                        MimePart::new(content_type, token)
                            .transfer_encoding("base64")
                            .attachment(name),
                    );
                }
            }
        }
    }
    let (original_name, original_type) = conversation
        .original_format
        .attachment(&headers::file_name(&conversation.id));
    digest.update(&conversation.original_xml);
    if conversation.original_spilled.is_empty() {
        attachments.push(
            MimePart::new(original_type, conversation.original_xml.as_slice())
                .attachment(original_name),
        );
    } else {
        for (place, spool) in &conversation.original_spilled {
            digest.update((*place as u64).to_le_bytes());
            digest.update(spool.len().to_le_bytes());
        }
        let token = spliced.add(SpliceSource::Filled {
            bytes: std::sync::Arc::new(conversation.original_xml.clone()),
            holes: conversation.original_spilled.clone(),
        });
        attachments.push(
            MimePart::new(original_type, token)
                .transfer_encoding("base64")
                .attachment(original_name),
        );
    }
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
    let mixed = format!("chat-archive-{digest}-m");
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
        ContentType::new("multipart/mixed").attribute("boundary", mixed.clone()),
        attachments,
    ));
    let mut raw = Vec::with_capacity(estimate);
    builder.write_to(&mut raw)?;
    spliced.cut(raw, &mixed)
}

/// Parts whose bodies are streamed in when the mail is written: mail-builder
/// writes a token in each one's place, cut out again here.
#[derive(Default)]
struct Spliced {
    /// Drawn per mail, so no chat content can forge a token.
    nonce: u64,
    pending: Vec<(Vec<u8>, SpliceSource)>,
}

impl Spliced {
    fn add(&mut self, source: SpliceSource) -> Vec<u8> {
        if self.pending.is_empty() {
            self.nonce = rand::random();
        }
        let token = format!(
            "chat-archive-splice-{:016x}-{}",
            self.nonce,
            self.pending.len()
        );
        self.pending.push((token.clone().into_bytes(), source));
        token.into_bytes()
    }

    /// The mail without its tokens, the splices at their places, and where
    /// each part lies in the mail as written.
    fn cut(
        self,
        raw: Vec<u8>,
        boundary: &str,
    ) -> std::io::Result<(Vec<u8>, Vec<Splice>, Vec<SplicedPart>)> {
        if self.pending.is_empty() {
            return Ok((raw, Vec::new(), Vec::new()));
        }
        let delimiter = format!("--{boundary}\r\n");
        let mut out = Vec::with_capacity(raw.len());
        let (mut splices, mut parts) = (Vec::new(), Vec::new());
        let (mut at, mut shift) = (0usize, 0u64);
        for (token, source) in self.pending {
            let found = memchr::memmem::find(&raw[at..], &token)
                .ok_or_else(|| std::io::Error::other("a spliced part's place was not found"))?;
            out.extend_from_slice(&raw[at..at + found]);
            let body = out.len();
            let start = memchr::memmem::rfind(&out, delimiter.as_bytes())
                .map_or(0, |i| i + delimiter.len());
            let name = part_file_name(&out[start..body]);
            let encoded = crate::spool::mime_base64_len(source.len());
            parts.push(SplicedPart {
                start: start as u64 + shift,
                body: body as u64 + shift,
                end: body as u64 + shift + encoded,
                name,
            });
            shift += encoded;
            splices.push(Splice { at: body, source });
            at += found + token.len();
        }
        out.extend_from_slice(&raw[at..]);
        Ok((out, splices, parts))
    }
}

/// The attachment name in a part's headers, as mail-parser reads it.
fn part_file_name(headers: &[u8]) -> String {
    use mail_parser::MimeHeaders;
    let mut mail = headers.to_vec();
    mail.extend_from_slice(b"\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(&mail)
        .and_then(|m| m.attachment_name().map(str::to_string))
        .unwrap_or_else(|| "attachment.bin".to_string())
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

/// Large files and long runs of text are streamed from spools into the mail:
/// what a reader of the mail gets must be what the export held.
#[cfg(test)]
mod spliced {
    use super::*;
    use crate::formats::ice::IceReader;
    use base64::Engine as _;
    use mail_parser::MimeHeaders;

    fn export(file: &[u8]) -> String {
        let mut encoded = Vec::new();
        crate::spool::write_mime_base64(&mut &file[..], &mut encoded).unwrap();
        let encoded = String::from_utf8(encoded).unwrap().replace("\r\n", "\n");
        format!(
            "<IceChatExport>\n<Conversation Id=\"c-1\" Type=\"OneToOne\">\n\
             <Participant ImId=\"a\" Email=\"a@acme.example\"/>\n\
             <Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">before</Message>\n\
             <FileTransfer ImId=\"a\" Timestamp=\"2026-11-20T08:01:00Z\" FileName=\"big.bin\" Size=\"{}\">\n{encoded}</FileTransfer>\n\
             <Message ImId=\"a\" Timestamp=\"2026-11-20T08:02:00Z\">after</Message>\n\
             </Conversation>\n<Conversation Id=\"c-2\"><Message ImId=\"a\">no time</Message></Conversation>\n\
             </IceChatExport>\n",
            file.len()
        )
    }

    #[test]
    fn a_spooled_file_and_the_original_xml_come_out_whole() {
        let file: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let xml = export(&file);
        let mut reader = IceReader::with_spill_limit(xml.as_bytes(), "f.xml", 1024);
        let conversation = reader.next().unwrap().unwrap();
        assert_eq!(
            conversation.original_spilled.len(),
            1,
            "the base64 run spilled"
        );
        let EventKind::FileTransfer(transfer) = &conversation.events[1].kind else {
            panic!("a file transfer");
        };
        assert!(transfer.content.as_bytes().is_none(), "kept in its spool");
        assert_eq!(transfer.content.to_vec().unwrap(), file);
        // A fault after the spilled run names its own line.
        let bad = reader.next().unwrap().unwrap_err();
        let want_line = xml[..xml.find("<Conversation Id=\"c-2\"").unwrap()]
            .lines()
            .count()
            + 1;
        assert!(
            bad.to_string().contains(&format!("line {want_line}")),
            "{bad} (want line {want_line})"
        );

        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let mails = build_mails(
            &conversation,
            &ConnectorConfig::ice(),
            &Lineage::default(),
            day,
        )
        .unwrap();
        let mail = &mails[0];
        assert_eq!(mail.splices.len(), 2, "the file and the original XML");
        let mut written = Vec::new();
        mail.write_to(&mut written).unwrap();
        assert_eq!(written.len() as u64, mail.len());

        let parsed = mail_parser::MessageParser::default()
            .parse(&written)
            .unwrap();
        let big = parsed
            .attachments()
            .find(|a| a.attachment_name() == Some("big.bin"))
            .expect("the file");
        assert_eq!(big.contents(), file.as_slice());
        let original = parsed
            .attachments()
            .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".xml")))
            .expect("the original XML");
        let start = xml.find("<Conversation Id=\"c-1\"").unwrap();
        let end = xml.find("</Conversation>").unwrap() + "</Conversation>".len();
        assert_eq!(original.contents(), &xml.as_bytes()[start..end]);
        assert!(String::from_utf8_lossy(&written).contains("after"));

        // The sidecar's places cut exactly the parts out of the mail.
        let wanted = [file.as_slice(), &xml.as_bytes()[start..end]];
        assert_eq!(mail.sidecar.spliced.len(), 2);
        for (part, want) in mail.sidecar.spliced.iter().zip(wanted) {
            let (from, body, to) = (part.start as usize, part.body as usize, part.end as usize);
            assert!(written[from..body].starts_with(b"Content-Type: "));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(
                    written[body..to]
                        .iter()
                        .copied()
                        .filter(|b| !b.is_ascii_whitespace())
                        .collect::<Vec<u8>>(),
                )
                .unwrap();
            assert!(
                decoded == want,
                "part {} decodes to what it stands for",
                part.name
            );
            assert_eq!(&written[to..to + 4], b"\r\n--");
        }
        assert_eq!(mail.sidecar.spliced[0].name, "big.bin");

        // Rendered again, the same bytes.
        let again = build_mails(
            &conversation,
            &ConnectorConfig::ice(),
            &Lineage::default(),
            day,
        )
        .unwrap();
        let mut rewritten = Vec::new();
        again[0].write_to(&mut rewritten).unwrap();
        assert!(rewritten == written, "a re-render is byte-identical");
    }

    #[test]
    fn a_spooled_mail_over_the_limit_sheds_its_spliced_file_by_the_sidecar() {
        let file: Vec<u8> = (0..80_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let xml = export(&file);
        let conversation = IceReader::with_spill_limit(xml.as_bytes(), "f.xml", 1024)
            .next()
            .unwrap()
            .unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let mail = build_mails(
            &conversation,
            &ConnectorConfig::ice(),
            &Lineage::default(),
            day,
        )
        .unwrap()
        .remove(0);
        let spool = crate::spool::Spool::write(|out| mail.write_to(out)).unwrap();
        let reduced = oversize::shed_spliced(&spool, &mail.sidecar.spliced, 50_000, |sha, name| {
            format!("attachments/{sha}/{name}")
        })
        .unwrap()
        .expect("reduced");
        assert!(reduced.raw.len() < 50_000, "{}", reduced.raw.len());
        let kept: Vec<Vec<u8>> = reduced
            .kept
            .iter()
            .map(|k| k.content.to_vec().unwrap())
            .collect();
        let start = xml.find("<Conversation Id=\"c-1\"").unwrap();
        let end = xml.find("</Conversation>").unwrap() + "</Conversation>".len();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&file), "the file is kept whole");
        assert!(
            kept.contains(&xml.as_bytes()[start..end].to_vec()),
            "and the original XML"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&reduced.raw)
            .unwrap();
        assert!(parsed
            .parts
            .iter()
            .any(|p| p.attachment_name() == Some("big.bin.kept-in-archive.txt")));
        assert!(parsed.text_bodies().count() > 0);
    }
}
