//! The convert function on AWS Lambda.
//!
//! Event: S3 `ObjectCreated` under `plain/`. Writes one mail and its sidecar
//! per conversation and day under `mail/`.
//!
//! Thin on purpose: the settings (environment) and the SDK clients are built
//! once per process, with no network at init; each event goes to the core
//! (`chat_archive_core::aws::serve`). Logs are JSON lines.
//!
//! Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it runs once on the embedded
//! defaults with an event file: `cargo run -p convert -- events/FILE.json`.
//! Under a local Lambda runtime API: `cargo lambda watch`, then
//! `cargo lambda invoke convert --data-file events/FILE.json`.

use chat_archive_core::{aws, function::Function};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::serve(Function::Convert).await
}
