//! Streaming reader for ICE Chat XML exports.
//!
//! ICE does not publish a schema: `docs/ice-chat-format.md` defines what this
//! reader accepts. The reader pulls one `<Conversation>` at a time from a
//! [`BufRead`], so memory holds only the conversation being read (its parsed
//! events plus its raw bytes, which are kept as `original_xml`).
//!
//! Payload unwrapping (PGP, gzip, zip) happens before this reader: it only
//! reads plain UTF-8 XML.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use base64::engine::GeneralPurpose;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};
use quick_xml::Reader;

use super::filedump::{self, DumpEvent, Record};
use super::spill::SpillingReader;
use crate::error::{InputError, Place};
use crate::model::{ChatEvent, Conversation, EventKind, FileTransfer, Participant};
use crate::spool::{Content, Spool};

/// Name of the root element of an ICE Chat export.
pub const ROOT: &str = "IceChatExport";

const CONVERSATION: &[u8] = b"Conversation";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Capacity of an event buffer kept between events (see `with_buf`).
const MAX_KEPT_BUFFER: usize = 1 << 20;
/// How the reason of an error starts when the input ends inside an element:
/// a truncated file, or the first part of a file split in several.
pub const UNEXPECTED_EOF: &str = "unexpected end of file";
const DOCTYPE_REFUSED: &str = "DOCTYPE is not allowed (entity expansion / external entities)";

/// Exporters differ on padding and wrap lines, so padding is optional and
/// whitespace is stripped before decoding (see [`decode_base64`]).
const BASE64: GeneralPurpose = crate::spool::EXPORT_BASE64;

/// The vocabulary of an export, told by its root element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Vocabulary {
    /// `<IceChatExport>` (`docs/ice-chat-format.md`).
    #[default]
    IceChat,
    /// `<FileDump>`: the Actiance and Bloomberg forms
    /// (`docs/filedump-format.md`; which of the two, each conversation says).
    FileDump,
}

/// The attributes of the root element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportHeader {
    pub vocabulary: Vocabulary,
    pub firm_code: Option<String>,
    pub export_date: Option<NaiveDate>,
    pub version: Option<String>,
}

/// Why a conversation or the file could not be read.
///
/// A fault inside one conversation (invalid UTF-8, a bad timestamp, a missing
/// id, bad base64) spoils that conversation alone: the reader skips to its end
/// tag and goes on with the next one. A break of the XML syntax itself, or
/// the end of the file inside an element, leaves no end tag to find: the rest
/// of the file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Conversation(Box<BadConversation>),
    File(InputError),
}

/// A conversation that could not be read, with its raw bytes for quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadConversation {
    pub error: InputError,
    /// The conversation's `Id`, when it could be read.
    pub id: Option<String>,
    /// 1-based line of its start tag.
    pub line: u64,
    /// The conversation element as it is in the file, start to end tag,
    /// but for its runs of text too long to hold: those are in `spilled`,
    /// each at its offset in `raw` (see [`crate::spool::write_filled`]).
    pub raw: Vec<u8>,
    pub spilled: Vec<(usize, Arc<Spool>)>,
    /// Chat event elements in it, all of which go to quarantine with it.
    pub events: u64,
}

impl ReadError {
    pub fn input(&self) -> &InputError {
        match self {
            ReadError::Conversation(bad) => &bad.error,
            ReadError::File(error) => error,
        }
    }
}

impl std::ops::Deref for ReadError {
    type Target = InputError;
    fn deref(&self) -> &InputError {
        self.input()
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.input().fmt(f)
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for InputError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Conversation(bad) => bad.error,
            ReadError::File(error) => error,
        }
    }
}

impl From<ReadError> for crate::Error {
    fn from(error: ReadError) -> Self {
        crate::Error::Input(error.into())
    }
}

/// Iterator over the conversations of one ICE Chat export file.
///
/// Yields conversations in document order. A bad conversation is yielded as
/// [`ReadError::Conversation`] and reading goes on after it; after a
/// [`ReadError::File`] the iterator yields `None` (it is fused), and what was
/// read before it has been handed out.
pub struct IceReader<R: BufRead> {
    xml: Reader<Recorder<SpillingReader<R>>>,
    /// The target of the spill markers in the stream (see [`super::spill`]).
    spill_target: String,
    /// Runs of text spilled inside the current conversation: where their
    /// marker starts and ends, and the spool.
    spilled: Vec<(u64, u64, Arc<Spool>)>,
    /// Where each marker so far ends and how many lines the runs up to it
    /// held: positions after a spill still name the right line.
    spilled_lines: Vec<(u64, u64)>,
    file: String,
    header: Option<ExportHeader>,
    phase: Phase,
    /// Id and start line of the conversation being read; while set, the
    /// recorder keeps every byte (they become `original_xml`).
    current: Option<(String, u64)>,
    /// Unknown elements open between the root and the next conversation.
    wrappers: u64,
    /// Where each ImId sits in the current conversation's participants: a
    /// room of 100,000 participants must not cost a search of the list per
    /// participant and per message (quadratic time).
    roster: Roster,
    /// Event buffers, one per nesting level in use (see `with_buf`).
    bufs: Vec<Vec<u8>>,
    /// Reused to join the pieces of an element's text (see `Pieces`).
    scratch: String,
    /// Elements open at the current position (the root counts one).
    depth: u64,
    /// Set when the XML itself broke: no resynchronising after that.
    broken: std::cell::Cell<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the root element.
    Prolog,
    /// Inside the root element, between conversations.
    Root,
    /// After the root element closed: only whitespace, comments, PIs.
    Epilogue,
    Done,
}

impl<R: BufRead> IceReader<R> {
    /// `file` names the input in errors (e.g. the object key).
    pub fn new(reader: R, file: impl Into<String>) -> Self {
        Self::with_spill_limit(reader, file, super::spill::SPILL_AT)
    }

    /// Spills runs of text longer than `limit` (tests use small ones).
    pub fn with_spill_limit(reader: R, file: impl Into<String>, limit: usize) -> Self {
        let spilling = SpillingReader::with_limit(reader, limit);
        Self {
            spill_target: spilling.marker_target().to_string(),
            spilled: Vec::new(),
            spilled_lines: Vec::new(),
            xml: Reader::from_reader(Recorder::new(spilling)),
            file: file.into(),
            header: None,
            phase: Phase::Prolog,
            current: None,
            wrappers: 0,
            roster: Roster::default(),
            bufs: Vec::new(),
            scratch: String::new(),
            depth: 0,
            broken: std::cell::Cell::new(false),
        }
    }

    /// The root element's attributes, once the root element has been read
    /// (i.e. after the first call to `next()` unless that call failed before).
    pub fn header(&self) -> Option<&ExportHeader> {
        self.header.as_ref()
    }

    fn advance(&mut self) -> Result<Option<Conversation>, ReadError> {
        if self.phase == Phase::Prolog {
            self.read_prolog().map_err(ReadError::File)?;
        }
        if let Some(conversation) = self.with_buf(Self::next_conversation)? {
            return Ok(Some(conversation));
        }
        if self.phase == Phase::Epilogue {
            self.read_epilogue().map_err(ReadError::File)?;
        }
        Ok(None)
    }

    /// Reads on to the next conversation, or to the end of the root element.
    fn next_conversation(&mut self, buf: &mut Vec<u8>) -> Result<Option<Conversation>, ReadError> {
        while self.phase == Phase::Root {
            let (ev, at) = self.next_event(buf).map_err(ReadError::File)?;
            match ev {
                Ev::Start(tag) if is_conversation(&tag) => {
                    return self.read_conversation(&tag, at, false).map(Some)
                }
                Ev::Empty(tag) if is_conversation(&tag) => {
                    return self.read_conversation(&tag, at, true).map(Some)
                }
                // Unknown elements below the root are read through rather
                // than skipped, so that a wrapper (e.g. `<Conversations>`)
                // can never make conversations silently disappear.
                Ev::Start(_) => self.wrappers += 1,
                Ev::End if self.wrappers > 0 => self.wrappers -= 1,
                Ev::End => self.phase = Phase::Epilogue,
                Ev::Eof => return Err(ReadError::File(self.eof_error(at))),
                Ev::Empty(_) | Ev::Text(_) | Ev::Spilled(_) | Ev::Other => {}
            }
        }
        Ok(None)
    }

    /// Runs `read` with an event buffer from the pool, and gives it back. A
    /// buffer per nesting level lets events borrow from it while the level
    /// below reads on; reusing them spares an allocation per element.
    fn with_buf<T, E>(
        &mut self,
        read: impl FnOnce(&mut Self, &mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut buf = self.bufs.pop().unwrap_or_default();
        let result = read(self, &mut buf);
        // Not kept after a huge event (a message of hundreds of MB): its
        // capacity would stay allocated for the rest of the file, beside the
        // mails being built from that message.
        if buf.capacity() <= MAX_KEPT_BUFFER {
            self.bufs.push(buf);
        }
        result
    }

    fn read_prolog(&mut self) -> Result<(), InputError> {
        self.with_buf(|this, buf| loop {
            let (ev, at) = this.next_event(buf)?;
            match ev {
                Ev::Start(tag) => return this.open_root(&tag, at, false),
                Ev::Empty(tag) => return this.open_root(&tag, at, true),
                Ev::Text(text) if is_blank(&text) => {}
                Ev::Text(_) | Ev::Spilled(_) | Ev::End => {
                    let reason = format!("content before the root element; expected <{ROOT}>");
                    return Err(this.error_at(at, reason));
                }
                Ev::Eof => {
                    let reason = format!("no <{ROOT}> root element (empty document)");
                    return Err(this.error_at(at, reason));
                }
                Ev::Other => {}
            }
        })
    }

    fn open_root(&mut self, tag: &BytesStart<'_>, at: u64, empty: bool) -> Result<(), InputError> {
        let vocabulary = match tag.name().as_ref() {
            name if name == ROOT.as_bytes() => Vocabulary::IceChat,
            name if name == filedump::ROOT.as_bytes() => Vocabulary::FileDump,
            other => {
                let found = String::from_utf8_lossy(other).into_owned();
                let reason = format!(
                    "root element is <{found}>, expected <{ROOT}> or <{}>",
                    filedump::ROOT
                );
                return Err(self.error_at(at, reason));
            }
        };
        let attrs = self.attributes(tag, at)?;
        let export_date = match attrs.get("ExportDate") {
            Some(value) => Some(self.parse_date(value, at)?),
            None => None,
        };
        self.header = Some(ExportHeader {
            vocabulary,
            firm_code: attrs.get_owned("FirmCode"),
            export_date,
            version: attrs.get_owned("Version"),
        });
        // `<IceChatExport .../>` is a valid export without conversations.
        self.phase = if empty { Phase::Epilogue } else { Phase::Root };
        Ok(())
    }

    fn parse_date(&self, value: &str, at: u64) -> Result<NaiveDate, InputError> {
        NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
            let reason = format!("invalid ExportDate {value:?} (expected YYYY-MM-DD)");
            self.error_at(at, reason)
        })
    }

    fn read_epilogue(&mut self) -> Result<(), InputError> {
        self.with_buf(|this, buf| loop {
            let (ev, at) = this.next_event(buf)?;
            match ev {
                Ev::Eof => return Ok(()),
                Ev::Text(text) if is_blank(&text) => {}
                Ev::Other => {}
                Ev::Start(_) | Ev::Empty(_) | Ev::End | Ev::Text(_) | Ev::Spilled(_) => {
                    let reason = format!("content after the end of <{ROOT}>");
                    return Err(this.error_at(at, reason));
                }
            }
        })
    }

    fn read_conversation(
        &mut self,
        tag: &BytesStart<'_>,
        at: u64,
        empty: bool,
    ) -> Result<Conversation, ReadError> {
        // Depth inside this conversation's element: its end tag brings the
        // depth back below this.
        let inside = self.depth;
        let line = self.line_column(at).0;
        let id = self
            .attributes(tag, at)
            .ok()
            .and_then(|a| a.get_owned("Id"));
        self.current = Some((id.clone().unwrap_or_default(), line));
        self.spilled.clear();
        let result = self.conversation(tag, at, empty);
        let result = match result {
            Ok(conversation) => Ok(conversation),
            Err(error) if self.broken.get() => Err(ReadError::File(error)),
            Err(error) => {
                let inside = if empty { 0 } else { inside };
                self.resynchronise(error, id, line, at, inside)
            }
        };
        self.current = None;
        self.spilled.clear();
        result
    }

    /// The conversation's bytes between two offsets, each spilled run cut
    /// out of them and named with its place instead.
    fn original(&self, from: u64, to: u64) -> (Vec<u8>, Vec<(usize, Arc<Spool>)>) {
        let recorder = self.xml.get_ref();
        let mut bytes = Vec::new();
        let mut holes = Vec::new();
        let mut at = from;
        for (start, end, spool) in self.spilled.iter().filter(|s| s.0 >= from && s.1 <= to) {
            bytes.extend_from_slice(recorder.slice(at, *start));
            holes.push((bytes.len(), spool.clone()));
            at = *end;
        }
        bytes.extend_from_slice(recorder.slice(at, to));
        (bytes, holes)
    }

    /// Skips the rest of a bad conversation, up to its end tag, keeping its
    /// bytes. Further faults of the same kind inside it change nothing; a
    /// break of the XML makes the file unreadable from here.
    fn resynchronise(
        &mut self,
        error: InputError,
        id: Option<String>,
        line: u64,
        at: u64,
        inside: u64,
    ) -> Result<Conversation, ReadError> {
        let skipped = self.with_buf(|this, buf| {
            while inside > 0 && this.depth >= inside {
                if let Err(fatal) = this.next_event(buf) {
                    if this.broken.get() {
                        return Err(ReadError::File(fatal));
                    }
                }
            }
            Ok(())
        });
        skipped?;
        let end = self.xml.buffer_position();
        let (raw, spilled) = self.original(at, end);
        Err(ReadError::Conversation(Box::new(BadConversation {
            events: count_event_tags(&raw),
            error,
            id,
            line,
            raw,
            spilled,
        })))
    }

    fn conversation(
        &mut self,
        tag: &BytesStart<'_>,
        at: u64,
        empty: bool,
    ) -> Result<Conversation, InputError> {
        let line = self.line_column(at).0;
        self.roster.clear();
        if self.vocabulary() == Vocabulary::FileDump {
            return self.dump_conversation(at, line, empty);
        }
        let mut conv = self.conversation_head(tag, at, line)?;
        if !empty {
            self.conversation_body(&mut conv, true)?;
        }
        let end = self.xml.buffer_position();
        (conv.original_xml, conv.original_spilled) = self.original(at, end);
        Ok(conv)
    }

    fn vocabulary(&self) -> Vocabulary {
        self.header
            .as_ref()
            .map(|h| h.vocabulary)
            .unwrap_or_default()
    }

    /// A FileDump conversation: its fields and events are child elements.
    fn dump_conversation(
        &mut self,
        at: u64,
        line: u64,
        empty: bool,
    ) -> Result<Conversation, InputError> {
        let mut conv = Conversation {
            id: String::new(),
            kind: None,
            room_name: None,
            start: None,
            participants: Vec::new(),
            events: Vec::new(),
            original_xml: Vec::new(),
            original_spilled: Vec::new(),
            original_format: crate::model::OriginalFormat::FileDumpXml,
            line,
        };
        if !empty {
            self.dump_body(&mut conv)?;
        }
        if conv.id.is_empty() {
            return Err(self.error_at(at, "<Conversation> has no RoomID"));
        }
        let end = self.xml.buffer_position();
        (conv.original_xml, conv.original_spilled) = self.original(at, end);
        Ok(conv)
    }

    fn dump_body(&mut self, conv: &mut Conversation) -> Result<(), InputError> {
        self.with_buf(|this, buf| loop {
            let (ev, at) = this.next_event(buf)?;
            let tag = match ev {
                Ev::Start(tag) => tag,
                Ev::Empty(tag) => match DumpEvent::from_tag(tag.name().as_ref()) {
                    Some(kind) => {
                        let reason =
                            format!("<{}> {}", kind.as_str(), "has no DateTimeUTC or DateTime");
                        return Err(this.error_at(at, reason));
                    }
                    None => continue,
                },
                Ev::End => return Ok(()),
                Ev::Eof => return Err(this.eof_error(at)),
                Ev::Text(_) | Ev::Spilled(_) | Ev::Other => continue,
            };
            let name = tag.name();
            if let Some(kind) = DumpEvent::from_tag(name.as_ref()) {
                let record = this.dump_record(true)?;
                if record.has_user_block {
                    conv.original_format = crate::model::OriginalFormat::BloombergXml;
                }
                let event = filedump::event(kind, &record)
                    .map_err(|reason| this.error_at(at, format!("<{}> {reason}", kind.as_str())))?;
                if let Some(participant) = filedump::participant(&record) {
                    this.roster.add_met(conv, participant);
                }
                conv.events.push(event);
                continue;
            }
            match name.as_ref() {
                b"RoomID" => {
                    conv.id = this.element_text()?.trim().to_string();
                    if let Some((id, _)) = this.current.as_mut() {
                        id.clone_from(&conv.id);
                    }
                }
                field @ (b"StartTimeUTC" | b"StartTime") => {
                    let utc = field == b"StartTimeUTC";
                    let value = this.element_text()?;
                    if utc || conv.start.is_none() {
                        let time = filedump::parse_time(&value).ok_or_else(|| {
                            let field = if utc { "StartTimeUTC" } else { "StartTime" };
                            this.error_at(
                                at,
                                format!("<Conversation>: invalid {field} {:?}", value.trim()),
                            )
                        })?;
                        conv.start = Some(time);
                    }
                }
                _ => this.skip_element()?,
            }
        })
    }

    /// The fields of an event element (its child elements' text); a
    /// `<User>` block directly inside it is flattened in.
    fn dump_record(&mut self, user_allowed: bool) -> Result<Record, InputError> {
        self.with_buf(|this, buf| {
            let mut record = Record::default();
            loop {
                let (ev, at) = this.next_event(buf)?;
                match ev {
                    Ev::Start(tag) if user_allowed && tag.name().as_ref() == b"User" => {
                        record.has_user_block = true;
                        let user = this.dump_record(false)?;
                        record.fields.extend(user.fields);
                    }
                    Ev::Start(tag) => {
                        let name = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
                        let text = this.element_text()?;
                        record.fields.push((name, text));
                    }
                    Ev::End => return Ok(record),
                    Ev::Eof => return Err(this.eof_error(at)),
                    Ev::Empty(_) | Ev::Text(_) | Ev::Spilled(_) | Ev::Other => {}
                }
            }
        })
    }

    fn conversation_head(
        &self,
        tag: &BytesStart<'_>,
        at: u64,
        line: u64,
    ) -> Result<Conversation, InputError> {
        let attrs = self.attributes(tag, at)?;
        let Some(id) = attrs.get_owned("Id") else {
            return Err(self.error_at(at, "<Conversation> has no Id attribute"));
        };
        let start = match attrs.get("StartTime") {
            Some(value) => {
                let owner = format!("<Conversation Id={id:?}>");
                Some(self.parse_time(value, "StartTime", &owner, at)?)
            }
            None => None,
        };
        Ok(Conversation {
            id,
            kind: attrs.get_owned("Type"),
            room_name: attrs.get_owned("RoomName"),
            start,
            participants: Vec::new(),
            events: Vec::new(),
            original_xml: Vec::new(),
            original_spilled: Vec::new(),
            original_format: crate::model::OriginalFormat::IceXml,
            line,
        })
    }

    /// Reads the children of a conversation up to its end tag.
    /// `<Messages>` / `<Events>` containers are read through, one level deep
    /// (deeper nesting is skipped as unknown, which also bounds recursion).
    fn conversation_body(
        &mut self,
        conv: &mut Conversation,
        containers: bool,
    ) -> Result<(), InputError> {
        self.with_buf(|this, buf| loop {
            let (ev, at) = this.next_event(buf)?;
            match ev {
                Ev::Start(tag) => this.conversation_child(conv, &tag, at, false, containers)?,
                Ev::Empty(tag) => this.conversation_child(conv, &tag, at, true, containers)?,
                Ev::End => return Ok(()),
                Ev::Eof => return Err(this.eof_error(at)),
                Ev::Text(_) | Ev::Spilled(_) | Ev::Other => {}
            }
        })
    }

    fn conversation_child(
        &mut self,
        conv: &mut Conversation,
        tag: &BytesStart<'_>,
        at: u64,
        empty: bool,
        containers: bool,
    ) -> Result<(), InputError> {
        let name = tag.name();
        if let Some(kind) = EventName::from_tag(name.as_ref()) {
            let event = self.chat_event(conv, kind, tag, at, empty)?;
            conv.events.push(event);
            return Ok(());
        }
        match name.as_ref() {
            _ if empty => Ok(()),
            b"Participants" => self.participants(conv),
            b"Messages" | b"Events" if containers => self.conversation_body(conv, false),
            _ => self.skip_element(),
        }
    }

    fn participants(&mut self, conv: &mut Conversation) -> Result<(), InputError> {
        self.with_buf(|this, buf| loop {
            let (ev, at) = this.next_event(buf)?;
            match ev {
                Ev::Start(tag) => {
                    this.participant(conv, &tag, at)?;
                    this.skip_element()?;
                }
                Ev::Empty(tag) => this.participant(conv, &tag, at)?,
                Ev::End => return Ok(()),
                Ev::Eof => return Err(this.eof_error(at)),
                Ev::Text(_) | Ev::Spilled(_) | Ev::Other => {}
            }
        })
    }

    /// Adds a listed `<Participant>`; other elements inside `<Participants>`
    /// and participants without `ImId` (nothing refers to them) are ignored.
    fn participant(
        &mut self,
        conv: &mut Conversation,
        tag: &BytesStart<'_>,
        at: u64,
    ) -> Result<(), InputError> {
        if tag.name().as_ref() != b"Participant" {
            return Ok(());
        }
        let attrs = self.attributes(tag, at)?;
        let Some(im_id) = attrs.get_owned("ImId") else {
            return Ok(());
        };
        self.roster.add_listed(
            conv,
            Participant {
                im_id,
                name: attrs.get_owned("Name"),
                company: attrs.get_owned("Company"),
                email: attrs.get_owned("Email"),
            },
        );
        Ok(())
    }

    fn chat_event(
        &mut self,
        conv: &mut Conversation,
        kind: EventName,
        tag: &BytesStart<'_>,
        at: u64,
        empty: bool,
    ) -> Result<ChatEvent, InputError> {
        let attrs = self.attributes(tag, at)?;
        // The label names the element in errors only: built lazily, since
        // formatting it for every message costs a large share of parsing.
        let label = || event_label(kind, &attrs);
        let time = match attrs.get("Timestamp") {
            Some(value) => match parse_time(value) {
                Some(time) => time,
                None => return Err(self.time_error(value, "Timestamp", &label(), at)),
            },
            None => return Err(self.error_at(at, format!("{} has no Timestamp", label()))),
        };
        let is_file = kind == EventName::FileTransfer;
        let (text, spool) = if empty {
            (String::new(), None)
        } else {
            self.element_content(is_file)?
        };
        let im_id = attrs.get_owned("ImId").unwrap_or_default();
        self.roster.note_participants(conv, &im_id, &attrs);
        let kind = match kind {
            EventName::Message => EventKind::Message { text },
            EventName::Entered => EventKind::Entered,
            EventName::Left => EventKind::Left,
            EventName::Disclaimer => EventKind::Disclaimer { text },
            EventName::FileTransfer => {
                EventKind::FileTransfer(self.file_transfer(&attrs, &text, spool, &label(), at)?)
            }
        };
        Ok(ChatEvent {
            id: attrs.get_owned("Id"),
            time,
            im_id,
            kind,
        })
    }

    fn file_transfer(
        &self,
        attrs: &Attrs,
        text: &str,
        spool: Option<Arc<Spool>>,
        label: &str,
        at: u64,
    ) -> Result<FileTransfer, InputError> {
        let content = match spool {
            Some(spool) => Content::from_base64_spool(spool)
                .map_err(|e| self.error_at(at, format!("{label}: {e}")))?,
            None => Content::Bytes(decode_base64(text).map_err(|e| {
                self.error_at(at, format!("{label}: content is not valid base64: {e}"))
            })?),
        };
        if let Some(size) = attrs.get("Size") {
            self.check_size(size, content.len(), label, at)?;
        }
        // A file needs a name for the mail attachment: fall back to the id.
        let file_name = attrs
            .get("FileName")
            .or_else(|| attrs.get("Id"))
            .unwrap_or("attachment");
        Ok(FileTransfer {
            file_name: file_name.to_owned(),
            content_type: attrs.get_owned("ContentType"),
            content,
        })
    }

    fn check_size(&self, size: &str, actual: u64, label: &str, at: u64) -> Result<(), InputError> {
        let Ok(expected) = size.parse::<u64>() else {
            let reason = format!("{label}: Size {size:?} is not a whole number of bytes");
            return Err(self.error_at(at, reason));
        };
        if actual != expected {
            let reason =
                format!("{label}: Size says {expected} bytes but the content decodes to {actual}");
            return Err(self.error_at(at, reason));
        }
        Ok(())
    }

    /// The character data directly inside the current element (text, CDATA,
    /// references), up to its end tag. Child elements are skipped: their
    /// content survives only in `original_xml`.
    fn element_text(&mut self) -> Result<String, InputError> {
        self.element_content(false).map(|(text, _)| text)
    }

    /// The same, except that text which is one spilled run (blanks aside)
    /// stays in its spool when `keep_spool`: a file's base64 is decoded from
    /// there, never held whole.
    fn element_content(
        &mut self,
        keep_spool: bool,
    ) -> Result<(String, Option<Arc<Spool>>), InputError> {
        let mut joined = std::mem::take(&mut self.scratch);
        joined.clear();
        let content = self.with_buf(|this, buf| {
            let mut text = Pieces {
                owned: None,
                joined: &mut joined,
            };
            // The spool kept, its marker's place, and the text before it.
            let mut kept: Option<(Arc<Spool>, u64, usize)> = None;
            loop {
                let (ev, at) = this.next_event(buf)?;
                match ev {
                    Ev::Text(piece) => text.push(piece),
                    Ev::Spilled(spool) if keep_spool && kept.is_none() => {
                        kept = Some((spool, at, text.len()));
                    }
                    Ev::Spilled(spool) => text.push(Cow::Owned(this.spilled_text(&spool, at)?)),
                    Ev::Start(_) => this.skip_element()?,
                    Ev::End => break,
                    Ev::Eof => return Err(this.eof_error(at)),
                    Ev::Empty(_) | Ev::Other => {}
                }
            }
            let mut text = text.into_string();
            match kept {
                Some((spool, _, _)) if is_blank(&text) => Ok((String::new(), Some(spool))),
                // Text beside the run: the whole is text after all.
                Some((spool, at, before)) => {
                    text.insert_str(before, &this.spilled_text(&spool, at)?);
                    Ok((text, None))
                }
                None => Ok((text, None)),
            }
        });
        if joined.capacity() <= MAX_KEPT_BUFFER {
            self.scratch = joined;
        }
        content
    }

    /// A spilled run read back as text (for a message, not a file): its
    /// references resolved, its UTF-8 checked.
    fn spilled_text(&self, spool: &Spool, at: u64) -> Result<String, InputError> {
        let raw = spool
            .read_all()
            .map_err(|e| self.error_at(at, format!("reading spilled text: {e}")))?;
        let raw = String::from_utf8(raw)
            .map_err(|e| self.error_at(at, format!("invalid UTF-8 in text: {e}")))?;
        match quick_xml::escape::unescape(&raw) {
            Ok(Cow::Borrowed(_)) => Ok(raw),
            Ok(Cow::Owned(text)) => Ok(text),
            Err(e) => Err(self.error_at(at, format!("malformed XML: {e}"))),
        }
    }

    /// Skips to the end tag of an element whose start tag was just read.
    /// Iterative, so deep nesting cannot exhaust the stack.
    fn skip_element(&mut self) -> Result<(), InputError> {
        self.with_buf(|this, buf| {
            let mut depth: u64 = 1;
            while depth > 0 {
                let (ev, at) = this.next_event(buf)?;
                match ev {
                    Ev::Start(_) => depth += 1,
                    Ev::End => depth -= 1,
                    Ev::Eof => return Err(this.eof_error(at)),
                    Ev::Empty(_) | Ev::Text(_) | Ev::Spilled(_) | Ev::Other => {}
                }
            }
            Ok(())
        })
    }

    /// Reads the next XML event into `buf` (which it borrows from), with the
    /// byte offset where it starts. Every event's raw bytes are checked for
    /// UTF-8 here, so skipped content is validated too.
    fn next_event<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<(Ev<'b>, u64), InputError> {
        let at = self.xml.buffer_position();
        if self.current.is_none() {
            // Between conversations nothing before this event is needed again.
            self.xml.get_mut().forget_before(at);
        }
        // The capacity of a huge event is not carried into the next one.
        if buf.capacity() > MAX_KEPT_BUFFER {
            *buf = Vec::new();
        }
        buf.clear();
        self.read_event(buf, at).map(|ev| (ev, at))
    }

    fn read_event<'b>(&mut self, buf: &'b mut Vec<u8>, at: u64) -> Result<Ev<'b>, InputError> {
        let event = self
            .xml
            .read_event_into(buf)
            .map_err(|e| self.xml_error(&e))?;
        match event {
            Event::Start(_) => self.depth += 1,
            Event::End(_) => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        self.check_utf8(at)?;
        match event {
            Event::Start(tag) => Ok(Ev::Start(tag)),
            Event::Empty(tag) => Ok(Ev::Empty(tag)),
            Event::End(_) => Ok(Ev::End),
            Event::Text(text) => self.text(text.xml10_content(), at),
            Event::CData(data) => self.text(data.xml10_content(), at),
            Event::GeneralRef(reference) => resolve_reference(&reference)
                .map(Ev::Text)
                .map_err(|reason| self.error_at(at, reason)),
            Event::DocType(_) => Err(self.error_at(at, DOCTYPE_REFUSED)),
            Event::Decl(decl) => check_declared_encoding(&decl)
                .map(|()| Ev::Other)
                .map_err(|reason| self.error_at(at, reason)),
            Event::PI(pi) if pi.target() == self.spill_target.as_bytes() => {
                Ok(self.spilled_run(&pi, at))
            }
            Event::Comment(_) | Event::PI(_) => Ok(Ev::Other),
            Event::Eof => Ok(Ev::Eof),
        }
    }

    /// A marker of a spilled run: its spool, remembered for the
    /// conversation's original bytes and its lines for later positions.
    fn spilled_run<'b>(&mut self, pi: &quick_xml::events::BytesPI<'_>, at: u64) -> Ev<'b> {
        let index = std::str::from_utf8(pi.content())
            .ok()
            .and_then(|c| c.rsplit(' ').next())
            .and_then(|i| i.parse::<usize>().ok());
        let end = self.xml.buffer_position();
        let Some((spool, lines)) = index.and_then(|i| self.xml.get_mut().inner.take_spill(i))
        else {
            return Ev::Other;
        };
        let before = self.spilled_lines.last().map_or(0, |l| l.1);
        self.spilled_lines.push((end, before + lines));
        if self.current.is_some() {
            self.spilled.push((at, end, spool.clone()));
        }
        Ev::Spilled(spool)
    }

    fn text<'b>(
        &self,
        decoded: Result<Cow<'b, str>, quick_xml::encoding::EncodingError>,
        at: u64,
    ) -> Result<Ev<'b>, InputError> {
        decoded
            .map(Ev::Text)
            .map_err(|e| self.error_at(at, format!("invalid text: {e}")))
    }

    /// Checks the raw bytes of the event just read. The recorder validates
    /// whole chunks as they arrive, so this only looks again at an event that
    /// holds a byte the chunk check stopped at (a fault, or a character cut
    /// by the end of the input): the error names that byte, as it did when
    /// each event was checked on its own.
    fn check_utf8(&mut self, at: u64) -> Result<(), InputError> {
        let end = self.xml.buffer_position();
        if self.xml.get_ref().is_utf8_before(end) {
            return Ok(());
        }
        let checked = self.check_event_utf8(at, end);
        self.xml.get_mut().judged_before(end);
        checked
    }

    /// Events end at `<` or `>`, so a multi-byte character is never split
    /// between two events.
    fn check_event_utf8(&self, at: u64, end: u64) -> Result<(), InputError> {
        let raw = self.xml.get_ref().slice(at, end);
        let Err(e) = std::str::from_utf8(raw) else {
            return Ok(());
        };
        if let Some(hint) = packed_hint(at, raw) {
            return Err(self.error_at(at, hint));
        }
        let bad = at.saturating_add(u64::try_from(e.valid_up_to()).unwrap_or(0));
        Err(self.error_at(bad, "invalid UTF-8: ICE exports must be encoded in UTF-8"))
    }

    /// The tag's attributes, borrowed from it unless they hold references.
    fn attributes<'t>(&self, tag: &'t BytesStart<'_>, at: u64) -> Result<Attrs<'t>, InputError> {
        if let Some(attrs) = plain_attributes(tag.attributes_raw()) {
            return Ok(Attrs(attrs));
        }
        let decoder = self.xml.decoder();
        let mut attrs = Vec::with_capacity(8);
        for attr in tag.attributes() {
            let attr = attr.map_err(|e| self.attribute_error(&e, at))?;
            let value = attr
                .decode_and_unescape_value(decoder)
                .map_err(|e| self.error_at(at, format!("malformed XML: {e}")))?;
            attrs.push((attr.key.into_inner(), value));
        }
        Ok(Attrs(attrs))
    }

    /// quick-xml counts attribute positions from just after the tag's `<`.
    fn attribute_error(&self, error: &AttrError, at: u64) -> InputError {
        use AttrError::*;
        let (position, problem) = match *error {
            ExpectedEq(p) => (p, "attribute name must be followed by `=`".to_owned()),
            ExpectedValue(p) => (p, "`=` must be followed by an attribute value".to_owned()),
            UnquotedValue(p) => (p, "attribute value must be quoted".to_owned()),
            ExpectedQuote(p, quote) => (p, format!("missing closing quote `{}`", quote as char)),
            Duplicated(p, _) => (p, "duplicated attribute".to_owned()),
        };
        let offset = u64::try_from(position).unwrap_or(0).saturating_add(1);
        self.error_at(
            at.saturating_add(offset),
            format!("malformed XML: {problem}"),
        )
    }

    fn parse_time(
        &self,
        value: &str,
        attribute: &str,
        owner: &str,
        at: u64,
    ) -> Result<DateTime<Utc>, InputError> {
        parse_time(value).ok_or_else(|| self.time_error(value, attribute, owner, at))
    }

    fn time_error(&self, value: &str, attribute: &str, owner: &str, at: u64) -> InputError {
        let reason = format!(
            "{owner}: invalid {attribute} {value:?} \
             (expected RFC 3339, e.g. 2026-11-20T08:01:02Z)"
        );
        self.error_at(at, reason)
    }

    fn xml_error(&self, error: &quick_xml::Error) -> InputError {
        self.broken.set(true);
        use quick_xml::errors::SyntaxError;
        let reason = match error {
            quick_xml::Error::Io(e) => format!("read error: {e}"),
            // Every "unclosed" syntax error means the input ended first.
            quick_xml::Error::Syntax(
                e @ (SyntaxError::UnclosedTag
                | SyntaxError::UnclosedCData
                | SyntaxError::UnclosedComment
                | SyntaxError::UnclosedPIOrXmlDecl
                | SyntaxError::UnclosedDoctype),
            ) => format!("{UNEXPECTED_EOF}: malformed XML: {e}"),
            other => format!("malformed XML: {other}"),
        };
        self.error_at(self.xml.error_position(), reason)
    }

    fn eof_error(&self, at: u64) -> InputError {
        self.broken.set(true);
        let reason = match &self.current {
            Some((id, line)) => format!(
                "{UNEXPECTED_EOF} inside <Conversation Id=\"{id}\"> (opened at line {line})"
            ),
            None => {
                let root = match self.vocabulary() {
                    Vocabulary::IceChat => ROOT,
                    Vocabulary::FileDump => filedump::ROOT,
                };
                format!("{UNEXPECTED_EOF}: <{root}> is not closed")
            }
        };
        self.error_at(at, reason)
    }

    fn error_at(&self, position: u64, reason: impl Into<String>) -> InputError {
        let (line, column) = self.line_column(position);
        InputError::new(
            self.file.clone(),
            Place::LineColumn { line, column },
            reason,
        )
    }

    fn line_column(&self, position: u64) -> (u64, u64) {
        let (line, column) = self.xml.get_ref().line_column(position);
        let spilled = self.spilled_lines.partition_point(|l| l.0 <= position);
        let extra = spilled
            .checked_sub(1)
            .map_or(0, |i| self.spilled_lines[i].1);
        (line + extra, column)
    }
}

impl<R: BufRead> Iterator for IceReader<R> {
    type Item = Result<Conversation, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.phase == Phase::Done {
            return None;
        }
        match self.advance() {
            Ok(Some(conversation)) => Some(Ok(conversation)),
            Ok(None) => {
                self.phase = Phase::Done;
                None
            }
            Err(error @ ReadError::Conversation(_)) => Some(Err(error)),
            Err(error) => {
                self.phase = Phase::Done;
                Some(Err(error))
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for IceReader<R> {}

/// An XML event, borrowed from the event buffer it was read into.
enum Ev<'b> {
    Start(BytesStart<'b>),
    Empty(BytesStart<'b>),
    End,
    /// Decoded character data: text, CDATA or one resolved reference.
    Text(Cow<'b, str>),
    /// Declaration, comment, processing instruction.
    Other,
    /// A run of text too long to hold, in its spool (raw, as in the file).
    Spilled(Arc<Spool>),
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventName {
    Message,
    Entered,
    Left,
    Disclaimer,
    FileTransfer,
}

impl EventName {
    fn from_tag(name: &[u8]) -> Option<Self> {
        match name {
            b"Message" => Some(Self::Message),
            b"Entered" => Some(Self::Entered),
            b"Left" => Some(Self::Left),
            b"Disclaimer" => Some(Self::Disclaimer),
            b"FileTransfer" => Some(Self::FileTransfer),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Message => "Message",
            Self::Entered => "Entered",
            Self::Left => "Left",
            Self::Disclaimer => "Disclaimer",
            Self::FileTransfer => "FileTransfer",
        }
    }
}

/// The pieces of an element's text (text around references, CDATA). An
/// owned first piece is kept as it is: a message of hundreds of MB is usually
/// one piece, moved rather than copied. Borrowed pieces are joined in a
/// reused string, so the text is allocated once, at its final size, rather
/// than grown piece by piece.
struct Pieces<'j> {
    owned: Option<String>,
    joined: &'j mut String,
}

impl Pieces<'_> {
    fn push(&mut self, piece: Cow<'_, str>) {
        match (self.owned.take(), piece) {
            (None, Cow::Owned(piece)) if self.joined.is_empty() => self.owned = Some(piece),
            (owned, piece) => {
                if let Some(owned) = owned {
                    self.joined.push_str(&owned);
                }
                self.joined.push_str(&piece);
            }
        }
    }

    fn len(&self) -> usize {
        self.owned.as_ref().map_or(self.joined.len(), String::len)
    }

    fn into_string(self) -> String {
        match self.owned {
            Some(owned) => owned,
            None => self.joined.as_str().to_owned(),
        }
    }
}

/// Unescaped attribute values by name. Values are trimmed and an empty value
/// counts as absent, because exporters write `Email=""` for "unknown".
struct Attrs<'t>(Vec<(&'t [u8], Cow<'t, str>)>);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    fn get_owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

/// The attributes of a tag, when they are well-formed, unique, and hold no
/// reference: split here in one pass, borrowed from the tag, with one UTF-8
/// check for the whole tag. quick-xml's attribute iterator gives the same
/// keys and values for such a tag, at several times the cost (a message's
/// attributes were the largest share of parsing). Any other tag (`None`) is
/// read by that iterator, which reports the faults.
fn plain_attributes(raw: &[u8]) -> Option<Vec<(&[u8], Cow<'_, str>)>> {
    let text = std::str::from_utf8(raw).ok()?;
    let bytes = text.as_bytes();
    let space = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|&b| is_xml_space(b)) {
            *i += 1;
        }
    };
    let mut attrs = Vec::with_capacity(8);
    let mut i = 0;
    loop {
        space(&mut i);
        if i == bytes.len() {
            return Some(attrs);
        }
        let key_start = i;
        while bytes.get(i).is_some_and(|&b| b != b'=' && !is_xml_space(b)) {
            i += 1;
        }
        let key = &bytes[key_start..i];
        space(&mut i);
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        space(&mut i);
        let quote = *bytes.get(i).filter(|&&q| q == b'"' || q == b'\'')?;
        let start = i + 1;
        let length = bytes.get(start..)?.iter().position(|&b| b == quote)?;
        // Both ends are ASCII quotes, so both are character boundaries.
        let value = text.get(start..start + length)?;
        if value.contains('&') || attrs.iter().any(|(k, _)| *k == key) {
            return None;
        }
        attrs.push((key, Cow::Borrowed(value)));
        i = start + length + 1;
    }
}

/// XML's white space, as quick-xml reads it between attributes.
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n' | b'\t')
}

/// `<Message Id="m-1">` or `<Entered ImId="x">`: names the element in errors.
fn event_label(kind: EventName, attrs: &Attrs) -> String {
    let name = kind.as_str();
    match (attrs.get("Id"), attrs.get("ImId")) {
        (Some(id), _) => format!("<{name} Id={id:?}>"),
        (None, Some(im_id)) => format!("<{name} ImId={im_id:?}>"),
        (None, None) => format!("<{name}>"),
    }
}

/// The participants of the conversation being read, indexed by ImId.
#[derive(Default)]
struct Roster {
    /// ImId -> position in `Conversation::participants`.
    index: HashMap<String, usize>,
}

impl Roster {
    /// Forgets the previous conversation.
    fn clear(&mut self) {
        self.index.clear();
    }

    /// The participant with this ImId, or a new one (with only the ImId)
    /// appended to the conversation's list.
    fn entry<'c>(&mut self, conv: &'c mut Conversation, im_id: &str) -> &'c mut Participant {
        let known = self.index.get(im_id).copied();
        // The index only ever holds positions of pushed participants; should
        // it not (a conversation swapped under the reader), the participant
        // is added again rather than indexing out of bounds.
        let position = match known.filter(|&i| i < conv.participants.len()) {
            Some(position) => position,
            None => {
                conv.participants.push(Participant {
                    im_id: im_id.to_owned(),
                    ..Participant::default()
                });
                let position = conv.participants.len() - 1;
                self.index.insert(im_id.to_owned(), position);
                position
            }
        };
        &mut conv.participants[position]
    }

    /// A listed participant. A repeated `ImId` (or one already added from a
    /// message) is merged: listed details win, missing ones are kept.
    fn add_listed(&mut self, conv: &mut Conversation, listed: Participant) {
        let known = self.entry(conv, &listed.im_id);
        known.name = listed.name.or(known.name.take());
        known.company = listed.company.or(known.company.take());
        known.email = listed.email.or(known.email.take());
    }

    /// A participant met in an event (FileDump): details missing so far are
    /// filled in, known ones kept (a later event may carry fewer fields).
    fn add_met(&mut self, conv: &mut Conversation, met: Participant) {
        let known = self.entry(conv, &met.im_id);
        known.name = known.name.take().or(met.name);
        known.company = known.company.take().or(met.company);
        known.email = known.email.take().or(met.email);
    }

    /// Makes sure everyone who acts in or receives an event is a participant,
    /// and fills missing emails from `SenderEmail` / `RecipientEmail`, so that
    /// mapping to mailboxes can rely on `participants` alone.
    fn note_participants(&mut self, conv: &mut Conversation, im_id: &str, attrs: &Attrs) {
        self.involve(conv, im_id, attrs.get("SenderEmail"));
        if let Some(recipient) = attrs.get("RecipientImId") {
            self.involve(conv, recipient, attrs.get("RecipientEmail"));
        }
    }

    fn involve(&mut self, conv: &mut Conversation, im_id: &str, email: Option<&str>) {
        if im_id.is_empty() {
            return;
        }
        let known = self.entry(conv, im_id);
        if known.email.is_none() {
            known.email = email.map(str::to_owned);
        }
    }
}

/// Chat event elements in the raw bytes of a conversation (a count for the
/// status log when the conversation itself could not be read).
fn count_event_tags(raw: &[u8]) -> u64 {
    let mut count = 0;
    for (i, _) in raw.iter().enumerate().filter(|(_, &b)| b == b'<') {
        let rest = &raw[i + 1..];
        let name_len = rest
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let after = rest.get(name_len).copied();
        let ends_name = matches!(after, Some(b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/'));
        if ends_name && EventName::from_tag(&rest[..name_len]).is_some() {
            count += 1;
        }
    }
    count
}

fn is_conversation(tag: &BytesStart<'_>) -> bool {
    tag.name().as_ref() == CONVERSATION
}

fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_whitespace())
}

/// RFC 3339 with `Z` or an offset, converted to UTC; or a zone-less
/// `YYYY-MM-DDTHH:MM:SS[.fff]`, which ICE exports use for UTC.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if let Some(time) = parse_plain_utc(value) {
        return Some(time);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|time| time.and_utc())
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form nearly every export writes, read
/// without chrono's general parsers (which cost a large share of parsing).
/// Anything else, or anything it would have to judge (a leap second, a year
/// before 1000), is left to them: `None` here means "not this form", and the
/// general parsers give the same time for every value this one accepts.
fn parse_plain_utc(value: &str) -> Option<DateTime<Utc>> {
    let b = value.as_bytes();
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ];
    if b.len() != 20 || separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(0, 4)?).ok().filter(|&y| y >= 1000)?;
    let date = NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?;
    let time = date.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)?;
    Some(time.and_utc())
}

fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64.decode(compact)
}

/// Character references, and the five predefined entities. Anything else
/// would need a DTD, which is refused.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>, String> {
    match reference.resolve_char_ref() {
        Ok(Some(c)) => return Ok(Cow::Owned(c.to_string())),
        Ok(None) => {}
        Err(e) => return Err(format!("malformed XML: {e}")),
    }
    let name = reference
        .decode()
        .map_err(|e| format!("malformed XML: {e}"))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| format!("malformed XML: unknown entity &{name}; (no DTD is allowed)"))
}

/// The declaration may only announce UTF-8: the reader decodes nothing else.
fn check_declared_encoding(decl: &BytesDecl<'_>) -> Result<(), String> {
    match decl.encoding() {
        None => Ok(()),
        Some(Ok(name)) if is_utf8_name(&name) => Ok(()),
        Some(Ok(name)) => Err(format!(
            "declared encoding {:?} is not supported: ICE exports must be UTF-8",
            String::from_utf8_lossy(&name)
        )),
        Some(Err(e)) => Err(format!("malformed XML declaration: {e}")),
    }
}

fn is_utf8_name(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"utf-8") || name.eq_ignore_ascii_case(b"utf8")
}

/// Compressed payloads reach this reader only by mistake (unwrapping is done
/// upstream): name the cause instead of reporting garbage as bad UTF-8.
fn packed_hint(at: u64, raw: &[u8]) -> Option<&'static str> {
    if at != 0 {
        None
    } else if raw.starts_with(b"\x1F\x8B") {
        Some("input is gzip-compressed: the payload must be unwrapped before XML parsing")
    } else if raw.starts_with(b"PK\x03\x04") {
        Some("input is a ZIP archive: the payload must be unwrapped before XML parsing")
    } else {
        None
    }
}

/// A `BufRead` adapter that keeps the bytes quick-xml consumes, from offset
/// `base` on. It gives the exact input of a conversation (for
/// `original_xml`) and line/column of any kept offset, without holding the
/// whole file: the reader marks what lies before the current event as no
/// longer needed whenever it is between conversations.
///
/// Kept and not yet consumed bytes share one buffer, so consuming copies
/// nothing; what was marked is dropped only when the buffer is refilled.
///
/// It also drops a leading UTF-8 BOM itself, because quick-xml skips a BOM
/// without counting it in its positions, which would shift every offset.
struct Recorder<R> {
    inner: R,
    /// Bytes from absolute offset `base` on: consumed up to `pos`, handed
    /// out from there.
    data: Vec<u8>,
    pos: usize,
    started: bool,
    base: u64,
    /// Bytes of `data` before this index are no longer needed.
    forget: usize,
    /// Bytes of `data` before this index are valid UTF-8, or belong to an
    /// event whose check reported the fault (see `IceReader::check_utf8`).
    utf8: usize,
    /// 1-based line of offset `base`, and characters before it on that line.
    base_line: u64,
    base_column: u64,
    /// The same for a later offset: lines are asked for in file order (each
    /// conversation's start), so counting from the last answer counts every
    /// byte once, not once per question.
    cursor: Cell<(u64, u64, u64)>,
}

impl<R: BufRead> Recorder<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            data: Vec::new(),
            pos: 0,
            started: false,
            base: 0,
            forget: 0,
            utf8: 0,
            base_line: 1,
            base_column: 0,
            cursor: Cell::new((0, 1, 0)),
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        self.drop_forgotten();
        self.pull()?;
        if !self.started {
            self.started = true;
            self.drop_bom()?;
        }
        self.validate();
        Ok(())
    }

    /// Extends the valid UTF-8 prefix as far as the data goes: one check per
    /// chunk costs far less than one per event. It stops before a character
    /// cut by the end of the chunk (the next chunk completes it) and at an
    /// invalid byte (the event holding it is checked on its own).
    fn validate(&mut self) {
        let rest = self.data.get(self.utf8..).unwrap_or_default();
        self.utf8 += match std::str::from_utf8(rest) {
            Ok(_) => rest.len(),
            Err(e) => e.valid_up_to(),
        };
    }

    /// Whether the bytes before an absolute offset are known to be valid.
    fn is_utf8_before(&self, offset: u64) -> bool {
        self.index(offset) <= self.utf8
    }

    /// The event ending at `offset` has been checked on its own: validation
    /// goes on after it.
    fn judged_before(&mut self, offset: u64) {
        self.utf8 = self.utf8.max(self.index(offset));
        self.validate();
    }

    /// Drops the marked bytes, counting the lines they held.
    fn drop_forgotten(&mut self) {
        let cut = self.forget.min(self.pos);
        if cut == 0 {
            return;
        }
        (self.base_line, self.base_column) = self.count_to(cut);
        self.data.drain(..cut);
        self.base += u64::try_from(cut).unwrap_or(0);
        self.pos -= cut;
        self.utf8 = self.utf8.saturating_sub(cut);
        self.forget = 0;
    }

    /// Line and characters before an index of `data` on its line, counted
    /// from the cursor when it lies before the index, else from `base`.
    fn count_to(&self, index: usize) -> (u64, u64) {
        let (at, mut line, mut column) = self.cursor.get();
        let from = match at.checked_sub(self.base).map(usize::try_from) {
            Some(Ok(from)) if from <= index => from,
            _ => {
                (line, column) = (self.base_line, self.base_column);
                0
            }
        };
        count_lines(&self.data[from..index], &mut line, &mut column);
        let offset = self.base + u64::try_from(index).unwrap_or(0);
        self.cursor.set((offset, line, column));
        (line, column)
    }

    /// Appends the inner reader's next buffer to `data`; returns its length.
    fn pull(&mut self) -> io::Result<usize> {
        let data = self.inner.fill_buf()?;
        let n = data.len();
        self.data.extend_from_slice(data);
        self.inner.consume(n);
        Ok(n)
    }

    fn drop_bom(&mut self) -> io::Result<()> {
        // The inner reader may hand out fewer than three bytes at a time.
        while self.data.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(&self.data) {
            if self.pull()? == 0 {
                break;
            }
        }
        if self.data.starts_with(UTF8_BOM) {
            self.data.drain(..UTF8_BOM.len());
        }
        Ok(())
    }

    /// Kept bytes between two absolute offsets (clamped to what is kept).
    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let start = self.index(from);
        let end = self.index(to).max(start);
        &self.data[start..end]
    }

    /// Index in `data` of an offset, clamped to the consumed bytes.
    fn index(&self, offset: u64) -> usize {
        let relative = offset.saturating_sub(self.base);
        usize::try_from(relative)
            .unwrap_or(usize::MAX)
            .min(self.pos)
    }

    fn forget_before(&mut self, offset: u64) {
        self.forget = self.index(offset);
    }

    /// 1-based line and column (in characters) of an offset; offsets before
    /// `base` are reported at `base`.
    fn line_column(&self, offset: u64) -> (u64, u64) {
        let (line, column) = self.count_to(self.index(offset));
        (line, column + 1)
    }
}

/// Advances a line / column count over UTF-8 bytes: a column is a character,
/// so continuation bytes do not count. Written as whole-slice counts, which
/// the compiler vectorises, rather than a branch per byte: the bytes of every
/// conversation pass through here.
fn count_lines(bytes: &[u8], line: &mut u64, column: &mut u64) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => {
            *line += count_bytes(bytes, |b| b == b'\n');
            *column = count_bytes(&bytes[last + 1..], |b| b & 0xC0 != 0x80);
        }
        None => *column += count_bytes(bytes, |b| b & 0xC0 != 0x80),
    }
}

/// Bytes that match, counted in runs of 255 with a byte-wide sum, so the
/// compiler can add 16 or 32 bytes per instruction.
fn count_bytes(bytes: &[u8], matches: impl Fn(u8) -> bool) -> u64 {
    bytes
        .chunks(255)
        .map(|run| {
            let count = run
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(matches(b))));
            u64::from(count)
        })
        .sum()
}

impl<R: BufRead> Read for Recorder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Recorder<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.data.len() {
            self.refill()?;
        }
        Ok(&self.data[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = self.pos.saturating_add(amount).min(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SAMPLE: &str = include_str!("../../../../examples/ice/sample-export.xml");

    fn read_all(xml: &str) -> Vec<Result<Conversation, InputError>> {
        IceReader::new(xml.as_bytes(), "test.xml")
            .map(|r| r.map_err(InputError::from))
            .collect()
    }

    #[test]
    fn reads_the_actiance_filedump_sample() {
        let xml = include_str!("../../../../examples/filedump/actiance-sample.xml");
        let mut reader = IceReader::new(xml.as_bytes(), "actiance-sample.xml");
        let conv = reader.next().expect("one").expect("valid");
        assert!(reader.next().is_none());
        assert_eq!(
            reader.header().map(|h| h.vocabulary),
            Some(Vocabulary::FileDump)
        );
        assert_eq!(
            conv.original_format,
            crate::model::OriginalFormat::FileDumpXml
        );
        assert_eq!(conv.id, "rates-desk-2026-11-20");
        assert_eq!(conv.start, Some(utc(8, 0, 0)));
        assert_eq!(conv.events.len(), 8);
        assert_eq!(
            texts(&conv),
            [
                "Morning Zoë, can you show Dec/Jan?",
                "1.2 / 1.4, good for 50"
            ]
        );
        // Seconds and milliseconds mixed in one file.
        assert_eq!(conv.events[1].time, utc(8, 0, 2));
        assert_eq!(conv.events[3].time, utc(8, 2, 5));
        let zoe = conv.participant("zmuller7").expect("zoe");
        assert_eq!(zoe.email.as_deref(), Some("zoe.mueller@globex.example"));
        assert_eq!(conv.participants.len(), 2);
        assert!(
            matches!(&conv.events[4].kind, EventKind::Notice { text } if text.contains("term-sheet.pdf"))
        );
        assert!(
            matches!(&conv.events[6].kind, EventKind::Disclaimer { text } if text.contains("recorded"))
        );
        assert_eq!(conv.events[7].kind, EventKind::Left);
        let raw = String::from_utf8(conv.original_xml).expect("utf-8");
        assert!(raw.starts_with("<Conversation Perspective=") && raw.ends_with("</Conversation>"));
        assert!(raw.contains("<EndTimeUTC>"), "unknown elements are kept");
    }

    #[test]
    fn reads_the_bloomberg_sample_by_uuid_and_corporate_address() {
        let xml = include_str!("../../../../examples/filedump/bloomberg-sample.xml");
        let conv = IceReader::new(xml.as_bytes(), "bloomberg-sample.xml")
            .next()
            .expect("one")
            .expect("valid");
        assert_eq!(
            conv.original_format,
            crate::model::OriginalFormat::BloombergXml
        );
        assert_eq!(conv.id, "PCHAT-0x1000000002A9F1");
        assert_eq!(
            conv.start,
            Some(utc(9, 0, 0)),
            "StartTimeUTC wins over StartTime"
        );
        let alice = conv.participant("20345678").expect("Alice by UUID");
        assert_eq!(alice.name.as_deref(), Some("Alice Smith"));
        assert_eq!(alice.email.as_deref(), Some("asmith@acme.example"));
        assert_eq!(alice.company.as_deref(), Some("ACME CAPITAL"));
        assert_eq!(
            texts(&conv),
            ["Axe in 5y EUR swaps, anyone?", "我们可以做 25 mio"]
        );
        assert!(matches!(
            &conv.events[3].kind,
            EventKind::Attachment(a) if a.file_id == "ATT-6F2C-0001" && a.file_name == "levels.xlsx"
        ));
        assert_eq!(
            conv.events.last().map(|e| e.im_id.as_str()),
            Some("30999111")
        );
    }

    #[test]
    fn a_filedump_conversation_without_room_or_time_is_quarantined_alone() {
        let xml = "<FileDump><Conversation><Message><LoginName>a</LoginName><Content>x</Content></Message></Conversation>\
            <Conversation><StartTimeUTC>1795161600</StartTimeUTC></Conversation>\
            <Conversation><RoomID>ok</RoomID></Conversation></FileDump>";
        let reads: Vec<_> = IceReader::new(xml.as_bytes(), "d.xml").collect();
        assert_eq!(reads.len(), 3);
        assert!(
            matches!(&reads[0], Err(ReadError::Conversation(b)) if b.error.reason.contains("no DateTimeUTC"))
        );
        assert!(
            matches!(&reads[1], Err(ReadError::Conversation(b)) if b.error.reason.contains("no RoomID"))
        );
        assert!(matches!(&reads[2], Ok(c) if c.id == "ok"));
    }

    #[test]
    fn a_bad_conversation_is_skipped_whole_and_the_next_ones_are_read() {
        let bad_utf8 =
            "<Conversation Id=\"c2\"><Participants><Participant ImId=\"a\"/></Participants>\
            <Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\">caf\u{FFFD}</Message>\
            <Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:01Z\">more</Message></Conversation>";
        let good = |id: &str| {
            format!("<Conversation Id=\"{id}\"><Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\">hi</Message></Conversation>")
        };
        let bad_time = "<Conversation Id=\"c4\"><Events><Message ImId=\"a\" Timestamp=\"yesterday\">x</Message>\
            <Left ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\"/></Events></Conversation>";
        let no_id = "<Conversation><Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\">x</Message></Conversation>";
        let xml = export(&format!(
            "{}\n{bad_utf8}\n{}\n{bad_time}\n{no_id}\n{}",
            good("c1"),
            good("c3"),
            good("c5")
        ))
        .replace('\u{FFFD}', "\u{1}")
        .into_bytes();
        // An invalid UTF-8 byte where the placeholder is.
        let xml: Vec<u8> = xml
            .into_iter()
            .map(|b| if b == 1 { 0xFF } else { b })
            .collect();
        let mut good_ids = Vec::new();
        let mut bad = Vec::new();
        for read in IceReader::new(xml.as_slice(), "test.xml") {
            match read {
                Ok(conversation) => good_ids.push(conversation.id),
                Err(ReadError::Conversation(conversation)) => bad.push(*conversation),
                Err(ReadError::File(error)) => panic!("the file must stay readable: {error}"),
            }
        }
        assert_eq!(good_ids, ["c1", "c3", "c5"]);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].id.as_deref(), Some("c2"));
        assert_eq!(bad[0].line, 3);
        assert_eq!(bad[0].events, 2);
        assert!(
            bad[0].error.reason.contains("invalid UTF-8"),
            "{}",
            bad[0].error
        );
        assert!(bad[0].raw.starts_with(b"<Conversation Id=\"c2\">"));
        assert!(bad[0].raw.ends_with(b"</Conversation>"));
        assert_eq!(bad[1].id.as_deref(), Some("c4"));
        assert!(
            bad[1].error.reason.contains("Timestamp"),
            "{}",
            bad[1].error
        );
        assert_eq!(bad[1].events, 2);
        assert_eq!(bad[2].id, None);
        assert!(bad[2].error.reason.contains("no Id"), "{}", bad[2].error);
    }

    #[test]
    fn broken_xml_inside_a_conversation_stops_the_file() {
        let xml = export(
            "<Conversation Id=\"c1\"><Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\">hi</Message></Conversation>\n\
             <Conversation Id=\"c2\"><Message ImId=\"a\" Timestamp=\"2026-11-20T09:00:00Z\">hi</Mesage></Conversation>\n\
             <Conversation Id=\"c3\"></Conversation>",
        );
        let reads: Vec<_> = IceReader::new(xml.as_bytes(), "test.xml").collect();
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(reads[0].is_ok());
        assert!(matches!(&reads[1], Err(ReadError::File(e)) if e.reason.contains("malformed XML")));
    }

    fn conversations(xml: &str) -> Vec<Conversation> {
        read_all(xml)
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("valid export")
    }

    /// The first error, with everything yielded before it.
    fn first_error(xml: &str) -> (usize, InputError) {
        let results = read_all(xml);
        let ok = results.iter().take_while(|r| r.is_ok()).count();
        let error = results.into_iter().find_map(Result::err).expect("an error");
        (ok, error)
    }

    fn at(error: &InputError) -> (u64, u64) {
        match error.place {
            Place::LineColumn { line, column } => (line, column),
            ref other => panic!("unexpected place {other:?}"),
        }
    }

    fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, h, m, s)
            .single()
            .expect("valid")
    }

    fn export(body: &str) -> String {
        format!("<IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-20\" Version=\"1\">\n{body}\n</IceChatExport>\n")
    }

    fn texts(conv: &Conversation) -> Vec<&str> {
        conv.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Message { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parses_the_sample() {
        let mut reader = IceReader::new(SAMPLE.as_bytes(), "sample-export.xml");
        assert!(reader.header().is_none());
        let convs: Vec<_> = reader.by_ref().collect::<Result<_, _>>().expect("valid");
        let header = reader.header().expect("header");
        assert_eq!(header.firm_code.as_deref(), Some("ACME"));
        assert_eq!(header.export_date, NaiveDate::from_ymd_opt(2026, 11, 20));
        assert_eq!(header.version.as_deref(), Some("1"));
        let ids: Vec<_> = convs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c-1001", "c-1002", "c-1003"]);
        assert_eq!(
            convs.iter().map(|c| c.line).collect::<Vec<_>>(),
            [4, 13, 32]
        );
        check_one_to_one(&convs[0]);
        check_group(&convs[1]);
        assert_eq!(texts(&convs[2]), ["Desk huddle at 07:45.", "👍 on my way"]);
    }

    fn check_one_to_one(conv: &Conversation) {
        assert_eq!(conv.kind.as_deref(), Some("OneToOne"));
        assert_eq!(conv.start, Some(utc(8, 0, 0)));
        assert_eq!(
            texts(conv),
            [
                "Morning Alice, can you check the Bund & Bobl axes?",
                "Sure, give me 5 min ☺",
                "Axes: Bund 10y bid <2.41%, Bobl flat",
            ]
        );
        // 09:15:00+01:00 is 08:15:00 UTC.
        assert_eq!(conv.events[2].time, utc(8, 15, 0));
        assert_eq!(conv.events[0].id.as_deref(), Some("m-1"));
        let alice = conv.participant("asmith2").expect("listed");
        assert_eq!(alice.email.as_deref(), Some("asmith@acme.example"));
        assert_eq!(alice.name.as_deref(), Some("Alice Smith"));
    }

    fn check_group(conv: &Conversation) {
        assert_eq!(conv.room_name.as_deref(), Some("ACME / Globex EUR rates"));
        let zoe = conv.participant("zmuller7").expect("listed");
        assert_eq!(zoe.name.as_deref(), Some("Zoë Müller"));
        let li = conv.participant("lilei88").expect("listed");
        assert_eq!(li.name.as_deref(), Some("李雷"));
        assert_eq!(li.email.as_deref(), Some("li.lei@globex.example"));
        assert!(matches!(conv.events[0].kind, EventKind::Disclaimer { .. }));
        assert_eq!(conv.events[0].im_id, "");
        assert_eq!(conv.events[1].kind, EventKind::Entered);
        assert_eq!(conv.events.last().map(|e| &e.kind), Some(&EventKind::Left));
        let file = conv
            .events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::FileTransfer(f) => Some(f),
                _ => None,
            })
            .expect("a file transfer");
        assert_eq!(file.file_name, "levels.txt");
        assert_eq!(file.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            file.content.as_bytes(),
            Some(&b"Indicative EUR 5y IRS mid 2.415%, not an offer.\n"[..])
        );
    }

    #[test]
    fn sample_original_xml_is_exact() {
        for conv in conversations(SAMPLE) {
            let raw = std::str::from_utf8(&conv.original_xml).expect("utf-8");
            assert!(raw.starts_with("<Conversation"), "{raw}");
            assert!(raw.ends_with("</Conversation>"), "{raw}");
            assert!(SAMPLE.contains(raw));
            assert!(raw.contains(&format!("Id=\"{}\"", conv.id)));
        }
    }

    #[test]
    fn small_chunks_and_bom_give_the_same_result() {
        let expected = conversations(SAMPLE);
        let with_bom = [UTF8_BOM, SAMPLE.as_bytes()].concat();
        let reader = io::BufReader::with_capacity(1, with_bom.as_slice());
        let got: Vec<_> = IceReader::new(reader, "x")
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(got, expected);
    }

    #[test]
    fn unknown_elements_and_attributes_are_kept_not_fatal() {
        let xml = export(
            r#"<Extra><Conversation Id="inside-unknown"/></Extra>
<Conversation Id="c-1" Colour="blue">
  <Meta><Deep><Deeper/></Deep></Meta>
  <Participants><Note>x</Note><Participant ImId="a" Name="A" Desk="rates"/></Participants>
  <Message Id="m-1" ImId="a" Timestamp="2026-11-20T08:00:00Z" Flag="1">hi <Mention>bob</Mention>there</Message>
  <Reaction ImId="a" Timestamp="2026-11-20T08:00:01Z"/>
</Conversation>"#,
        );
        let convs = conversations(&xml);
        let ids: Vec<_> = convs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["inside-unknown", "c-1"], "wrappers are read through");
        let conv = &convs[1];
        assert_eq!(conv.participants.len(), 1);
        assert_eq!(texts(conv), ["hi there"]);
        let raw = String::from_utf8(conv.original_xml.clone()).expect("utf-8");
        for kept in [
            "<Meta><Deep><Deeper/>",
            "Colour=\"blue\"",
            "<Mention>bob</Mention>",
            "<Reaction",
        ] {
            assert!(raw.contains(kept), "{kept} missing in {raw}");
        }
    }

    #[test]
    fn doctype_is_refused_with_its_line() {
        let xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY a \"aaaa\">]>\n<IceChatExport/>";
        let (ok, error) = first_error(xml);
        assert_eq!(ok, 0);
        assert_eq!(error.reason, DOCTYPE_REFUSED);
        assert_eq!(at(&error), (2, 1));
        assert_eq!(error.file, "test.xml");
    }

    #[test]
    fn doctype_later_in_the_file_comes_after_earlier_conversations() {
        let xml = export("<Conversation Id=\"c-1\"/>\n  <!DOCTYPE x>");
        let (ok, error) = first_error(&xml);
        assert_eq!(ok, 1);
        assert_eq!(error.reason, DOCTYPE_REFUSED);
        assert_eq!(at(&error), (3, 3));
    }

    #[test]
    fn malformed_xml_reports_line_and_column() {
        let xml = export(
            "<Conversation Id=\"c-1\"/>\n<Conversation Id=\"c-2\">\n  <Message Id=\"m\" Timestamp=\"2026-11-20T08:00:00Z\">x</Messag>\n</Conversation>",
        );
        let (ok, error) = first_error(&xml);
        assert_eq!(ok, 1, "c-1 comes first");
        assert!(
            error.reason.starts_with("malformed XML"),
            "{}",
            error.reason
        );
        // The `</` of `</Messag>`.
        assert_eq!(at(&error), (4, 53));
    }

    #[test]
    fn mismatched_end_tag_is_an_error() {
        let (_, error) = first_error("<IceChatExport><Conversation Id=\"c\"></IceChatExport>");
        assert!(error.reason.contains("malformed XML"), "{}", error.reason);
        assert_eq!(at(&error).0, 1);
    }

    #[test]
    fn attribute_errors_point_into_the_tag() {
        let (_, error) = first_error(&export("<Conversation Id=\"c\" Id=\"d\"/>"));
        assert_eq!(error.reason, "malformed XML: duplicated attribute");
        assert_eq!(at(&error), (2, 22));
    }

    #[test]
    fn missing_timestamp_is_an_error_at_the_element() {
        let xml = export("<Conversation Id=\"c-1\">\n    <Message Id=\"m-7\" ImId=\"a\">x</Message>\n</Conversation>");
        let (ok, error) = first_error(&xml);
        assert_eq!(ok, 0);
        assert_eq!(error.reason, "<Message Id=\"m-7\"> has no Timestamp");
        assert_eq!(at(&error), (3, 5));
    }

    #[test]
    fn invalid_timestamp_names_the_value() {
        let xml = export(
            "<Conversation Id=\"c-1\"><Left ImId=\"a\" Timestamp=\"20/11/2026\"/></Conversation>",
        );
        let (_, error) = first_error(&xml);
        assert!(error.reason.contains("\"20/11/2026\""), "{}", error.reason);
        assert!(
            error.reason.contains("<Left ImId=\"a\">"),
            "{}",
            error.reason
        );
        assert_eq!(at(&error), (2, 24));
    }

    #[test]
    fn timestamps_with_offset_or_without_zone_are_utc() {
        assert_eq!(parse_time("2026-11-20T08:01:02Z"), Some(utc(8, 1, 2)));
        assert_eq!(parse_time("2026-11-20T09:01:02+01:00"), Some(utc(8, 1, 2)));
        assert_eq!(parse_time("2026-11-20T08:01:02"), Some(utc(8, 1, 2)));
        let millis = parse_time("2026-11-20T08:01:02.250").expect("fraction");
        assert_eq!(millis.timestamp_subsec_millis(), 250);
        assert_eq!(parse_time("2026-11-20"), None);
    }

    #[test]
    fn emails_are_filled_from_sender_and_recipient() {
        let xml = export(
            r#"<Conversation Id="c-1">
  <Participants><Participant ImId="a" Name="A"/><Participant ImId="b" Name="B" Email=""/></Participants>
  <Message ImId="a" Timestamp="2026-11-20T08:00:00Z" SenderEmail="a@acme.example" RecipientImId="b" RecipientEmail="b@acme.example">x</Message>
  <Message ImId="c" Timestamp="2026-11-20T08:00:01Z" SenderEmail="c@globex.example" RecipientImId="d">y</Message>
  <Message ImId="a" Timestamp="2026-11-20T08:00:02Z" SenderEmail="other@acme.example">z</Message>
</Conversation>"#,
        );
        let conv = &conversations(&xml)[0];
        let email = |id: &str| conv.participant(id).and_then(|p| p.email.clone());
        assert_eq!(email("a").as_deref(), Some("a@acme.example"));
        assert_eq!(email("b").as_deref(), Some("b@acme.example"));
        assert_eq!(email("c").as_deref(), Some("c@globex.example"));
        assert_eq!(email("d"), None);
        assert!(conv.participant("d").is_some(), "recipient added");
        assert_eq!(conv.participants.len(), 4);
    }

    #[test]
    fn listed_email_wins_even_when_listed_late() {
        let xml = export(
            r#"<Conversation Id="c-1">
  <Message ImId="a" Timestamp="2026-11-20T08:00:00Z" SenderEmail="alias@acme.example">x</Message>
  <Participants><Participant ImId="a" Name="A" Email="a@acme.example"/></Participants>
</Conversation>"#,
        );
        let conv = &conversations(&xml)[0];
        let a = conv.participant("a").expect("a");
        assert_eq!(a.email.as_deref(), Some("a@acme.example"));
        assert_eq!(a.name.as_deref(), Some("A"));
    }

    #[test]
    fn wrapped_messages_and_events_are_read() {
        let xml = export(
            r#"<Conversation Id="c-1">
  <Messages><Message ImId="a" Timestamp="2026-11-20T08:00:00Z">one</Message></Messages>
  <Events><Entered ImId="b" Timestamp="2026-11-20T08:00:01Z"/><Messages><Message ImId="x" Timestamp="2026-11-20T08:00:02Z">nested too deep</Message></Messages></Events>
  <Message ImId="a" Timestamp="2026-11-20T08:00:03Z">two</Message>
</Conversation>"#,
        );
        let conv = &conversations(&xml)[0];
        assert_eq!(texts(conv), ["one", "two"]);
        assert_eq!(conv.events.len(), 3);
        assert_eq!(conv.events[1].kind, EventKind::Entered);
        assert_eq!(conv.events[1].im_id, "b");
    }

    #[test]
    fn original_xml_round_trips_exact_bytes() {
        let conv_xml = "<Conversation Id=\"c-1\"  Type='Group'>\r\n  <!-- note -->\r\n  <Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">a &amp; b &#x263A; <![CDATA[<raw>]]></Message>\r\n</Conversation>";
        let xml = export(&format!("<Conversation Id=\"c-0\"/>\n{conv_xml}"));
        let convs = conversations(&xml);
        assert_eq!(convs[0].original_xml, b"<Conversation Id=\"c-0\"/>");
        assert_eq!(convs[1].original_xml, conv_xml.as_bytes());
        assert_eq!(convs[1].line, 3);
        assert_eq!(texts(&convs[1]), ["a & b ☺ <raw>"]);
        assert_eq!(convs[1].kind.as_deref(), Some("Group"));
    }

    #[test]
    fn gzip_is_not_handled_here() {
        let gzip = b"\x1F\x8B\x08\x00\x00\x00\x00\x00\x00\x03\xB3\xF1<IceChatExport/>";
        let results: Vec<_> = IceReader::new(&gzip[..], "export.xml.gz").collect();
        assert_eq!(results.len(), 1);
        let error = results[0].as_ref().expect_err("refused");
        assert!(error.reason.contains("gzip"), "{}", error.reason);
        assert_eq!(at(error), (1, 1));
    }

    #[test]
    fn invalid_utf8_is_named() {
        let xml = export("<Conversation Id=\"c-1\">\n<Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">caf\u{e9}</Message></Conversation>");
        let bytes = xml.replace('\u{e9}', "\u{1}").into_bytes();
        let bytes: Vec<u8> = bytes
            .into_iter()
            .map(|b| if b == 1 { 0xE9 } else { b })
            .collect();
        let results: Vec<_> = IceReader::new(bytes.as_slice(), "latin1.xml").collect();
        let error = results[0].as_ref().expect_err("refused");
        assert!(error.reason.contains("UTF-8"), "{}", error.reason);
        assert_eq!(at(error), (3, 55));
    }

    #[test]
    fn other_declared_encodings_are_refused() {
        let (_, error) =
            first_error("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><IceChatExport/>");
        assert!(error.reason.contains("ISO-8859-1"), "{}", error.reason);
    }

    #[test]
    fn file_transfer_base64_and_size_are_checked() {
        let ft = |size: &str, body: &str| {
            export(&format!("<Conversation Id=\"c-1\">\n<FileTransfer Id=\"f-1\" ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\" FileName=\"a.bin\"{size}>{body}</FileTransfer></Conversation>"))
        };
        let conv = &conversations(&ft(" Size=\"5\"", "aGVs\n bG8="))[0];
        let EventKind::FileTransfer(file) = &conv.events[0].kind else {
            panic!("not a file transfer");
        };
        assert_eq!(file.content.as_bytes(), Some(&b"hello"[..]));
        assert_eq!(conversations(&ft("", "aGVsbG8"))[0].events.len(), 1);
        let empty = &conversations(&ft(" Size=\"0\"", ""))[0];
        let EventKind::FileTransfer(file) = &empty.events[0].kind else {
            panic!("not a file transfer");
        };
        assert!(file.content.is_empty());
        let (_, bad) = first_error(&ft("", "aGVs*bG8="));
        assert!(bad.reason.contains("base64"), "{}", bad.reason);
        assert_eq!(at(&bad), (3, 1));
        let (_, size) = first_error(&ft(" Size=\"6\"", "aGVsbG8="));
        assert!(size.reason.contains("Size says 6"), "{}", size.reason);
    }

    #[test]
    fn wrong_root_and_missing_id_are_errors() {
        let (_, root) = first_error("<?xml version=\"1.0\"?>\n<Export/>");
        assert_eq!(
            root.reason,
            "root element is <Export>, expected <IceChatExport> or <FileDump>"
        );
        assert_eq!(at(&root), (2, 1));
        let (_, id) = first_error(&export("<Conversation Type=\"Group\"/>"));
        assert_eq!(id.reason, "<Conversation> has no Id attribute");
        assert_eq!(at(&id), (2, 1));
    }

    #[test]
    fn zero_conversations_is_valid() {
        for xml in [
            "<IceChatExport FirmCode=\"ACME\"/>",
            &export("<!-- nothing today -->"),
        ] {
            let mut reader = IceReader::new(xml.as_bytes(), "empty.xml");
            assert!(reader.next().is_none());
            let header = reader.header().expect("header");
            assert_eq!(header.firm_code.as_deref(), Some("ACME"));
        }
    }

    #[test]
    fn eof_inside_a_conversation_is_an_error_and_the_reader_is_fused() {
        let xml = "<IceChatExport>\n<Conversation Id=\"c-1\"/>\n<Conversation Id=\"c-2\">\n<Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">cut";
        let mut reader = IceReader::new(xml.as_bytes(), "cut.xml");
        assert!(matches!(reader.next(), Some(Ok(_))));
        let error = reader.next().expect("item").expect_err("eof");
        assert!(error.reason.contains("c-2"), "{}", error.reason);
        assert!(error.reason.contains("end of file"), "{}", error.reason);
        assert!(reader.next().is_none());
        assert!(reader.next().is_none());
    }

    #[test]
    fn unclosed_root_and_trailing_content_are_errors() {
        let (ok, open) = first_error("<IceChatExport>\n<Conversation Id=\"c-1\"/>\n");
        assert_eq!(ok, 1);
        assert!(open.reason.contains("not closed"), "{}", open.reason);
        let (_, trailing) = first_error("<IceChatExport/>\n<IceChatExport/>");
        assert!(
            trailing.reason.contains("after the end"),
            "{}",
            trailing.reason
        );
        assert_eq!(at(&trailing), (2, 1));
    }

    #[test]
    fn unknown_entities_are_refused() {
        let xml = export("<Conversation Id=\"c-1\"><Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">&nbsp;</Message></Conversation>");
        let (_, error) = first_error(&xml);
        assert!(error.reason.contains("&nbsp;"), "{}", error.reason);
    }
}

/// A file transfer too long to hold is checked from its spool as strictly as
/// one in memory: a bad one is its conversation's fault, named with its
/// place, and the next conversation is read.
#[cfg(test)]
mod spilled {
    use super::*;

    fn read(xml: &str) -> Vec<Result<Conversation, ReadError>> {
        IceReader::with_spill_limit(xml.as_bytes(), "big.xml", 256).collect()
    }

    fn export(size: &str, content: &str) -> String {
        format!(
            "<IceChatExport>\n<Conversation Id=\"c-1\">\n\
             <FileTransfer Id=\"f-1\" ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\"{size}>\n{content}</FileTransfer>\n\
             </Conversation>\n<Conversation Id=\"c-2\"><Message ImId=\"a\" Timestamp=\"2026-11-20T08:00:00Z\">next</Message></Conversation>\n\
             </IceChatExport>\n"
        )
    }

    #[test]
    fn bad_base64_or_a_wrong_size_in_a_spilled_file_is_the_conversations_fault() {
        let good = "QUJD\n".repeat(200);
        let results = read(&export(" Size=\"600\"", &good));
        let Ok(first) = &results[0] else {
            panic!("{:?}", results[0]);
        };
        let EventKind::FileTransfer(file) = &first.events[0].kind else {
            panic!("a file transfer");
        };
        assert!(file.content.as_bytes().is_none(), "spooled");
        assert_eq!(file.content.to_vec().unwrap(), b"ABC".repeat(200));

        for (size, content, reason) in [
            ("", format!("{good}QU!D\n"), "not valid base64"),
            (
                " Size=\"5\"",
                good.clone(),
                "Size says 5 bytes but the content decodes to 600",
            ),
        ] {
            let results = read(&export(size, &content));
            let Err(ReadError::Conversation(bad)) = &results[0] else {
                panic!("{:?}", results[0]);
            };
            assert!(bad.error.reason.contains(reason), "{}", bad.error);
            assert!(bad.error.reason.contains("<FileTransfer"), "{}", bad.error);
            assert_eq!(bad.error.place, Place::LineColumn { line: 3, column: 1 });
            let whole = crate::spool::fill_holes(&bad.raw, &bad.spilled).unwrap();
            assert!(bad.raw.len() < 1024, "its long run stays in its spool");
            assert!(
                String::from_utf8_lossy(&whole).contains(content.as_str()),
                "the quarantined copy holds the spilled run"
            );
            assert!(results[1].is_ok(), "the next conversation is read");
        }
    }
}
