use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::error::{Error, Result};

/// A secret string. Its `Debug` and `Display` never show the value, so it can
/// not leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: call only where it is handed to a library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// One connector's secret: a set of named fields (firm code, keys, passwords).
#[derive(Debug, Clone, Default)]
pub struct ConnectorSecret {
    /// The secret's name, used in error messages.
    pub name: String,
    pub fields: BTreeMap<String, SecretValue>,
}

impl ConnectorSecret {
    pub fn get(&self, field: &str) -> Option<&SecretValue> {
        self.fields.get(field).filter(|v| !v.expose().is_empty())
    }

    /// The field, or an error naming the secret and the field (never a value).
    pub fn require(&self, field: &str) -> Result<&SecretValue> {
        self.get(field).ok_or_else(|| Error::Secret {
            secret: self.name.clone(),
            problem: format!("missing field {field:?}"),
        })
    }
}

/// Field names of a connector secret.
pub mod fields {
    pub const FIRM_CODE: &str = "firm_code";
    pub const SFTP_PASSWORD: &str = "sftp_password";
    pub const SSH_PRIVATE_KEY: &str = "ssh_private_key";
    pub const SSH_PUBLIC_KEY: &str = "ssh_public_key";
    pub const SSH_HOST_KEY: &str = "ssh_host_key";
    /// Passphrase of an encrypted `ssh_private_key`.
    pub const SSH_KEY_PASSPHRASE: &str = "ssh_key_passphrase";
    pub const PGP_PRIVATE_KEY: &str = "pgp_private_key";
    pub const PGP_PASSPHRASE: &str = "pgp_passphrase";
    /// After a key rotation, the firm's key before it, kept until every
    /// file encrypted to it is through (files fetched but not yet
    /// decrypted, late re-deliveries).
    pub const PGP_PREVIOUS_PRIVATE_KEY: &str = "pgp_previous_private_key";
    pub const PGP_PREVIOUS_PASSPHRASE: &str = "pgp_previous_passphrase";
    pub const PGP_PUBLIC_KEY: &str = "pgp_public_key";
    pub const SIGNER_PUBLIC_KEY: &str = "signer_public_key";
    /// The key(s) allowed to sign XIP manifests (armored, several may follow
    /// one another).
    pub const XIP_SIGNER_PUBLIC_KEY: &str = "xip_signer_public_key";
    pub const MAILBOX_PASSWORD: &str = "mailbox_password";
    /// Bearer token for IMAP SASL XOAUTH2 (Exchange Online app-only access).
    pub const MAILBOX_OAUTH_TOKEN: &str = "mailbox_oauth_token";
    /// Client secret of an Exchange Online app registration (the sink mints
    /// its own tokens with it).
    pub const OAUTH_CLIENT_SECRET: &str = "oauth_client_secret";
    /// RSA private key (PEM) the sink signs OAuth2 assertions with: the
    /// Exchange Online app's certificate key, or a Google service account's.
    pub const OAUTH_PRIVATE_KEY: &str = "oauth_private_key";
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Loads the secret of a connector (e.g. `ice`).
    async fn load(&self, connector: &str) -> Result<ConnectorSecret>;

    /// Adds or replaces fields of a connector's secret, keeping the others.
    async fn update(&self, connector: &str, fields: BTreeMap<String, SecretValue>) -> Result<()>;
}
