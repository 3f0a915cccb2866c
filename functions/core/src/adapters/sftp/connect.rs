//! Connecting and logging in, step by step, with errors naming the step.

use super::*;

// Credentials and connection

/// Who logs in, and with what. The private key and password stay wrapped.
pub(super) struct Login {
    pub(super) user: String,
    pub(super) password: Option<SecretValue>,
    pub(super) key: Option<Arc<PrivateKey>>,
}

impl Login {
    pub(super) fn from_secret(secret: &ConnectorSecret) -> Result<Self> {
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
pub(super) fn decode_private_key(
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

pub(super) struct Failure {
    pub(super) step: Step,
    pub(super) error: Error,
    /// The host key the server presented, when the handshake got that far.
    pub(super) server_key: Option<ServerKey>,
}

/// An authenticated SFTP session. Shared by the listing and the open files;
/// marked broken on a transport error so that the next use reconnects.
pub(super) struct Connection {
    // Kept alive for the session's lifetime: dropping the handle ends the
    // SSH connection under the SFTP channel.
    pub(super) ssh: client::Handle<PinCheck>,
    pub(super) sftp: SftpSession,
    pub(super) broken: AtomicBool,
    pub(super) server_key: Option<ServerKey>,
    pub(super) method: &'static str,
}

impl Connection {
    pub(super) fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.ssh.is_closed()
    }
}

/// Whether a transport-level russh error can heal by reconnecting.
pub(super) fn transient(error: &russh::Error) -> bool {
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

pub(super) fn method_names(methods: &[MethodKind]) -> String {
    if methods.is_empty() {
        return "none".into();
    }
    methods
        .iter()
        .map(<&'static str>::from)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn ssh_client_config(pins: &[HostKeyPin]) -> client::Config {
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
pub(super) struct Setup {
    config: SftpConfig,
    pub(super) pins: Arc<Vec<HostKeyPin>>,
    pub(super) login: Login,
}

impl Setup {
    pub(super) fn new(config: &SftpConfig, secret: &ConnectorSecret) -> Result<Self> {
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

    pub(super) async fn connect(&self) -> Result<Connection, Failure> {
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
pub(super) fn sftp_error(
    config: &SftpConfig,
    what: &str,
    error: russh_sftp::client::error::Error,
) -> Error {
    use russh_sftp::client::error::Error as E;
    let retryable = !matches!(error, E::Status(_));
    config.source_error(format!("{what}: {error}"), retryable)
}
