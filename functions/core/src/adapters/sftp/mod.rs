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

mod config;
mod connect;
mod host_key;
mod source;
mod validate;

pub use config::SftpConfig;
pub use connect::Step;
pub use host_key::ServerKey;
pub use source::SftpSource;
pub use validate::{validate_connection, CheckStep, ConnectionCheck};

use connect::*;
use host_key::*;
use source::*;

/// Secret field: passphrase of an encrypted `ssh_private_key`.
pub use crate::ports::secrets::fields::SSH_KEY_PASSPHRASE;

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
