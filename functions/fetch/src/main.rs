//! The fetch function on AWS Lambda.
//!
//! Event: a schedule event (EventBridge Scheduler), or a manual request:
//! `{"since": "2026-11-01", "until": "2026-11-20"}` (backfill) or
//! `{"files": ["NAME"]}` (re-fetch). Writes `raw/<connector>/<file>`.
//!
//! Thin on purpose: the settings (environment) and the SDK clients are built
//! once per process, with no network at init; each event goes to the core
//! (`chat_archive_core::aws`). Logs are JSON lines.
//!
//! Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it runs once on the embedded
//! defaults with an event file: `cargo run -p fetch -- events/FILE.json`.
//! Under a local Lambda runtime API: `cargo lambda watch`, then
//! `cargo lambda invoke fetch --data-file events/FILE.json`.

use std::sync::Arc;

use chat_archive_core::aws;
use chat_archive_core::function::{self, Function};
use lambda_runtime::{service_fn, Error, LambdaEvent};

const FUNCTION: Function = Function::Fetch;

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Ok(function::main(FUNCTION).await?);
    }
    aws::init_logging();
    let lambda = Arc::new(aws::Lambda::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let lambda = lambda.clone();
        async move {
            let response = lambda.handle(FUNCTION, event.payload).await;
            if let Err(e) = &response {
                tracing::error!(function = ?FUNCTION, request_id = %event.context.request_id, error = %e, "failed");
            }
            Ok::<_, Error>(response?)
        }
    }))
    .await
}
