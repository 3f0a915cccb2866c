//! The site as a `Source`: listing and streaming files.

use super::*;

// The Source adapter

/// The firm's ICE SFTP site. Connects lazily (the secret is read at each
/// connect, so a rotated password is picked up) and keeps one connection for
/// the listing and every file; a broken connection is replaced on next use.
pub struct SftpSource {
    config: SftpConfig,
    connector: String,
    secrets: Arc<dyn SecretStore>,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl SftpSource {
    /// `connector` names the secret that holds the credentials (e.g. `ice`).
    pub fn new(
        config: SftpConfig,
        connector: impl Into<String>,
        secrets: Arc<dyn SecretStore>,
    ) -> Self {
        Self {
            config,
            connector: connector.into(),
            secrets,
            connection: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &SftpConfig {
        &self.config
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.usable()) {
            return Ok(connection.clone());
        }
        *slot = None;
        let secret = self.secrets.load(&self.connector).await?;
        let setup = Setup::new(&self.config, &secret)?;
        let connection = Arc::new(setup.connect().await.map_err(|f| f.error)?);
        tracing::info!(
            site = %self.config.site(),
            method = connection.method,
            "connected to the SFTP site"
        );
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection (the next call reconnects).
    pub async fn disconnect(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.sftp.close().await;
            let _ = connection
                .ssh
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }
}

pub(super) async fn list_directory(
    config: &SftpConfig,
    connection: &Connection,
) -> Result<Vec<RemoteFile>> {
    let dir = config.directory.as_str();
    let fail = |e| {
        let error = sftp_error(config, &format!("listing {dir:?}"), e);
        if matches!(
            error,
            Error::Source {
                retryable: true,
                ..
            }
        ) {
            connection.broken.store(true, Ordering::Relaxed);
        }
        error
    };
    let entries = connection.sftp.read_dir(dir).await.map_err(fail)?;
    let mut files = Vec::new();
    for entry in entries {
        let name = entry.file_name();
        // Hidden files are uploads in progress by convention.
        if name.starts_with('.') {
            continue;
        }
        let mut attributes = entry.metadata();
        if attributes.is_symlink() {
            // Follow links to files; a dangling link is skipped.
            match connection.sftp.metadata(config.remote_path(&name)).await {
                Ok(target) => attributes = target,
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "skipping a link that cannot be followed");
                    continue;
                }
            }
        }
        if !attributes.is_regular() {
            continue;
        }
        let (Some(size), Some(mtime)) = (attributes.size, attributes.mtime) else {
            return Err(config.source_error(
                format!("the server lists {name:?} without size or modification time"),
                false,
            ));
        };
        let modified = DateTime::<Utc>::from_timestamp(i64::from(mtime), 0).unwrap_or_default();
        files.push(RemoteFile {
            name,
            size,
            modified,
        });
    }
    files.sort();
    Ok(files)
}

#[async_trait]
impl Source for SftpSource {
    fn describe(&self) -> String {
        self.config.describe()
    }

    fn pacing(&self) -> Pacing {
        self.config.pacing()
    }

    async fn list(&self) -> Result<Vec<RemoteFile>> {
        let connection = self.connection().await?;
        list_directory(&self.config, &connection).await
    }

    async fn open(&self, file: &RemoteFile) -> Result<ByteStream> {
        let connection = self.connection().await?;
        let path = self.config.remote_path(&file.name);
        let handle = connection.sftp.open(path.clone()).await.map_err(|e| {
            let error = sftp_error(&self.config, &format!("opening {path:?}"), e);
            if matches!(
                error,
                Error::Source {
                    retryable: true,
                    ..
                }
            ) {
                connection.broken.store(true, Ordering::Relaxed);
            }
            error
        })?;
        Ok(Box::pin(RemoteFileReader {
            file: handle,
            connection,
            context: format!("reading {path:?} from {}", self.config.site()),
        }))
    }
}

/// A remote file being read, with read-ahead (`reads_in_flight` requests
/// outstanding, done by russh-sftp). Holds its connection alive.
pub(super) struct RemoteFileReader {
    file: russh_sftp::client::fs::File,
    connection: Arc<Connection>,
    context: String,
}

impl AsyncRead for RemoteFileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.file).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                // The reply stream is unusable now (requests are lost with
                // the channel); make the next open reconnect.
                self.connection.broken.store(true, Ordering::Relaxed);
                Poll::Ready(Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.context),
                )))
            }
            other => other,
        }
    }
}
