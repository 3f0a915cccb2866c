//! The common body of the function binaries: read the trigger event, run the
//! stage, print what it wrote. On one machine the event comes from a JSON
//! file (`events/*.json`) and the ports are the embedded defaults.

use std::collections::BTreeSet;
use std::path::PathBuf;

use aws_lambda_events::s3::S3Event;
use serde::Serialize;

use crate::alerts::{Alert, AlertKind};
use crate::error::{Error, Result};
use crate::events::{object_keys, FetchRequest};
use crate::mapping::Mapper;
use crate::pipeline::{LocalLayout, Pipeline, StageResult};
use crate::stages::{decrypt::DecryptOutcome, fetch, import, Stage};
use crate::status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Fetch,
    Decrypt,
    Convert,
    Import,
}

impl Function {
    /// The function's name, as in the template and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Function::Fetch => "fetch",
            Function::Decrypt => "decrypt",
            Function::Convert => "convert",
            Function::Import => "import",
        }
    }

    fn stage(self) -> Option<Stage> {
        match self {
            Function::Fetch => None,
            Function::Decrypt => Some(Stage::Decrypt),
            Function::Convert => Some(Stage::Convert),
            Function::Import => Some(Stage::Import),
        }
    }
}

/// What a function invocation reports back.
#[derive(Debug, Default, Serialize)]
pub struct Response {
    pub written: Vec<String>,
    pub quarantined: Vec<String>,
    pub imported: Vec<String>,
    /// Days whose status records this invocation touched (their status log
    /// is due for a rebuild).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub days: BTreeSet<String>,
    /// Mails that reached no mailbox.
    #[serde(skip_serializing_if = "is_zero")]
    pub failed: usize,
    /// Alerts that hold (see [`crate::alerts`]), of the kinds in
    /// `alerts_checked`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    #[serde(skip)]
    pub alerts_checked: Vec<AlertKind>,
    /// Of a batch from the import queue, the messages to hand back to the
    /// queue (Lambda's `ReportBatchItemFailures`): the rest are done.
    #[serde(rename = "batchItemFailures", skip_serializing_if = "Vec::is_empty")]
    pub batch_item_failures: Vec<aws_lambda_events::sqs::BatchItemFailure>,
}

impl Response {
    /// Folds the response of another part of the same invocation in.
    pub fn absorb(&mut self, other: Response) {
        self.written.extend(other.written);
        self.quarantined.extend(other.quarantined);
        self.imported.extend(other.imported);
        self.days.extend(other.days);
        self.failed += other.failed;
        self.alerts.extend(other.alerts);
        self.alerts_checked.extend(other.alerts_checked);
        self.batch_item_failures.extend(other.batch_item_failures);
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("CHAT_ARCHIVE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("archive-data"))
}

fn read_event() -> Result<Vec<u8>> {
    match std::env::args_os().nth(1) {
        Some(path) if path != "-" => std::fs::read(&path).map_err(|e| {
            Error::io(
                format!("reading event {}", PathBuf::from(&path).display()),
                e,
            )
        }),
        _ => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| Error::io("reading event from stdin", e))?;
            Ok(bytes)
        }
    }
}

pub async fn main(function: Function) -> Result<()> {
    let event = read_event()?;
    let pipeline = Pipeline::local(&LocalLayout::new(data_dir()))?;
    let response = invoke(&pipeline, function, &event).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&response).unwrap_or_default()
    );
    Ok(())
}

/// Runs a function on an event, as its Lambda handler does.
pub async fn invoke(pipeline: &Pipeline, function: Function, event: &[u8]) -> Result<Response> {
    if function == Function::Fetch {
        return invoke_fetch(pipeline, &parse_fetch_request(event)?).await;
    }
    let event: serde_json::Value =
        serde_json::from_slice(event).map_err(|e| Error::Event(format!("not an S3 event: {e}")))?;
    let event = crate::events::parse_s3_event(event)?;
    invoke_s3(pipeline, function, &event).await
}

/// The fetch trigger: a schedule event (EventBridge; it carries no request
/// fields and means "all new files"), or a manual request (`since`/`until`,
/// `files`), read strictly so that a mistyped backfill fails instead of
/// running as a plain daily fetch.
pub fn parse_fetch_request(event: &[u8]) -> Result<FetchRequest> {
    let value: serde_json::Value = serde_json::from_slice(event)
        .map_err(|e| Error::Event(format!("fetch event is not JSON: {e}")))?;
    let serde_json::Value::Object(fields) = &value else {
        return Err(Error::Event("fetch event is not a JSON object".into()));
    };
    if fields.contains_key("detail-type") {
        return Ok(FetchRequest::default());
    }
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "since" | "until" | "files"))
    {
        return Err(Error::Event(format!(
            "fetch event: unknown field {unknown:?} (expected since, until, files)"
        )));
    }
    serde_json::from_value(value).map_err(|e| Error::Event(format!("fetch event: {e}")))
}

/// Fetches from every connector's source.
pub async fn invoke_fetch(pipeline: &Pipeline, request: &FetchRequest) -> Result<Response> {
    let mut response = Response::default();
    for source in &pipeline.sources {
        let ctx = pipeline.ctx.serving(&source.connector);
        let outcome = fetch::run(&ctx, source.source.as_ref(), request).await?;
        response.written.extend(outcome.fetched);
    }
    Ok(response)
}

/// Runs the function's stage for every object of an S3 event.
pub async fn invoke_s3(
    pipeline: &Pipeline,
    function: Function,
    event: &S3Event,
) -> Result<Response> {
    let Some(stage) = function.stage() else {
        return Err(Error::Event(format!(
            "{function:?} is not started by S3 events"
        )));
    };
    let keys_of_event = object_keys(event)?;
    for key in &keys_of_event {
        if Stage::for_key(key) != Some(stage) {
            return Err(Error::Event(format!(
                "{function:?} does not consume {key:?}"
            )));
        }
    }
    // The objects of one event belong to one connector: its keys, its
    // mapping.
    let first = keys_of_event.first().cloned().unwrap_or_default();
    let ctx = pipeline.ctx.serving(&pipeline.ctx.for_key(&first));
    let keys = match stage {
        Stage::Decrypt => Some(pipeline.decrypt_keys(&first).await?),
        _ => None,
    };
    let table = match stage {
        Stage::Import => import::load_mapping(&ctx).await?,
        _ => Default::default(),
    };
    let mut mapper = Mapper::new(&ctx.config, &table, pipeline.sink.as_ref());
    let mut response = Response::default();
    if stage == Stage::Decrypt {
        for key in &keys_of_event {
            let day = status::day_label(status::day_from_file_name(key));
            response.days.insert(day);
        }
    }
    for result in pipeline
        .handle_s3_event(event, keys.as_ref(), &mut mapper)
        .await?
    {
        match result {
            StageResult::Decrypted(DecryptOutcome::Decrypted { plain_key, .. }) => {
                response.written.push(plain_key)
            }
            StageResult::Decrypted(
                DecryptOutcome::AwaitingSignature { .. } | DecryptOutcome::SignatureOnly { .. },
            ) => {}
            StageResult::Decrypted(DecryptOutcome::Quarantined { quarantine_key, .. }) => {
                response.quarantined.push(quarantine_key)
            }
            StageResult::Converted(outcome) => {
                response.days.insert(outcome.day.clone());
                response.days.extend(outcome.days);
                let sidecar_days = outcome.sidecars.iter().filter_map(|k| k.split('/').nth(2));
                response.days.extend(sidecar_days.map(str::to_string));
                response.written.extend(outcome.sidecars);
                response
                    .quarantined
                    .extend(outcome.quarantined.into_iter().map(|(key, _)| key));
            }
            StageResult::Imported(record) => {
                response.days.insert(record.day.clone());
                if record.state == status::ItemState::Failed {
                    response.failed += 1;
                }
                response
                    .imported
                    .push(format!("{} {:?}", record.item_id, record.state))
            }
        }
    }
    Ok(response)
}
