//! `chat-archive validate-connection`: the admin's first step against the
//! ICE SFTP site. The fetch stage's own connect path (pinned host key, login)
//! followed by a listing of the export directory, with a verdict.

use anyhow::bail;
use chat_archive_core::adapters::sftp::validate_connection;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};

pub async fn validate(layout: &LocalLayout) -> anyhow::Result<()> {
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
        &pipeline.ctx.config.name,
    )
    .await;
    print!("{check}");
    match check.failed_step() {
        None => Ok(()),
        // The report above says what failed; the exit status tells scripts.
        Some(step) => bail!("connection check failed at {}", step.step.label()),
    }
}
