//! decrypt: `raw/<c>/<file>.pgp` -> `plain/<c>/<file>`, signature checked.
//! A file that cannot be decrypted or verified is quarantined and reported;
//! its plaintext never becomes an object.

use pgp::types::Password;
use tokio_util::io::SyncIoBridge;

use super::{keys, lineage, pipe::pipe, quarantine, Context};
use crate::crypto::{self, DecryptKeys, Decrypted};
use crate::error::{Error, InputError, Result};
use crate::ports::secrets::fields;
use crate::ports::{ConnectorSecret, Metadata};
use crate::status;

/// Reads the decryption keys from the connector's secret.
pub fn keys_from_secret(
    secret: &ConnectorSecret,
    policy: crypto::SignaturePolicy,
) -> Result<DecryptKeys> {
    let secret_key = crypto::parse_secret_key(
        secret.require(fields::PGP_PRIVATE_KEY)?.expose(),
        &format!(
            "secret {:?} field {:?}",
            secret.name,
            fields::PGP_PRIVATE_KEY
        ),
    )?;
    let passphrase = secret
        .get(fields::PGP_PASSPHRASE)
        .map(|p| Password::from(p.expose()))
        .unwrap_or_else(Password::empty);
    let signer = secret
        .get(fields::SIGNER_PUBLIC_KEY)
        .map(|k| {
            crypto::parse_public_key(
                k.expose(),
                &format!(
                    "secret {:?} field {:?}",
                    secret.name,
                    fields::SIGNER_PUBLIC_KEY
                ),
            )
        })
        .transpose()?;
    Ok(DecryptKeys {
        secret_key,
        passphrase,
        signer,
        policy,
    })
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
}

pub async fn run(
    ctx: &Context,
    keys: &std::sync::Arc<DecryptKeys>,
    raw_key: &str,
) -> Result<DecryptOutcome> {
    let plain_key = keys::plain_for_raw(raw_key);
    let (body, raw_info) = ctx.store.get(raw_key).await?;
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
    let mut metadata = Metadata::new();
    metadata.insert(lineage::SOURCE_KEY.into(), raw_key.into());
    metadata.insert(lineage::SOURCE_SHA256.into(), raw_info.sha256.clone());
    metadata.insert(lineage::RAW_KEY.into(), raw_key.into());
    metadata.insert(lineage::RAW_SHA256.into(), raw_info.sha256.clone());
    metadata.insert(lineage::STAGE.into(), "decrypt".into());
    // The signature status is only known at the end; S3 needs metadata up front,
    // so it is recorded in the status trail (and the log) rather than on the object.
    let writing = ctx.store.put(&plain_key, plain_stream, &metadata);
    let (written, decrypted) = tokio::join!(writing, decrypting);
    let decrypted = decrypted.map_err(|e| Error::Pgp(format!("decryption task failed: {e}")))?;
    match decrypted {
        Ok(Decrypted {
            signature,
            plaintext_bytes,
            ..
        }) => {
            written?;
            clear_earlier_failure(ctx, raw_key).await?;
            tracing::info!(
                raw_key,
                plain_key,
                plaintext_bytes,
                signature = signature.as_str(),
                "decrypted"
            );
            Ok(DecryptOutcome::Decrypted {
                plain_key,
                signature,
            })
        }
        Err(Error::Input(error)) => {
            let quarantine_key = quarantine(ctx.store.as_ref(), raw_key, "decrypt", &error).await?;
            let day = status::day_label(status::day_from_file_name(raw_key));
            let record = status::file_failure(&ctx.config.name, &day, raw_key, &error.to_string());
            status::write_item(ctx.store.as_ref(), &record).await?;
            Ok(DecryptOutcome::Quarantined {
                quarantine_key,
                error,
            })
        }
        Err(other) => Err(other),
    }
}

/// A file that failed before (wrong key, say) and now decrypts is no longer
/// a failed item of its day.
async fn clear_earlier_failure(ctx: &Context, raw_key: &str) -> Result<()> {
    let day = status::day_label(status::day_from_file_name(raw_key));
    let record = status::file_failure(&ctx.config.name, &day, raw_key, "");
    let key = status::item_key(&ctx.config.name, &day, &record.item_id);
    if ctx.store.head(&key).await?.is_some() {
        ctx.store.delete(&key).await?;
    }
    Ok(())
}
