//! Mailboxes on a mail server, over IMAP (async-imap, TLS by rustls).
//!
//! One admin credential reaches every mailbox: a Dovecot-style master user
//! (`LOGIN "user*admin" password`), a SASL PLAIN proxy login (authorization
//! identity = the mailbox; Cyrus, Dovecot), or SASL XOAUTH2 with an OAuth2
//! token the sink mints itself (Exchange Online client credentials, Google
//! Workspace delegation: `oauth.rs`) or reads from the secret. Mails are kept
//! within the server's size limit and throttling answers are waited out.
//! See `docs/imap.md`.
//!
//! Exactly once, per folder: the sink keeps the folder's Message-IDs (one
//! `UID FETCH BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]` of the messages it has
//! not seen yet before each batch), appends only what is missing, and after
//! the batch fetches what arrived meanwhile: if a concurrent writer appended
//! the same Message-ID too, every writer keeps the copy with the lowest UID
//! and expunges the others by UID (UIDPLUS), so the folder converges to one
//! copy whatever the interleaving. A dropped connection is re-opened and the
//! batch resumes from a fresh look at the folder, so nothing is appended twice.
//!
//! Throughput: a session per mailbox is kept between calls; appends are
//! pipelined (several commands in flight, LITERAL+ so no round trip waits for
//! a continuation) and grouped into MULTIAPPEND commands when the server has
//! it, which lets the server store a whole group in one transaction.

mod conn;
mod names;
mod oauth;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;

use crate::error::{Error, Result};
use crate::ports::secrets::fields;
use crate::ports::{Delivery, DeliveryOutcome, MailboxSink, SecretStore, SecretValue};
use crate::retry::RetryPolicy;

use conn::{Done, DoneStatus, Endpoint, Event, Failure, Login, Untagged, Wire};
pub use names::{folder_name, Namespace};

/// How the sink proves it may open every mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum ImapAuth {
    /// Dovecot master user: `LOGIN "<mailbox><separator><admin_user>"` with
    /// the admin's password (secret field `mailbox_password`).
    MasterUser {
        admin_user: String,
        #[serde(default = "default_separator")]
        separator: String,
    },
    /// `AUTHENTICATE PLAIN` as `admin_user` on behalf of the mailbox (SASL
    /// authorization identity): Cyrus proxy servers, Dovecot master users.
    /// Password in secret field `mailbox_password`.
    SaslProxy { admin_user: String },
    /// `AUTHENTICATE XOAUTH2` with `user=<mailbox>` and the bearer token of
    /// secret field `mailbox_oauth_token`, minted and refreshed by someone
    /// else. Prefer `exchange-online` or `google-workspace`, which mint their own.
    Xoauth2,
    /// Exchange Online app-only access: the sink obtains a token by the
    /// client-credentials grant and logs in with `AUTHENTICATE XOAUTH2` as each
    /// mailbox. With `certificate_thumbprint` it signs a client assertion with
    /// the certificate's private key (secret field `oauth_private_key`, PEM);
    /// without, it sends the client secret (secret field `oauth_client_secret`).
    ExchangeOnline {
        /// Directory (tenant) id or a verified domain of the tenant.
        tenant: String,
        /// Application (client) id of the app registration.
        client_id: String,
        /// SHA-1 thumbprint (hex) of the certificate uploaded to the app.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate_thumbprint: Option<String>,
        /// Default `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`
        /// (sovereign clouds have their own host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        /// Default `https://outlook.office365.com/.default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// Google Workspace: a service account with domain-wide delegation signs
    /// a JWT per mailbox (`sub` = the mailbox) with its private key (secret
    /// field `oauth_private_key`, the `private_key` of its JSON key file) and
    /// exchanges it for that mailbox's token.
    GoogleWorkspace {
        /// The service account's `client_email`.
        client_email: String,
        /// The key's `private_key_id` (sent as `kid`; optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key_id: Option<String>,
        /// Default `https://oauth2.googleapis.com/token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        /// Default `https://mail.google.com/` (the only scope Gmail's IMAP takes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

fn default_separator() -> String {
    "*".into()
}

impl ImapAuth {
    /// Dovecot master-user login as `admin_user`, with the usual separator.
    pub fn master_user(admin_user: &str) -> Self {
        ImapAuth::MasterUser {
            admin_user: admin_user.to_string(),
            separator: default_separator(),
        }
    }
}

impl Default for ImapAuth {
    fn default() -> Self {
        ImapAuth::MasterUser {
            admin_user: String::new(),
            separator: default_separator(),
        }
    }
}

/// The `[<connector>.imap]` table of the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    /// Default 993 (implicit TLS), or 143 for plaintext.
    pub port: Option<u16>,
    /// PEM file of the CA(s) to trust instead of the system roots (a firm's
    /// own CA, or a test server's self-signed certificate).
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the certificate when it differs from `host`.
    pub tls_server_name: Option<String>,
    /// No TLS at all: passwords and mail cross the network in clear. Only for
    /// a server on the same machine in tests.
    pub insecure_plaintext_for_local_testing_only: bool,
    pub auth: ImapAuth,
    /// APPEND commands in flight per session; 1 = one APPEND per round trip.
    pub pipeline_depth: usize,
    /// Messages per MULTIAPPEND command when the server offers MULTIAPPEND;
    /// 0 or 1 = one message per APPEND.
    pub multiappend_max_messages: usize,
    /// Overrides the personal namespace prefix the server announces (e.g.
    /// `INBOX.`); the hierarchy delimiter always comes from the server.
    pub namespace_prefix: Option<String>,
    /// Sessions kept open for later batches (one per mailbox).
    pub max_idle_sessions: usize,
    /// Reconnections tried when the connection drops before giving up the
    /// batch (with exponential backoff from 250 ms).
    pub reconnect_attempts: u32,
    pub timeout_secs: u64,
    /// Expunge extra copies of a Message-ID of the batch (left by concurrent
    /// writers), keeping the oldest. Off: extra copies are only reported.
    pub remove_duplicates: bool,
    /// The largest message (bytes) the server takes, used when it does not
    /// announce APPENDLIMIT (RFC 7889). Unset: 35 MiB for `exchange-online`
    /// (Exchange Online's default per message), no limit otherwise.
    pub max_message_bytes: Option<u64>,
    /// Mailboxes of a batch served at once, one session each (Exchange
    /// Online throttles concurrent IMAP sessions per mailbox and per app).
    pub max_concurrent_mailboxes: usize,
    /// APPEND commands per second for the whole sink (a MULTIAPPEND counts
    /// once), to stay under a service's rate; 0 = no pacing.
    pub max_appends_per_second: u32,
    /// Times a command the server throttles (`[LIMIT]`, `[UNAVAILABLE]`,
    /// `THROTTLED`) is tried again before its messages fail.
    pub throttle_retries: u32,
    /// First pause after a throttling answer; doubled each time (up to 64x),
    /// with random jitter so that parallel importers do not return together.
    pub throttle_backoff_ms: u64,
}

impl ImapConfig {
    /// Reconnecting after a dropped connection: from 250 ms, doubled up to
    /// 8 s, with jitter.
    pub fn reconnect_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.reconnect_attempts.saturating_add(1),
            backoff: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
        }
    }

    /// Going on after a throttling answer: from `throttle_backoff_ms`,
    /// doubled up to 64 times that, with jitter.
    pub fn throttle_policy(&self) -> RetryPolicy {
        let first = Duration::from_millis(self.throttle_backoff_ms.max(1));
        RetryPolicy {
            attempts: self.throttle_retries.saturating_add(1),
            backoff: first,
            backoff_max: first.saturating_mul(64),
        }
    }
}

impl Default for ImapConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: None,
            ca_file: None,
            tls_server_name: None,
            insecure_plaintext_for_local_testing_only: false,
            auth: ImapAuth::default(),
            pipeline_depth: 8,
            multiappend_max_messages: 100,
            namespace_prefix: None,
            max_idle_sessions: 16,
            reconnect_attempts: 5,
            timeout_secs: 120,
            remove_duplicates: true,
            max_message_bytes: None,
            max_concurrent_mailboxes: 4,
            max_appends_per_second: 0,
            throttle_retries: 8,
            throttle_backoff_ms: 1000,
        }
    }
}

impl ImapConfig {
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or(if self.insecure_plaintext_for_local_testing_only {
                143
            } else {
                993
            })
    }

    /// The secret field holding the credential.
    pub fn secret_field(&self) -> &'static str {
        match &self.auth {
            ImapAuth::Xoauth2 => fields::MAILBOX_OAUTH_TOKEN,
            ImapAuth::ExchangeOnline {
                certificate_thumbprint: None,
                ..
            } => fields::OAUTH_CLIENT_SECRET,
            ImapAuth::ExchangeOnline { .. } | ImapAuth::GoogleWorkspace { .. } => {
                fields::OAUTH_PRIVATE_KEY
            }
            _ => fields::MAILBOX_PASSWORD,
        }
    }

    /// The size limit when the server announces none.
    pub fn configured_limit(&self) -> Option<u64> {
        self.max_message_bytes.or(match self.auth {
            ImapAuth::ExchangeOnline { .. } => Some(EXCHANGE_MAX_MESSAGE_BYTES),
            _ => None,
        })
    }

    /// Whether the sink mints its own OAuth2 tokens.
    fn mints_tokens(&self) -> bool {
        matches!(
            self.auth,
            ImapAuth::ExchangeOnline { .. } | ImapAuth::GoogleWorkspace { .. }
        )
    }

    /// The token minter of the OAuth2 methods (`None` for the others).
    fn tokens(&self) -> Result<Option<oauth::Tokens>> {
        let (grant, url, scope) = match &self.auth {
            ImapAuth::ExchangeOnline {
                tenant,
                client_id,
                certificate_thumbprint,
                token_url,
                scope,
            } => {
                let grant = match certificate_thumbprint {
                    Some(thumbprint) => oauth::Grant::ClientAssertion {
                        client_id: client_id.clone(),
                        x5t: oauth::x5t_from_thumbprint(thumbprint)?,
                    },
                    None => oauth::Grant::ClientSecret {
                        client_id: client_id.clone(),
                    },
                };
                let url = token_url
                    .clone()
                    .unwrap_or_else(|| oauth::EXCHANGE_TOKEN_URL.replace("{tenant}", tenant));
                (
                    grant,
                    url,
                    scope.as_deref().unwrap_or(oauth::EXCHANGE_SCOPE),
                )
            }
            ImapAuth::GoogleWorkspace {
                client_email,
                private_key_id,
                token_url,
                scope,
            } => (
                oauth::Grant::JwtBearer {
                    client_email: client_email.clone(),
                    key_id: private_key_id.clone(),
                },
                token_url
                    .clone()
                    .unwrap_or_else(|| oauth::GOOGLE_TOKEN_URL.into()),
                scope.as_deref().unwrap_or(oauth::GOOGLE_SCOPE),
            ),
            _ => return Ok(None),
        };
        let plaintext = url.starts_with("http://");
        if plaintext && !self.insecure_plaintext_for_local_testing_only {
            return Err(Error::Config(format!(
                "imap.auth.token_url {url} is not https (plaintext only with \
                 insecure_plaintext_for_local_testing_only)"
            )));
        }
        // The token endpoint is a public service: system roots, not the
        // mail server's ca_file.
        let tls = if plaintext {
            None
        } else {
            Some(tls_config(None)?)
        };
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        oauth::Tokens::new(grant, &url, scope, tls, timeout).map(Some)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("imap: {what}")));
        if self.host.trim().is_empty() {
            return bad("host is empty");
        }
        match &self.auth {
            ImapAuth::MasterUser {
                admin_user,
                separator,
            } if admin_user.is_empty() || separator.is_empty() => {
                return bad("master-user needs admin_user and separator")
            }
            ImapAuth::SaslProxy { admin_user } if admin_user.is_empty() => {
                return bad("sasl-proxy needs admin_user")
            }
            ImapAuth::ExchangeOnline {
                tenant, client_id, ..
            } if tenant.trim().is_empty() || client_id.trim().is_empty() => {
                return bad("exchange-online needs tenant and client_id")
            }
            ImapAuth::GoogleWorkspace { client_email, .. } if client_email.trim().is_empty() => {
                return bad("google-workspace needs client_email")
            }
            _ => {}
        }
        if self.pipeline_depth == 0 {
            return bad("pipeline_depth must be at least 1");
        }
        Ok(())
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        tls_config(self.ca_file.as_deref())
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let tls = if self.insecure_plaintext_for_local_testing_only {
            tracing::warn!(
                host = %self.host,
                "IMAP WITHOUT TLS: insecure_plaintext_for_local_testing_only is set; credentials \
                 and mail cross the network in clear"
            );
            None
        } else {
            let name = self.tls_server_name.as_deref().unwrap_or(&self.host);
            let server_name =
                rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
                    Error::Config(format!("imap: {name:?} is not a TLS server name: {e}"))
                })?;
            Some((self.tls()?, server_name))
        };
        Ok(Endpoint {
            host: self.host.clone(),
            port: self.port(),
            tls,
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
        })
    }
}

/// Trust for a TLS connection: the CA(s) of `ca_file`, or the system roots.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading imap.ca_file {}", path.display()), e))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .map_err(|e| Error::Config(format!("imap.ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("imap.ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "imap.ca_file {} holds no certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for problem in &native.errors {
                tracing::warn!(%problem, "a system root certificate could not be loaded");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::Config(
                    "no system root certificates found; set imap.ca_file".into(),
                ));
            }
        }
    }
    // The provider is named, not taken from the process default, so that
    // another crate enabling aws-lc-rs cannot make the builder ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where the credential comes from.
enum Credential {
    Store {
        store: Arc<dyn SecretStore>,
        connector: String,
    },
    Fixed(SecretValue),
}

/// Counters of what the sink did, for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapStats {
    pub sessions_opened: u64,
    pub reconnects: u64,
    pub appended: u64,
    pub already_present: u64,
    pub refused: u64,
    pub duplicates_removed: u64,
    /// APPEND commands sent (a MULTIAPPEND counts once).
    pub append_commands: u64,
    /// Pauses for a throttling answer (`[LIMIT]`, `[UNAVAILABLE]`, `THROTTLED`).
    pub throttled: u64,
}

/// Messages whose APPEND the server throttled, and its words.
#[derive(Default)]
struct Throttled<'j> {
    jobs: Vec<&'j Job<'j>>,
    reason: String,
}

/// Whether a refusal asks to come back later rather than refusing the
/// message: RFC 5530's `[UNAVAILABLE]` and `[LIMIT]`, and the `THROTTLED`
/// Gmail and Exchange Online write. A `[LIMIT]` about the message's size
/// (Dovecot's quota_max_mail_size answer) is final: waiting will not shrink it.
fn is_throttling(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let size = upper.contains("SIZE") || upper.contains("LARGE");
    upper.contains("[UNAVAILABLE]")
        || upper.contains("THROTTLED")
        || (upper.contains("[LIMIT]") && !size)
}

/// The Message-IDs of one folder as far as the sink has read it.
#[derive(Debug, Default)]
struct FolderIndex {
    uidvalidity: u32,
    last_uid: u32,
    /// Message-ID -> UIDs holding it, ascending.
    ids: HashMap<String, Vec<u32>>,
}

impl FolderIndex {
    fn add(&mut self, id: Option<String>, uid: u32) {
        self.last_uid = self.last_uid.max(uid);
        if let Some(id) = id {
            let uids = self.ids.entry(id).or_default();
            if let Err(at) = uids.binary_search(&uid) {
                uids.insert(at, uid);
            }
        }
    }
}

/// A logged-in session of one mailbox.
struct Session {
    mailbox: String,
    wire: Wire,
    namespace: Namespace,
    /// The IMAP name of the selected folder, its UIDVALIDITY and how many
    /// messages it had when selected.
    selected: Option<(String, u32, u32)>,
}

/// What became of one delivery of a batch, while the batch runs.
#[derive(Clone)]
struct Job<'a> {
    index: usize,
    id: String,
    delivery: &'a Delivery<'a>,
    flags: String,
}

pub struct ImapSink {
    config: ImapConfig,
    endpoint: Endpoint,
    credential: Credential,
    secret: tokio::sync::Mutex<Option<SecretValue>>,
    /// The token minter of the OAuth2 methods.
    tokens: Option<oauth::Tokens>,
    /// A login with the credential has worked: later refusals are about the
    /// mailbox, not the credential.
    credential_ok: AtomicBool,
    valid: Mutex<HashMap<String, (bool, Instant)>>,
    /// When the next APPEND may leave (`max_appends_per_second`).
    next_append: tokio::sync::Mutex<tokio::time::Instant>,
    /// The size limit of each mailbox opened (APPENDLIMIT or the setting).
    limits: Mutex<HashMap<String, Option<u64>>>,
    idle: Mutex<VecDeque<Session>>,
    indexes: Mutex<HashMap<(String, String), FolderIndex>>,
    stats: Mutex<ImapStats>,
}

/// How long an answer about a mailbox is trusted (a warm function keeps the
/// sink across invocations; mailboxes get provisioned and removed).
const VALIDITY_TTL: Duration = Duration::from_secs(600);
/// Exchange Online's default maximum message size (35 MB, the MIME size).
pub const EXCHANGE_MAX_MESSAGE_BYTES: u64 = 35 << 20;
/// Upper bound of one MULTIAPPEND command's literals.
const MULTIAPPEND_MAX_BYTES: usize = 8 << 20;

fn lock_failed() -> Error {
    Error::Config("IMAP sink state lock poisoned by an earlier panic".into())
}

impl ImapSink {
    /// A sink whose credential is read from the connector's secret (field
    /// `mailbox_password`, or `mailbox_oauth_token` for XOAUTH2) on first use.
    pub fn new(config: ImapConfig, secrets: Arc<dyn SecretStore>, connector: &str) -> Result<Self> {
        Self::build(
            config,
            Credential::Store {
                store: secrets,
                connector: connector.to_string(),
            },
        )
    }

    /// A sink with the credential given directly (tools, benchmarks).
    pub fn with_credential(config: ImapConfig, credential: SecretValue) -> Result<Self> {
        Self::build(config, Credential::Fixed(credential))
    }

    fn build(config: ImapConfig, credential: Credential) -> Result<Self> {
        config.check()?;
        let endpoint = config.endpoint()?;
        let tokens = config.tokens()?;
        Ok(Self {
            config,
            endpoint,
            credential,
            tokens,
            secret: tokio::sync::Mutex::new(None),
            credential_ok: AtomicBool::new(false),
            valid: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            next_append: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            idle: Mutex::new(VecDeque::new()),
            indexes: Mutex::new(HashMap::new()),
            stats: Mutex::new(ImapStats::default()),
        })
    }

    pub fn config(&self) -> &ImapConfig {
        &self.config
    }

    pub fn stats(&self) -> ImapStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn count(&self, update: impl FnOnce(&mut ImapStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            update(&mut stats);
        }
    }

    fn secret_name(&self) -> String {
        match &self.credential {
            Credential::Store { connector, .. } => connector.clone(),
            Credential::Fixed(_) => "imap credential".into(),
        }
    }

    /// The credential; `reload` reads the store again (a token refreshed
    /// since the last read).
    async fn credential(&self, reload: bool) -> Result<SecretValue> {
        let mut cached = self.secret.lock().await;
        if let (Some(value), false) = (cached.as_ref(), reload) {
            return Ok(value.clone());
        }
        let value = match &self.credential {
            Credential::Fixed(value) => value.clone(),
            Credential::Store { store, connector } => store
                .load(connector)
                .await?
                .require(self.config.secret_field())?
                .clone(),
        };
        *cached = Some(value.clone());
        Ok(value)
    }

    fn failure_to_error(&self, failure: Failure) -> Error {
        let server = self.endpoint.describe();
        match failure {
            Failure::Transport(reason) => Error::io(
                format!("IMAP server {server}"),
                std::io::Error::other(reason),
            ),
            Failure::Fatal(reason) => Error::Config(format!("IMAP server {server}: {reason}")),
            Failure::Folder(reason) => Error::Config(reason),
            Failure::LoginRefused { text, .. } => self.credential_refused(&text),
            Failure::Crate(e) => e,
        }
    }

    fn credential_refused(&self, text: &str) -> Error {
        Error::Secret {
            secret: self.secret_name(),
            problem: format!(
                "field {:?} was refused by IMAP server {} ({}); check the admin credential",
                self.config.secret_field(),
                self.endpoint.describe(),
                text
            ),
        }
    }

    /// Decides what a refused login means: `Ok` = the mailbox cannot be
    /// opened (it does not exist or the admin may not open it), `Err` = the
    /// admin credential itself is wrong, which stops the run.
    fn judge_refusal(&self, mailbox: &str, code: Option<&str>, text: &str) -> Result<String> {
        // AUTHORIZATIONFAILED (Dovecot: unknown user, good master password)
        // or no code at all (Exchange) is about the mailbox; AUTHENTICATIONFAILED
        // is about the credential unless the same credential already worked.
        let failed_authentication = code == Some("AUTHENTICATIONFAILED");
        if failed_authentication {
            if let Some(tokens) = &self.tokens {
                // A token minted a moment ago was refused as well: the app's
                // permission, the mailbox permission or the token's audience
                // is wrong, and no retry will change that.
                return Err(Error::Mailbox {
                    mailbox: mailbox.to_string(),
                    reason: format!(
                        "IMAP server {} refused a freshly minted OAuth2 token ({}): {text}; check \
                         the app's IMAP permission, its access to this mailbox and the token's \
                         scope (audience)",
                        self.endpoint.describe(),
                        tokens.describe()
                    ),
                });
            }
        }
        let about_mailbox = !failed_authentication || self.credential_ok.load(Ordering::Relaxed);
        if about_mailbox {
            tracing::info!(
                mailbox,
                reason = text,
                "mailbox cannot be opened with the admin credential"
            );
            Ok(format!(
                "the server refused access to mailbox {mailbox}: {text}"
            ))
        } else {
            Err(self.credential_refused(text))
        }
    }

    async fn open_session(&self, mailbox: &str, reload_secret: bool) -> Result<Session, Failure> {
        let secret = self
            .credential(reload_secret)
            .await
            .map_err(Failure::Crate)?;
        // A minted token lives as long as the login needs it.
        let token: SecretValue;
        let login = match &self.config.auth {
            ImapAuth::MasterUser {
                admin_user,
                separator,
            } => Login::Plain {
                user: format!("{mailbox}{separator}{admin_user}"),
                password: secret.expose(),
            },
            ImapAuth::SaslProxy { admin_user } => Login::SaslPlain {
                authzid: mailbox,
                authcid: admin_user,
                password: secret.expose(),
            },
            ImapAuth::Xoauth2 => Login::XOAuth2 {
                user: mailbox,
                token: secret.expose(),
            },
            ImapAuth::ExchangeOnline { .. } | ImapAuth::GoogleWorkspace { .. } => {
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    Failure::Fatal("OAuth2 method without a token endpoint".into())
                })?;
                token = match tokens.token(mailbox, &secret, reload_secret).await {
                    Ok(token) => token,
                    // The same key already opened another mailbox, so a
                    // per-mailbox refusal is about this one (Google: a user
                    // outside the domain or without Gmail).
                    Err(Error::Mailbox { reason, .. })
                        if tokens.grant().per_mailbox()
                            && self.credential_ok.load(Ordering::Relaxed) =>
                    {
                        return Err(Failure::LoginRefused {
                            code: None,
                            text: reason,
                        })
                    }
                    Err(e) => return Err(Failure::Crate(e)),
                };
                Login::XOAuth2 {
                    user: mailbox,
                    token: token.expose(),
                }
            }
        };
        let mut wire = Wire::open(&self.endpoint, &login).await?;
        self.credential_ok.store(true, Ordering::Relaxed);
        self.count(|s| s.sessions_opened += 1);
        let mut namespace = wire.info.namespace.clone().unwrap_or(Namespace {
            prefix: String::new(),
            delimiter: None,
        });
        if wire.info.namespace.is_none() {
            // No NAMESPACE: the delimiter of the root tells the hierarchy.
            let (untagged, done) = wire.command("LIST \"\" \"\"").await?;
            if done.status == DoneStatus::Ok {
                namespace.delimiter = untagged.iter().find_map(|u| match u {
                    Untagged::List { delimiter, .. } => {
                        delimiter.as_deref().and_then(|d| d.chars().next())
                    }
                    _ => None,
                });
            }
        }
        if let Some(prefix) = &self.config.namespace_prefix {
            namespace.prefix = prefix.clone();
        }
        tracing::debug!(mailbox, server = %self.endpoint.describe(), ?namespace, "IMAP session opened");
        Ok(Session {
            mailbox: mailbox.to_string(),
            wire,
            namespace,
            selected: None,
        })
    }

    /// A session for the mailbox: an idle one, or a new login. A refused
    /// XOAUTH2 token is read again from the store once (it may have been
    /// refreshed since); a refused minted token is replaced by a fresh one
    /// once (it may have been revoked or have expired early).
    async fn session(&self, mailbox: &str) -> Result<Session, Failure> {
        let idle = {
            let mut idle = self
                .idle
                .lock()
                .map_err(|_| Failure::Crate(lock_failed()))?;
            idle.iter()
                .position(|s| s.mailbox == mailbox)
                .and_then(|at| idle.remove(at))
        };
        if let Some(session) = idle {
            return Ok(session);
        }
        match self.open_session(mailbox, false).await {
            Err(Failure::LoginRefused { .. })
                if self.config.mints_tokens()
                    || (matches!(self.config.auth, ImapAuth::Xoauth2)
                        && matches!(self.credential, Credential::Store { .. })) =>
            {
                tracing::info!(mailbox, "token refused; trying once with a fresh one");
                self.open_session(mailbox, true).await
            }
            other => other,
        }
    }

    async fn put_back(&self, session: Session) {
        let evicted = match self.idle.lock() {
            Ok(mut idle) => {
                idle.push_back(session);
                let mut evicted = Vec::new();
                while idle.len() > self.config.max_idle_sessions {
                    evicted.extend(idle.pop_front());
                }
                evicted
            }
            Err(_) => Vec::new(),
        };
        for session in evicted {
            session.wire.logout().await;
        }
    }

    /// Opens a session, re-trying dropped connections with backoff and
    /// waiting out a throttled login (which says nothing about the mailbox).
    async fn session_with_retries(&self, mailbox: &str) -> Result<Session, Failure> {
        let mut attempt = 0;
        let mut throttled = 0;
        loop {
            match self.session(mailbox).await {
                Err(Failure::Transport(reason)) if attempt < self.config.reconnect_attempts => {
                    attempt += 1;
                    self.backoff(attempt, &reason).await;
                }
                Err(Failure::LoginRefused { text, .. })
                    if is_throttling(&text) && throttled < self.config.throttle_retries =>
                {
                    throttled += 1;
                    self.throttle_pause(throttled, mailbox, &text).await;
                }
                other => return other,
            }
        }
    }

    async fn backoff(&self, attempt: u32, reason: &str) {
        self.count(|s| s.reconnects += 1);
        let delay = self.config.reconnect_policy().pause(attempt);
        tracing::warn!(
            server = %self.endpoint.describe(),
            attempt,
            of = self.config.reconnect_attempts,
            ?delay,
            reason,
            "IMAP connection lost; reconnecting"
        );
        tokio::time::sleep(delay).await;
    }

    /// Delivers the jobs of one (mailbox, folder), reconnecting as needed.
    async fn deliver_group(
        &self,
        mailbox: &str,
        folder: &str,
        jobs: &[Job<'_>],
        outcomes: &mut [Option<DeliveryOutcome>],
    ) -> Result<()> {
        let key = (mailbox.to_string(), folder.to_string());
        let mut index = self
            .indexes
            .lock()
            .map_err(|_| lock_failed())?
            .remove(&key)
            .unwrap_or_default();
        let mut sent = HashSet::new();
        let mut attempt = 0;
        let mut throttled = 0;
        let end = loop {
            let failure = match self.session(mailbox).await {
                Ok(mut session) => {
                    let result = self
                        .run_group(&mut session, folder, jobs, outcomes, &mut index, &mut sent)
                        .await;
                    match result {
                        Ok(()) => {
                            self.put_back(session).await;
                            break Ok(());
                        }
                        Err(failure @ Failure::Folder(_)) => {
                            // The session is fine; only this folder is not.
                            self.put_back(session).await;
                            failure
                        }
                        // Anything else leaves the session in an unknown state: drop it.
                        Err(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Transport(reason) if attempt < self.config.reconnect_attempts => {
                    attempt += 1;
                    self.backoff(attempt, &reason).await;
                }
                // Too many sessions (Exchange Online answers the login so).
                Failure::LoginRefused { text, .. }
                    if is_throttling(&text) && throttled < self.config.throttle_retries =>
                {
                    throttled += 1;
                    self.throttle_pause(throttled, mailbox, &text).await;
                }
                Failure::Folder(reason) => {
                    tracing::warn!(mailbox, folder, %reason, "folder unusable; its messages fail");
                    break Err(Ok(reason));
                }
                Failure::LoginRefused { code, text } => {
                    break Err(self.judge_refusal(mailbox, code.as_deref(), &text));
                }
                other => break Err(Err(self.failure_to_error(other))),
            }
        };
        self.restore_index(key, index);
        match end {
            Ok(()) => Ok(()),
            Err(Ok(reason)) => {
                for job in jobs {
                    if outcomes[job.index].is_none() {
                        self.count(|s| s.refused += 1);
                        outcomes[job.index] = Some(DeliveryOutcome::Refused(reason.clone()));
                    }
                }
                Ok(())
            }
            Err(Err(error)) => Err(error),
        }
    }

    /// One group on its own (groups of a batch run concurrently): its
    /// outcomes by delivery index.
    async fn deliver_alone(
        &self,
        mailbox: &str,
        folder: &str,
        jobs: &[Job<'_>],
    ) -> Result<Vec<(usize, DeliveryOutcome)>> {
        let size = jobs.iter().map(|j| j.index + 1).max().unwrap_or(0);
        let mut outcomes = vec![None; size];
        self.deliver_group(mailbox, folder, jobs, &mut outcomes)
            .await?;
        Ok(jobs
            .iter()
            .filter_map(|j| Some((j.index, outcomes[j.index].clone()?)))
            .collect())
    }

    fn restore_index(&self, key: (String, String), index: FolderIndex) {
        if let Ok(mut indexes) = self.indexes.lock() {
            indexes.insert(key, index);
        }
    }
}

impl ImapSink {
    /// One attempt at a group on a session: open the folder, catch up with
    /// its Message-IDs, append what is missing, reconcile.
    async fn run_group(
        &self,
        session: &mut Session,
        folder: &str,
        jobs: &[Job<'_>],
        outcomes: &mut [Option<DeliveryOutcome>],
        index: &mut FolderIndex,
        sent: &mut HashSet<usize>,
    ) -> Result<(), Failure> {
        let name = folder_name(folder, &session.namespace).map_err(|reason| {
            Failure::Folder(format!(
                "folder {folder:?} in mailbox {}: {reason}",
                session.mailbox
            ))
        })?;
        let just_selected = select_or_create(session, &name).await?;
        let (uidvalidity, exists) = session
            .selected
            .as_ref()
            .map(|(_, v, e)| (*v, *e))
            .unwrap_or_default();
        if index.uidvalidity != uidvalidity {
            // A new folder, or the server renumbered it: read it whole.
            *index = FolderIndex {
                uidvalidity,
                ..Default::default()
            };
        }
        // Some servers (Exchange) answer `UID FETCH 1:*` in an empty folder
        // with BAD: an empty folder just selected has nothing to read.
        if !(just_selected && exists == 0) {
            catch_up(&mut session.wire, index, !just_selected).await?;
        }

        // Decide each job from what the folder holds now.
        let mut to_send: Vec<&Job<'_>> = Vec::new();
        let mut planned: HashSet<&str> = HashSet::new();
        let limit = session
            .wire
            .info
            .append_limit()
            .or(self.config.configured_limit());
        for job in jobs {
            if outcomes[job.index].is_some() {
                continue;
            }
            if index.ids.contains_key(&job.id) {
                // Sent by an attempt whose answer the broken connection took
                // with it: that copy is ours.
                let outcome = if sent.contains(&job.index) {
                    self.count(|s| s.appended += 1);
                    DeliveryOutcome::Delivered
                } else {
                    self.count(|s| s.already_present += 1);
                    DeliveryOutcome::AlreadyPresent
                };
                outcomes[job.index] = Some(outcome);
            } else if !planned.insert(job.id.as_str()) {
                // The same Message-ID twice in one batch: one copy.
                self.count(|s| s.already_present += 1);
                outcomes[job.index] = Some(DeliveryOutcome::AlreadyPresent);
            } else if let Some(limit) = limit.filter(|l| job.delivery.raw.len() as u64 > *l) {
                self.count(|s| s.refused += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                    "message of {} bytes exceeds the {limit} bytes the server takes (its \
                     APPENDLIMIT, else imap.max_message_bytes)",
                    job.delivery.raw.len()
                )));
            } else {
                to_send.push(job);
            }
        }
        if to_send.is_empty() && index.last_uid == 0 {
            // Nothing stored and nothing sent: the folder is still empty.
            return Ok(());
        }
        self.append_through_throttling(session, &name, to_send, outcomes, index, sent)
            .await?;

        // Reconcile: see what arrived meanwhile (ours and any concurrent
        // writer's) and keep one copy of each Message-ID of the batch.
        let stored_any = jobs
            .iter()
            .any(|j| outcomes[j.index] == Some(DeliveryOutcome::Delivered));
        if !stored_any && index.last_uid == 0 {
            return Ok(());
        }
        let ids: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        self.keep_one_copy(session, index, &ids).await?;
        if stored_any {
            // Another session's append can become visible here a moment
            // after the server acknowledged it (two writers racing on the
            // same last messages could each miss the other's copies): one
            // more look, so that at least one of them sees both.
            self.keep_one_copy(session, index, &ids).await?;
        }
        Ok(())
    }

    /// Reads what arrived in the folder since the index was last read and
    /// expunges all but the oldest copy of each of `ids`.
    async fn keep_one_copy(
        &self,
        session: &mut Session,
        index: &mut FolderIndex,
        ids: &HashSet<&str>,
    ) -> Result<(), Failure> {
        catch_up(&mut session.wire, index, true).await?;
        let extra: Vec<u32> = ids
            .iter()
            .filter_map(|id| index.ids.get(*id))
            .flat_map(|uids| uids.iter().skip(1).copied())
            .collect();
        if !extra.is_empty() {
            self.remove_copies(session, index, extra).await?;
        }
        Ok(())
    }

    /// Appends the jobs; what the server throttles goes again after a pause
    /// with jitter, decided anew from a fresh look at the folder (a throttled
    /// answer may still have stored the message), until `throttle_retries`.
    async fn append_through_throttling<'j>(
        &self,
        session: &mut Session,
        name: &str,
        mut to_send: Vec<&'j Job<'j>>,
        outcomes: &mut [Option<DeliveryOutcome>],
        index: &mut FolderIndex,
        sent: &mut HashSet<usize>,
    ) -> Result<(), Failure> {
        let mut round = 0;
        while !to_send.is_empty() {
            let throttled = self.append(session, name, &to_send, outcomes, sent).await?;
            if throttled.jobs.is_empty() {
                return Ok(());
            }
            round += 1;
            if round > self.config.throttle_retries {
                for job in throttled.jobs {
                    self.count(|s| s.refused += 1);
                    outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                        "the server kept throttling after {} tries: {}",
                        round, throttled.reason
                    )));
                }
                return Ok(());
            }
            self.throttle_pause(round, &session.mailbox, &throttled.reason)
                .await;
            catch_up(&mut session.wire, index, true).await?;
            to_send = throttled
                .jobs
                .into_iter()
                .filter(|job| {
                    if !index.ids.contains_key(&job.id) {
                        return true;
                    }
                    self.count(|s| s.appended += 1);
                    outcomes[job.index] = Some(DeliveryOutcome::Delivered);
                    false
                })
                .collect();
        }
        Ok(())
    }

    /// Waits for the next APPEND slot when a rate is configured: slots are
    /// handed out one interval apart across every session of the sink.
    async fn pace(&self) {
        let rate = self.config.max_appends_per_second;
        if rate == 0 {
            return;
        }
        let interval = Duration::from_secs(1) / rate;
        let slot = {
            let mut next = self.next_append.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Sleeps the throttling policy's pause for this round.
    async fn throttle_pause(&self, round: u32, mailbox: &str, reason: &str) {
        self.count(|s| s.throttled += 1);
        let delay = self.config.throttle_policy().pause(round);
        tracing::warn!(
            mailbox,
            round,
            ?delay,
            reason,
            "IMAP server throttles; pausing"
        );
        tokio::time::sleep(delay).await;
    }

    /// Expunges extra copies by UID, keeping the oldest copy of each
    /// Message-ID.
    async fn remove_copies(
        &self,
        session: &mut Session,
        index: &mut FolderIndex,
        extra: Vec<u32>,
    ) -> Result<(), Failure> {
        let mailbox = session.mailbox.clone();
        if !self.config.remove_duplicates || !session.wire.info.has("UIDPLUS") {
            tracing::warn!(
                mailbox,
                copies = extra.len(),
                "extra copies of imported messages left in place (remove_duplicates off or no \
                 UIDPLUS to expunge them by UID)"
            );
            return Ok(());
        }
        let set = extra
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let (_, done) = session
            .wire
            .commands(&[
                format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                format!("UID EXPUNGE {set}"),
            ])
            .await?;
        if let Some(bad) = done.iter().find(|d| d.status != DoneStatus::Ok) {
            tracing::warn!(mailbox, reason = %bad.text, "could not expunge extra copies");
            return Ok(());
        }
        for uids in index.ids.values_mut() {
            uids.retain(|uid| !extra.contains(uid));
        }
        self.count(|s| s.duplicates_removed += extra.len() as u64);
        tracing::info!(
            mailbox,
            copies = extra.len(),
            "extra copies from a concurrent import expunged"
        );
        Ok(())
    }

    /// Appends the jobs: several commands in flight, each a MULTIAPPEND of
    /// several messages when the server allows. A refused MULTIAPPEND stores
    /// nothing (RFC 3502), so its messages are sent again one by one to tell
    /// the refused ones from the rest.
    async fn append<'j>(
        &self,
        session: &mut Session,
        name: &str,
        jobs: &[&'j Job<'j>],
        outcomes: &mut [Option<DeliveryOutcome>],
        sent: &mut HashSet<usize>,
    ) -> Result<Throttled<'j>, Failure> {
        let wire = &mut session.wire;
        let mailbox_arg = names::quoted(name)
            .ok_or_else(|| Failure::Folder(format!("folder name {name:?} cannot be quoted")))?;
        let multi = if wire.info.has("MULTIAPPEND") {
            self.config.multiappend_max_messages.max(1)
        } else {
            1
        };
        let mut queue: VecDeque<Vec<&'j Job<'j>>> = chunks(jobs, multi);
        let mut retry_alone: Vec<&'j Job<'j>> = Vec::new();
        let mut throttled = Throttled::default();
        let mut in_flight: VecDeque<(String, Vec<&'j Job<'j>>)> = VecDeque::new();
        let depth = self.config.pipeline_depth.max(1);
        loop {
            if in_flight.len() < depth {
                if let Some(chunk) = queue.pop_front() {
                    let tag = wire.tag();
                    for job in &chunk {
                        sent.insert(job.index);
                    }
                    self.pace().await;
                    self.count(|s| s.append_commands += 1);
                    match send_append(wire, &tag, &mailbox_arg, &chunk).await? {
                        Sent::Whole => in_flight.push_back((tag, chunk)),
                        Sent::Refused(done) => {
                            self.settle(done, chunk, outcomes, &mut retry_alone, &mut throttled)
                        }
                        Sent::Interleaved(done, refused) => {
                            // Another command completed while we waited for
                            // a continuation.
                            let at = in_flight.iter().position(|(t, _)| *t == done.tag);
                            if let Some((_, other)) = at.and_then(|at| in_flight.remove(at)) {
                                self.settle(
                                    done,
                                    other,
                                    outcomes,
                                    &mut retry_alone,
                                    &mut throttled,
                                );
                            }
                            match refused {
                                Some(own) => self.settle(
                                    own,
                                    chunk,
                                    outcomes,
                                    &mut retry_alone,
                                    &mut throttled,
                                ),
                                None => in_flight.push_back((tag, chunk)),
                            }
                        }
                    }
                    continue;
                }
            }
            if in_flight.is_empty() {
                if retry_alone.is_empty() {
                    break;
                }
                queue.extend(retry_alone.drain(..).map(|job| vec![job]));
                continue;
            }
            wire.flush().await?;
            match wire.read().await? {
                Event::Done(done) => {
                    let at = in_flight.iter().position(|(t, _)| *t == done.tag);
                    let Some((_, chunk)) = at.and_then(|at| in_flight.remove(at)) else {
                        return Err(Failure::Fatal(format!(
                            "IMAP server completed an unknown command {}",
                            done.tag
                        )));
                    };
                    self.settle(done, chunk, outcomes, &mut retry_alone, &mut throttled);
                }
                Event::Untagged(Untagged::Bye(text)) => {
                    return Err(Failure::Transport(format!(
                        "server is closing the connection: {text}"
                    )))
                }
                Event::Untagged(_) => {}
                Event::Continue => {
                    return Err(Failure::Fatal(
                        "IMAP server asked for a literal nobody sent".into(),
                    ))
                }
            }
        }
        Ok(throttled)
    }

    /// Records the completion of an APPEND.
    fn settle<'j>(
        &self,
        done: Done,
        chunk: Vec<&'j Job<'j>>,
        outcomes: &mut [Option<DeliveryOutcome>],
        retry_alone: &mut Vec<&'j Job<'j>>,
        throttled: &mut Throttled<'j>,
    ) {
        if done.status != DoneStatus::Ok && is_throttling(&done.text) {
            // Nothing was stored; the messages go again after a pause.
            tracing::info!(reason = %done.text, messages = chunk.len(), "server throttles appends");
            throttled.jobs.extend(chunk);
            throttled.reason = done.text;
        } else if done.status == DoneStatus::Ok {
            for job in chunk {
                self.count(|s| s.appended += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Delivered);
            }
        } else if chunk.len() > 1 {
            tracing::debug!(reason = %done.text, messages = chunk.len(), "MULTIAPPEND refused; sending one by one");
            retry_alone.extend(chunk);
        } else {
            for job in chunk {
                tracing::warn!(message_id = %job.id, reason = %done.text, "server refused a message");
                self.count(|s| s.refused += 1);
                outcomes[job.index] = Some(DeliveryOutcome::Refused(format!(
                    "the server refused the message: {}",
                    done.text
                )));
            }
        }
    }
}

/// Groups jobs into APPEND commands of at most `max` messages and
/// [`MULTIAPPEND_MAX_BYTES`].
fn chunks<'j>(jobs: &[&'j Job<'j>], max: usize) -> VecDeque<Vec<&'j Job<'j>>> {
    let mut out = VecDeque::new();
    let mut current: Vec<&Job<'_>> = Vec::new();
    let mut bytes = 0;
    for job in jobs {
        let size = job.delivery.raw.len();
        if !current.is_empty() && (current.len() >= max || bytes + size > MULTIAPPEND_MAX_BYTES) {
            out.push_back(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(*job);
    }
    if !current.is_empty() {
        out.push_back(current);
    }
    out
}

enum Sent {
    /// The command went out whole; its completion comes later.
    Whole,
    /// The server refused it before taking a literal.
    Refused(Done),
    /// While waiting for a continuation, another command completed (first);
    /// the second is this command's own early refusal, if any.
    Interleaved(Done, Option<Done>),
}

/// Writes one APPEND (MULTIAPPEND for several messages). Literals are
/// non-synchronizing when the server allows (LITERAL+, or LITERAL- up to
/// 4096 bytes); otherwise we wait for each continuation.
async fn send_append(
    wire: &mut Wire,
    tag: &str,
    mailbox_arg: &str,
    chunk: &[&Job<'_>],
) -> Result<Sent, Failure> {
    let plus_any = wire.info.has("LITERAL+");
    let plus_small = wire.info.has("LITERAL-");
    let mut interleaved: Option<Done> = None;
    wire.write(format!("{tag} APPEND {mailbox_arg}").as_bytes())
        .await?;
    for job in chunk {
        let raw = job.delivery.raw;
        let plus = plus_any || (plus_small && raw.len() <= 4096);
        let head = format!(
            " {} {} {{{}{}}}\r\n",
            job.flags,
            names::internal_date(job.delivery.internal_date),
            raw.len(),
            if plus { "+" } else { "" }
        );
        wire.write(head.as_bytes()).await?;
        if !plus {
            wire.flush().await?;
            loop {
                match wire.read().await? {
                    Event::Continue => break,
                    Event::Done(done) if done.tag == tag => {
                        return Ok(match interleaved {
                            Some(other) => Sent::Interleaved(other, Some(done)),
                            None => Sent::Refused(done),
                        });
                    }
                    Event::Done(done) => {
                        if interleaved.is_some() {
                            // Two completions while one literal waits: the
                            // window is 1 deep in practice; keep it simple.
                            return Err(Failure::Fatal(
                                "IMAP server completed several commands during one literal".into(),
                            ));
                        }
                        interleaved = Some(done);
                    }
                    Event::Untagged(Untagged::Bye(text)) => {
                        return Err(Failure::Transport(format!(
                            "server is closing the connection: {text}"
                        )))
                    }
                    Event::Untagged(_) => {}
                }
            }
        }
        wire.write(raw).await?;
    }
    wire.write(b"\r\n").await?;
    Ok(match interleaved {
        Some(other) => Sent::Interleaved(other, None),
        None => Sent::Whole,
    })
}

/// Selects the folder, creating (and subscribing) it when missing. Returns
/// whether a SELECT was issued now (a fresh SELECT is already in sync).
async fn select_or_create(session: &mut Session, name: &str) -> Result<bool, Failure> {
    if session.selected.as_ref().is_some_and(|(n, _, _)| n == name) {
        return Ok(false);
    }
    let arg = names::quoted(name)
        .ok_or_else(|| Failure::Folder(format!("folder name {name:?} cannot be quoted")))?;
    session.selected = None;
    let (untagged, done) = session.wire.command(&format!("SELECT {arg}")).await?;
    let (untagged, done) = if done.status == DoneStatus::Ok {
        (untagged, done)
    } else {
        let (_, created) = session.wire.command(&format!("CREATE {arg}")).await?;
        // ALREADYEXISTS: a concurrent import created it first.
        if created.status != DoneStatus::Ok && !created.text.contains("ALREADYEXISTS") {
            return Err(Failure::Folder(format!(
                "cannot create folder {name:?} in mailbox {}: {}",
                session.mailbox, created.text
            )));
        }
        tracing::info!(mailbox = %session.mailbox, folder = name, "folder created");
        // Clients such as Outlook only show subscribed folders.
        session.wire.command(&format!("SUBSCRIBE {arg}")).await?;
        session.wire.command(&format!("SELECT {arg}")).await?
    };
    if done.status != DoneStatus::Ok {
        return Err(Failure::Folder(format!(
            "cannot open folder {name:?} in mailbox {}: {}",
            session.mailbox, done.text
        )));
    }
    let uidvalidity = untagged
        .iter()
        .find_map(|u| match u {
            Untagged::UidValidity(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(0);
    let exists = untagged
        .iter()
        .find_map(|u| match u {
            Untagged::Exists(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    session.selected = Some((name.to_string(), uidvalidity, exists));
    Ok(true)
}

/// Reads the Message-IDs of the messages the index has not seen yet
/// (`NOOP` first when the folder may have changed since it was selected).
async fn catch_up(wire: &mut Wire, index: &mut FolderIndex, noop: bool) -> Result<(), Failure> {
    let from = index.last_uid.saturating_add(1);
    let fetch = format!("UID FETCH {from}:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let commands = if noop {
        vec!["NOOP".to_string(), fetch]
    } else {
        vec![fetch]
    };
    let (untagged, done) = wire.commands(&commands).await?;
    if let Some(bad) = done.iter().find(|d| d.status != DoneStatus::Ok) {
        return Err(Failure::Folder(format!(
            "cannot read the Message-IDs of the folder: {}",
            bad.text
        )));
    }
    for item in untagged {
        // Only answers to our FETCH carry the header section. The server also
        // reports other sessions' flag changes as FETCH responses (with a UID
        // after a UID command); counting those would move `last_uid` past
        // messages never read, and their copies would go unseen.
        if let Untagged::Fetch {
            uid: Some(uid),
            section: Some(section),
        } = item
        {
            // `N:*` also returns the last message when N is past it.
            if uid >= from {
                index.add(names::message_id_from_header(&section), uid);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl MailboxSink for ImapSink {
    async fn is_valid_mailbox(&self, mailbox: &str) -> Result<bool> {
        let mailbox = mailbox.trim().to_lowercase();
        if let Some((valid, when)) = self
            .valid
            .lock()
            .map_err(|_| lock_failed())?
            .get(&mailbox)
            .copied()
        {
            if when.elapsed() < VALIDITY_TTL {
                return Ok(valid);
            }
        }
        if mailbox.is_empty()
            || names::quoted(&mailbox).is_none()
            || mailbox.contains(['\u{1}', ' '])
        {
            return Ok(false);
        }
        let valid = match self.session_with_retries(&mailbox).await {
            Ok(session) => {
                // Keep it: the mailbox is about to receive mail.
                self.put_back(session).await;
                true
            }
            Err(Failure::LoginRefused { code, text }) => {
                self.judge_refusal(&mailbox, code.as_deref(), &text)?;
                false
            }
            Err(other) => return Err(self.failure_to_error(other)),
        };
        self.valid
            .lock()
            .map_err(|_| lock_failed())?
            .insert(mailbox, (valid, Instant::now()));
        Ok(valid)
    }

    /// APPENDLIMIT as the server announces it after login, else the
    /// configured maximum. The session is kept for the delivery that follows.
    async fn size_limit(&self, mailbox: &str) -> Result<Option<u64>> {
        let mailbox = mailbox.trim().to_lowercase();
        if let Some(known) = self.limits.lock().map_err(|_| lock_failed())?.get(&mailbox) {
            return Ok(*known);
        }
        let announced = match self.session_with_retries(&mailbox).await {
            Ok(session) => {
                let limit = session.wire.info.append_limit();
                self.put_back(session).await;
                limit
            }
            // A mailbox that cannot be opened fails at delivery, with its
            // reason; nothing is remembered about it.
            Err(_) => return Ok(self.config.configured_limit()),
        };
        let limit = announced.or(self.config.configured_limit());
        self.limits
            .lock()
            .map_err(|_| lock_failed())?
            .insert(mailbox, limit);
        Ok(limit)
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome> {
        let mut outcomes = self.deliver_batch(std::slice::from_ref(delivery)).await?;
        outcomes
            .pop()
            .ok_or_else(|| Error::Config("IMAP sink lost an outcome".into()))
    }

    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Result<Vec<DeliveryOutcome>> {
        let mut groups: Vec<((String, &str), Vec<Job<'_>>)> = Vec::new();
        for (index, delivery) in deliveries.iter().enumerate() {
            let flags = names::flag_list(delivery.flags).map_err(Error::Config)?;
            let job = Job {
                index,
                id: names::normalize_message_id(delivery.message_id),
                delivery,
                flags,
            };
            let key = (delivery.mailbox.trim().to_lowercase(), delivery.folder);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, jobs)) => jobs.push(job),
                None => groups.push((key, vec![job])),
            }
        }
        let mut outcomes: Vec<Option<DeliveryOutcome>> = vec![None; deliveries.len()];
        // Built first, run below: a closure inside the stream would make
        // the future of this (Send) trait method not general enough.
        let pending: Vec<_> = groups
            .iter()
            .map(|((mailbox, folder), jobs)| self.deliver_alone(mailbox, folder, jobs))
            .collect();
        let results: Vec<Result<Vec<(usize, DeliveryOutcome)>>> =
            futures_util::stream::iter(pending)
                .buffer_unordered(self.config.max_concurrent_mailboxes.max(1))
                .collect()
                .await;
        for result in results {
            for (index, outcome) in result? {
                outcomes[index] = Some(outcome);
            }
        }
        let stats = self.stats();
        tracing::debug!(?stats, "IMAP batch done");
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| DeliveryOutcome::Refused("not attempted".into())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use chrono::TimeZone;

    #[test]
    fn settings_carry_the_imap_table() {
        let text = r#"
[ice]
firm_domains = ["acme.example"]

[ice.imap]
host = "imap.acme.example"
ca_file = "/etc/ssl/acme-ca.pem"
pipeline_depth = 4

[ice.imap.auth]
method = "master-user"
admin_user = "archiver"
"#;
        let settings = Settings::parse(text).unwrap();
        let imap = settings.firm.imap.clone().expect("imap table");
        assert_eq!(imap.port(), 993);
        assert_eq!(imap.pipeline_depth, 4);
        assert_eq!(imap.multiappend_max_messages, 100);
        assert_eq!(
            imap.auth,
            ImapAuth::MasterUser {
                admin_user: "archiver".into(),
                separator: "*".into()
            }
        );
        assert_eq!(imap.secret_field(), fields::MAILBOX_PASSWORD);
        // Round trip through the writer the CLI uses.
        let again = Settings::parse(&settings.to_toml()).unwrap();
        assert_eq!(again, settings);
        let oauth: ImapConfig =
            toml::from_str("host = \"outlook.office365.com\"\nauth = { method = \"xoauth2\" }\n")
                .unwrap();
        assert_eq!(oauth.secret_field(), fields::MAILBOX_OAUTH_TOKEN);
        assert!(toml::from_str::<ImapConfig>("host = \"x\"\nplaintext = true\n").is_err());
    }

    #[test]
    fn oauth2_methods_name_their_secret_and_refuse_plain_http() {
        let exchange: ImapConfig = toml::from_str(
            "host = \"outlook.office365.com\"\n[auth]\nmethod = \"exchange-online\"\n\
             tenant = \"acme.example\"\nclient_id = \"app\"\n",
        )
        .unwrap();
        assert_eq!(exchange.secret_field(), fields::OAUTH_CLIENT_SECRET);
        let again: ImapConfig = toml::from_str(&toml::to_string(&exchange).unwrap()).unwrap();
        assert_eq!(again, exchange, "the settings writer keeps the method");
        assert!(ImapSink::with_credential(exchange.clone(), SecretValue::new("s")).is_ok());
        let with_certificate = ImapConfig {
            auth: ImapAuth::ExchangeOnline {
                tenant: "acme.example".into(),
                client_id: "app".into(),
                certificate_thumbprint: Some("00".repeat(20)),
                token_url: Some("http://127.0.0.1:1/token".into()),
                scope: None,
            },
            ..exchange
        };
        assert_eq!(with_certificate.secret_field(), fields::OAUTH_PRIVATE_KEY);
        let error = ImapSink::with_credential(with_certificate, SecretValue::new("k"))
            .err()
            .expect("plain http needs the testing flag");
        assert!(error.to_string().contains("not https"), "{error}");
        let google: ImapConfig = toml::from_str(
            "host = \"imap.gmail.com\"\nauth = { method = \"google-workspace\", client_email = \"\" }\n",
        )
        .unwrap();
        assert!(ImapSink::with_credential(google, SecretValue::new("k")).is_err());
    }

    #[test]
    fn configuration_mistakes_are_caught_before_any_connection() {
        let no_host = ImapConfig::default();
        assert!(ImapSink::with_credential(no_host, SecretValue::new("x")).is_err());
        let no_admin = ImapConfig {
            host: "127.0.0.1".into(),
            insecure_plaintext_for_local_testing_only: true,
            ..ImapConfig::default()
        };
        let error = ImapSink::with_credential(no_admin, SecretValue::new("x"))
            .err()
            .expect("admin_user is required");
        assert!(error.to_string().contains("admin_user"), "{error}");
        let missing_ca = ImapConfig {
            host: "127.0.0.1".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            auth: ImapAuth::Xoauth2,
            ..ImapConfig::default()
        };
        assert!(ImapSink::with_credential(missing_ca, SecretValue::new("x")).is_err());
    }

    #[test]
    fn appends_are_grouped_by_count_and_size() {
        let small = vec![b'x'; 1000];
        let big = vec![b'x'; MULTIAPPEND_MAX_BYTES];
        let flags: Vec<String> = Vec::new();
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
        let deliveries: Vec<Delivery<'_>> = [&small, &small, &big, &small, &small, &small]
            .iter()
            .map(|raw| Delivery {
                mailbox: "a@x",
                folder: "F",
                message_id: "m",
                raw,
                internal_date: at,
                flags: &flags,
            })
            .collect();
        let jobs: Vec<Job<'_>> = deliveries
            .iter()
            .enumerate()
            .map(|(index, delivery)| Job {
                index,
                id: format!("m{index}"),
                delivery,
                flags: "()".into(),
            })
            .collect();
        let refs: Vec<&Job<'_>> = jobs.iter().collect();
        let sizes: Vec<usize> = chunks(&refs, 2).iter().map(Vec::len).collect();
        // The 8 MiB message closes the first group and fills its own.
        assert_eq!(sizes, vec![2, 1, 2, 1]);
        let sizes: Vec<usize> = chunks(&refs, 1).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1; 6]);
    }

    #[test]
    fn throttling_answers_and_size_limits() {
        assert!(is_throttling("[UNAVAILABLE] Server busy"));
        assert!(is_throttling("[LIMIT] Too many commands"));
        assert!(is_throttling("Command Error. 12 [THROTTLED]"));
        assert!(!is_throttling("[OVERQUOTA] Quota exceeded"));
        assert!(!is_throttling("Mail too large"));
        assert!(!is_throttling(
            "[LIMIT] Mail size is larger than the maximum size allowed by server configuration"
        ));
        let mut config = ImapConfig::default();
        assert_eq!(config.configured_limit(), None);
        config.auth = ImapAuth::ExchangeOnline {
            tenant: "t".into(),
            client_id: "c".into(),
            certificate_thumbprint: None,
            token_url: None,
            scope: None,
        };
        assert_eq!(config.configured_limit(), Some(35 << 20));
        config.max_message_bytes = Some(1000);
        assert_eq!(config.configured_limit(), Some(1000));
    }

    #[test]
    fn the_folder_index_keeps_uids_per_message_id_in_order() {
        let mut index = FolderIndex::default();
        index.add(Some("a".into()), 7);
        index.add(Some("a".into()), 3);
        index.add(None, 9);
        index.add(Some("a".into()), 7);
        assert_eq!(index.ids["a"], vec![3, 7]);
        assert_eq!(index.last_uid, 9);
    }
}
