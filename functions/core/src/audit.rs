//! The audit trail: one function per outcome a compliance reviewer looks
//! for, each logging the same fixed fields — `connector`, `stage`, `key`
//! (the object the outcome is about) and `outcome` — and then its own, all
//! under the log target `audit`. Filter on `outcome` and the log reads as
//! the history of every file and item; a field never goes by two names.
//! (On Lambda every line also carries the invocation's `request_id`.)

use std::fmt::Display;

const TARGET: &str = "audit";

/// A file of the source is now the object `key`.
pub fn fetched(connector: &str, key: &str, file: &str, size: u64, sha256: &str) {
    tracing::info!(target: TARGET, connector, stage = "fetch", key, outcome = "fetched", file, size, sha256, "fetched");
}

/// A later, different version of a fetched file, kept beside the first.
pub fn kept_beside(connector: &str, key: &str, file: &str, first: &str) {
    tracing::warn!(target: TARGET, connector, stage = "fetch", key, outcome = "kept-beside", file, first, "another version of a file already fetched: kept beside it");
}

/// A file the source offers that could not be fetched (the others go on).
pub fn not_fetched(connector: &str, file: &str, error: &dyn Display) {
    tracing::error!(target: TARGET, connector, stage = "fetch", key = file, outcome = "not-fetched", error = %error, "not fetched");
}

pub fn decrypted(connector: &str, key: &str, plain_key: &str, signature: &str) {
    tracing::info!(target: TARGET, connector, stage = "decrypt", key, outcome = "decrypted", plain_key, signature, "decrypted");
}

/// Nothing done yet, and why (a signature, a part, an attachment archive
/// still to come); the status log says so too.
pub fn waiting(connector: &str, stage: &str, key: &str, reason: &str) {
    tracing::info!(target: TARGET, connector, stage, key, outcome = "waiting", reason, "waiting");
}

/// Bad input set aside, with where the copy and its reason are.
pub fn quarantined(
    connector: &str,
    stage: &str,
    key: &str,
    quarantine_key: &str,
    error: &dyn Display,
) {
    tracing::warn!(target: TARGET, connector, stage, key, outcome = "quarantined", quarantine_key, error = %error, "quarantined");
}

pub fn converted(connector: &str, key: &str, day: &str, mails: usize, quarantined: usize) {
    tracing::info!(target: TARGET, connector, stage = "convert", key, outcome = "converted", day, mails, quarantined, "converted");
}

/// An item's import settled: `state` (imported, partially imported,
/// failed, ...) over `targets` mailboxes.
pub fn imported(
    connector: &str,
    key: &str,
    item: &str,
    state: &dyn std::fmt::Debug,
    targets: usize,
) {
    tracing::info!(target: TARGET, connector, stage = "import", key, outcome = "imported", item, state = ?state, targets, "imported");
}
