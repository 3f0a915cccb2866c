//! convert: `plain/<c>/<file>` -> one `.eml` and one `.json` sidecar per mail
//! under `mail/<c>/<day>/`. The export is parsed as a stream, one
//! conversation at a time. Each conversation-day goes through the event
//! ledger ([`crate::ledger`]): only events no earlier file delivered become
//! a mail (the day's first, or a continuation). A bad conversation is
//! quarantined alone and the rest of the file goes on; a file whose XML
//! breaks is quarantined with the place of the fault, and the conversations
//! read before it still go on.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::NaiveDate;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::{lineage, quarantine, quarantine_conversation, Context};
use crate::config::{ConnectorConfig, Granularity};
use crate::error::{Error, InputError, Place, Result};
use crate::formats::ice::{BadConversation, IceReader, ReadError, UNEXPECTED_EOF};
use crate::formats::{attachments, payload, xip};
use crate::layout;
use crate::ledger::{self, Ledger, LedgerPart};
use crate::mail::{self, build_mail, events_by_day, BuiltMail, Continuation, Lineage, MailPart};
use crate::model::{ChatEvent, Conversation, EventKind, FileTransfer, Participant};
use crate::ports::{ByteStream, Metadata, ObjectInfo, ObjectStore};
use crate::status::{self, EventCounts, ItemRecord, ItemState, SourceRecord};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOutcome {
    /// Sidecar keys of the mails that carry this file's events: each starts
    /// an import (importing one again changes nothing).
    pub sidecars: Vec<String>,
    /// The day the source file belongs to.
    pub day: String,
    /// Every day the file brought events for (its status logs need a rebuild).
    pub days: Vec<String>,
    /// What went to quarantine (the key of the copy, and why): single
    /// conversations, or the file when its XML broke.
    pub quarantined: Vec<(String, InputError)>,
    /// The file waits for something still to come (its attachments), and
    /// why: it is to be converted again.
    pub waiting: Option<String>,
    /// The conversion stopped before its deadline and wrote where to carry
    /// on: this key starts the next conversion (an S3 event on AWS).
    pub handed_on: Option<String>,
}

/// Where a conversion stopped to hand the rest of the file on, and what it
/// had counted so far (the next run adds to it; the last one writes the
/// file's source records whole).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOff {
    /// The plain object being converted, and the digest of what was read:
    /// a newer version is converted by its own event, not by this hand-off.
    pub source: String,
    pub sha256: String,
    /// Conversations read (good or bad) before the stop: the next run
    /// reads past them without doing anything again.
    pub done: u64,
    /// Invocations so far.
    pub runs: u64,
    days: BTreeMap<String, DayShare>,
    dialect: Option<String>,
    first_day: Option<NaiveDate>,
}

/// Mails go from the parsing thread to the writer a few at a time.
const MAILS_IN_FLIGHT: usize = 4;
/// Mails written at once: most chats are short, and one at a time a day of
/// a million one-message conversations waits on a million round trips (S3
/// takes thousands of PUTs a second per prefix; a local disk commits
/// concurrent syncs together).
const WRITES_IN_FLIGHT: usize = 16;
/// Bytes of mail held by the writes in flight: a large mail is written
/// with fewer (or no) others beside it, so memory stays bounded.
const WRITE_BYTES_IN_FLIGHT: usize = 32 << 20;

/// Conversations whose ledger claims are made together: each claim is a
/// conditional write with its own sync, and one at a time they were most of
/// what a one-message conversation cost.
const CLAIMS_HELD: usize = 16;
/// Original XML held by conversations waiting for their claims (a large
/// conversation is claimed with fewer, or no, others beside it).
const CLAIM_BYTES_HELD: usize = 8 << 20;

/// What the parsing thread hands to the writer.
enum Output {
    /// A mail to write; `recovered` when a run before this one claimed its
    /// events and stopped before writing it (then only missing objects are
    /// written: what exists stays as it is).
    Mail {
        mail: Box<BuiltMail>,
        recovered: bool,
    },
    /// A mail this file produced in an earlier run, already in the store.
    Written(String),
}

/// The file being converted, as the ledger names it.
#[derive(Clone)]
struct SourceFile {
    key: String,
    sha256: String,
}

/// A file split in several parts (`x.xml1`, `x.xml2`, ...), read as one
/// document in order: the parts there are, from the first, without a gap.
struct SplitFile {
    /// The name the ledger and the status log know it by (`x.xml*`).
    key: String,
    parts: Vec<String>,
}

impl SplitFile {
    async fn find(store: &dyn ObjectStore, plain_key: &str) -> Result<Option<SplitFile>> {
        let Some((base, _)) = layout::split_part(plain_key) else {
            return Ok(None);
        };
        let mut numbered: Vec<(u32, String)> = store
            .list(base)
            .await?
            .into_iter()
            .filter_map(|key| match layout::split_part(&key) {
                Some((b, n)) if b == base => Some((n, key)),
                _ => None,
            })
            .collect();
        numbered.sort();
        let parts = numbered
            .into_iter()
            .enumerate()
            .take_while(|(i, (n, _))| *n as usize == i + 1)
            .map(|(_, (_, key))| key)
            .collect();
        Ok(Some(SplitFile {
            key: format!("{base}*"),
            parts,
        }))
    }

    /// The parts one after the other, and the first part's description.
    async fn open(&self, store: &dyn ObjectStore) -> Result<(ByteStream, ObjectInfo)> {
        let mut parts = self.parts.iter();
        let first = parts
            .next()
            .ok_or_else(|| Error::store(&self.key, "no first part"))?;
        let (mut body, info) = store.get(first).await?;
        for part in parts {
            let (next, _) = store.get(part).await?;
            body = Box::pin(tokio::io::AsyncReadExt::chain(body, next));
        }
        Ok((body, info))
    }
}

pub async fn run(ctx: &Context, key: &str) -> Result<ConvertOutcome> {
    if layout::is_hand_off(key) {
        let hand_off: HandOff = serde_json::from_slice(&ctx.store.get_bytes(key).await?)
            .map_err(|e| Error::store(key, format!("not a conversion hand-off: {e}")))?;
        let source = hand_off.source.clone();
        return convert(ctx, &source, Some(hand_off)).await;
    }
    convert(ctx, key, None).await
}

async fn convert(
    ctx: &Context,
    plain_key: &str,
    resume: Option<HandOff>,
) -> Result<ConvertOutcome> {
    if attachments::is_archive(plain_key) {
        return attachments_arrived(ctx, plain_key).await;
    }
    let split = SplitFile::find(ctx.store.as_ref(), plain_key).await?;
    if let Some(split) = split.as_ref().filter(|s| s.parts.is_empty()) {
        return wait_for_first_part(ctx, plain_key, split).await;
    }
    let (body, info) = match &split {
        Some(split) => split.open(ctx.store.as_ref()).await?,
        None => ctx.store.get(plain_key).await?,
    };
    let base = Lineage {
        raw_key: info
            .metadata
            .get(lineage::RAW_KEY)
            .cloned()
            .unwrap_or_default(),
        raw_sha256: info
            .metadata
            .get(lineage::RAW_SHA256)
            .cloned()
            .unwrap_or_default(),
        plain_key: plain_key.to_string(),
        plain_sha256: info.sha256.clone(),
        ..Lineage::default()
    };
    let config = ctx.for_key(plain_key);
    let files = match split {
        Some(_) => AttachmentFiles::default(),
        None => match AttachmentFiles::gather(ctx, &config, plain_key).await? {
            Gathered::Ready(files) => files,
            Gathered::Waiting(reason) => {
                return wait_for_attachments(ctx, plain_key, &info, reason).await
            }
        },
    };
    if let Some(stale) = resume.as_ref().filter(|r| r.sha256 != info.sha256) {
        // A newer version came: its own event converts it from the start.
        tracing::warn!(source = %plain_key, done = stale.done, "hand-off of an older version: nothing to carry on");
        return Ok(ConvertOutcome::default());
    }
    let resume = resume.unwrap_or_default();
    let (sender, mut receiver) = mpsc::channel(MAILS_IN_FLIGHT);
    let is_xip = config.kind == crate::config::ConnectorKind::Xip;
    let mut archivist = Archivist {
        store: ctx.store.clone(),
        runtime: Handle::current(),
        config: config.clone(),
        // A split file is one source, whatever part started this run; its
        // first part identifies it (parts only ever get added after it).
        source: SourceFile {
            key: split
                .as_ref()
                .map_or_else(|| plain_key.to_string(), |s| s.key.clone()),
            sha256: info.sha256.clone(),
        },
        metadata: info.metadata.clone(),
        sender,
        days: resume.days.clone(),
        quarantined: Vec::new(),
        dialect: resume.dialect.clone(),
        attachments: files,
        pace: Pace {
            skip: resume.done,
            hand_off_by: super::hand_off_by(),
            ..Pace::default()
        },
        held: Held::default(),
    };
    let parsing = {
        let (base, key) = (base.clone(), plain_key.to_string());
        tokio::task::spawn_blocking(move || {
            let result = match is_xip {
                true => archivist.parse_xip(body, &key, &base),
                false => archivist.parse_all(body, &key, &base),
            };
            (
                archivist.days,
                archivist.quarantined,
                archivist.dialect,
                archivist.pace.stopped_at,
                result,
            )
        })
    };
    let mut outcome = ConvertOutcome::default();
    let mut first_day = resume.first_day;
    let mut writes = Writes::new(ctx);
    while let Some(output) = receiver.recv().await {
        if let Output::Mail { mail, .. } = &output {
            first_day.get_or_insert(mail.sidecar.day);
        }
        writes.start(output, &mut outcome.sidecars).await?;
    }
    writes.finish(&mut outcome.sidecars).await?;
    let (mut days, quarantined, dialect, stopped_at, parsed) = parsing
        .await
        .map_err(|e| Error::Config(format!("conversion task failed: {e}")))?;
    outcome.quarantined = quarantined;
    let source_key = split.as_ref().map_or(plain_key, |s| s.key.as_str());
    if let (Some(done), Ok(_)) = (stopped_at, &parsed) {
        // The status log shows the file so far, and that it goes on.
        let note = format!("being converted: {done} conversations read so far, the rest handed on");
        for (day, share) in &days {
            let record = source_record(
                source_key,
                &info.sha256,
                share,
                &dialect,
                Some(note.clone()),
            );
            status::write_source(ctx.store.as_ref(), &config.name, day, &record).await?;
        }
        let hand_off = HandOff {
            source: plain_key.to_string(),
            sha256: info.sha256.clone(),
            done,
            runs: resume.runs + 1,
            days,
            dialect,
            first_day,
        };
        return hand_on(ctx, &config.name, hand_off, outcome).await;
    }
    let mut waiting = None;
    let (export_day, problem) = match parsed {
        Ok(day) => (day, None),
        // The parts so far end inside the document: the next part is still
        // to come. What they held completely is archived; the rest waits.
        Err(Error::Input(error)) if split.is_some() && error.reason.starts_with(UNEXPECTED_EOF) => {
            let parts = split.as_ref().map_or(0, |s| s.parts.len());
            waiting = Some(format!(
                "split file: parts 1 to {parts} read, waiting for part {}",
                parts + 1
            ));
            (None, None)
        }
        Err(Error::Input(error)) => (None, Some(error)),
        Err(other) => return Err(other),
    };
    let day = export_day
        .or_else(|| status::day_from_file_name(plain_key))
        .or(first_day);
    outcome.day = status::day_label(day);
    if let Some(error) = &problem {
        let quarantine_key = quarantine(ctx.store.as_ref(), plain_key, "convert", error).await?;
        let mut record =
            status::file_failure(&config.name, &outcome.day, plain_key, &error.to_string());
        record.source = base.raw_key.clone();
        status::write_item(ctx.store.as_ref(), &record).await?;
        outcome.quarantined.push((quarantine_key, error.clone()));
    }
    // The file's own day always has its record, even when the file held
    // nothing (a day with no items is a row, not silence).
    days.entry(outcome.day.clone()).or_default();
    outcome.days = days.keys().cloned().collect();
    for (day, share) in days {
        let on_file_day = day == outcome.day;
        let note = match (&problem, &waiting) {
            (Some(error), _) if on_file_day => Some(error.to_string()),
            (None, Some(waiting)) if on_file_day => Some(waiting.clone()),
            _ => None,
        };
        let source = source_record(source_key, &info.sha256, &share, &dialect, note);
        status::write_source(ctx.store.as_ref(), &config.name, &day, &source).await?;
    }
    crate::audit::converted(
        &config.name,
        plain_key,
        &outcome.day,
        outcome.sidecars.len(),
        outcome.quarantined.len(),
    );
    Ok(outcome)
}

/// A file's share of a day as its status record.
fn source_record(
    key: &str,
    sha256: &str,
    share: &DayShare,
    dialect: &Option<String>,
    problem: Option<String>,
) -> SourceRecord {
    SourceRecord {
        key: key.to_string(),
        sha256: sha256.to_string(),
        items: share.items,
        events: share.events,
        dialect: dialect.clone(),
        problem,
    }
}

/// Writes where the conversion stopped; its key starts the next run. The
/// run that reads the file to its end writes its source records whole.
async fn hand_on(
    ctx: &Context,
    connector: &str,
    hand_off: HandOff,
    mut outcome: ConvertOutcome,
) -> Result<ConvertOutcome> {
    let key = layout::hand_off(&hand_off.source, hand_off.done);
    let json = serde_json::to_vec_pretty(&hand_off).map_err(Error::internal)?;
    ctx.store.put_bytes(&key, json, &Metadata::new()).await?;
    tracing::info!(
        connector,
        source = %hand_off.source,
        done = hand_off.done,
        run = hand_off.runs,
        mails = outcome.sidecars.len(),
        "conversion handed on before the deadline"
    );
    outcome.days = hand_off.days.keys().cloned().collect();
    outcome.day = outcome.days.first().cloned().unwrap_or_default();
    outcome.handed_on = Some(key);
    Ok(outcome)
}

/// A later part of a split file came before the first: nothing to read yet.
async fn wait_for_first_part(
    ctx: &Context,
    plain_key: &str,
    split: &SplitFile,
) -> Result<ConvertOutcome> {
    let config = ctx.for_key(plain_key);
    let day = status::day_label(status::day_from_file_name(plain_key));
    let source = SourceRecord {
        key: split.key.clone(),
        sha256: String::new(),
        items: 0,
        events: EventCounts::default(),
        dialect: None,
        problem: Some("split file: waiting for part 1".into()),
    };
    status::write_source(ctx.store.as_ref(), &config.name, &day, &source).await?;
    crate::audit::waiting(&config.name, "convert", plain_key, "split file: part 1");
    Ok(ConvertOutcome {
        days: vec![day.clone()],
        day,
        ..ConvertOutcome::default()
    })
}

/// The files an export's attachment events name, taken from its
/// attachment archive into a temporary directory.
#[derive(Default)]
struct AttachmentFiles {
    files: BTreeMap<String, std::path::PathBuf>,
    /// Why a file not in `files` is missing.
    reason: String,
    _dir: Option<tempfile::TempDir>,
}

enum Gathered {
    Ready(AttachmentFiles),
    /// The archive has not come yet and the wait is not over.
    Waiting(String),
}

impl AttachmentFiles {
    /// The attachment files of an export that names some: from its archive
    /// when there, else nothing to wait for once the configured time since
    /// the export was first seen has passed.
    async fn gather(ctx: &Context, config: &ConnectorConfig, plain_key: &str) -> Result<Gathered> {
        let Some(archive_key) = attachments::archive_for_export(plain_key) else {
            return Ok(Gathered::Ready(Self::default()));
        };
        if config.kind != crate::config::ConnectorKind::Bloomberg {
            return Ok(Gathered::Ready(Self::default()));
        }
        let (body, _) = ctx.store.get(plain_key).await?;
        let wanted = tokio::task::spawn_blocking(move || {
            attachments::wanted_file_ids(std::io::BufReader::new(SyncIoBridge::new(body)))
        })
        .await
        .map_err(|e| Error::Config(format!("attachment scan failed: {e}")))?
        .map_err(|e| Error::store(plain_key, e))?;
        if wanted.is_empty() {
            return Ok(Gathered::Ready(Self::default()));
        }
        let archive_name = archive_key
            .rsplit('/')
            .next()
            .unwrap_or(&archive_key)
            .to_string();
        if ctx.store.head(&archive_key).await?.is_none() {
            let since = first_seen(ctx, config, plain_key).await?;
            let until = since + chrono::Duration::hours(config.attachment_wait_hours);
            if chrono::Utc::now() < until {
                return Ok(Gathered::Waiting(format!(
                    "waiting for the attachment archive {archive_name} ({} file(s)) until {}",
                    wanted.len(),
                    until.format("%Y-%m-%d %H:%M UTC")
                )));
            }
            return Ok(Gathered::Ready(Self {
                reason: format!(
                    "no attachment archive {archive_name} arrived within {} hours",
                    config.attachment_wait_hours
                ),
                ..Self::default()
            }));
        }
        let dir =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let (body, _) = ctx.store.get(&archive_key).await?;
        let (target, ids) = (dir.path().to_path_buf(), wanted.clone());
        let files = tokio::task::spawn_blocking(move || {
            attachments::extract(SyncIoBridge::new(body), &ids, &target)
        })
        .await
        .map_err(|e| Error::Config(format!("attachment extraction failed: {e}")))?
        .map_err(|e| Error::store(&archive_key, format!("not a readable .tar.gz: {e}")))?;
        Ok(Gathered::Ready(Self {
            files,
            reason: format!("not in the attachment archive {archive_name}"),
            _dir: Some(dir),
        }))
    }

    fn missing(&self, file_id: &str) -> String {
        match self.reason.is_empty() {
            true => format!("FileID {file_id} was not delivered"),
            false => self.reason.clone(),
        }
    }
}

/// When the export was first seen waiting for its attachments (recorded
/// then, so the wait is measured from the first try, not the latest).
async fn first_seen(
    ctx: &Context,
    config: &ConnectorConfig,
    plain_key: &str,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let id = mail::item_id(&config.name, &["attachments-wait", plain_key]);
    let key = layout::attachment_wait(&config.name, &id);
    let recorded = |text: &[u8]| {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|since| since.with_timezone(&chrono::Utc))
    };
    let current = ctx.store.get_versioned(&key).await?;
    if let Some(since) = current.as_ref().and_then(|(text, _)| recorded(text)) {
        return Ok(since);
    }
    // Conditional: of two conversions at once, the first start counts.
    let now = chrono::Utc::now();
    let version = current.as_ref().map(|(_, version)| version.as_str());
    let wrote = ctx
        .store
        .put_if(
            &key,
            now.to_rfc3339().into_bytes(),
            &Metadata::new(),
            version,
        )
        .await?;
    if !wrote {
        let (text, _) = ctx
            .store
            .get_versioned(&key)
            .await?
            .ok_or_else(|| Error::store(&key, "attachment wait record vanished"))?;
        return recorded(&text)
            .ok_or_else(|| Error::store(&key, "attachment wait record is not a time"));
    }
    Ok(now)
}

/// An export waits for its attachment archive: nothing written but its
/// source record, which says so.
async fn wait_for_attachments(
    ctx: &Context,
    plain_key: &str,
    info: &ObjectInfo,
    reason: String,
) -> Result<ConvertOutcome> {
    let config = ctx.for_key(plain_key);
    let day = status::day_label(status::day_from_file_name(plain_key));
    let source = SourceRecord {
        key: plain_key.to_string(),
        sha256: info.sha256.clone(),
        items: 0,
        events: EventCounts::default(),
        dialect: None,
        problem: Some(reason.clone()),
    };
    status::write_source(ctx.store.as_ref(), &config.name, &day, &source).await?;
    crate::audit::waiting(&config.name, "convert", plain_key, &reason);
    Ok(ConvertOutcome {
        days: vec![day.clone()],
        day,
        waiting: Some(reason),
        ..ConvertOutcome::default()
    })
}

/// An attachment archive arrived: its export, when there, is converted now
/// (it may have been waiting; if not, the ledger makes this a no-op but for
/// files it could not attach before).
async fn attachments_arrived(ctx: &Context, archive_key: &str) -> Result<ConvertOutcome> {
    let config = ctx.for_key(archive_key);
    let day = status::day_label(status::day_from_file_name(archive_key));
    if let Some(export) = attachments::export_for_archive(archive_key) {
        if ctx.store.head(&export).await?.is_some() {
            tracing::info!(
                archive_key,
                export,
                "attachments arrived: converting the export"
            );
            return Box::pin(run(ctx, &export)).await;
        }
    }
    tracing::info!(archive_key, connector = %config.name, "attachment archive before its export");
    Ok(ConvertOutcome {
        days: vec![day.clone()],
        day,
        ..ConvertOutcome::default()
    })
}

/// A file's share of one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DayShare {
    items: u64,
    events: EventCounts,
}

/// How far this run goes: conversations a run before it read are passed
/// over, and the run stops (to hand on) once its time is up, after at
/// least one conversation of its own, so every run makes progress.
#[derive(Debug, Default)]
struct Pace {
    skip: u64,
    hand_off_by: Option<std::time::Instant>,
    read: u64,
    stopped_at: Option<u64>,
}

impl Pace {
    /// Counts the conversation just read: whether it is to be passed over.
    fn passed_over(&mut self) -> bool {
        self.read += 1;
        self.read <= self.skip
    }

    /// Whether to stop before the conversation just read (it will be the
    /// next run's first).
    fn stop_here(&mut self) -> bool {
        let time_up = self
            .hand_off_by
            .is_some_and(|by| std::time::Instant::now() >= by);
        if time_up && self.read > self.skip + 1 {
            self.stopped_at = Some(self.read - 1);
        }
        self.stopped_at.is_some()
    }
}

/// The parsing side of the convert stage: runs on a blocking thread, claims
/// each conversation-day's new events in the ledger (through the runtime's
/// handle) and builds their mails.
struct Archivist {
    store: std::sync::Arc<dyn ObjectStore>,
    runtime: Handle,
    config: ConnectorConfig,
    source: SourceFile,
    /// The plain object's metadata (lineage), kept on quarantined copies.
    metadata: Metadata,
    sender: mpsc::Sender<Output>,
    days: BTreeMap<String, DayShare>,
    quarantined: Vec<(String, InputError)>,
    /// The dialect of the file's first conversation.
    dialect: Option<String>,
    attachments: AttachmentFiles,
    pace: Pace,
    held: Held,
}

/// A read conversation waiting for its days' ledger claims.
struct HeldConversation {
    conversation: Conversation,
    /// The participants the export listed (the mail takes the ledger's
    /// union of every file's).
    listed: Vec<Participant>,
    lineage: Lineage,
    days: Vec<HeldDay>,
}

/// One conversation-day to claim: its events (as positions in the
/// conversation), their identities and its ledger's key.
struct HeldDay {
    day: NaiveDate,
    positions: Vec<usize>,
    ids: Vec<String>,
    key: String,
}

impl HeldDay {
    /// A conversation-day of `conversation` with its identities and key.
    fn new(
        config: &ConnectorConfig,
        conversation: &Conversation,
        day: NaiveDate,
        positions: Vec<usize>,
    ) -> Self {
        let mut held = HeldDay {
            day,
            positions,
            ids: Vec::new(),
            key: ledger::key(&config.name, &config.folder, day, &conversation.id),
        };
        held.ids = ledger::event_ids(&conversation.id, &held.events(&conversation.events));
        held
    }

    /// Its events out of the conversation's, in their order.
    fn events<'a>(&self, events: &'a [ChatEvent]) -> Vec<&'a ChatEvent> {
        self.positions.iter().map(|&i| &events[i]).collect()
    }
}

/// A conversation-day after its claim.
struct Claimed {
    /// Item ids of the parts this claim added.
    parts: HashSet<String>,
    /// The ledger as stored after the claim.
    stored: Ledger,
}

/// The conversations read since the last claims, in file order.
#[derive(Default)]
struct Held {
    conversations: Vec<HeldConversation>,
}

impl Held {
    fn has_any(&self, days: &[HeldDay]) -> bool {
        self.conversations
            .iter()
            .flat_map(|held| &held.days)
            .any(|held| days.iter().any(|day| day.key == held.key))
    }

    fn is_full(&self) -> bool {
        let bytes: usize = self
            .conversations
            .iter()
            .map(|held| held.conversation.original_xml.len())
            .sum();
        self.conversations.len() >= CLAIMS_HELD || bytes >= CLAIM_BYTES_HELD
    }
}

impl Archivist {
    /// Parses every document of the payload; returns the export's own day
    /// when the export states one.
    fn parse_all(
        &mut self,
        body: ByteStream,
        key: &str,
        base: &Lineage,
    ) -> Result<Option<NaiveDate>> {
        let read = self.read_documents(body, key, base);
        self.after_reading(read)
    }

    /// Claims what is still held once reading ended: the conversations read
    /// before a fault in the file are archived, as one at a time they were.
    fn after_reading<T>(&mut self, read: Result<T>) -> Result<T> {
        let claimed = self.claim_held();
        let read = read?;
        claimed.map(|()| read)
    }

    fn read_documents(
        &mut self,
        body: ByteStream,
        key: &str,
        base: &Lineage,
    ) -> Result<Option<NaiveDate>> {
        let mut export_day = None;
        payload::for_each_document(SyncIoBridge::new(body), key, |document, reader| {
            if self.pace.stopped_at.is_some() {
                return Ok(());
            }
            let mut conversations = IceReader::new(reader, document);
            while let Some(read) = conversations.next() {
                let header_day = conversations.header().and_then(|h| h.export_date);
                export_day = export_day.or(header_day);
                if self.pace.passed_over() {
                    continue;
                }
                if self.pace.stop_here() {
                    return Ok(());
                }
                let file_day = header_day.or_else(|| status::day_from_file_name(key));
                let conversation = match read {
                    Ok(conversation) => conversation,
                    Err(ReadError::Conversation(bad)) => {
                        self.quarantine(&bad, file_day)?;
                        continue;
                    }
                    Err(ReadError::File(error)) => return Err(error.into()),
                };
                let lineage = Lineage {
                    document: document.to_string(),
                    line: conversation.line,
                    ..base.clone()
                };
                let Some(fallback) = file_day
                    .or(conversation.start.map(|t| t.date_naive()))
                    .or_else(|| conversation.events.first().map(|e| e.time.date_naive()))
                else {
                    let error = InputError::new(
                        document,
                        Place::LineColumn {
                            line: conversation.line,
                            column: 1,
                        },
                        format!(
                            "conversation {:?} has no time and the export no date",
                            conversation.id
                        ),
                    );
                    self.quarantine(&unreadable(conversation, error), None)?;
                    continue;
                };
                self.archive(conversation, lineage, fallback)?;
            }
            export_day = export_day.or(conversations.header().and_then(|h| h.export_date));
            Ok(())
        })?;
        Ok(export_day)
    }

    /// A XIP container: verified by the decrypt stage, whose signature check
    /// the plain object stands for; every entry's digest is checked again as
    /// it is read. Items go through the ledger like conversations.
    fn parse_xip(
        &mut self,
        body: ByteStream,
        key: &str,
        base: &Lineage,
    ) -> Result<Option<NaiveDate>> {
        let mut temp = tempfile::NamedTempFile::new()
            .map_err(|e| Error::io("creating a temporary file", e))?;
        std::io::copy(&mut SyncIoBridge::new(body), temp.as_file_mut())
            .map_err(|e| Error::io(format!("reading {key}"), e))?;
        let verified = xip::verify(
            temp.path(),
            key,
            &xip::Trust::verified_upstream(),
            &self.config.limits,
        )?;
        let read = xip::read_items(temp.path(), key, &verified, |item| {
            let lineage = Lineage {
                document: format!("{key}!{}", item.id),
                ..base.clone()
            };
            let day = item.start.map(|t| t.date_naive()).unwrap_or_default();
            self.archive(item, lineage, day)
        });
        self.after_reading(read)?;
        Ok(None)
    }

    /// Holds a conversation until its days are claimed together with those
    /// of the next few; a conversation-day already held (a room listed
    /// twice in one file) is claimed after the first is, in file order.
    fn archive(
        &mut self,
        mut conversation: Conversation,
        lineage: Lineage,
        fallback_day: NaiveDate,
    ) -> Result<()> {
        self.dialect
            .get_or_insert_with(|| conversation.original_format.dialect().to_string());
        self.resolve_attachments(&mut conversation, fallback_day)?;
        let listed = std::mem::take(&mut conversation.participants);
        let days: Vec<HeldDay> = events_by_day(&conversation, fallback_day)
            .into_iter()
            .map(|(day, positions)| HeldDay::new(&self.config, &conversation, day, positions))
            .collect();
        if self.held.has_any(&days) {
            self.claim_held()?;
        }
        self.held.conversations.push(HeldConversation {
            conversation,
            listed,
            lineage,
            days,
        });
        if self.held.is_full() {
            self.claim_held()?;
        }
        Ok(())
    }

    /// Claims the held conversation-days' new events in the ledger, several
    /// at once, then builds their mails in file order. A claim that fails
    /// fails the run after the mails of those before it are sent; the
    /// others' claims are completed by the next run of the file.
    fn claim_held(&mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held).conversations;
        let claims: Vec<Result<Claimed>> = {
            let this = &*self;
            let claims = held
                .iter()
                .flat_map(|h| h.days.iter().map(move |day| this.claim(h, day)));
            self.runtime.block_on(
                futures_util::stream::iter(claims)
                    .buffered(CLAIMS_HELD)
                    .collect(),
            )
        };
        let mut claims = claims.into_iter();
        for mut held in held {
            for day in &held.days {
                let claimed = claims.next().ok_or_else(|| {
                    Error::Config("a held conversation-day lost its claim".into())
                })??;
                self.archive_day(&mut held.conversation, &held.lineage, day, claimed)?;
            }
        }
        Ok(())
    }

    /// Claims one conversation-day's new events: the ledger as stored after
    /// the claim, and the item ids of the parts this claim added.
    async fn claim(&self, held: &HeldConversation, day: &HeldDay) -> Result<Claimed> {
        let config = &self.config;
        let conversation = &held.conversation;
        let events = day.events(&conversation.events);
        let ids = &day.ids;
        let mut claimed = Vec::new();
        let fresh = || Ledger {
            connector: config.name.clone(),
            conversation_id: conversation.id.clone(),
            day: Some(day.day),
            folder: config.folder.clone(),
            ..Ledger::default()
        };
        let claim = |ledger: &mut Ledger| {
            let taken: HashSet<&str> = ledger.holders().into_keys().collect();
            claimed = ledger::plan_parts(
                &config.name,
                &conversation.id,
                day.day,
                config.granularity,
                &events,
                ids,
                &taken,
                ledger.parts.is_empty(),
                config.part_cap(),
            );
            if claimed.is_empty() {
                return false;
            }
            for part in &claimed {
                ledger.parts.push(LedgerPart {
                    message_id: mail::message_id(&config.name, &part.item_id),
                    item_id: part.item_id.clone(),
                    source_key: self.source.key.clone(),
                    source_sha256: self.source.sha256.clone(),
                    events: part.events.iter().map(|&i| ids[i].clone()).collect(),
                });
            }
            ledger.add_participants(&held.listed);
            true
        };
        let stored = ledger::update(self.store.as_ref(), &day.key, fresh, claim).await?;
        Ok(Claimed {
            parts: claimed.into_iter().map(|p| p.item_id).collect(),
            stored,
        })
    }

    /// Builds and sends the mails of one claimed conversation-day, and counts
    /// the file's share of the day.
    fn archive_day(
        &mut self,
        conversation: &mut Conversation,
        lineage: &Lineage,
        held_day: &HeldDay,
        claimed: Claimed,
    ) -> Result<()> {
        let config = &self.config;
        let (day, ids) = (held_day.day, &held_day.ids);
        let Claimed {
            parts: claimed,
            stored,
        } = claimed;
        let events = held_day.events(&conversation.events);

        let mut share = DayShare::default();
        let holders = stored.holders();
        for id in ids {
            share.events.received += 1;
            match holders.get(id.as_str()) {
                Some(part) if self.is_ours(part) => share.events.delivered += 1,
                _ => share.events.already_delivered += 1,
            }
        }

        // Every part of this day built from this file: the ones just claimed,
        // and those an earlier run of the same file claimed (a rerun must
        // still see them imported; a run stopped between claim and write
        // left them to be written now).
        conversation.participants = stored.participants.clone();
        for (index, part) in stored.parts.iter().enumerate() {
            if !self.is_ours(part) {
                continue;
            }
            share.items += 1;
            let recovered = !claimed.contains(&part.item_id);
            if recovered {
                let sidecar = layout::sidecar(&config.name, &day.to_string(), &part.item_id);
                if self.runtime.block_on(self.store.head(&sidecar))?.is_some() {
                    self.send(Output::Written(sidecar))?;
                    continue;
                }
            }
            let wanted: HashSet<&str> = part.events.iter().map(String::as_str).collect();
            let events: Vec<&ChatEvent> = events
                .iter()
                .zip(ids)
                .filter(|(_, id)| wanted.contains(id.as_str()))
                .map(|(&event, _)| event)
                .collect();
            let continues =
                (index > 0 && config.granularity == Granularity::ConversationDay).then(|| {
                    Continuation {
                        first_message_id: stored.first_message_id().unwrap_or_default().to_string(),
                        part: index + 1,
                    }
                });
            let mail = build_mail(
                conversation,
                config,
                lineage,
                MailPart {
                    item_id: part.item_id.clone(),
                    day,
                    events,
                    continues,
                },
            )?;
            self.send(Output::Mail {
                mail: Box::new(mail),
                recovered,
            })?;
        }
        let total = self.days.entry(day.to_string()).or_default();
        total.items += share.items;
        total.events.add(&share.events);
        Ok(())
    }

    fn is_ours(&self, part: &LedgerPart) -> bool {
        part.source_key == self.source.key && part.source_sha256 == self.source.sha256
    }

    fn send(&self, output: Output) -> Result<()> {
        self.sender
            .blocking_send(output)
            .map_err(|_| Error::Config("mail writer stopped".into()))
    }

    /// Puts each attachment's file in its place, from the attachment
    /// archive; one that is not there goes out as a line saying so, with a
    /// failure row of its own (never silently without it).
    fn resolve_attachments(
        &mut self,
        conversation: &mut Conversation,
        fallback_day: NaiveDate,
    ) -> Result<()> {
        for event in &mut conversation.events {
            let EventKind::Attachment(attachment) = &event.kind else {
                continue;
            };
            let attachment = attachment.clone();
            let Some(path) = self.attachments.files.get(&attachment.file_id) else {
                let reason = self.attachments.missing(&attachment.file_id);
                event.kind = EventKind::Notice {
                    text: format!("ATTACHMENT MISSING: {}: {reason}", attachment.describe()),
                };
                let day = status::day_label(Some(event.time.date_naive()).or(Some(fallback_day)));
                let record = ItemRecord {
                    connector: self.config.name.clone(),
                    day,
                    item_id: mail::item_id(
                        &self.config.name,
                        &["attachment", &self.source.key, &attachment.file_id],
                    ),
                    subject: format!(
                        "attachment {} in conversation {} (missing)",
                        attachment.file_name, conversation.id
                    ),
                    source: self.source.key.clone(),
                    state: ItemState::Failed,
                    targets: Vec::new(),
                    unmapped: Vec::new(),
                    reason: Some(format!("attachment missing: {reason}")),
                    attachments_kept: None,
                };
                self.runtime
                    .block_on(status::write_item(self.store.as_ref(), &record))?;
                continue;
            };
            let content = attachment_content(path)
                .map_err(|e| Error::io(format!("reading attachment {}", attachment.file_id), e))?;
            event.kind = EventKind::FileTransfer(FileTransfer {
                file_name: attachment.file_name,
                content_type: None,
                content,
            });
        }
        Ok(())
    }

    /// One conversation to quarantine, recorded as a failed item of the
    /// file's day; the rest of the file goes on.
    fn quarantine(&mut self, bad: &BadConversation, file_day: Option<NaiveDate>) -> Result<()> {
        let store = self.store.as_ref();
        let key = self.runtime.block_on(quarantine_conversation(
            store,
            &self.source.key,
            bad,
            &self.metadata,
        ))?;
        let day = status::day_label(file_day);
        let line = bad.line.to_string();
        let record = ItemRecord {
            connector: self.config.name.clone(),
            day: day.clone(),
            item_id: mail::item_id(&self.config.name, &["quarantine", &self.source.key, &line]),
            subject: match &bad.id {
                Some(id) => format!("conversation {id} (quarantined)"),
                None => format!("conversation at line {line} (quarantined)"),
            },
            source: self.source.key.clone(),
            state: ItemState::Failed,
            targets: Vec::new(),
            unmapped: Vec::new(),
            reason: Some(format!("quarantined as {key}: {}", bad.error)),
            attachments_kept: None,
        };
        self.runtime.block_on(status::write_item(store, &record))?;
        let share = self.days.entry(day).or_default();
        share.events.received += bad.events;
        share.events.quarantined += bad.events;
        self.quarantined.push((key, bad.error.clone()));
        Ok(())
    }
}

/// An attachment file from its archive: a large one stays on disk (a copy,
/// as one file may serve several events).
fn attachment_content(path: &std::path::Path) -> std::io::Result<crate::model::Content> {
    if std::fs::metadata(path)?.len() <= crate::formats::spill::SPILL_AT as u64 {
        return Ok(std::fs::read(path)?.into());
    }
    let spool = crate::spool::Spool::copy_from(&mut std::fs::File::open(path)?)?;
    crate::model::Content::from_file(spool)
}

/// A conversation that was read but cannot be archived, as a quarantine entry.
fn unreadable(conversation: Conversation, error: InputError) -> BadConversation {
    BadConversation {
        spilled: conversation.original_spilled,
        error,
        id: Some(conversation.id),
        line: conversation.line,
        events: conversation.events.len() as u64,
        raw: conversation.original_xml,
    }
}

/// The mails being written, in the order the parser made them; at most
/// [`WRITES_IN_FLIGHT`] and [`WRITE_BYTES_IN_FLIGHT`] at once. When one
/// fails, the others are let finish (never cut off mid-write, which would
/// leave a local store's temporary file behind) and the first failure is
/// the stage's.
struct Writes {
    ctx: Arc<Context>,
    in_flight: VecDeque<(usize, tokio::task::JoinHandle<Result<String>>)>,
    bytes: usize,
}

impl Writes {
    fn new(ctx: &Context) -> Self {
        Self {
            ctx: Arc::new(ctx.clone()),
            in_flight: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Starts writing `output` once there is room, collecting the sidecar
    /// keys of the writes that finish meanwhile into `done`.
    async fn start(&mut self, output: Output, done: &mut Vec<String>) -> Result<()> {
        let size = match &output {
            Output::Mail { mail, .. } => mail.raw.len(),
            Output::Written(_) => 0,
        };
        while !self.in_flight.is_empty()
            && (self.in_flight.len() >= WRITES_IN_FLIGHT
                || self.bytes + size > WRITE_BYTES_IN_FLIGHT)
        {
            let key = self.next_done().await;
            done.push(self.or_drain(key).await?);
        }
        let ctx = self.ctx.clone();
        let write = tokio::spawn(async move {
            match output {
                Output::Mail { mail, recovered } => write_mail(&ctx, *mail, recovered).await,
                Output::Written(key) => Ok(key),
            }
        });
        self.bytes += size;
        self.in_flight.push_back((size, write));
        Ok(())
    }

    /// Waits for every write still in flight.
    async fn finish(&mut self, done: &mut Vec<String>) -> Result<()> {
        while !self.in_flight.is_empty() {
            let key = self.next_done().await;
            done.push(self.or_drain(key).await?);
        }
        Ok(())
    }

    /// A failed write: waits for the rest, then gives the failure back.
    async fn or_drain(&mut self, key: Result<String>) -> Result<String> {
        if key.is_err() {
            while !self.in_flight.is_empty() {
                let _ = self.next_done().await;
            }
        }
        key
    }

    async fn next_done(&mut self) -> Result<String> {
        let Some((size, write)) = self.in_flight.front_mut() else {
            return Err(Error::Internal("no mail write in flight".into()));
        };
        let key = match write.await {
            Ok(key) => key,
            // A panic in a write is the stage's own, as if written inline.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(Error::Internal(format!("mail write task: {e}"))),
        };
        self.bytes -= *size;
        self.in_flight.pop_front();
        key
    }
}

/// Writes a mail and its sidecar (sidecar last: its arrival starts the import,
/// so the mail must already be there). A pending status record is written
/// first, and only if the item has none yet, so a replay never resets an
/// imported item to pending. A `recovered` mail writes only what is missing.
async fn write_mail(ctx: &Context, mail: BuiltMail, recovered: bool) -> Result<String> {
    let store = ctx.store.as_ref();
    let side = &mail.sidecar;
    let day = side.day.to_string();
    if status::read_item(store, &side.connector, &day, &side.item_id)
        .await?
        .is_none()
    {
        // Checked first to spare a conditional write on every replay; the
        // write itself is conditional for the replay that races an import.
        let record = side.pending_record();
        status::create_item(store, &record).await?;
    }
    let mut metadata = Metadata::new();
    metadata.insert(lineage::SOURCE_KEY.into(), side.lineage.plain_key.clone());
    metadata.insert(
        lineage::SOURCE_SHA256.into(),
        side.lineage.plain_sha256.clone(),
    );
    metadata.insert(lineage::RAW_KEY.into(), side.lineage.raw_key.clone());
    metadata.insert(lineage::RAW_SHA256.into(), side.lineage.raw_sha256.clone());
    metadata.insert(lineage::STAGE.into(), "convert".into());
    let mail_key = layout::mail(&side.connector, &day, &side.item_id);
    let sidecar_key = layout::sidecar(&side.connector, &day, &side.item_id);
    let json = serde_json::to_vec_pretty(side).map_err(Error::internal)?;
    if !(recovered && store.head(&mail_key).await?.is_some()) {
        if mail.splices.is_empty() {
            store.put_bytes(&mail_key, mail.raw, &metadata).await?;
        } else {
            store.put(&mail_key, spliced_body(mail), &metadata).await?;
        }
    }
    store.put_bytes(&sidecar_key, json, &metadata).await?;
    Ok(sidecar_key)
}

/// A mail with spliced parts, written as the store reads it.
fn spliced_body(mail: BuiltMail) -> ByteStream {
    super::pipe::streamed(move |out| mail.write_to(out))
}
