//! The whole pipeline in one process: fetch, then every raw object through
//! decrypt -> convert -> import, each stage started by the same S3 event JSON
//! that AWS would deliver to its Lambda function.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lambda_events::s3::S3Event;
use serde::{Deserialize, Serialize};

use crate::adapters::{DropDirectory, ImapSink, LocalStore, MaildirSink, SecretsFile, SftpSource};
use crate::config::{ConnectorConfig, ConnectorKind, Settings};
use crate::crypto::DecryptKeys;
use crate::error::{Error, InputError, Result};
use crate::events::{object_keys, s3_put_event, FetchRequest};
use crate::mapping::{Mapper, MappingTable};
use crate::ports::{MailboxSink, Metadata, SecretStore, Source};
use crate::stages::{convert, decrypt, fetch, import, Context, Stage};
use crate::status::{self, DayStatus, ItemRecord, ItemState};

/// Mails per import event in local runs.
const IMPORT_EVENT_MAILS: usize = 500;

/// Where the embedded defaults keep everything, under one data directory.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    pub data_dir: PathBuf,
}

impl LocalLayout {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
        }
    }
    pub fn store(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    pub fn secrets(&self) -> PathBuf {
        self.data_dir.join("secrets.json")
    }
    pub fn mailboxes(&self) -> PathBuf {
        self.data_dir.join("mailboxes")
    }
    pub fn drop_dir(&self) -> PathBuf {
        self.data_dir.join("drop")
    }
    pub fn settings(&self) -> PathBuf {
        self.data_dir.join("config.toml")
    }
}

/// Progress callbacks for long runs (the CLI draws a bar from them).
pub trait Progress: Send + Sync {
    fn fetched(&self, _files: usize) {}
    fn files_to_process(&self, _files: usize) {}
    fn file_started(&self, _key: &str) {}
    fn file_done(&self, _key: &str) {}
    fn mail_imported(&self, _record: &ItemRecord) {}
}

/// No progress reporting.
pub struct Silent;
impl Progress for Silent {}

#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub fetched: Vec<String>,
    pub processed_files: Vec<String>,
    pub quarantined: Vec<(String, InputError)>,
    /// Files held back until their detached signature or their attachments
    /// arrive, and why.
    pub waiting: Vec<(String, String)>,
    pub mails: usize,
    pub days: Vec<DayStatus>,
}

/// What one stage did with one object.
#[derive(Debug, Clone)]
pub enum StageResult {
    Decrypted(decrypt::DecryptOutcome),
    Converted(convert::ConvertOutcome),
    Imported(ItemRecord),
}

/// Marks a raw object as carried through every stage, with the digest it had.
#[derive(Serialize, Deserialize)]
struct DoneMarker {
    raw_key: String,
    sha256: String,
}

/// A connector's source of files.
#[derive(Clone)]
pub struct ConnectorSource {
    pub connector: ConnectorConfig,
    pub source: Arc<dyn Source>,
}

/// Every connector of the archive over one store, one secret store and one
/// mailbox sink. Each object is handled with the settings of the connector
/// its key names ([`Context::for_key`]).
pub struct Pipeline {
    pub ctx: Context,
    pub secrets: Arc<dyn SecretStore>,
    pub sink: Arc<dyn MailboxSink>,
    /// The sources, in the settings' order (XIP has none of its own: its
    /// files are recognised by name wherever they arrive).
    pub sources: Vec<ConnectorSource>,
    /// The bucket name put in events (any name works locally).
    pub bucket: String,
}

impl Pipeline {
    /// The embedded defaults: everything under one local data directory.
    pub fn local(layout: &LocalLayout) -> Result<Self> {
        let settings = Settings::load(&layout.settings())?;
        let secrets: Arc<dyn SecretStore> = Arc::new(SecretsFile::new(layout.secrets()));
        let sources = local_sources(layout, &settings, &secrets);
        // The mail server when configured, else the local Maildir tree.
        let sink: Arc<dyn MailboxSink> = match &settings.firm.imap {
            Some(imap) => Arc::new(ImapSink::new(
                imap.clone(),
                secrets.clone(),
                settings.mail_secret(),
            )?),
            None => Arc::new(MaildirSink::new(layout.mailboxes())),
        };
        Ok(Self {
            ctx: Context::new(Arc::new(LocalStore::new(layout.store())), &settings),
            secrets,
            sink,
            sources,
            bucket: "local".into(),
        })
    }

    /// The first connector's source (what single-connector set-ups have).
    pub fn source(&self) -> Result<&Arc<dyn Source>> {
        self.sources
            .first()
            .map(|s| &s.source)
            .ok_or_else(|| Error::Config("no connector with a source is configured".into()))
    }

    /// This pipeline's context for one of its connectors by name, with an
    /// error that lists them.
    pub fn connector(&self, name: &str) -> Result<Context> {
        match self.ctx.connector(name) {
            Some(config) => Ok(self.ctx.serving(config)),
            None => Err(Error::Config(format!(
                "unknown connector {name:?}; the settings have {}",
                self.connector_names().join(", ")
            ))),
        }
    }

    pub fn connector_names(&self) -> Vec<String> {
        self.ctx.connectors.iter().map(|c| c.name.clone()).collect()
    }

    /// The alerts that hold at `now`, for every connector, each source
    /// listed when `list_sources` (see [`crate::alerts`]).
    pub async fn alerts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        list_sources: bool,
    ) -> Result<Vec<crate::alerts::Alert>> {
        let mut alerts = Vec::new();
        for config in self.ctx.connectors.iter() {
            let source = self
                .sources
                .iter()
                .filter(|_| list_sources)
                .find(|s| s.connector.name == config.name)
                .map(|s| s.source.as_ref());
            let ctx = self.ctx.serving(config);
            alerts.extend(crate::alerts::check(&ctx, self.secrets.as_ref(), source, now).await?);
        }
        Ok(alerts)
    }

    /// The status page of every connector (one self-contained HTML page,
    /// [`crate::status_page`]), its links to the logs relative to
    /// `reports_link`, and the alerts it shows (sources listed when
    /// `list_sources`).
    pub async fn status_page(
        &self,
        reports_link: &str,
        list_sources: bool,
    ) -> Result<(String, Vec<crate::alerts::Alert>)> {
        use crate::status_page;
        let store = self.ctx.store.as_ref();
        let names = self.connector_names();
        let mut pages = Vec::new();
        for connector in &names {
            pages.push(status_page::connector_page(store, connector).await?);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let quarantine = status_page::quarantined(store, &names).await?;
        let now = chrono::Utc::now();
        let alerts = self.alerts(now, list_sources).await?;
        let generated = now.format("%Y-%m-%d %H:%M UTC").to_string();
        let html = status_page::render(&pages, &quarantine, &alerts, reports_link, &generated);
        Ok((html, alerts))
    }

    /// The decryption and signature keys of the connector an object key
    /// belongs to.
    pub async fn decrypt_keys(&self, key: &str) -> Result<Arc<DecryptKeys>> {
        let config = self.ctx.for_key(key);
        let secret = self.secrets.load(config.secret_name()).await?;
        Ok(Arc::new(decrypt::keys_from_secret(
            &secret,
            config.signature_policy,
        )?))
    }

    fn done_key(&self, raw_key: &str) -> String {
        let id = crate::mail::item_id(&self.ctx.config.name, &["done", raw_key]);
        crate::layout::done_marker(&self.ctx.config.name, &id)
    }

    /// Raw objects not yet carried through (new, changed, or left half-way by
    /// an interrupted run).
    pub async fn pending_raw_keys(&self) -> Result<Vec<String>> {
        let store = self.ctx.store.as_ref();
        let mut pending = Vec::new();
        let mut raw_keys = Vec::new();
        for config in self.ctx.connectors.iter() {
            raw_keys.extend(store.list(&crate::layout::raw_prefix(&config.name)).await?);
        }
        for key in raw_keys {
            let Some(info) = store.head(&key).await? else {
                continue;
            };
            let done_key = self.done_key(&key);
            let done = match store.head(&done_key).await? {
                Some(_) => serde_json::from_slice::<DoneMarker>(&store.get_bytes(&done_key).await?)
                    .is_ok_and(|m| m.sha256 == info.sha256),
                None => false,
            };
            if !done {
                pending.push(key);
            }
        }
        Ok(pending)
    }

    /// Runs one stage for every object named in an S3 event: the single entry
    /// point for local runs, test events and (through the Lambda binaries) AWS.
    pub async fn handle_s3_event(
        &self,
        event: &S3Event,
        keys: Option<&Arc<DecryptKeys>>,
        mapper: &mut Mapper<'_>,
    ) -> Result<Vec<StageResult>> {
        let mut results = Vec::new();
        let keys_of_event = object_keys(event)?;
        // The mails of one event go to the import stage together, so the
        // sink can pipeline them (one record per mail all the same).
        let (imports, others): (Vec<String>, Vec<String>) = keys_of_event
            .into_iter()
            .partition(|key| Stage::for_key(key) == Some(Stage::Import));
        if let Some(first) = imports.first() {
            let ctx = self.ctx.serving(&self.ctx.for_key(first));
            for record in import::run_batch(&ctx, mapper, self.sink.as_ref(), &imports).await? {
                results.push(StageResult::Imported(record));
            }
        }
        for key in others {
            let result = match Stage::for_key(&key) {
                Some(Stage::Decrypt) => {
                    let keys = keys
                        .ok_or_else(|| Error::Internal("decryption keys were not loaded".into()))?;
                    StageResult::Decrypted(decrypt::run(&self.ctx, keys, &key).await?)
                }
                Some(Stage::Convert) => {
                    StageResult::Converted(convert::run(&self.ctx, &key).await?)
                }
                Some(Stage::Import) => continue,
                None => {
                    tracing::debug!(key, "no stage consumes this object");
                    continue;
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Carries one raw object through decrypt, convert and import, event by
    /// event, then rebuilds the status log of the days it touched (into
    /// `days`) and marks it done.
    async fn process_raw(
        &self,
        raw_key: &str,
        keys: &Arc<DecryptKeys>,
        mapper: &mut Mapper<'_>,
        progress: &dyn Progress,
        summary: &mut RunSummary,
        days: &mut BTreeMap<(String, String), DayStatus>,
    ) -> Result<()> {
        let mut touched = BTreeSet::new();
        let mut waiting = None;
        let mut queue = vec![raw_key.to_string()];
        while let Some(key) = queue.pop() {
            // Consecutive mails (the sidecars of one converted file) travel
            // in one event, as an SQS-batched S3 notification would bring them.
            let mut batch = vec![key.clone()];
            if Stage::for_key(&batch[0]) == Some(Stage::Import) {
                while batch.len() < IMPORT_EVENT_MAILS
                    && queue
                        .last()
                        .is_some_and(|k| Stage::for_key(k) == Some(Stage::Import))
                {
                    batch.extend(queue.pop());
                }
            }
            let event = s3_put_event(&self.bucket, &batch);
            for result in self.handle_s3_event(&event, Some(keys), mapper).await? {
                match result {
                    StageResult::Decrypted(decrypt::DecryptOutcome::Decrypted {
                        plain_key,
                        ..
                    }) => queue.push(plain_key),
                    StageResult::Decrypted(decrypt::DecryptOutcome::AwaitingSignature {
                        ..
                    }) => waiting = Some(format!("for its detached signature ({key}.sig)")),
                    StageResult::Decrypted(decrypt::DecryptOutcome::SignatureOnly { .. }) => {}
                    StageResult::Decrypted(decrypt::DecryptOutcome::Quarantined {
                        error, ..
                    }) => {
                        let connector = self.ctx.for_key(&key).name;
                        touched.insert((
                            connector,
                            status::day_label(status::day_from_file_name(&key)),
                        ));
                        summary.quarantined.push((key.clone(), error));
                    }
                    StageResult::Converted(outcome) => {
                        if outcome.waiting.is_some() {
                            waiting = outcome.waiting.clone();
                        }
                        let connector = self.ctx.for_key(&key).name;
                        for day in &outcome.days {
                            touched.insert((connector.clone(), day.clone()));
                        }
                        // What was quarantined: the file, or one
                        // conversation of it (`<file>/conversation-line-N.xml`).
                        summary
                            .quarantined
                            .extend(outcome.quarantined.into_iter().map(|(copy, error)| {
                                let what = copy.strip_prefix("quarantine/").unwrap_or(&copy);
                                (what.to_string(), error)
                            }));
                        summary.mails += outcome.sidecars.len();
                        // The rest of a handed-on file after its mails.
                        queue.extend(outcome.handed_on);
                        // Reverse so that the pop order is the file order.
                        queue.extend(outcome.sidecars.into_iter().rev());
                    }
                    StageResult::Imported(record) => {
                        touched.insert((record.connector.clone(), record.day.clone()));
                        progress.mail_imported(&record);
                    }
                }
            }
        }
        // The status log is brought up to date before the file is marked
        // done: a run stopped after the mark (killed, say) leaves the next
        // run nothing to redo, so nothing that would rebuild these days.
        for (connector, day) in touched {
            let status = status::rebuild_day(self.ctx.store.as_ref(), &connector, &day).await?;
            days.insert((connector, day), status);
        }
        if let Some(reason) = waiting {
            // Not done: the next run (or the signature's or attachments'
            // arrival) starts it again.
            summary.waiting.push((raw_key.to_string(), reason));
            return Ok(());
        }
        let info = self
            .ctx
            .store
            .head(raw_key)
            .await?
            .ok_or_else(|| Error::store(raw_key, "vanished during processing"))?;
        let marker = DoneMarker {
            raw_key: raw_key.to_string(),
            sha256: info.sha256,
        };
        let json = serde_json::to_vec(&marker).map_err(Error::internal)?;
        self.ctx
            .store
            .put_bytes(&self.done_key(raw_key), json, &Metadata::new())
            .await?;
        Ok(())
    }

    /// The whole local run: fetch from every source, process everything
    /// pending (each connector's files with its own keys and mapping),
    /// rebuild the status log of every day touched.
    pub async fn run(&self, request: &FetchRequest, progress: &dyn Progress) -> Result<RunSummary> {
        self.ctx.config.check()?;
        let mut summary = RunSummary::default();
        for source in &self.sources {
            let ctx = self.ctx.serving(&source.connector);
            let outcome = fetch::run(&ctx, source.source.as_ref(), request).await?;
            summary.fetched.extend(outcome.fetched);
        }
        progress.fetched(summary.fetched.len());
        let pending = self.pending_raw_keys().await?;
        progress.files_to_process(pending.len());
        let mut days = BTreeMap::new();
        for config in self.ctx.connectors.iter() {
            let prefix = crate::layout::raw_prefix(&config.name);
            let files: Vec<&String> = pending.iter().filter(|k| k.starts_with(&prefix)).collect();
            let Some(first) = files.first() else {
                continue;
            };
            let keys = self.decrypt_keys(first).await?;
            let ctx = self.ctx.serving(config);
            let table: MappingTable = import::load_mapping(&ctx).await?;
            let mut mapper = Mapper::new(config, &table, self.sink.as_ref());
            for raw_key in files {
                progress.file_started(raw_key);
                self.process_raw(
                    raw_key,
                    &keys,
                    &mut mapper,
                    progress,
                    &mut summary,
                    &mut days,
                )
                .await?;
                progress.file_done(raw_key);
            }
        }
        summary.processed_files = pending;
        // Each day as rebuilt after the last file that touched it.
        summary.days = days.into_values().collect();
        Ok(summary)
    }
}

/// Each connector's source: its SFTP site, else a drop directory (`drop/`
/// for the first connector, `drop/<name>/` for the others).
fn local_sources(
    layout: &LocalLayout,
    settings: &Settings,
    secrets: &Arc<dyn SecretStore>,
) -> Vec<ConnectorSource> {
    let mut sources = Vec::new();
    for (index, connector) in settings.connectors.iter().enumerate() {
        let source: Arc<dyn Source> = match (&connector.sftp, connector.kind) {
            (Some(sftp), _) => Arc::new(SftpSource::new(
                sftp.clone(),
                connector.secret_name(),
                secrets.clone(),
            )),
            (None, ConnectorKind::Xip) => continue,
            (None, _) if index == 0 => Arc::new(DropDirectory::new(layout.drop_dir())),
            (None, _) => Arc::new(DropDirectory::new(layout.drop_dir().join(&connector.name))),
        };
        sources.push(ConnectorSource {
            connector: connector.clone(),
            source,
        });
    }
    sources
}

/// Counts of a run's mails by final state, for summaries.
pub fn count_states(days: &[DayStatus]) -> (u64, u64, u64, u64, u64) {
    days.iter().fold((0, 0, 0, 0, 0), |acc, d| {
        (
            acc.0 + d.imported,
            acc.1 + d.partially_imported,
            acc.2 + d.skipped_duplicates,
            acc.3 + d.failed,
            acc.4 + d.pending,
        )
    })
}

/// Whether a state means the item reached at least one mailbox.
pub fn reached_a_mailbox(state: ItemState) -> bool {
    matches!(
        state,
        ItemState::Imported | ItemState::PartiallyImported | ItemState::SkippedDuplicate
    )
}

/// Whether a path looks like a data directory made by this tool.
pub fn is_data_dir(path: &Path) -> bool {
    path.join("store").is_dir() || path.join("secrets.json").is_file()
}
