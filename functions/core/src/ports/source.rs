use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ByteStream;
use crate::error::Result;
use crate::retry::RetryPolicy;

/// How the fetch stage paces a source: its own to say, since only the
/// adapter knows how its files are written and how it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pacing {
    /// Pause between the two listings that tell a settled file from one
    /// still being written (zero: the source hides files in progress, as a
    /// drop directory's dot-names do).
    pub settle: std::time::Duration,
    /// Retries of a listing or a transfer that failed retryably.
    pub retry: RetryPolicy,
}

/// A file offered by a source (the ICE SFTP site, a drop directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteFile {
    /// Name within the export directory.
    pub name: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// A human-readable name of where files come from (for logs and errors).
    fn describe(&self) -> String;

    /// The files currently offered, sorted by name.
    async fn list(&self) -> Result<Vec<RemoteFile>>;

    /// Streams one file.
    async fn open(&self, file: &RemoteFile) -> Result<ByteStream>;

    /// How to pace and retry this source.
    fn pacing(&self) -> Pacing {
        Pacing::default()
    }
}
