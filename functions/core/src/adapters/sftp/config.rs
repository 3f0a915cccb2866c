//! `[ice.sftp]`: where the site is and how it is paced.

use super::*;

/// `[ice.sftp]` in `config.toml`: where the firm's ICE SFTP site is and how
/// the fetch stage treats it. Credentials are never here: they live in the
/// secrets store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftpConfig {
    /// Host name or address of the SFTP site.
    pub host: String,
    pub port: u16,
    /// The export directory: absolute, or relative to the login directory.
    pub directory: String,
    /// Pinned host keys, one per entry: an OpenSSH public key
    /// (`ssh-ed25519 AAAA...`), a `ssh-keyscan`/known_hosts line, or a
    /// `SHA256:...` fingerprint. Added to the secret's `ssh_host_key` lines.
    /// Several pins allow a planned key rotation.
    pub host_keys: Vec<String>,
    /// Limit for TCP connect, SSH handshake and login together.
    pub connect_timeout_secs: u64,
    /// Limit for one SFTP request (a listing, one read).
    pub request_timeout_secs: u64,
    /// Read requests kept outstanding per file (each up to the server's
    /// maximum read size, 255 KiB on OpenSSH).
    pub reads_in_flight: usize,
    /// Pause between the two listings that tell a settled file from one still
    /// being written.
    pub settle_secs: u64,
    /// Attempts per listing and per file when the connection drops.
    pub attempts: u32,
    /// First pause before a retry; doubles each time up to `backoff_max_ms`.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SftpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 22,
            directory: ".".into(),
            host_keys: Vec::new(),
            connect_timeout_secs: 30,
            request_timeout_secs: 60,
            reads_in_flight: 32,
            settle_secs: 5,
            attempts: 4,
            backoff_ms: 2_000,
            backoff_max_ms: 60_000,
        }
    }
}

impl SftpConfig {
    pub fn check(&self) -> Result<()> {
        let problem = if self.host.trim().is_empty() {
            Some("sftp.host is empty")
        } else if self.port == 0 {
            Some("sftp.port is 0")
        } else if self.directory.is_empty() {
            Some("sftp.directory is empty (use \".\" for the login directory)")
        } else if !(1..=1024).contains(&self.reads_in_flight) {
            Some("sftp.reads_in_flight must be between 1 and 1024")
        } else if self.attempts == 0 {
            Some("sftp.attempts must be at least 1")
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::Config(p.into())))
    }

    /// How the fetch stage paces and retries this site.
    pub fn pacing(&self) -> Pacing {
        Pacing {
            settle: Duration::from_secs(self.settle_secs),
            retry: RetryPolicy {
                attempts: self.attempts.max(1),
                backoff: Duration::from_millis(self.backoff_ms),
                backoff_max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_ms)),
            },
        }
    }

    /// `sftp://host:port`, for messages.
    pub fn site(&self) -> String {
        format!("sftp://{}:{}", self.host, self.port)
    }

    /// The site and the export directory (`~` is the login directory).
    pub fn describe(&self) -> String {
        let dir = self.directory.trim_end_matches('/');
        if self.directory.starts_with('/') {
            format!("{}{}", self.site(), if dir.is_empty() { "/" } else { dir })
        } else if dir == "." || dir.is_empty() {
            format!("{}/~", self.site())
        } else {
            format!("{}/~/{}", self.site(), dir.trim_start_matches("./"))
        }
    }

    /// The path of a file of the export directory, as sent to the server.
    pub(super) fn remote_path(&self, name: &str) -> String {
        match self.directory.as_str() {
            "." | "./" => name.to_string(),
            dir if dir.trim_end_matches('/').is_empty() => format!("/{name}"),
            dir => format!("{}/{name}", dir.trim_end_matches('/')),
        }
    }

    pub(super) fn source_error(&self, reason: impl Into<String>, retryable: bool) -> Error {
        Error::Source {
            site: self.site(),
            reason: reason.into(),
            retryable,
        }
    }
}
