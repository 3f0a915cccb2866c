//! Quarantine: bad input is copied to `quarantine/<original key>` with a
//! machine-readable `<original key>.reason.json` beside it. Nothing is
//! dropped silently; the original stays where it was for the audit trail.

use serde::Serialize;

use crate::error::{InputError, Result};
use crate::formats::ice::BadConversation;
use crate::ports::{Metadata, ObjectStore};

#[derive(Serialize)]
struct Reason<'a> {
    key: &'a str,
    stage: &'a str,
    file: &'a str,
    place: String,
    reason: &'a str,
    error: String,
}

/// Metadata naming when an object went to quarantine (for the alert on
/// anything waiting there too long).
pub const QUARANTINED_AT: &str = "quarantined-at";

/// Returns the quarantine key of the copy.
pub async fn quarantine(
    store: &dyn ObjectStore,
    key: &str,
    stage: &str,
    error: &InputError,
) -> Result<String> {
    let target = crate::layout::quarantine(key);
    let (body, info) = store.get(key).await?;
    let mut metadata: Metadata = info.metadata.clone();
    metadata.insert("quarantined-from".into(), key.into());
    metadata.insert(QUARANTINED_AT.into(), chrono::Utc::now().to_rfc3339());
    metadata.insert("quarantine-stage".into(), stage.into());
    store.put(&target, body, &metadata).await?;
    write_reason(store, &target, key, stage, error).await?;
    Ok(target)
}

/// Quarantines one conversation of a file that is otherwise fine: its own
/// bytes, as they are in the file, under
/// `quarantine/<file key>/conversation-line-<line>.xml`.
pub async fn quarantine_conversation(
    store: &dyn ObjectStore,
    key: &str,
    bad: &BadConversation,
    metadata: &Metadata,
) -> Result<String> {
    let target = crate::layout::quarantine_conversation(key, bad.line);
    let mut metadata = metadata.clone();
    metadata.insert("quarantined-from".into(), key.into());
    metadata.insert(QUARANTINED_AT.into(), chrono::Utc::now().to_rfc3339());
    metadata.insert("quarantine-stage".into(), "convert".into());
    if bad.spilled.is_empty() {
        store.put_bytes(&target, bad.raw.clone(), &metadata).await?;
    } else {
        // Its long runs stream back from their spools: a bad conversation
        // of gigabytes costs no more memory than a good one.
        let (raw, holes) = (bad.raw.clone(), bad.spilled.clone());
        let body = super::pipe::streamed(move |out| crate::spool::write_filled(&raw, &holes, out));
        store.put(&target, body, &metadata).await?;
    }
    write_reason(store, &target, key, "convert", &bad.error).await?;
    Ok(target)
}

async fn write_reason(
    store: &dyn ObjectStore,
    target: &str,
    key: &str,
    stage: &str,
    error: &InputError,
) -> Result<()> {
    let reason = Reason {
        key,
        stage,
        file: &error.file,
        place: error.place.to_string(),
        reason: &error.reason,
        error: error.to_string(),
    };
    let json = serde_json::to_vec_pretty(&reason).unwrap_or_default();
    store
        .put_bytes(&format!("{target}.reason.json"), json, &Metadata::new())
        .await?;
    let connector = crate::layout::connector_of(key).unwrap_or_default();
    crate::audit::quarantined(connector, stage, key, target, error);
    Ok(())
}
