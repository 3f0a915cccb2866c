//! The pinned host keys, checked during the key exchange.

use super::*;

// Host key pins

/// One pinned host key: the key itself, or its SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub(super) enum HostKeyPin {
    Key(PublicKey),
    Fingerprint(Fingerprint),
}

impl HostKeyPin {
    pub(super) fn matches(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPin::Key(pinned) => pinned.key_data() == key.key_data(),
            HostKeyPin::Fingerprint(pinned) => *pinned == key.fingerprint(pinned.algorithm()),
        }
    }

    pub(super) fn describe(&self) -> String {
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
pub(super) fn parse_pins(text: &str, origin: &str) -> Result<Vec<HostKeyPin>> {
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
pub(super) fn pinned_algorithms(pins: &[HostKeyPin]) -> Vec<Algorithm> {
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
    pub(super) fn of(key: &PublicKey) -> Self {
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
pub(super) struct PinCheck {
    pub(super) pins: Arc<Vec<HostKeyPin>>,
    pub(super) presented: Arc<StdMutex<Option<PublicKey>>>,
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
