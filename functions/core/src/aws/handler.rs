//! The handler of every function's events: fetch, the S3-event stages,
//! the status rebuild, the RSMF export.

use super::*;

/// A request to the import function to fold status records into
/// `status.json` / `status.csv`: of every day touched since the last
/// rebuild, or of the days named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Names the request; `false` does nothing.
    pub rebuild_status: bool,
    /// These days (`YYYY-MM-DD` or `undated`) instead of the marked ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

/// `{"export_rsmf": {...}}`, a manual event to the import function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportEvent {
    export_rsmf: RsmfExportRequest,
}

/// What to export as RSMF: one day, or a range; optionally one custodian,
/// one conversation, one connector (default: the first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RsmfExportRequest {
    #[serde(default)]
    pub day: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub since: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub until: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub custodian: Option<String>,
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub connector: Option<String>,
}

/// What the import function is started by.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImportEvent {
    /// `{"rebuild_status": true}` (the status schedule).
    Status(StatusRequest),
    S3(S3Event),
}

/// One function process: the pipeline and the SDK clients, built once, and
/// the handler of each kind of event.
pub struct Lambda {
    pub pipeline: Pipeline,
    store: Arc<S3Store>,
}

impl Lambda {
    pub fn new(settings: &AwsSettings, sdk: &SdkConfig) -> Result<Self> {
        let (pipeline, store) = build(settings, sdk)?;
        Ok(Self { pipeline, store })
    }

    /// The Lambda set-up: settings from the environment, the clients built
    /// (no network).
    pub async fn from_env() -> Result<Self> {
        let settings = AwsSettings::from_env()?;
        for connector in &settings.settings.connectors {
            connector.check()?;
        }
        let sdk = sdk_config(&settings.sdk).await;
        Self::new(&settings, &sdk)
    }

    /// The handler of every function, for its event as JSON (what the
    /// binaries and the tests call): S3 events are read tolerantly
    /// ([`crate::events::parse_s3_event`]), manual fetch requests strictly.
    pub async fn handle(&self, function: Function, event: serde_json::Value) -> Result<Response> {
        match function {
            Function::Fetch => self.fetch(&event).await,
            Function::Import if event.get("rebuild_status").is_some() => {
                let request = serde_json::from_value(event)
                    .map_err(|e| Error::Event(format!("status request: {e}")))?;
                self.import(ImportEvent::Status(request)).await
            }
            Function::Import if event.get("export_rsmf").is_some() => {
                let request: ExportEvent = serde_json::from_value(event)
                    .map_err(|e| Error::Event(format!("export request: {e}")))?;
                self.export_rsmf(request.export_rsmf).await
            }
            Function::Import if is_queue_batch(&event) => {
                let batch: SqsEvent = serde_json::from_value(event)
                    .map_err(|e| Error::Event(format!("SQS batch: {e}")))?;
                self.import_queued(batch).await
            }
            Function::Import => {
                self.import(ImportEvent::S3(crate::events::parse_s3_event(event)?))
                    .await
            }
            Function::Decrypt | Function::Convert => {
                self.s3(function, &crate::events::parse_s3_event(event)?)
                    .await
            }
        }
    }

    /// fetch: a schedule event means "everything new"; a manual request is
    /// read strictly (a mistyped backfill fails, it never runs as a plain
    /// daily fetch).
    pub async fn fetch(&self, event: &serde_json::Value) -> Result<Response> {
        let bytes = serde_json::to_vec(event).map_err(Error::internal)?;
        let request = function::parse_fetch_request(&bytes)?;
        tracing::info!(?request, "fetch");
        let mut response = function::invoke_fetch(&self.pipeline, &request).await?;
        // Only fetch reaches the sources: files left there are its alert.
        for source in &self.pipeline.sources {
            let ctx = self.pipeline.ctx.serving(&source.connector);
            let left = crate::alerts::unfetched(&ctx, source.source.as_ref(), chrono::Utc::now());
            response.alerts.extend(left.await?);
        }
        response.alerts_checked = vec![crate::alerts::AlertKind::UnfetchedOnSource];
        Ok(response)
    }

    /// decrypt, convert, import: the stage for every object of the event.
    /// Events of another bucket are refused. When the stage changed anything,
    /// the days whose status it touched are marked for the next rebuild (a
    /// replay that changes nothing writes nothing at all).
    pub async fn s3(&self, function: Function, event: &S3Event) -> Result<Response> {
        let pipeline = &self.pipeline;
        for record in &event.records {
            let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
            if bucket != pipeline.bucket {
                return Err(Error::Event(format!(
                    "event for bucket {bucket:?}; this function serves {:?}",
                    pipeline.bucket
                )));
            }
        }
        let keys = object_keys(event)?;
        tracing::info!(?function, ?keys, "S3 event");
        let before = self.store.commits();
        let result = function::invoke_s3(pipeline, function, event).await;
        if self.store.commits() != before {
            // On failure the days come from the keys: the retry may find
            // nothing left to write, so the mark cannot wait for it.
            let mut days: BTreeSet<String> = keys.iter().filter_map(|k| day_of_key(k)).collect();
            if let Ok(response) = &result {
                days.extend(response.days.iter().cloned());
            }
            let connector = pipeline
                .ctx
                .for_key(keys.first().map_or("", String::as_str))
                .name;
            if let Err(e) = mark_for_status(pipeline, &connector, &days).await {
                tracing::error!(error = %e, ?days, "could not mark days for the status rebuild");
                if result.is_ok() {
                    return Err(e);
                }
            }
        }
        result
    }

    /// RSMF files for legal review, from the store into `exports/`
    /// ([`crate::rsmf::export`]): the manual event
    /// `{"export_rsmf": {"day": "2026-11-20"}}` to the import function.
    pub async fn export_rsmf(&self, request: RsmfExportRequest) -> Result<Response> {
        let (since, until) = match (request.day, request.since, request.until) {
            (Some(day), None, None) => (day, day),
            (None, Some(since), Some(until)) if since <= until => (since, until),
            _ => {
                return Err(Error::Event(
                    "export request: give day, or since and until (since <= until)".into(),
                ))
            }
        };
        let ctx = match &request.connector {
            Some(name) => self.pipeline.connector(name)?,
            None => self.pipeline.ctx.clone(),
        };
        let dir =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let export = crate::rsmf::export::ExportRequest {
            since,
            until,
            custodian: request.custodian.clone(),
            conversation: request.conversation.clone(),
            out: dir.path().to_path_buf(),
        };
        let written = crate::rsmf::export::export(ctx.store.as_ref(), &ctx.config, &export).await?;
        let mut prefix =
            crate::layout::export_prefix(&ctx.config.name, &since.to_string(), &until.to_string());
        if let Some(custodian) = &request.custodian {
            prefix.push('_');
            prefix.push_str(&custodian.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '@' && c != '.',
                "_",
            ));
        }
        let mut response = Response::default();
        let names = written
            .iter()
            .map(|w| w.file.clone())
            .chain([crate::rsmf::export::LOAD_FILE.to_string()]);
        for name in names {
            let path = dir.path().join(&name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let key = format!("{prefix}/{name}");
            ctx.store.put_bytes(&key, bytes, &Metadata::new()).await?;
            response.written.push(key);
        }
        tracing::info!(connector = %ctx.config.name, files = written.len(), %prefix, "RSMF export");
        Ok(response)
    }

    /// A batch from the import queue (the bucket's `mail/*.json`
    /// notifications, handed over by Lambda's SQS event source): the mails
    /// of each connector go to the sink together, so it can pipeline and
    /// group them (MULTIAPPEND) on one session per mailbox. A batch that
    /// fails is taken again one message at a time, and only the messages
    /// that fail alone go back to the queue (`batchItemFailures`); the
    /// import is exactly-once per mailbox, so redoing the others changes
    /// nothing. When every message fails the invocation fails, with the
    /// kind of the first failure.
    pub async fn import_queued(&self, batch: SqsEvent) -> Result<Response> {
        let mut response = Response::default();
        let mut queued: Vec<(String, S3Event)> = Vec::new();
        for message in batch.records {
            let id = message.message_id.clone().unwrap_or_default();
            match queued_s3_event(&message) {
                Ok(Some(event)) => queued.push((id, event)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "queued message is not an S3 event: back to the queue (its redrive policy moves it to the dead-letter queue)");
                    response.batch_item_failures.push(failed_item(id));
                }
            }
        }
        let mut first_error = None;
        for group in by_connector(&self.pipeline, queued) {
            let together = merged_event(group.iter().map(|(_, event)| event));
            match self.s3(Function::Import, &together).await {
                Ok(done) => response.absorb(done),
                Err(e) => {
                    tracing::warn!(error = %e, messages = group.len(), "batch failed: importing its messages one at a time");
                    for (id, event) in group {
                        match self.s3(Function::Import, &event).await {
                            Ok(done) => response.absorb(done),
                            Err(e) => {
                                tracing::error!(message_id = %id, kind = e.kind(), error = %e, "queued mail failed: back to the queue");
                                response.batch_item_failures.push(failed_item(id));
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
            }
        }
        let nothing_done = response.imported.is_empty() && response.written.is_empty();
        match first_error {
            Some(e) if nothing_done => Err(e),
            _ => Ok(response),
        }
    }

    pub async fn import(&self, event: ImportEvent) -> Result<Response> {
        match event {
            ImportEvent::S3(event) => self.s3(Function::Import, &event).await,
            ImportEvent::Status(request) if !request.rebuild_status => Ok(Response::default()),
            ImportEvent::Status(request) => {
                let (days, alerts) = rebuild_status(&self.pipeline, &request.days).await?;
                Ok(Response {
                    alerts,
                    alerts_checked: vec![
                        crate::alerts::AlertKind::NoFileForDay,
                        crate::alerts::AlertKind::KeyExpiring,
                        crate::alerts::AlertKind::QuarantineWaiting,
                    ],
                    written: days
                        .iter()
                        .map(|d| {
                            format!(
                                "{}status.json",
                                crate::layout::report_day_prefix(&d.connector, &d.day)
                            )
                        })
                        .collect(),
                    days: days.into_iter().map(|d| d.day).collect(),
                    ..Default::default()
                })
            }
        }
    }
}

/// Whether an import event is a batch from an SQS queue.
fn is_queue_batch(event: &serde_json::Value) -> bool {
    event["Records"][0]["eventSource"].as_str() == Some("aws:sqs")
}

/// The S3 notification a queued message carries; `None` for the
/// `s3:TestEvent` S3 sends when the notification is set up.
fn queued_s3_event(message: &SqsMessage) -> Result<Option<S3Event>> {
    let body: serde_json::Value = serde_json::from_str(message.body.as_deref().unwrap_or_default())
        .map_err(|e| Error::Event(format!("queued message body: {e}")))?;
    if body["Event"].as_str() == Some("s3:TestEvent") {
        return Ok(None);
    }
    crate::events::parse_s3_event(body).map(Some)
}

fn failed_item(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

/// The queued events grouped by the connector their first key belongs to,
/// in order of first appearance (one stage run serves one connector).
fn by_connector(
    pipeline: &Pipeline,
    queued: Vec<(String, S3Event)>,
) -> Vec<Vec<(String, S3Event)>> {
    let mut groups: Vec<(String, Vec<(String, S3Event)>)> = Vec::new();
    for (id, event) in queued {
        let first = object_keys(&event)
            .ok()
            .and_then(|keys| keys.into_iter().next())
            .unwrap_or_default();
        let connector = pipeline.ctx.for_key(&first).name;
        match groups.iter_mut().find(|(name, _)| *name == connector) {
            Some((_, group)) => group.push((id, event)),
            None => groups.push((connector, vec![(id, event)])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// One event of every record of `events`, each object once (SQS delivers
/// at least once: the same notification can come twice in a batch).
fn merged_event<'e>(events: impl Iterator<Item = &'e S3Event>) -> S3Event {
    let mut merged = S3Event::default();
    let mut seen = BTreeSet::new();
    for record in events.flat_map(|event| event.records.iter()) {
        if seen.insert(record.s3.object.key.clone()) {
            merged.records.push(record.clone());
        }
    }
    merged
}

/// The day a stage's input object belongs to, as the stages file it.
pub(super) fn day_of_key(key: &str) -> Option<String> {
    if key.starts_with("mail/") {
        return key.split('/').nth(2).map(str::to_string);
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    Some(status::day_label(status::day_from_file_name(name)))
}

pub(super) fn dirty_prefix(connector: &str) -> String {
    crate::layout::status_dirty_prefix(connector)
}

/// Marks a connector's days for the next status rebuild (one empty object
/// per day).
pub async fn mark_for_status(
    pipeline: &Pipeline,
    connector: &str,
    days: &BTreeSet<String>,
) -> Result<()> {
    let prefix = dirty_prefix(connector);
    for day in days {
        pipeline
            .ctx
            .store
            .put_bytes(&format!("{prefix}{day}"), Vec::new(), &Metadata::new())
            .await?;
    }
    Ok(())
}

/// Rebuilds the status log of the days named (of each connector with
/// records that day), or of every marked day. A mark is removed before its
/// day's records are read, so a record written meanwhile marks the day again
/// and the next run folds it in. Then the status page, and the alerts it
/// shows.
pub async fn rebuild_status(
    pipeline: &Pipeline,
    days: &[String],
) -> Result<(Vec<DayStatus>, Vec<crate::alerts::Alert>)> {
    let store = pipeline.ctx.store.as_ref();
    for day in days {
        let plain = !day.is_empty()
            && day
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return Err(Error::Event(format!("status request: not a day: {day:?}")));
        }
    }
    let mut rebuilt = Vec::new();
    for connector in pipeline.connector_names() {
        let prefix = dirty_prefix(&connector);
        let mut chosen = Vec::new();
        if days.is_empty() {
            for key in store.list(&prefix).await? {
                if let Some(day) = key.strip_prefix(&prefix) {
                    store.delete(&key).await?;
                    chosen.push(day.to_string());
                }
            }
        } else {
            for day in days {
                let records = crate::layout::report_day_prefix(&connector, day);
                if !store.list(&records).await?.is_empty() {
                    chosen.push(day.clone());
                }
            }
        }
        for day in &chosen {
            let status = status::rebuild_day(store, &connector, day).await?;
            tracing::info!(
                connector,
                day,
                imported = status.imported,
                failed = status.failed,
                counts_add_up = status.counts_add_up(),
                "status log rebuilt"
            );
            rebuilt.push(status);
        }
    }
    let alerts = write_status_page(pipeline).await?;
    Ok((rebuilt, alerts))
}

/// The status page beside the logs (`reports/index.html`), linking to them;
/// returns the alerts it shows.
pub(super) async fn write_status_page(pipeline: &Pipeline) -> Result<Vec<crate::alerts::Alert>> {
    // The import function does not reach the SFTP site: the fetch function
    // reports files left there.
    let (html, alerts) = pipeline.status_page(".", false).await?;
    pipeline
        .ctx
        .store
        .put_bytes(
            crate::layout::STATUS_PAGE,
            html.into_bytes(),
            &crate::ports::Metadata::new(),
        )
        .await?;
    Ok(alerts)
}
