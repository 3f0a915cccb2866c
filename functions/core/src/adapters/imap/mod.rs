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
//!
//! One concern a file: `config` (settings, limits, TLS), `conn` (the wire),
//! `oauth` (tokens), `names` (folder names), `once` (the exactly-once index
//! and reconcile), `append` (pipelined, grouped, throttled appends); this
//! file holds the sink itself: sessions, credentials and the port.

mod append;
mod config;
mod conn;
mod names;
mod oauth;
mod once;

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

use append::is_throttling;
pub use config::{ImapAuth, ImapConfig, EXCHANGE_MAX_MESSAGE_BYTES};
use conn::{Done, DoneStatus, Endpoint, Event, Failure, Login, Untagged, Wire};
pub use names::{folder_name, Namespace};
use once::{catch_up, FolderIndex};

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
