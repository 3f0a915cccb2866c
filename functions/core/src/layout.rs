//! Every object key of the store, in one place: a stage, a report or a
//! command that reads or writes an object asks here for its key, so the
//! layout (README, "Layout") can be read off one file.
//!
//! - `raw/<c>/<file>`: files as the source delivered them (evidence);
//! - `plain/<c>/<file>`: decrypted and verified (evidence);
//! - `mail/<c>/<day>/<item>.eml` and `.json` (the sidecar that starts the
//!   import): the archived mails (evidence);
//! - `quarantine/<key>` and `quarantine/<key>.reason.json`: bad input;
//! - `state/<c>/...`: the pipeline's own bookkeeping (checkpoint, ledger,
//!   done markers, waits);
//! - `reports/<c>/...`: the status log, the mapping report, the page;
//! - `config/<c>/mapping.csv`: the operator's mapping;
//! - `exports/<c>/...`: RSMF exports;
//! - `attachments/<c>/<day>/<item>/<sha256>/<name>`: files of a mail too
//!   large for the mail server, kept whole here and named in the mail;
//! - `work/<c>/<file>.after-<n>.json`: a conversion handed on before its
//!   deadline, to be carried on after `n` conversations (starts convert).

pub fn raw(connector: &str, file_name: &str) -> String {
    format!("raw/{connector}/{file_name}")
}

/// Where a fetched file lands: XIP files (`.xip`, optionally followed by
/// `.pgp`/`.gpg`/`.asc`) under the XIP connector, the rest under ICE.
pub fn raw_for_file(config: &crate::config::ConnectorConfig, file_name: &str) -> String {
    let lower = file_name.to_ascii_lowercase();
    let inner = ["", ".pgp", ".gpg", ".asc"].iter().find_map(|ext| {
        lower
            .strip_suffix(ext)
            .filter(|rest| rest.ends_with(".xip"))
    });
    let connector = if inner.is_some() {
        &config.xip.name
    } else {
        &config.name
    };
    raw(connector, file_name)
}

/// Where a later, different version of a file already fetched under
/// `raw_key` lands (`raw/ice/x.pgp` -> `raw/ice/<version>/x.pgp`): raw
/// objects are evidence and never replaced, and the file keeps its name
/// so that its day and payload type are still read from it.
pub fn raw_version(raw_key: &str, version: &str) -> String {
    match raw_key.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{version}/{name}"),
        None => format!("{version}/{raw_key}"),
    }
}

/// A part of a file split in several (`x.xml1`, `x.xml2`, ...): the
/// name they share (`x.xml`) and the part's number.
pub fn split_part(key: &str) -> Option<(&str, u32)> {
    let digits = key.len() - key.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (base, number) = key.split_at(digits);
    let number: u32 = number.parse().ok().filter(|n| *n >= 1)?;
    base.to_ascii_lowercase()
        .ends_with(".xml")
        .then_some((base, number))
}

/// `raw/ice/x.xml.pgp` -> `plain/ice/x.xml`.
pub fn plain_for_raw(raw_key: &str) -> String {
    let rest = raw_key.strip_prefix("raw/").unwrap_or(raw_key);
    let lower = rest.to_ascii_lowercase();
    let stem = [".pgp", ".gpg", ".asc"]
        .iter()
        .find(|ext| lower.ends_with(*ext))
        .map(|ext| &rest[..rest.len() - ext.len()])
        .unwrap_or(rest);
    format!("plain/{stem}")
}

/// Where a conversion of `plain_key` hands on after `done` conversations.
pub fn hand_off(plain_key: &str, done: u64) -> String {
    let connector = connector_of(plain_key).unwrap_or("unknown");
    let name = plain_key
        .strip_prefix("plain/")
        .and_then(|k| k.split_once('/'))
        .map_or(plain_key, |(_, name)| name);
    format!("work/{connector}/{name}.after-{done}.json")
}

pub fn is_hand_off(key: &str) -> bool {
    key.starts_with("work/") && key.ends_with(".json")
}

pub fn mail(connector: &str, day: &str, item_id: &str) -> String {
    format!("mail/{connector}/{day}/{item_id}.eml")
}

pub fn sidecar(connector: &str, day: &str, item_id: &str) -> String {
    format!("mail/{connector}/{day}/{item_id}.json")
}

/// A file taken out of a mail that was over the mail server's size
/// limit, named by its digest (the same file of a replay lands on the
/// same key, so the store is never asked to overwrite).
pub fn kept_attachment(
    connector: &str,
    day: &str,
    item_id: &str,
    sha256: &str,
    file_name: &str,
) -> String {
    format!("attachments/{connector}/{day}/{item_id}/{sha256}/{file_name}")
}

pub fn checkpoint(connector: &str) -> String {
    format!("state/{connector}/checkpoint.json")
}

/// The connector a stage object belongs to (`raw/ice/...` -> `ice`).
pub fn connector_of(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

pub fn raw_prefix(connector: &str) -> String {
    format!("raw/{connector}/")
}

pub fn mail_prefix(connector: &str) -> String {
    format!("mail/{connector}/")
}

/// The marker that a raw object was carried through every stage locally.
pub fn done_marker(connector: &str, id: &str) -> String {
    format!("state/{connector}/done/{id}.json")
}

/// When an export began waiting for its attachment archive.
pub fn attachment_wait(connector: &str, id: &str) -> String {
    format!("state/{connector}/attachments-wait/{id}")
}

/// The event ledger: which chat events each folder already holds.
pub fn ledger_prefix(connector: &str) -> String {
    format!("state/{connector}/events/")
}

pub fn ledger_day_prefix(connector: &str, day: &str) -> String {
    format!("{}{day}/", ledger_prefix(connector))
}

pub fn ledger_entry(connector: &str, day: &str, id: &str) -> String {
    format!("{}{id}.json", ledger_day_prefix(connector, day))
}

/// Days whose status log is due for a rebuild (AWS).
pub fn status_dirty_prefix(connector: &str) -> String {
    format!("state/{connector}/status-dirty/")
}

/// Where a bad object's copy goes (its reason beside it, `.reason.json`).
pub fn quarantine(key: &str) -> String {
    format!("quarantine/{key}")
}

/// One bad conversation of an otherwise good file, by its first line.
pub fn quarantine_conversation(key: &str, line: u64) -> String {
    format!("quarantine/{key}/conversation-line-{line}.xml")
}

/// What a stage quarantined of a connector (`stage` is the prefix of the
/// key it refused: `raw`, `plain`).
pub fn quarantine_prefix(stage: &str, connector: &str) -> String {
    format!("quarantine/{stage}/{connector}/")
}

/// The status page of every connector (AWS: written by the status
/// schedule).
pub const STATUS_PAGE: &str = "reports/index.html";

pub fn reports_prefix(connector: &str) -> String {
    format!("reports/{connector}/")
}

/// A day's status log and its records.
pub fn report_day_prefix(connector: &str, day: &str) -> String {
    format!("{}{day}/", reports_prefix(connector))
}

pub fn item_record(connector: &str, day: &str, item_id: &str) -> String {
    format!("{}items/{item_id}.json", report_day_prefix(connector, day))
}

pub fn source_record(connector: &str, day: &str, source_id: &str) -> String {
    format!(
        "{}sources/{source_id}.json",
        report_day_prefix(connector, day)
    )
}

/// The rows of the mapping CSV that were skipped, and why.
pub fn mapping_problems(connector: &str) -> String {
    format!("{}mapping/problems.json", reports_prefix(connector))
}

/// The operator's mapping CSV (the default of `mapping_csv`).
pub fn mapping_csv(connector: &str) -> String {
    format!("config/{connector}/mapping.csv")
}

/// An RSMF export of the days `since..=until`.
pub fn export_prefix(connector: &str, since: &str, until: &str) -> String {
    format!("exports/{connector}/{since}_{until}")
}
