//! The sink's settings: how it signs in, where the server is, its limits,
//! its pacing, and the TLS trust it connects with.

use super::*;

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

pub(super) fn default_separator() -> String {
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
    pub(super) fn mints_tokens(&self) -> bool {
        matches!(
            self.auth,
            ImapAuth::ExchangeOnline { .. } | ImapAuth::GoogleWorkspace { .. }
        )
    }

    /// The token minter of the OAuth2 methods (`None` for the others).
    pub(super) fn tokens(&self) -> Result<Option<oauth::Tokens>> {
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

    pub(super) fn check(&self) -> Result<()> {
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

    pub(super) fn tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        tls_config(self.ca_file.as_deref())
    }

    pub(super) fn endpoint(&self) -> Result<Endpoint> {
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
pub(super) fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
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

/// Exchange Online's default maximum message size (35 MB, the MIME size).
pub const EXCHANGE_MAX_MESSAGE_BYTES: u64 = 35 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

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
}
