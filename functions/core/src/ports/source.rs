use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ByteStream;
use crate::error::Result;

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
}
