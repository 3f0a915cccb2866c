//! fetch: source (SFTP site, drop directory) -> `raw/<c>/<file>`, still
//! encrypted. New files are chosen by a persisted checkpoint of the files
//! already fetched (name, size, mtime), so a failed day is caught up by the
//! next run and nothing is fetched twice.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};

use super::{keys, lineage, Context};
use crate::error::{Error, Result};
use crate::events::FetchRequest;
use crate::ports::{Metadata, RemoteFile, Source};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fetched: BTreeSet<RemoteFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Raw keys written, in order.
    pub fetched: Vec<String>,
    /// Files seen and already fetched earlier.
    pub already_fetched: usize,
}

async fn load_checkpoint(ctx: &Context) -> Result<Checkpoint> {
    let key = keys::checkpoint(&ctx.config.name);
    if ctx.store.head(&key).await?.is_none() {
        return Ok(Checkpoint::default());
    }
    serde_json::from_slice(&ctx.store.get_bytes(&key).await?)
        .map_err(|e| Error::store(&key, format!("corrupt checkpoint: {e}")))
}

async fn save_checkpoint(ctx: &Context, checkpoint: &Checkpoint) -> Result<()> {
    let json = serde_json::to_vec_pretty(checkpoint).map_err(|e| Error::Config(e.to_string()))?;
    ctx.store
        .put_bytes(&keys::checkpoint(&ctx.config.name), json, &Metadata::new())
        .await?;
    Ok(())
}

/// Whether a listed file is to be fetched under this request.
fn wanted(file: &RemoteFile, request: &FetchRequest, checkpoint: &Checkpoint) -> bool {
    if !request.files.is_empty() {
        return request.files.iter().any(|name| name == &file.name);
    }
    if request.since.is_some() || request.until.is_some() {
        let day = file.modified.date_naive();
        return request.since.is_none_or(|since| day >= since)
            && request.until.is_none_or(|until| day <= until);
    }
    !checkpoint.fetched.contains(file)
}

/// A file name from the source must be a plain name to become a key.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(Error::Config(format!("refusing source file name {name:?}")));
    }
    Ok(())
}

pub async fn run(
    ctx: &Context,
    source: &dyn Source,
    request: &FetchRequest,
) -> Result<FetchOutcome> {
    let mut checkpoint = load_checkpoint(ctx).await?;
    let listed = source.list().await?;
    let mut outcome = FetchOutcome::default();
    for file in listed {
        if !wanted(&file, request, &checkpoint) {
            outcome.already_fetched += usize::from(checkpoint.fetched.contains(&file));
            continue;
        }
        check_name(&file.name)?;
        let key = keys::raw(&ctx.config.name, &file.name);
        let body = source.open(&file).await?;
        let mut metadata = Metadata::new();
        metadata.insert(
            lineage::SOURCE_KEY.into(),
            format!("{}:{}", source.describe(), file.name),
        );
        metadata.insert("source-size".into(), file.size.to_string());
        metadata.insert("source-mtime".into(), file.modified.to_rfc3339());
        metadata.insert(lineage::STAGE.into(), "fetch".into());
        let sized = Box::pin(ExactSize::new(body, file.size));
        let info = ctx.store.put(&key, sized, &metadata).await?;
        tracing::info!(file = %file.name, key, size = info.size, sha256 = %info.sha256, "fetched");
        // The checkpoint moves only once the object is committed.
        checkpoint.fetched.retain(|f| f.name != file.name);
        checkpoint.fetched.insert(file);
        save_checkpoint(ctx, &checkpoint).await?;
        outcome.fetched.push(key);
    }
    Ok(outcome)
}

/// Fails the stream at its end when the byte count differs from the listing,
/// so a short transfer is never committed as a whole file.
struct ExactSize {
    inner: crate::ports::ByteStream,
    expected: u64,
    seen: u64,
}

impl ExactSize {
    fn new(inner: crate::ports::ByteStream, expected: u64) -> Self {
        Self {
            inner,
            expected,
            seen: 0,
        }
    }
}

impl AsyncRead for ExactSize {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                self.seen += n;
                if n == 0 && self.seen != self.expected {
                    return Poll::Ready(Err(std::io::Error::other(format!(
                        "transfer ended after {} of {} bytes",
                        self.seen, self.expected
                    ))));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
