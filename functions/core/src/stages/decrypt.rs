//! decrypt: `raw/<c>/<file>.pgp` -> `plain/<c>/<file>`, signature checked.
//! A file that cannot be decrypted or verified is quarantined and reported;
//! its plaintext never becomes an object.

use pgp::types::Password;
use tokio_util::io::SyncIoBridge;

use super::{lineage, pipe::pipe, quarantine, Context};
use crate::config::{ConnectorConfig, ConnectorKind};
use crate::crypto::{self, DecryptKeys, SignaturePolicy};
use crate::error::{Error, InputError, Result};
use crate::formats::payload::{self, PayloadKind};
use crate::formats::{attachments, xip};
use crate::layout;
use crate::ports::secrets::fields;
use crate::ports::{ByteStream, ConnectorSecret, Metadata};
use crate::status;

/// Reads the decryption keys from the connector's secret.
pub fn keys_from_secret(
    secret: &ConnectorSecret,
    policy: crypto::SignaturePolicy,
) -> Result<DecryptKeys> {
    let (secret_key, passphrase) = firm_key(
        secret,
        secret.require(fields::PGP_PRIVATE_KEY)?,
        fields::PGP_PRIVATE_KEY,
        fields::PGP_PASSPHRASE,
    )?;
    let signer = secret
        .get(fields::SIGNER_PUBLIC_KEY)
        .map(|k| {
            crypto::parse_public_key(k.expose(), &field_name(secret, fields::SIGNER_PUBLIC_KEY))
        })
        .transpose()?;
    let xip_signers = match secret.get(fields::XIP_SIGNER_PUBLIC_KEY) {
        Some(keys) => crypto::parse_public_keys(
            keys.expose(),
            &field_name(secret, fields::XIP_SIGNER_PUBLIC_KEY),
        )?,
        None => Vec::new(),
    };
    let previous = secret
        .get(fields::PGP_PREVIOUS_PRIVATE_KEY)
        .map(|key| {
            firm_key(
                secret,
                key,
                fields::PGP_PREVIOUS_PRIVATE_KEY,
                fields::PGP_PREVIOUS_PASSPHRASE,
            )
        })
        .transpose()?
        .into_iter()
        .collect();
    Ok(DecryptKeys {
        secret_key,
        passphrase,
        signer,
        policy,
        xip_signers,
        previous,
    })
}

/// A firm key of the secret (`key`, read from `key_field`) and the
/// passphrase in `passphrase_field` (none: an unprotected key).
fn firm_key(
    secret: &ConnectorSecret,
    key: &crate::ports::SecretValue,
    key_field: &str,
    passphrase_field: &str,
) -> Result<(pgp::composed::SignedSecretKey, Password)> {
    let key = crypto::parse_secret_key(key.expose(), &field_name(secret, key_field))?;
    let passphrase = secret
        .get(passphrase_field)
        .map(|p| Password::from(p.expose()))
        .unwrap_or_else(Password::empty);
    Ok((key, passphrase))
}

/// How errors name a field of the secret.
fn field_name(secret: &ConnectorSecret, field: &str) -> String {
    format!("secret {:?} field {:?}", secret.name, field)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptOutcome {
    Decrypted {
        plain_key: String,
        signature: crypto::SignatureStatus,
    },
    Quarantined {
        quarantine_key: String,
        error: InputError,
    },
    /// The file waits for its detached signature (`<file>.sig`), which the
    /// policy requires: nothing was written; the signature's arrival starts
    /// the file again.
    AwaitingSignature { raw_key: String },
    /// A detached signature whose file is already decrypted (or not there
    /// yet): nothing to do.
    SignatureOnly { raw_key: String },
}

/// The name ending that marks a detached signature delivered beside a file.
pub const DETACHED_SIGNATURE: &str = ".sig";

pub async fn run(
    ctx: &Context,
    keys: &std::sync::Arc<DecryptKeys>,
    raw_key: &str,
) -> Result<DecryptOutcome> {
    let config = ctx.for_key(raw_key);
    if let Some(signed) = raw_key.strip_suffix(DETACHED_SIGNATURE) {
        return signature_arrived(ctx, keys, raw_key, signed).await;
    }
    let signature_key = format!("{raw_key}{DETACHED_SIGNATURE}");
    let has_signature = ctx.store.head(&signature_key).await?.is_some();
    if !has_signature && requires_detached_signature(&config) {
        crate::audit::waiting(&config.name, "decrypt", raw_key, "the detached signature");
        return Ok(DecryptOutcome::AwaitingSignature {
            raw_key: raw_key.to_string(),
        });
    }
    // A detached signature is checked over the file as delivered, before
    // anything is extracted; once it holds, no signature inside is needed.
    let checked_keys;
    let keys = match has_signature {
        false => keys,
        true => match verify_beside(ctx, keys, raw_key, &signature_key).await {
            Ok(()) => {
                checked_keys = std::sync::Arc::new(keys.with_policy(SignaturePolicy::Optional));
                &checked_keys
            }
            Err(Error::Input(error)) => return quarantined(ctx, &config, raw_key, error).await,
            Err(other) => return Err(other),
        },
    };
    let plain_key = layout::plain_for_raw(raw_key);
    let (body, raw_info) = ctx.store.get(raw_key).await?;
    let mut metadata = Metadata::new();
    metadata.insert(lineage::SOURCE_KEY.into(), raw_key.into());
    metadata.insert(lineage::SOURCE_SHA256.into(), raw_info.sha256.clone());
    metadata.insert(lineage::RAW_KEY.into(), raw_key.into());
    metadata.insert(lineage::RAW_SHA256.into(), raw_info.sha256.clone());
    metadata.insert(lineage::STAGE.into(), "decrypt".into());
    let result = if config.kind == ConnectorKind::Xip {
        decrypt_xip(&config, keys, raw_key, &plain_key, body, &metadata, ctx).await
    } else if attachments::is_archive(raw_key) && !is_encrypted_name(raw_key) {
        // Bloomberg's attachment archives come as plain .tar.gz (their
        // detached signature, when there, was checked above).
        ctx.store.put(&plain_key, body, &metadata).await?;
        Ok(match has_signature {
            true => crypto::SignatureStatus::Verified,
            false => crypto::SignatureStatus::Unsigned,
        })
    } else {
        decrypt_stream(ctx, keys, raw_key, &plain_key, body, &metadata).await
    };
    match result {
        Ok(signature) => {
            clear_earlier_failure(ctx, &config.name, raw_key).await?;
            crate::audit::decrypted(&config.name, raw_key, &plain_key, signature.as_str());
            Ok(DecryptOutcome::Decrypted {
                plain_key,
                signature,
            })
        }
        Err(Error::Input(error)) => quarantined(ctx, &config, raw_key, error).await,
        Err(other) => Err(other),
    }
}

fn is_encrypted_name(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    [".gpg", ".pgp", ".asc"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// A file refused: into quarantine, with a failure row in its day's log.
async fn quarantined(
    ctx: &Context,
    config: &ConnectorConfig,
    raw_key: &str,
    error: InputError,
) -> Result<DecryptOutcome> {
    let quarantine_key = quarantine(ctx.store.as_ref(), raw_key, "decrypt", &error).await?;
    let day = status::day_label(status::day_from_file_name(raw_key));
    let record = status::file_failure(&config.name, &day, raw_key, &error.to_string());
    status::write_item(ctx.store.as_ref(), &record).await?;
    Ok(DecryptOutcome::Quarantined {
        quarantine_key,
        error,
    })
}

/// Bloomberg signs each file with a `.sig` beside it: under the `required`
/// policy a file is not opened without one.
fn requires_detached_signature(config: &ConnectorConfig) -> bool {
    config.kind == ConnectorKind::Bloomberg && config.signature_policy == SignaturePolicy::Required
}

/// A `.sig` arrived: its file, when there and not yet decrypted from this
/// very version, goes through decrypt now (it may have been waiting).
async fn signature_arrived(
    ctx: &Context,
    keys: &std::sync::Arc<DecryptKeys>,
    signature_key: &str,
    signed: &str,
) -> Result<DecryptOutcome> {
    let nothing = || {
        Ok(DecryptOutcome::SignatureOnly {
            raw_key: signature_key.to_string(),
        })
    };
    let Some(file) = ctx.store.head(signed).await? else {
        return nothing();
    };
    if let Some(plain) = ctx.store.head(&layout::plain_for_raw(signed)).await? {
        if plain.metadata.get(lineage::RAW_SHA256) == Some(&file.sha256) {
            return nothing();
        }
    }
    // Already refused as it stands (a corrected signature for it is taken
    // by invoking decrypt on the file itself).
    if let Some(refused) = ctx.store.head(&layout::quarantine(signed)).await? {
        if refused.sha256 == file.sha256 {
            return nothing();
        }
    }
    Box::pin(run(ctx, keys, signed)).await
}

/// Checks `<file>.sig` over the raw object, streaming.
async fn verify_beside(
    ctx: &Context,
    keys: &std::sync::Arc<DecryptKeys>,
    raw_key: &str,
    signature_key: &str,
) -> Result<()> {
    let signature = ctx.store.get_bytes(signature_key).await?;
    let (body, _) = ctx.store.get(raw_key).await?;
    let (task_keys, file, signature_file) = (
        keys.clone(),
        raw_key.to_string(),
        signature_key
            .rsplit('/')
            .next()
            .unwrap_or(signature_key)
            .to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let data = std::io::BufReader::with_capacity(64 * 1024, SyncIoBridge::new(body));
        crypto::verify_detached(
            &signature,
            data,
            task_keys.signer.as_ref(),
            &file,
            &signature_file,
        )
    })
    .await
    .map_err(|e| Error::Pgp(format!("signature check failed to run: {e}")))?
}

/// ICE: PGP straight from the raw object into the plain object, streaming.
async fn decrypt_stream(
    ctx: &Context,
    keys: &std::sync::Arc<DecryptKeys>,
    raw_key: &str,
    plain_key: &str,
    body: ByteStream,
    metadata: &Metadata,
) -> Result<crypto::SignatureStatus> {
    let (mut writer, plain_stream) = pipe();
    let task_keys = keys.clone();
    let file = raw_key.to_string();
    let decrypting = tokio::task::spawn_blocking(move || {
        let result =
            crypto::decrypt_verify(SyncIoBridge::new(body), &file, &task_keys, &mut writer);
        if result.is_ok() {
            writer.finish();
        }
        result
    });
    // The signature status is only known at the end; S3 needs metadata up front,
    // so it is recorded in the log rather than on the object.
    let writing = ctx.store.put(plain_key, plain_stream, metadata);
    let (written, decrypted) = tokio::join!(writing, decrypting);
    let decrypted = decrypted.map_err(|e| Error::Pgp(format!("decryption task failed: {e}")))??;
    written?;
    Ok(decrypted.signature)
}

/// XIP: the container (after its optional PGP layer) lands in a temporary
/// file, is verified whole, and only then becomes the plain object.
async fn decrypt_xip(
    xip: &ConnectorConfig,
    keys: &std::sync::Arc<DecryptKeys>,
    raw_key: &str,
    plain_key: &str,
    body: ByteStream,
    metadata: &Metadata,
    ctx: &Context,
) -> Result<crypto::SignatureStatus> {
    let (task_keys, file, xip) = (keys.clone(), raw_key.to_string(), xip.clone());
    let (temp, signer) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut temp = tempfile::NamedTempFile::new()
            .map_err(|e| Error::io("creating a temporary file", e))?;
        let mut input = std::io::BufReader::with_capacity(64 * 1024, SyncIoBridge::new(body));
        let is_zip = payload::sniff(&mut input)
            .map_err(|e| Error::io(format!("reading {file}"), e))?
            == PayloadKind::Zip;
        if is_zip {
            std::io::copy(&mut input, temp.as_file_mut())
                .map_err(|e| Error::io(format!("reading {file}"), e))?;
        } else {
            crypto::decrypt_verify(input, &file, &task_keys, temp.as_file_mut())?;
        }
        let trust = xip::Trust {
            signers: &task_keys.xip_signers,
            allow_unsigned: xip.allow_unsigned,
        };
        let verified = xip::verify(temp.path(), &file, &trust, &xip.limits)?;
        Ok((temp, verified.signer))
    })
    .await
    .map_err(|e| Error::Pgp(format!("XIP verification task failed: {e}")))??;
    let mut metadata = metadata.clone();
    metadata.insert(
        "xip-signer".into(),
        signer.clone().unwrap_or_else(|| "unsigned".into()),
    );
    let verified_file = tokio::fs::File::open(temp.path())
        .await
        .map_err(|e| Error::io("reopening the verified XIP file", e))?;
    ctx.store
        .put(plain_key, Box::pin(verified_file), &metadata)
        .await?;
    Ok(match signer {
        Some(_) => crypto::SignatureStatus::Verified,
        None => crypto::SignatureStatus::Unsigned,
    })
}

/// A file that failed before (wrong key, say) and now decrypts is no longer
/// a failed item of its day.
async fn clear_earlier_failure(ctx: &Context, connector: &str, raw_key: &str) -> Result<()> {
    let day = status::day_label(status::day_from_file_name(raw_key));
    let record = status::file_failure(connector, &day, raw_key, "");
    let key = layout::item_record(connector, &day, &record.item_id);
    if ctx.store.head(&key).await?.is_some() {
        ctx.store.delete(&key).await?;
    }
    Ok(())
}
