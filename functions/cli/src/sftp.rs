//! `chat-archive validate-connection`: the admin's first step against the
//! ICE SFTP site. The fetch stage's own connect path (pinned host key, login)
//! followed by a listing of the export directory, with a verdict.

use anyhow::bail;
use chat_archive_core::adapters::sftp::{validate_connection, ConnectionCheck};
use chat_archive_core::pipeline::{LocalLayout, Pipeline};

pub async fn validate(layout: &LocalLayout, json: bool) -> anyhow::Result<()> {
    let pipeline = Pipeline::local(layout)?;
    let Some(config) = pipeline.ctx.config.sftp.clone() else {
        bail!(
            "no SFTP site is configured: add an [ice.sftp] table (host, port, directory, \
             host_keys) to {} — see docs/sftp.md",
            layout.settings().display()
        );
    };
    let check = validate_connection(
        &config,
        pipeline.secrets.as_ref(),
        pipeline.ctx.config.secret_name(),
    )
    .await;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&as_json(&check))?),
        false => print!("{check}"),
    }
    match check.failed_step() {
        None => Ok(()),
        // The report above says what failed; the exit status tells scripts.
        Some(step) => bail!("connection check failed at {}", step.step.label()),
    }
}

/// The report for scripts: each step with its verdict, the server's key, the
/// files listed.
fn as_json(check: &ConnectionCheck) -> serde_json::Value {
    let steps: Vec<_> = check
        .steps
        .iter()
        .map(|step| {
            let (ok, detail) = match &step.result {
                Ok(detail) => (true, detail),
                Err(detail) => (false, detail),
            };
            serde_json::json!({ "step": step.step.label(), "ok": ok, "detail": detail })
        })
        .collect();
    let files: Vec<_> = check
        .files
        .iter()
        .map(|f| serde_json::json!({ "name": f.name, "size": f.size, "modified": f.modified }))
        .collect();
    serde_json::json!({
        "site": check.site,
        "passed": check.passed(),
        "steps": steps,
        "server_key": check.server_key.as_ref().map(|k| serde_json::json!({
            "algorithm": k.algorithm, "fingerprint": k.fingerprint, "openssh": k.openssh,
        })),
        "files": files,
    })
}
