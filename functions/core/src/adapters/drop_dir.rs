//! A local drop directory as the source: the embedded stand-in for the ICE
//! SFTP site. Operators (or tests) put export files into it.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::ports::{ByteStream, RemoteFile, Source};

#[derive(Debug, Clone)]
pub struct DropDirectory {
    dir: PathBuf,
}

impl DropDirectory {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl Source for DropDirectory {
    fn describe(&self) -> String {
        format!("drop directory {}", self.dir.display())
    }

    async fn list(&self) -> Result<Vec<RemoteFile>> {
        let context = || format!("listing {}", self.dir.display());
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(|e| Error::io(context(), e))?;
        let mut files = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::io(context(), e))?
        {
            let meta = entry
                .metadata()
                .await
                .map_err(|e| Error::io(context(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden files are uploads in progress by convention.
            if !meta.is_file() || name.starts_with('.') {
                continue;
            }
            let modified = meta.modified().map_err(|e| Error::io(context(), e))?;
            files.push(RemoteFile {
                name,
                size: meta.len(),
                modified: DateTime::<Utc>::from(modified),
            });
        }
        files.sort();
        Ok(files)
    }

    async fn open(&self, file: &RemoteFile) -> Result<ByteStream> {
        let path = self.dir.join(&file.name);
        let handle = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(Box::pin(handle))
    }
}
