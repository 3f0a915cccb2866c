//! fetch: source (SFTP site, drop directory) -> `raw/<c>/<file>`, still
//! encrypted.
//!
//! - New files are chosen by a persisted checkpoint of the files already
//!   fetched (name, size, mtime), not by a time window: a failed day is
//!   caught up by the next run and nothing is fetched twice. A file whose
//!   size or mtime changed since it was fetched is fetched again (ICE
//!   re-issued it) and overwrites the same key.
//! - The directory is listed twice, `settle` apart; a file whose size or
//!   mtime differs between the listings is still being written and is left
//!   for the next run.
//! - Each file streams into the store (never whole in memory). The store's
//!   `put` is atomic, so nothing partial is ever visible under `raw/`; the
//!   byte count is checked against the listing, and the store computes the
//!   SHA-256 on the way (one pass over the data).
//! - A dropped connection is retried with exponential backoff; the
//!   checkpoint advances only after the object is committed.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};

use super::{lineage, Context};
use crate::error::{Error, Result};
use crate::events::FetchRequest;
use crate::layout;
use crate::ports::{ByteStream, Metadata, ObjectInfo, Pacing, RemoteFile, Source};

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
    /// Files still changing between the two listings: left for the next run.
    pub unsettled: Vec<String>,
    /// Transfers or listings retried after a dropped connection.
    pub retries: usize,
}

async fn load_checkpoint(ctx: &Context) -> Result<Checkpoint> {
    let key = layout::checkpoint(&ctx.config.name);
    if ctx.store.head(&key).await?.is_none() {
        return Ok(Checkpoint::default());
    }
    serde_json::from_slice(&ctx.store.get_bytes(&key).await?)
        .map_err(|e| Error::store(&key, format!("corrupt checkpoint: {e}")))
}

/// The files the checkpoint holds as fetched (for the unfetched-file alert).
pub async fn fetched_files(ctx: &Context) -> Result<BTreeSet<RemoteFile>> {
    Ok(load_checkpoint(ctx).await?.fetched)
}

async fn save_checkpoint(ctx: &Context, checkpoint: &Checkpoint) -> Result<()> {
    let json = serde_json::to_vec_pretty(checkpoint).map_err(Error::internal)?;
    ctx.store
        .put_bytes(
            &layout::checkpoint(&ctx.config.name),
            json,
            &Metadata::new(),
        )
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

/// Whether another attempt can help: a dropped connection, a timeout, a
/// transfer cut short. Refusals (host key, login, missing file) are final,
/// and so are local errors.
fn retryable(error: &Error) -> bool {
    matches!(
        error,
        Error::Source {
            retryable: true,
            ..
        }
    )
}

/// Runs `attempt` under the source's retry policy while it fails
/// retryably, counting the retries.
async fn with_retries<T, F, Fut>(
    pacing: &Pacing,
    what: &str,
    retries: &mut usize,
    attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    pacing
        .retry
        .run(what, retryable, || *retries += 1, attempt)
        .await
}

/// Metadata values are ASCII (S3): non-ASCII and `%` are percent-encoded.
const METADATA_ESCAPE: &AsciiSet = &CONTROLS.add(b'%');

fn metadata_for(source: &dyn Source, file: &RemoteFile) -> Metadata {
    let origin = format!("{}/{}", source.describe(), file.name);
    Metadata::from([
        (
            lineage::SOURCE_KEY.to_string(),
            utf8_percent_encode(&origin, METADATA_ESCAPE).to_string(),
        ),
        ("source-size".to_string(), file.size.to_string()),
        ("source-mtime".to_string(), file.modified.to_rfc3339()),
        (lineage::STAGE.to_string(), "fetch".to_string()),
    ])
}

/// The raw key of a file: its name under the connector, or, when that key
/// already holds another version of the file (regenerated at the source
/// under the same name: another size or time), a key of its own for this
/// version. Derived from the listing, so re-fetching the same version
/// lands on the same key.
async fn raw_key_for(ctx: &Context, file: &RemoteFile, metadata: &Metadata) -> Result<String> {
    let key = layout::raw_for_file(&ctx.config, &file.name);
    let same_version = |info: &ObjectInfo| {
        ["source-size", "source-mtime"]
            .iter()
            .all(|name| info.metadata.get(*name) == metadata.get(*name))
    };
    match ctx.store.head(&key).await? {
        Some(info) if !same_version(&info) => {
            let version = format!(
                "v{}-{}",
                file.modified.format("%Y%m%dT%H%M%S%.fZ"),
                file.size
            );
            let versioned = layout::raw_version(&key, &version);
            crate::audit::kept_beside(&ctx.config.name, &versioned, &file.name, &key);
            Ok(versioned)
        }
        _ => Ok(key),
    }
}

/// One transfer attempt: source -> store, committed only when whole.
async fn transfer(
    ctx: &Context,
    source: &dyn Source,
    file: &RemoteFile,
    key: &str,
    metadata: &Metadata,
) -> Result<ObjectInfo> {
    let body = source.open(file).await?;
    let report = Arc::new(Mutex::new(TapReport::default()));
    let tapped: ByteStream = Box::pin(Tap::new(body, file.size, report.clone()));
    let put = ctx.store.put(key, tapped, metadata).await;
    let report = report.lock().map(|r| r.clone()).unwrap_or_default();
    let info = match put {
        Ok(info) => info,
        // The store aborted because the source stream failed: that is a
        // transfer problem (worth a retry), not a store problem.
        Err(store_error) => {
            return Err(match report.failure {
                Some(reason) => Error::Source {
                    site: source.describe(),
                    reason: format!("{}: {reason}", file.name),
                    retryable: true,
                },
                None => store_error,
            })
        }
    };
    if info.size != file.size {
        return Err(Error::store(
            key,
            format!("stored {} bytes, but {} were sent", info.size, file.size),
        ));
    }
    Ok(info)
}

pub async fn run(
    ctx: &Context,
    source: &dyn Source,
    request: &FetchRequest,
) -> Result<FetchOutcome> {
    run_with_pacing(ctx, source, request, &source.pacing()).await
}

pub async fn run_with_pacing(
    ctx: &Context,
    source: &dyn Source,
    request: &FetchRequest,
    pacing: &Pacing,
) -> Result<FetchOutcome> {
    let mut checkpoint = load_checkpoint(ctx).await?;
    let mut outcome = FetchOutcome::default();
    let first = with_retries(pacing, "listing", &mut outcome.retries, || source.list()).await?;

    let missing: Vec<&String> = request
        .files
        .iter()
        .filter(|name| !first.iter().any(|f| &&f.name == name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Source {
            site: source.describe(),
            reason: format!("requested file(s) not on the site: {missing:?}; nothing fetched"),
            retryable: false,
        });
    }

    let mut candidates = Vec::new();
    for file in first {
        if wanted(&file, request, &checkpoint) {
            candidates.push(file);
        } else {
            outcome.already_fetched += usize::from(checkpoint.fetched.contains(&file));
        }
    }
    if candidates.is_empty() {
        return Ok(outcome);
    }

    // Second listing: only files unchanged since the first are settled.
    if !pacing.settle.is_zero() {
        tokio::time::sleep(pacing.settle).await;
    }
    let second: BTreeMap<String, RemoteFile> =
        with_retries(pacing, "listing", &mut outcome.retries, || source.list())
            .await?
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
    let mut settled = Vec::new();
    for file in candidates {
        if second.get(&file.name) == Some(&file) {
            settled.push(file);
        } else {
            tracing::info!(file = %file.name, "still changing between two listings; left for the next run");
            outcome.unsettled.push(file.name);
        }
    }

    let mut failures = Vec::new();
    for file in settled {
        if let Err(e) = check_name(&file.name) {
            failures.push(e.to_string());
            continue;
        }
        if let Some(old) = checkpoint.fetched.iter().find(|f| f.name == file.name) {
            if request.files.is_empty() && request.since.is_none() && request.until.is_none() {
                tracing::warn!(
                    file = %file.name,
                    old_size = old.size,
                    new_size = file.size,
                    "changed on the source since it was fetched; fetching it again"
                );
            }
        }
        let metadata = metadata_for(source, &file);
        let key = raw_key_for(ctx, &file, &metadata).await?;
        let result = with_retries(pacing, &file.name, &mut outcome.retries, || {
            transfer(ctx, source, &file, &key, &metadata)
        })
        .await;
        let info = match result {
            Ok(info) => info,
            // Retries exhausted: the site is unreachable, the other files
            // would fail the same way.
            Err(e) if retryable(&e) => return Err(e),
            // Refused for this file (permission, a name we do not take...):
            // the others still go.
            Err(e) => {
                crate::audit::not_fetched(&ctx.config.name, &file.name, &e);
                failures.push(e.to_string());
                continue;
            }
        };
        crate::audit::fetched(&ctx.config.name, &key, &file.name, info.size, &info.sha256);
        // The checkpoint moves only once the object is committed.
        checkpoint.fetched.retain(|f| f.name != file.name);
        checkpoint.fetched.insert(file);
        save_checkpoint(ctx, &checkpoint).await?;
        outcome.fetched.push(key);
    }
    if !failures.is_empty() {
        return Err(Error::Source {
            site: source.describe(),
            reason: format!(
                "{} file(s) not fetched ({} fetched): {}",
                failures.len(),
                outcome.fetched.len(),
                failures.join("; ")
            ),
            retryable: false,
        });
    }
    Ok(outcome)
}

#[derive(Debug, Clone, Default)]
struct TapReport {
    /// Why the source stream failed (read error, or wrong byte count).
    failure: Option<String>,
}

/// Watches a body on its way into the store: fails the stream when the byte
/// count differs from the listing, so a short transfer is never committed as
/// a whole file, and records why the source stream failed in the shared
/// report (the store consumes the stream, and its error loses that).
struct Tap {
    inner: ByteStream,
    expected: u64,
    seen: u64,
    report: Arc<Mutex<TapReport>>,
}

impl Tap {
    fn new(inner: ByteStream, expected: u64, report: Arc<Mutex<TapReport>>) -> Self {
        Self {
            inner,
            expected,
            seen: 0,
            report,
        }
    }

    fn fail(&self, reason: String) -> std::io::Error {
        if let Ok(mut report) = self.report.lock() {
            report.failure.get_or_insert_with(|| reason.clone());
        }
        std::io::Error::other(reason)
    }
}

impl AsyncRead for Tap {
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
                if self.seen > self.expected || (n == 0 && self.seen != self.expected) {
                    let reason = format!(
                        "transfer gave {} bytes where the listing said {} (file changed or transfer cut short)",
                        self.seen, self.expected
                    );
                    return Poll::Ready(Err(self.fail(reason)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(e.to_string()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, TimeZone, Utc};
    use sha2::Digest;

    use super::*;
    use crate::adapters::LocalStore;
    use crate::config::ConnectorConfig;
    use crate::retry::RetryPolicy;

    /// A scripted source: each `list` pops the next listing (the last one
    /// repeats); `open` can be made to fail a number of times mid-stream.
    struct Scripted {
        listings: Mutex<VecDeque<Vec<RemoteFile>>>,
        content: BTreeMap<String, Vec<u8>>,
        drops_left: AtomicUsize,
        refuse: bool,
        opens: AtomicUsize,
    }

    impl Scripted {
        fn new(listings: Vec<Vec<RemoteFile>>, content: &[(&str, &[u8])]) -> Self {
            Self {
                listings: Mutex::new(listings.into()),
                content: content
                    .iter()
                    .map(|(n, c)| (n.to_string(), c.to_vec()))
                    .collect(),
                drops_left: AtomicUsize::new(0),
                refuse: false,
                opens: AtomicUsize::new(0),
            }
        }
    }

    /// Yields half the data, then fails as a dropped connection does.
    struct Dropping(std::io::Cursor<Vec<u8>>);

    impl AsyncRead for Dropping {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let half = self.0.get_ref().len() as u64 / 2;
            if self.0.position() >= half {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection dropped",
                )));
            }
            let start = self.0.position() as usize;
            let end = (half as usize).min(start + buf.remaining());
            buf.put_slice(&self.0.get_ref()[start..end]);
            self.0.set_position(end as u64);
            let _ = cx;
            Poll::Ready(Ok(()))
        }
    }

    #[async_trait]
    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }

        async fn list(&self) -> Result<Vec<RemoteFile>> {
            let mut listings = self.listings.lock().unwrap();
            Ok(if listings.len() > 1 {
                listings.pop_front().unwrap()
            } else {
                listings.front().cloned().unwrap_or_default()
            })
        }

        async fn open(&self, file: &RemoteFile) -> Result<ByteStream> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            if self.refuse {
                return Err(Error::Source {
                    site: "scripted".into(),
                    reason: "login rejected".into(),
                    retryable: false,
                });
            }
            let data = self.content[&file.name].clone();
            let drop_now = self
                .drops_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if drop_now {
                Ok(Box::pin(Dropping(std::io::Cursor::new(data))))
            } else {
                Ok(Box::pin(std::io::Cursor::new(data)))
            }
        }
    }

    fn file(name: &str, size: u64, minute: u32) -> RemoteFile {
        let modified: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 20, 3, minute, 0).unwrap();
        RemoteFile {
            name: name.into(),
            size,
            modified,
        }
    }

    fn context(dir: &tempfile::TempDir) -> Context {
        Context::single(
            Arc::new(LocalStore::new(dir.path())),
            ConnectorConfig::ice(),
        )
    }

    fn quick(attempts: u32) -> Pacing {
        Pacing {
            settle: Duration::ZERO,
            retry: RetryPolicy {
                attempts,
                backoff: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
            },
        }
    }

    #[tokio::test]
    async fn a_file_still_growing_is_left_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let a = file("a.pgp", 3, 0);
        let growing = file("b.pgp", 2, 0);
        let grown = file("b.pgp", 4, 1);
        let source = Scripted::new(
            vec![
                vec![a.clone(), growing],
                vec![a.clone(), grown.clone()],
                vec![a.clone(), grown.clone()],
            ],
            &[("a.pgp", b"aaa"), ("b.pgp", b"bbbb")],
        );
        let first = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(1))
            .await
            .unwrap();
        assert_eq!(first.fetched, vec!["raw/ice/a.pgp".to_string()]);
        assert_eq!(first.unsettled, vec!["b.pgp".to_string()]);
        assert!(ctx.store.head("raw/ice/b.pgp").await.unwrap().is_none());

        let second = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(1))
            .await
            .unwrap();
        assert_eq!(second.fetched, vec!["raw/ice/b.pgp".to_string()]);
        assert_eq!(second.already_fetched, 1);
        let checkpoint = load_checkpoint(&ctx).await.unwrap();
        assert!(checkpoint.fetched.contains(&grown) && checkpoint.fetched.contains(&a));
    }

    #[tokio::test]
    async fn a_dropped_transfer_is_retried_and_committed_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let data = vec![7u8; 10_000];
        let source = Scripted::new(
            vec![vec![file("big.pgp", 10_000, 0)]],
            &[("big.pgp", &data)],
        );
        source.drops_left.store(2, Ordering::SeqCst);
        let outcome = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(3))
            .await
            .unwrap();
        assert_eq!(outcome.retries, 2);
        assert_eq!(source.opens.load(Ordering::SeqCst), 3);
        assert_eq!(ctx.store.get_bytes("raw/ice/big.pgp").await.unwrap(), data);
        let info = ctx.store.head("raw/ice/big.pgp").await.unwrap().unwrap();
        assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(&data)));
        assert_eq!(info.metadata["source-size"], "10000");
        assert_eq!(info.metadata[lineage::SOURCE_KEY], "scripted/big.pgp");
    }

    #[tokio::test]
    async fn when_retries_run_out_nothing_is_committed_and_the_checkpoint_stays() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let source = Scripted::new(
            vec![vec![file("big.pgp", 100, 0)]],
            &[("big.pgp", &[1; 100])],
        );
        source.drops_left.store(5, Ordering::SeqCst);
        let err = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(2))
            .await
            .unwrap_err();
        assert!(retryable(&err), "{err}");
        assert!(err.to_string().contains("connection dropped"), "{err}");
        assert_eq!(source.opens.load(Ordering::SeqCst), 2);
        assert!(ctx.store.list("raw/").await.unwrap().is_empty());
        assert_eq!(load_checkpoint(&ctx).await.unwrap(), Checkpoint::default());
    }

    #[tokio::test]
    async fn refusals_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let mut source = Scripted::new(vec![vec![file("a.pgp", 1, 0)]], &[("a.pgp", b"a")]);
        source.refuse = true;
        let err = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("login rejected"), "{err}");
        assert_eq!(source.opens.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_short_transfer_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        // Listed as 10 bytes, but only 4 arrive.
        let source = Scripted::new(vec![vec![file("a.pgp", 10, 0)]], &[("a.pgp", b"abcd")]);
        let err = run_with_pacing(&ctx, &source, &FetchRequest::default(), &quick(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("4 bytes where the listing said 10"),
            "{err}"
        );
        assert!(ctx.store.list("raw/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn named_files_missing_from_the_site_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let source = Scripted::new(vec![vec![file("a.pgp", 1, 0)]], &[("a.pgp", b"a")]);
        let request = FetchRequest {
            files: vec!["a.pgp".into(), "nope.pgp".into()],
            ..Default::default()
        };
        let err = run_with_pacing(&ctx, &source, &request, &quick(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope.pgp"), "{err}");
        assert!(ctx.store.list("raw/").await.unwrap().is_empty());
    }
}
