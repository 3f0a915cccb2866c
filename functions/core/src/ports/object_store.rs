use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// User metadata of an object (lineage: source key, SHA-256 of the input...).
/// Keys are lower-case ASCII; values are ASCII (S3 restricts both).
pub type Metadata = BTreeMap<String, String>;

/// A body being read from or written to the store.
///
/// A body whose stream ends with an error is never committed: `put` discards
/// what it received, so a stage can abort a write half-way (e.g. when a
/// signature turns out to be bad at the end of the data).
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub metadata: Metadata,
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Streams an object's body.
    async fn get(&self, key: &str) -> Result<(ByteStream, ObjectInfo)>;

    /// Describes an object, or `None` when there is no such object.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Writes an object from a stream, atomically: readers see the whole new
    /// object or the old one, never a part. The SHA-256 and size of the body
    /// are computed on the way and returned.
    async fn put(&self, key: &str, body: ByteStream, metadata: &Metadata) -> Result<ObjectInfo>;

    /// Keys under a prefix, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// The names directly under `prefix` (ending in `/`): each key's next
    /// path segment, once, sorted, without listing every key below (S3: a
    /// delimited listing). The status log's days are read this way: a
    /// reports prefix holds a record per mail ever archived.
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list(prefix)
            .await?
            .iter()
            .filter_map(|key| key.strip_prefix(prefix)?.split('/').next())
            .map(str::to_string)
            .collect();
        names.dedup();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<()>;

    /// Reads a small state object with the version a conditional write must
    /// name (S3: its ETag), or `None` when there is no such object.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>>;

    /// Writes a small state object only if it is still at `expected`
    /// (`None`: only if it does not exist yet), atomically with respect to
    /// every other writer, in any process (S3: `If-Match` / `If-None-Match`).
    /// `Ok(false)` means another writer got there first: read it again.
    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
        expected: Option<&str>,
    ) -> Result<bool>;

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.get_bytes_within(key, u64::MAX)
            .await?
            .ok_or_else(|| Error::Internal(format!("{key}: larger than any size")))
    }

    /// The whole body when it is at most `limit` bytes, else `None` with
    /// nothing read (a reader ahead of its work keeps only small objects).
    async fn get_bytes_within(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let (mut body, info) = self.get(key).await?;
        if info.size > limit {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        body.read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::store(key, e))?;
        Ok(Some(bytes))
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        let body: ByteStream = Box::pin(std::io::Cursor::new(bytes));
        self.put(key, body, metadata).await
    }
}
