//! The ICE SFTP site as the source of export files (russh + russh-sftp).
//!
//! - The server's host key must match a pinned key (configuration
//!   `sftp.host_keys` and/or the secret's `ssh_host_key` field). A mismatch or
//!   a missing pin is a hard error, checked during the key exchange, before
//!   any credential is sent: keys are never trusted on first use.
//! - The login is the firm code (secret `firm_code`), with the SSH private key
//!   (`ssh_private_key`, optionally encrypted with `ssh_key_passphrase`)
//!   and/or the password (`sftp_password`); a server that requires both
//!   (`AuthenticationMethods publickey,password`) gets both.
//! - Files stream straight from the server into the object store; reads are
//!   pipelined (`reads_in_flight` requests outstanding) so throughput holds on
//!   a high-latency link.
//! - Errors name the site and the step that failed, and say whether a retry
//!   can help ([`Error::Source`]); they never carry a secret.

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use russh::client;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{
    Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::MethodKind;
use russh_sftp::client::SftpSession;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::ports::secrets::fields;
use crate::ports::Pacing;
use crate::ports::{ByteStream, ConnectorSecret, RemoteFile, SecretStore, SecretValue, Source};
use crate::retry::RetryPolicy;

/// Secret field: passphrase of an encrypted `ssh_private_key`.
// Belongs with the other names in `ports::secrets::fields`; kept here until
// that shared file is changed.
pub const SSH_KEY_PASSPHRASE: &str = "ssh_key_passphrase";

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
    fn remote_path(&self, name: &str) -> String {
        match self.directory.as_str() {
            "." | "./" => name.to_string(),
            dir if dir.trim_end_matches('/').is_empty() => format!("/{name}"),
            dir => format!("{}/{name}", dir.trim_end_matches('/')),
        }
    }

    fn source_error(&self, reason: impl Into<String>, retryable: bool) -> Error {
        Error::Source {
            site: self.site(),
            reason: reason.into(),
            retryable,
        }
    }
}

// ---------------------------------------------------------------------------
// Host key pins

/// One pinned host key: the key itself, or its SHA-256 fingerprint.
#[derive(Debug, Clone)]
enum HostKeyPin {
    Key(PublicKey),
    Fingerprint(Fingerprint),
}

impl HostKeyPin {
    fn matches(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPin::Key(pinned) => pinned.key_data() == key.key_data(),
            HostKeyPin::Fingerprint(pinned) => *pinned == key.fingerprint(pinned.algorithm()),
        }
    }

    fn describe(&self) -> String {
        match self {
            HostKeyPin::Key(key) => format!(
                "{} {}",
                key.algorithm().as_str(),
                key.fingerprint(HashAlg::Sha256)
            ),
            HostKeyPin::Fingerprint(fp) => fp.to_string(),
        }
    }
}

/// Parses pins: one per line; blank lines and `#` comments are skipped.
/// Accepts `ALG BASE64 [comment]`, `HOSTS ALG BASE64 [comment]` (known_hosts,
/// `ssh-keyscan` output) and `SHA256:...` fingerprints.
fn parse_pins(text: &str, origin: &str) -> Result<Vec<HostKeyPin>> {
    let mut pins = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| Error::Config(format!("{origin}, line {}: {why}", index + 1));
        if line.starts_with('@') {
            return Err(bad(
                "known_hosts markers (@cert-authority, @revoked) are not supported; pin the host key itself",
            ));
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let Some(fp) = tokens
            .first()
            .filter(|t| t.starts_with("SHA256:") || t.starts_with("SHA512:"))
        {
            pins.push(HostKeyPin::Fingerprint(
                Fingerprint::from_str(fp).map_err(|_| bad("not a valid SHA256 fingerprint"))?,
            ));
            continue;
        }
        // The algorithm is the first token of a public key line and the
        // second of a known_hosts line (after the host patterns).
        let key = (0..tokens.len().min(2)).find_map(|i| {
            let (alg, data) = (tokens.get(i)?, tokens.get(i + 1)?);
            Algorithm::from_str(alg).ok()?;
            PublicKey::from_openssh(&format!("{alg} {data}")).ok()
        });
        pins.push(HostKeyPin::Key(key.ok_or_else(|| {
            bad("not an SSH public key, known_hosts line or SHA256 fingerprint")
        })?));
    }
    Ok(pins)
}

/// Host key algorithms to offer: those of the pinned keys first, so that a
/// server holding several host keys presents the pinned one. With only
/// fingerprints pinned the algorithm is unknown and the defaults stay.
fn pinned_algorithms(pins: &[HostKeyPin]) -> Vec<Algorithm> {
    if pins.iter().any(|p| matches!(p, HostKeyPin::Fingerprint(_))) {
        return Vec::new();
    }
    let mut algorithms = Vec::new();
    for pin in pins {
        let HostKeyPin::Key(key) = pin else { continue };
        let wanted = match key.algorithm() {
            // An RSA key signs with SHA-2 (RFC 8332); SHA-1 `ssh-rsa` is left out.
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ],
            other => vec![other],
        };
        for algorithm in wanted {
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
    }
    algorithms
}

/// What the server presented as its host key (public: safe to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The key as an OpenSSH public key line, ready to be pinned once its
    /// fingerprint has been confirmed with ICE.
    pub openssh: String,
}

impl ServerKey {
    fn of(key: &PublicKey) -> Self {
        Self {
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            openssh: key
                .to_openssh()
                .map(|line| line.trim_end().to_string())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.fingerprint)
    }
}

/// The russh client handler: checks the host key against the pins during
/// the key exchange and remembers what the server presented.
struct PinCheck {
    pins: Arc<Vec<HostKeyPin>>,
    presented: Arc<StdMutex<Option<PublicKey>>>,
}

impl client::Handler for PinCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are never requested (`host_key_certificates` is
        // empty), so anything but a plain key is refused.
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            return Ok(false);
        };
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(key.clone());
        }
        let pinned = self.pins.iter().any(|pin| pin.matches(key));
        if !pinned {
            tracing::error!(
                host_key = %ServerKey::of(key),
                "the SFTP server's host key is not the pinned one; connection refused"
            );
        }
        Ok(pinned)
    }
}

// ---------------------------------------------------------------------------
// Credentials and connection

/// Who logs in, and with what. The private key and password stay wrapped.
struct Login {
    user: String,
    password: Option<SecretValue>,
    key: Option<Arc<PrivateKey>>,
}

impl Login {
    fn from_secret(secret: &ConnectorSecret) -> Result<Self> {
        let user = secret
            .require(fields::FIRM_CODE)?
            .expose()
            .trim()
            .to_string();
        let password = secret.get(fields::SFTP_PASSWORD).cloned();
        let key = match secret.get(fields::SSH_PRIVATE_KEY) {
            Some(text) => {
                let passphrase = secret.get(SSH_KEY_PASSPHRASE).map(SecretValue::expose);
                Some(Arc::new(decode_private_key(secret, text, passphrase)?))
            }
            None => None,
        };
        if password.is_none() && key.is_none() {
            return Err(Error::Secret {
                secret: secret.name.clone(),
                problem: format!(
                    "neither {:?} nor {:?} is set: the SFTP login needs a key or a password",
                    fields::SSH_PRIVATE_KEY,
                    fields::SFTP_PASSWORD
                ),
            });
        }
        Ok(Self {
            user,
            password,
            key,
        })
    }
}

/// Decodes the private key; the error says what is wrong, never the key.
fn decode_private_key(
    secret: &ConnectorSecret,
    text: &SecretValue,
    passphrase: Option<&str>,
) -> Result<PrivateKey> {
    let problem = match russh::keys::decode_secret_key(text.expose(), passphrase) {
        Ok(key) => return Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => format!(
            "field {:?} is encrypted and {SSH_KEY_PASSPHRASE:?} is not set",
            fields::SSH_PRIVATE_KEY
        ),
        Err(_) if passphrase.is_some() => format!(
            "field {:?} could not be decrypted with {SSH_KEY_PASSPHRASE:?} (wrong passphrase, or not an OpenSSH/PEM private key)",
            fields::SSH_PRIVATE_KEY
        ),
        // The library's messages name the format problem only; still, keep
        // to our own words so that no part of the text can ever be echoed.
        Err(_) => format!(
            "field {:?} is not an OpenSSH or PEM private key",
            fields::SSH_PRIVATE_KEY
        ),
    };
    Err(Error::Secret {
        secret: secret.name.clone(),
        problem,
    })
}

/// The step of connecting that failed, for the validation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Configuration and secrets.
    Setup,
    /// TCP connection and SSH handshake.
    Connect,
    HostKey,
    Login,
    /// Opening the SFTP subsystem.
    Sftp,
    /// Listing the export directory.
    List,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Setup => "settings",
            Step::Connect => "connect",
            Step::HostKey => "host key",
            Step::Login => "login",
            Step::Sftp => "sftp",
            Step::List => "list",
        }
    }
}

struct Failure {
    step: Step,
    error: Error,
    /// The host key the server presented, when the handshake got that far.
    server_key: Option<ServerKey>,
}

/// An authenticated SFTP session. Shared by the listing and the open files;
/// marked broken on a transport error so that the next use reconnects.
struct Connection {
    // Kept alive for the session's lifetime: dropping the handle ends the
    // SSH connection under the SFTP channel.
    ssh: client::Handle<PinCheck>,
    sftp: SftpSession,
    broken: AtomicBool,
    server_key: Option<ServerKey>,
    method: &'static str,
}

impl Connection {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.ssh.is_closed()
    }
}

/// Whether a transport-level russh error can heal by reconnecting.
fn transient(error: &russh::Error) -> bool {
    use russh::Error as E;
    matches!(
        error,
        E::IO(_)
            | E::Disconnect
            | E::HUP
            | E::ConnectionTimeout
            | E::KeepaliveTimeout
            | E::InactivityTimeout
            | E::SendError
            | E::RecvError
            | E::Elapsed(_)
            | E::Pending
    )
}

fn method_names(methods: &[MethodKind]) -> String {
    if methods.is_empty() {
        return "none".into();
    }
    methods
        .iter()
        .map(<&'static str>::from)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ssh_client_config(pins: &[HostKeyPin]) -> client::Config {
    let mut preferred = russh::Preferred::default();
    let algorithms = pinned_algorithms(pins);
    if !algorithms.is_empty() {
        preferred.key = Cow::Owned(algorithms);
    }
    // AES-GCM first: hardware AES makes it the fastest cipher on x86 and
    // ARM servers; ChaCha20-Poly1305 stays as the next choice.
    preferred.cipher = Cow::Owned(vec![
        russh::cipher::AES_256_GCM,
        russh::cipher::AES_128_GCM,
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_128_CTR,
    ]);
    client::Config {
        preferred,
        // Request/response traffic: do not let Nagle hold back read requests.
        nodelay: true,
        // A wide window so that many read replies are in flight on a
        // high-latency link (the server may send this much unacknowledged).
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 64 * 1024,
        // A server that vanishes without closing the TCP connection is
        // noticed within about a minute instead of never.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    }
}

/// Everything needed to open a connection: site, pins, login.
struct Setup {
    config: SftpConfig,
    pins: Arc<Vec<HostKeyPin>>,
    login: Login,
}

impl Setup {
    fn new(config: &SftpConfig, secret: &ConnectorSecret) -> Result<Self> {
        config.check()?;
        let mut pins = parse_pins(&config.host_keys.join("\n"), "sftp.host_keys")?;
        if let Some(text) = secret.get(fields::SSH_HOST_KEY) {
            pins.extend(parse_pins(
                text.expose(),
                &format!("secret {:?} field {:?}", secret.name, fields::SSH_HOST_KEY),
            )?);
        }
        Ok(Self {
            config: config.clone(),
            pins: Arc::new(pins),
            login: Login::from_secret(secret)?,
        })
    }

    fn fail(&self, step: Step, reason: impl Into<String>, retryable: bool) -> Failure {
        Failure {
            step,
            error: self.config.source_error(reason, retryable),
            server_key: None,
        }
    }

    fn host_key_failure(&self, presented: Option<&PublicKey>) -> Failure {
        let Some(key) = presented else {
            return self.fail(
                Step::HostKey,
                "the server presented no usable host key (a certificate, or none of the pinned key's algorithms)",
                false,
            );
        };
        let shown = ServerKey::of(key);
        let reason = if self.pins.is_empty() {
            format!(
                "no host key is pinned for this site; the server presents {shown}. Confirm this \
                 fingerprint with ICE out of band, then pin it (sftp.host_keys in config.toml, or \
                 the secret's {:?} field). Host keys are never trusted on first use",
                fields::SSH_HOST_KEY
            )
        } else {
            let pinned: Vec<String> = self.pins.iter().map(HostKeyPin::describe).collect();
            format!(
                "HOST KEY MISMATCH: the server presents {shown}, which is not the pinned key \
                 ({}). Nothing was sent to it. This is either an attack on the connection or a \
                 key change by ICE: confirm the new fingerprint with ICE before changing the pin",
                pinned.join(", ")
            )
        };
        self.fail(Step::HostKey, reason, false)
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let limit = Duration::from_secs(self.config.connect_timeout_secs.max(1));
        let presented = Arc::new(StdMutex::new(None));
        let result = match tokio::time::timeout(limit, self.connect_inner(&presented)).await {
            Ok(result) => result,
            Err(_) => Err(self.fail(
                Step::Connect,
                format!("no connection within {} s", limit.as_secs()),
                true,
            )),
        };
        result.map_err(|mut failure| {
            failure.server_key = presented
                .lock()
                .ok()
                .and_then(|slot| slot.as_ref().map(ServerKey::of));
            failure
        })
    }

    async fn connect_inner(
        &self,
        presented: &Arc<StdMutex<Option<PublicKey>>>,
    ) -> Result<Connection, Failure> {
        let handler = PinCheck {
            pins: self.pins.clone(),
            presented: presented.clone(),
        };
        let ssh_config = Arc::new(ssh_client_config(&self.pins));
        let address = (self.config.host.as_str(), self.config.port);
        let connected = client::connect(ssh_config, address, handler).await;
        let seen = presented.lock().ok().and_then(|slot| slot.clone());
        let mut ssh = match connected {
            Ok(ssh) => ssh,
            Err(russh::Error::UnknownKey) => return Err(self.host_key_failure(seen.as_ref())),
            Err(e) => {
                let reason = match &e {
                    russh::Error::IO(io) => format!("cannot connect: {io}"),
                    other => format!("SSH handshake failed: {other}"),
                };
                return Err(self.fail(Step::Connect, reason, transient(&e)));
            }
        };
        let method = self.authenticate(&mut ssh).await?;
        let sftp_failure = |what: &str, retryable: bool| {
            self.fail(
                Step::Sftp,
                format!("opening the SFTP subsystem: {what}"),
                retryable,
            )
        };
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| sftp_failure(&e.to_string(), transient(&e)))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| sftp_failure(&e.to_string(), transient(&e)))?;
        let sftp_config = russh_sftp::client::Config {
            max_concurrent_reads: self.config.reads_in_flight,
            request_timeout_secs: self.config.request_timeout_secs.max(1),
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), sftp_config)
            .await
            .map_err(|e| sftp_failure(&e.to_string(), true))?;
        Ok(Connection {
            ssh,
            sftp,
            broken: AtomicBool::new(false),
            server_key: seen.as_ref().map(ServerKey::of),
            method,
        })
    }

    /// Key first, then password: either alone, or both when the server
    /// answers "partial success" to the key.
    async fn authenticate(
        &self,
        ssh: &mut client::Handle<PinCheck>,
    ) -> Result<&'static str, Failure> {
        let user = &self.login.user;
        let transport = |e: russh::Error| {
            self.fail(
                Step::Login,
                format!("connection lost during login: {e}"),
                transient(&e),
            )
        };
        let mut tried = Vec::new();
        let mut offered: Vec<MethodKind> = Vec::new();
        let mut partial = false;
        if let Some(key) = &self.login.key {
            tried.push("publickey");
            let hash = if key.algorithm().is_rsa() {
                ssh.best_supported_rsa_hash()
                    .await
                    .map_err(transport)?
                    .flatten()
            } else {
                None
            };
            let result = ssh
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(transport)?;
            match result {
                client::AuthResult::Success => return Ok("publickey"),
                client::AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                } => {
                    partial = partial_success;
                    offered = remaining_methods.to_vec();
                }
            }
        }
        if let Some(password) = &self.login.password {
            tried.push("password");
            let result = ssh
                .authenticate_password(user, password.expose())
                .await
                .map_err(transport)?;
            match result {
                client::AuthResult::Success if partial => return Ok("publickey+password"),
                client::AuthResult::Success => return Ok("password"),
                client::AuthResult::Failure {
                    remaining_methods, ..
                } => offered = remaining_methods.to_vec(),
            }
        }
        let hint = if partial {
            "the key was accepted but the server wants another method as well"
        } else {
            "check the firm code, the password, and that ICE holds the firm's public SSH key"
        };
        Err(self.fail(
            Step::Login,
            format!(
                "login as {user:?} rejected (tried {}; the server offers {}): {hint}",
                tried.join(" then "),
                method_names(&offered)
            ),
            false,
        ))
    }
}

/// Maps an SFTP error: a status reply (no such file, permission denied) is
/// final; anything else means the session is gone.
fn sftp_error(config: &SftpConfig, what: &str, error: russh_sftp::client::error::Error) -> Error {
    use russh_sftp::client::error::Error as E;
    let retryable = !matches!(error, E::Status(_));
    config.source_error(format!("{what}: {error}"), retryable)
}

// ---------------------------------------------------------------------------
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

async fn list_directory(config: &SftpConfig, connection: &Connection) -> Result<Vec<RemoteFile>> {
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
struct RemoteFileReader {
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

// ---------------------------------------------------------------------------
// Validate connection

/// One line of the validation report.
#[derive(Debug, Clone)]
pub struct CheckStep {
    pub step: Step,
    /// What was found (Ok) or what went wrong (Err). Never a secret.
    pub result: std::result::Result<String, String>,
}

/// The report of [`validate_connection`]: every step tried, in order.
#[derive(Debug, Clone)]
pub struct ConnectionCheck {
    pub site: String,
    pub steps: Vec<CheckStep>,
    /// The host key the server presented, when the handshake got that far.
    pub server_key: Option<ServerKey>,
    /// The export directory's files, when the listing succeeded.
    pub files: Vec<RemoteFile>,
}

impl ConnectionCheck {
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.result.is_ok())
    }

    /// The step that failed, if any.
    pub fn failed_step(&self) -> Option<&CheckStep> {
        self.steps.iter().find(|s| s.result.is_err())
    }

    fn ok(&mut self, step: Step, detail: impl Into<String>) {
        self.steps.push(CheckStep {
            step,
            result: Ok(detail.into()),
        });
    }

    fn failed(&mut self, step: Step, error: &Error) {
        self.steps.push(CheckStep {
            step,
            result: Err(error.to_string()),
        });
    }
}

impl fmt::Display for ConnectionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "SFTP site: {}", self.site)?;
        for step in &self.steps {
            let (mark, text) = match &step.result {
                Ok(detail) => ("ok    ", detail),
                Err(problem) => ("FAILED", problem),
            };
            writeln!(f, "  [{mark}] {:<9} {text}", step.step.label())?;
        }
        match self.failed_step() {
            None if self.passed() => {
                writeln!(f, "Verdict: OK - the connector can fetch from this site.")?
            }
            None => writeln!(f, "Verdict: FAILED")?,
            Some(step) => writeln!(f, "Verdict: FAILED at {}.", step.step.label())?,
        }
        let key_failed = self.failed_step().is_some_and(|s| s.step == Step::HostKey);
        if let (true, Some(key)) = (key_failed, &self.server_key) {
            writeln!(
                f,
                "The server's host key: {key}\n  {}\nPin it only after ICE has confirmed this fingerprint.",
                key.openssh
            )?;
        }
        Ok(())
    }
}

/// "Validate connection", the admin's first step: the fetch stage's own
/// connect path (host key check, login) followed by a listing of the export
/// directory. Never fails: every outcome is in the report.
pub async fn validate_connection(
    config: &SftpConfig,
    secrets: &dyn SecretStore,
    connector: &str,
) -> ConnectionCheck {
    let mut check = ConnectionCheck {
        site: config.describe(),
        steps: Vec::new(),
        server_key: None,
        files: Vec::new(),
    };
    let setup = match secrets
        .load(connector)
        .await
        .and_then(|secret| Setup::new(config, &secret))
    {
        Ok(setup) => setup,
        Err(e) => {
            check.failed(Step::Setup, &e);
            return check;
        }
    };
    check.ok(
        Step::Setup,
        format!(
            "{} pinned host key(s); login as {:?} with {}",
            setup.pins.len(),
            setup.login.user,
            match (&setup.login.key, &setup.login.password) {
                (Some(_), Some(_)) => "key and password",
                (Some(_), None) => "key",
                _ => "password",
            }
        ),
    );
    let connection = match setup.connect().await {
        Ok(connection) => connection,
        Err(Failure {
            step,
            error,
            server_key,
        }) => {
            // The steps before the failed one passed.
            if step != Step::Connect {
                check.ok(Step::Connect, "TCP connection and SSH handshake");
            }
            if matches!(step, Step::Login | Step::Sftp) {
                let key = server_key.as_ref().map(ToString::to_string);
                check.ok(
                    Step::HostKey,
                    format!("{} matches the pinned key", key.unwrap_or_default()),
                );
            }
            if step == Step::Sftp {
                check.ok(Step::Login, format!("as {:?}", setup.login.user));
            }
            check.failed(step, &error);
            check.server_key = server_key;
            return check;
        }
    };
    check.server_key = connection.server_key.clone();
    check.ok(Step::Connect, "TCP connection and SSH handshake");
    check.ok(
        Step::HostKey,
        format!(
            "{} matches the pinned key",
            connection
                .server_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    );
    check.ok(
        Step::Login,
        format!("as {:?} ({})", setup.login.user, connection.method),
    );
    check.ok(Step::Sftp, "SFTP subsystem open");
    match list_directory(config, &connection).await {
        Ok(files) => {
            let newest = files.iter().max_by_key(|f| f.modified);
            let detail = match newest {
                Some(newest) => format!(
                    "{} file(s) in {}; newest {:?} ({} bytes, {})",
                    files.len(),
                    config.directory,
                    newest.name,
                    newest.size,
                    newest.modified.format("%Y-%m-%d %H:%M UTC")
                ),
                None => format!("the directory {} is empty", config.directory),
            };
            check.ok(Step::List, detail);
            check.files = files;
        }
        Err(e) => check.failed(Step::List, &e),
    }
    let _ = connection.sftp.close().await;
    let _ = connection
        .ssh
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn pins_accept_keys_known_hosts_lines_and_fingerprints() {
        let key = PublicKey::from_openssh(ED25519).unwrap();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let text = format!(
            "# ICE production\n{ED25519} ice@host\n[sftp.ice.example]:22 {ED25519}\n\n{fingerprint}\n"
        );
        let pins = parse_pins(&text, "test").unwrap();
        assert_eq!(pins.len(), 3);
        assert!(pins.iter().all(|p| p.matches(&key)));
        let other = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti",
        )
        .unwrap();
        assert!(pins.iter().all(|p| !p.matches(&other)));
    }

    #[test]
    fn bad_pins_are_errors_naming_the_line() {
        let err = parse_pins("\nssh-ed25519 notbase64", "sftp.host_keys")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sftp.host_keys, line 2"), "{err}");
        assert!(parse_pins("@cert-authority * ssh-ed25519 AAAA", "x").is_err());
        assert!(parse_pins("SHA256:***", "x").is_err());
    }

    #[test]
    fn pinned_algorithms_lead_the_offer() {
        let pins = parse_pins(ED25519, "t").unwrap();
        assert_eq!(pinned_algorithms(&pins), vec![Algorithm::Ed25519]);
        let with_fp = parse_pins(
            &format!("{ED25519}\nSHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"),
            "t",
        )
        .unwrap();
        assert!(pinned_algorithms(&with_fp).is_empty());
    }

    #[test]
    fn paths_and_descriptions() {
        let mut config = SftpConfig {
            host: "sftp.ice.example".into(),
            ..Default::default()
        };
        assert_eq!(config.describe(), "sftp://sftp.ice.example:22/~");
        assert_eq!(config.remote_path("a.pgp"), "a.pgp");
        config.directory = "/outgoing/".into();
        assert_eq!(config.describe(), "sftp://sftp.ice.example:22/outgoing");
        assert_eq!(config.remote_path("a.pgp"), "/outgoing/a.pgp");
        config.directory = "/".into();
        assert_eq!(config.remote_path("a.pgp"), "/a.pgp");
        config.directory = "exports".into();
        assert_eq!(config.describe(), "sftp://sftp.ice.example:22/~/exports");
        assert_eq!(config.remote_path("a.pgp"), "exports/a.pgp");
    }

    #[test]
    fn secret_problems_never_echo_the_key_or_passphrase() {
        let key_text = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----\n";
        let secret = ConnectorSecret {
            name: "ice".into(),
            fields: [
                (fields::FIRM_CODE.to_string(), SecretValue::new("ACME")),
                (
                    fields::SSH_PRIVATE_KEY.to_string(),
                    SecretValue::new(key_text),
                ),
                (
                    SSH_KEY_PASSPHRASE.to_string(),
                    SecretValue::new("hunter2-passphrase"),
                ),
            ]
            .into(),
        };
        let err = Login::from_secret(&secret).err().unwrap().to_string();
        assert!(err.contains("ssh_private_key"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_login_needs_a_key_or_a_password() {
        let secret = ConnectorSecret {
            name: "ice".into(),
            fields: [(fields::FIRM_CODE.to_string(), SecretValue::new("ACME"))].into(),
        };
        let err = Login::from_secret(&secret).err().unwrap().to_string();
        assert!(err.contains("needs a key or a password"), "{err}");
    }

    #[test]
    fn config_defaults_are_valid_once_a_host_is_set() {
        assert!(SftpConfig::default().check().is_err());
        let config = SftpConfig {
            host: "h".into(),
            ..Default::default()
        };
        config.check().unwrap();
        let pacing = config.pacing();
        assert_eq!(pacing.retry.attempts, 4);
        assert_eq!(pacing.settle, Duration::from_secs(5));
    }
}
