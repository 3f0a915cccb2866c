use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};

use pgp::composed::{
    DecryptionOptions, Deserializable, DetachedSignature, Message, MessageBuilder, SignedPublicKey,
    SignedSecretKey, TheRing,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{CompressionAlgorithm, KeyDetails, Password, Seipdv1ReadMode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, InputError, Place, Result};

/// What to demand of a file's signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// Every file must be signed by the configured signer key.
    Required,
    /// Unsigned files pass; a signed file must verify when a signer key is set.
    #[default]
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureStatus {
    Verified,
    Unsigned,
    /// Signed, but no signer key is configured to check it against.
    NotChecked,
}

impl SignatureStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Verified => "verified",
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::NotChecked => "not-checked",
        }
    }
}

pub struct DecryptKeys {
    pub secret_key: SignedSecretKey,
    pub passphrase: Password,
    pub signer: Option<SignedPublicKey>,
    pub policy: SignaturePolicy,
    /// Keys allowed to sign XIP manifests.
    pub xip_signers: Vec<SignedPublicKey>,
    /// Keys the firm rotated away from, with their passphrases: they still
    /// decrypt what was encrypted to them.
    pub previous: Vec<(SignedSecretKey, Password)>,
}

impl fmt::Debug for DecryptKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptKeys")
            .field("secret_key", &self.secret_key.fingerprint().to_string())
            .field(
                "signer",
                &self.signer.as_ref().map(|k| k.fingerprint().to_string()),
            )
            .field("policy", &self.policy)
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|(k, _)| k.fingerprint().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub signature: SignatureStatus,
    /// The file name stored inside the OpenPGP literal packet, if any.
    pub inner_name: Option<String>,
    pub plaintext_bytes: u64,
}

/// Parses an armored or binary secret key (the passphrase is checked at use).
pub fn parse_secret_key(text: &str, what: &str) -> Result<SignedSecretKey> {
    SignedSecretKey::from_reader_single(text.as_bytes())
        .map(|(key, _)| key)
        .map_err(|e| Error::Pgp(format!("{what} is not a usable OpenPGP secret key: {e}")))
}

/// Parses one or more armored public keys (concatenated), or one binary key.
pub fn parse_public_keys(text: &str, what: &str) -> Result<Vec<SignedPublicKey>> {
    let keys: std::result::Result<Vec<_>, _> =
        match SignedPublicKey::from_armor_many(text.as_bytes()) {
            Ok((keys, _)) => keys.collect(),
            Err(_) => return parse_public_key(text, what).map(|key| vec![key]),
        };
    keys.map_err(|e| Error::Pgp(format!("{what} is not a usable OpenPGP public key: {e}")))
}

/// Parses an armored or binary public key.
pub fn parse_public_key(text: &str, what: &str) -> Result<SignedPublicKey> {
    SignedPublicKey::from_reader_single(text.as_bytes())
        .map(|(key, _)| key)
        .map_err(|e| Error::Pgp(format!("{what} is not a usable OpenPGP public key: {e}")))
}

/// Counts the ciphertext bytes consumed, to say where a damaged file broke.
struct CountingReader<R> {
    inner: R,
    consumed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl<R> fmt::Debug for CountingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountingReader")
    }
}

/// Decrypts an OpenPGP message (armored or binary, compressed or not) from
/// `input` into `output`, streaming with bounded memory, and checks its
/// signature against `keys.policy` once the data has been read.
///
/// Plaintext is written *before* the signature can be checked (it trails the
/// data): on any error the caller must discard what was written.
pub fn decrypt_verify<R, W>(
    input: R,
    file: &str,
    keys: &DecryptKeys,
    output: &mut W,
) -> Result<Decrypted>
where
    R: Read + Send,
    W: Write,
{
    if keys.policy == SignaturePolicy::Required && keys.signer.is_none() {
        return Err(Error::Config(
            "signature policy is `required` but no signer public key is configured".into(),
        ));
    }
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = CountingReader {
        inner: input,
        consumed: consumed.clone(),
    };
    let bad = |reason: String| {
        let offset = consumed.load(std::sync::atomic::Ordering::Relaxed);
        InputError::new(file, Place::Offset(offset), reason)
    };
    let source = BufReader::with_capacity(64 * 1024, counting);
    let mut message =
        open_message(source).map_err(|e| bad(format!("not an OpenPGP message: {e}")))?;
    if !message.is_encrypted() {
        return Err(bad("the file is not encrypted; ICE exports always are".into()).into());
    }
    message = message
        .decrypt_the_ring(streaming_ring(keys), true)
        .map_err(|e| bad(describe_decrypt_error(&e, keys)))?
        .0;
    while message.is_compressed() {
        message = message
            .decompress()
            .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    }
    let inner_name = message
        .literal_data_header()
        .map(|h| String::from_utf8_lossy(h.file_name()).into_owned())
        .filter(|name| !name.is_empty());
    let plaintext_bytes = copy_plaintext(&mut message, output)
        .map_err(|e| bad(format!("truncated or corrupt encrypted data: {e}")))?;
    let signature = check_signature(&message, keys).map_err(bad)?;
    Ok(Decrypted {
        signature,
        inner_name,
        plaintext_bytes,
    })
}

fn open_message<'a, R: BufRead + fmt::Debug + Send + 'a>(
    source: R,
) -> pgp::errors::Result<Message<'a>> {
    Message::from_reader(source).map(|(message, _)| message)
}

/// The firm's key, decrypting SEIPDv1 data as a stream. pgp's default mode
/// (check the MDC first) holds the whole ciphertext in memory and refuses
/// anything over 1 GiB; an export of several GiB must decrypt in bounded
/// memory. Releasing plaintext before the MDC is checked is safe here because
/// [`decrypt_verify`]'s callers discard everything written when it fails.
fn streaming_ring(keys: &DecryptKeys) -> TheRing<'_> {
    let previous = keys.previous.iter();
    TheRing {
        secret_keys: std::iter::once(&keys.secret_key)
            .chain(previous.clone().map(|(key, _)| key))
            .collect(),
        key_passwords: std::iter::once(&keys.passphrase)
            .chain(previous.map(|(_, password)| password))
            .collect(),
        decrypt_options: DecryptionOptions::new().set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
        ..Default::default()
    }
}

fn describe_decrypt_error(error: &pgp::errors::Error, keys: &DecryptKeys) -> String {
    match error {
        pgp::errors::Error::MissingKey if keys.previous.is_empty() => format!(
            "not encrypted to our key {} (wrong recipient key?)",
            keys.secret_key.fingerprint()
        ),
        pgp::errors::Error::MissingKey => format!(
            "not encrypted to our key {} nor to the previous {} (wrong recipient key?)",
            keys.secret_key.fingerprint(),
            keys.previous
                .iter()
                .map(|(key, _)| key.fingerprint().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        pgp::errors::Error::IO { source, .. } => {
            format!("truncated or corrupt encrypted data: {source}")
        }
        other => format!("cannot decrypt: {other}"),
    }
}

fn copy_plaintext<W: Write>(message: &mut Message<'_>, output: &mut W) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = message.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn check_signature(
    message: &Message<'_>,
    keys: &DecryptKeys,
) -> std::result::Result<SignatureStatus, String> {
    if !message.is_signed() {
        return match keys.policy {
            SignaturePolicy::Required => {
                Err("the file is not signed and the policy requires a signature".into())
            }
            SignaturePolicy::Optional => Ok(SignatureStatus::Unsigned),
        };
    }
    let Some(signer) = &keys.signer else {
        return Ok(SignatureStatus::NotChecked);
    };
    let verified = message.verify(signer).is_ok()
        || signer
            .public_subkeys
            .iter()
            .any(|subkey| message.verify(subkey).is_ok());
    if verified {
        Ok(SignatureStatus::Verified)
    } else {
        Err(format!(
            "bad signature: not made by the configured signer key {} over this data",
            signer.fingerprint()
        ))
    }
}

/// Verifies a detached signature (armored or binary, the `.sig` delivered
/// beside a file) over `data`, streaming, against the signer's primary key or
/// any of its subkeys. `file` names the signed file, `signature_file` the
/// signature, in errors.
pub fn verify_detached<R: Read>(
    signature: &[u8],
    mut data: R,
    signer: Option<&SignedPublicKey>,
    file: &str,
    signature_file: &str,
) -> Result<()> {
    let Some(signer) = signer else {
        return Err(Error::Config(format!(
            "{signature_file}: a detached signature needs the signer's key (secret field \
             signer_public_key)"
        )));
    };
    let bad = |reason: String| -> Error {
        InputError::new(file, Place::Entry(signature_file.to_string()), reason).into()
    };
    let parsed = match DetachedSignature::from_armor_single(std::io::Cursor::new(signature)) {
        Ok((signature, _)) => signature,
        Err(_) => DetachedSignature::from_bytes(std::io::Cursor::new(signature))
            .map_err(|e| bad(format!("not an OpenPGP signature: {e}")))?,
    };
    // Only the key the signature names reads the data: the others fail on
    // the issuer before hashing anything.
    let mut last = match parsed.signature.verify(signer, &mut data) {
        Ok(()) => return Ok(()),
        Err(e) => Some(e.to_string()),
    };
    for subkey in &signer.public_subkeys {
        match parsed.signature.verify(subkey, &mut data) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(bad(format!(
        "bad signature: not made by the configured signer key {} over this file ({})",
        signer.fingerprint(),
        last.unwrap_or_default()
    )))
}

impl DecryptKeys {
    /// The same keys under another signature policy (a file whose detached
    /// signature verified needs no signature inside).
    pub fn with_policy(&self, policy: SignaturePolicy) -> DecryptKeys {
        DecryptKeys {
            secret_key: self.secret_key.clone(),
            passphrase: Password::from(self.passphrase.read().as_slice()),
            signer: self.signer.clone(),
            policy,
            xip_signers: self.xip_signers.clone(),
            previous: self
                .previous
                .iter()
                .map(|(key, password)| (key.clone(), Password::from(password.read().as_slice())))
                .collect(),
        }
    }
}

/// Encrypts `plaintext` to `recipient` (its first encryption-capable subkey),
/// zlib-compressed, optionally signed: what ICE sends us.
pub fn encrypt_and_sign<R: Read>(
    plaintext: R,
    file_name: &str,
    recipient: &SignedPublicKey,
    signer: Option<(&SignedSecretKey, Password)>,
    output: &mut impl Write,
) -> Result<()> {
    let mut rng = rand::thread_rng();
    let encryption_key = recipient
        .public_subkeys
        .iter()
        .find(|subkey| subkey.algorithm().can_encrypt())
        .ok_or_else(|| Error::Pgp("recipient key has no encryption subkey".into()))?;
    let mut builder = MessageBuilder::from_reader(file_name.to_string(), plaintext)
        .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    builder.compression(CompressionAlgorithm::ZLIB);
    if let Some((key, password)) = signer {
        builder.sign(&key.primary_key, password, HashAlgorithm::Sha256);
    }
    builder
        .encrypt_to_key(&mut rng, encryption_key)
        .map_err(|e| Error::Pgp(e.to_string()))?;
    builder
        .to_writer(&mut rng, output)
        .map_err(|e| Error::Pgp(e.to_string()))
}

/// When a key stops being valid, by the latest key-expiration time its
/// self-signatures state; `None` when it never expires.
pub fn key_expires_at(
    created: pgp::types::Timestamp,
    details: &pgp::composed::SignedKeyDetails,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let validity = details
        .users
        .iter()
        .flat_map(|user| &user.signatures)
        .chain(&details.direct_signatures)
        .filter_map(|signature| signature.key_expiration_time())
        .map(|d| d.as_secs())
        .filter(|secs| *secs > 0)
        .max()?;
    chrono::DateTime::from_timestamp(i64::from(created.as_secs()) + i64::from(validity), 0)
}

/// Expiry of a secret key (the firm's).
pub fn secret_key_expires_at(key: &SignedSecretKey) -> Option<chrono::DateTime<chrono::Utc>> {
    key_expires_at(key.primary_key.created_at(), &key.details)
}

/// Expiry of a public key (a signer's).
pub fn public_key_expires_at(key: &SignedPublicKey) -> Option<chrono::DateTime<chrono::Utc>> {
    key_expires_at(key.primary_key.created_at(), &key.details)
}
