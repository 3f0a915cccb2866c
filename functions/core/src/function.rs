//! The common body of the function binaries: read the trigger event, run the
//! stage, print what it wrote. On one machine the event comes from a JSON
//! file (`events/*.json`) and the ports are the embedded defaults.

use std::path::PathBuf;

use aws_lambda_events::s3::S3Event;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::{object_keys, FetchRequest};
use crate::mapping::Mapper;
use crate::pipeline::{LocalLayout, Pipeline, StageResult};
use crate::stages::{decrypt::DecryptOutcome, fetch, import, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Fetch,
    Decrypt,
    Convert,
    Import,
}

impl Function {
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
    let Some(stage) = function.stage() else {
        // A schedule event (EventBridge) carries no request fields: it means "all new files".
        let request: FetchRequest = serde_json::from_slice(event).unwrap_or_default();
        let outcome = fetch::run(&pipeline.ctx, pipeline.source.as_ref(), &request).await?;
        return Ok(Response {
            written: outcome.fetched,
            ..Default::default()
        });
    };
    let event: S3Event = serde_json::from_slice(event)
        .map_err(|e| Error::Config(format!("not an S3 event: {e}")))?;
    for key in object_keys(&event)? {
        if Stage::for_key(&key) != Some(stage) {
            return Err(Error::Config(format!(
                "{function:?} does not consume {key:?}"
            )));
        }
    }
    let keys = match stage {
        Stage::Decrypt => Some(pipeline.decrypt_keys().await?),
        _ => None,
    };
    let table = match stage {
        Stage::Import => import::load_mapping(&pipeline.ctx).await?,
        _ => Default::default(),
    };
    let mut mapper = Mapper::new(&pipeline.ctx.config, &table, pipeline.sink.as_ref());
    let mut response = Response::default();
    for result in pipeline
        .handle_s3_event(&event, keys.as_ref(), &mut mapper)
        .await?
    {
        match result {
            StageResult::Decrypted(DecryptOutcome::Decrypted { plain_key, .. }) => {
                response.written.push(plain_key)
            }
            StageResult::Decrypted(DecryptOutcome::Quarantined { quarantine_key, .. }) => {
                response.quarantined.push(quarantine_key)
            }
            StageResult::Converted(outcome) => {
                response.written.extend(outcome.sidecars);
                response
                    .quarantined
                    .extend(outcome.quarantined.map(|(key, _)| key));
            }
            StageResult::Imported(record) => response
                .imported
                .push(format!("{} {:?}", record.item_id, record.state)),
        }
    }
    Ok(response)
}
