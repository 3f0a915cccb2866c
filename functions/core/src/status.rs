//! The status log ("download log"): per connector and day, what came from the
//! source and what became of every item.
//!
//! Stages write one small record per item (`reports/<c>/<day>/items/<id>.json`)
//! and per source file (`.../sources/<id>.json`), overwritten on replay, so
//! the log never counts an item twice. [`rebuild_day`] folds them into
//! `status.json` and `status.csv` beside them.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::ports::{Metadata, ObjectStore};

/// The day an item belongs to, or `undated` for a file whose day is unknown.
pub fn day_label(day: Option<NaiveDate>) -> String {
    day.map(|d| d.to_string())
        .unwrap_or_else(|| "undated".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Converted, not yet imported.
    Pending,
    Imported,
    PartiallyImported,
    /// Every target mailbox already held the message.
    SkippedDuplicate,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Imported,
    AlreadyPresent,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub mailbox: String,
    /// The participants mapped to this mailbox.
    pub im_ids: Vec<String>,
    pub state: TargetState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedRecord {
    pub im_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub connector: String,
    pub day: String,
    pub item_id: String,
    /// The conversation, or the file for a file that could not be read.
    pub subject: String,
    pub source: String,
    pub state: ItemState,
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    #[serde(default)]
    pub unmapped: Vec<UnmappedRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why some attachments are kept in the archive instead of the mail
    /// (the mail was over the mail server's limit), and where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments_kept: Option<String>,
}

impl ItemRecord {
    /// The item's state from its targets. A target imported in an earlier run
    /// and found present now stays "imported": replays do not rewrite history.
    pub fn settle(&mut self) {
        let ok = |t: &&TargetRecord| t.state != TargetState::Failed;
        let delivered = self.targets.iter().filter(ok).count();
        self.state = if self.targets.is_empty() || delivered == 0 {
            ItemState::Failed
        } else if delivered < self.targets.len() {
            ItemState::PartiallyImported
        } else if self
            .targets
            .iter()
            .any(|t| t.state == TargetState::Imported)
        {
            ItemState::Imported
        } else {
            ItemState::SkippedDuplicate
        };
        if self.state == ItemState::Failed && self.reason.is_none() {
            self.reason = Some(if self.targets.is_empty() {
                "no participant maps to a mailbox of the firm (user mapping)".into()
            } else {
                "every target mailbox refused the message".into()
            });
        }
    }

    /// Carries forward "imported" from an earlier record of the same item.
    ///
    /// An earlier record still pending means an import of the item began
    /// and its outcome was never recorded: it stopped between delivery and
    /// record (a crash, the store unreachable), or a concurrent invocation
    /// has not written its record yet. A copy found in place then is that
    /// import's own, so it counts as imported, not as a duplicate.
    pub fn merge_previous(&mut self, previous: &ItemRecord) {
        let unrecorded = previous.state == ItemState::Pending;
        for target in &mut self.targets {
            let was_imported = unrecorded
                || previous
                    .targets
                    .iter()
                    .any(|p| p.mailbox == target.mailbox && p.state == TargetState::Imported);
            if was_imported && target.state == TargetState::AlreadyPresent {
                target.state = TargetState::Imported;
            }
        }
    }
}

/// One source file's share of one day, as seen by the convert stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub key: String,
    pub sha256: String,
    /// Items (mails, continuations included) that carry this file's events.
    pub items: u64,
    #[serde(default)]
    pub events: EventCounts,
    /// The export's dialect (`ICE Chat export`, `FileDump (Actiance)`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Chat events of a file or a day: every event received is delivered (in a
/// mail built from this file), already delivered (an earlier file brought
/// it: a duplicate) or quarantined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub received: u64,
    pub delivered: u64,
    pub already_delivered: u64,
    pub quarantined: u64,
}

impl EventCounts {
    pub fn add(&mut self, other: &EventCounts) {
        self.received += other.received;
        self.delivered += other.delivered;
        self.already_delivered += other.already_delivered;
        self.quarantined += other.quarantined;
    }

    pub fn add_up(&self) -> bool {
        self.received == self.delivered + self.already_delivered + self.quarantined
    }
}

/// A row of the failure list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    pub item_id: String,
    pub source_user: String,
    pub target_mailbox: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStatus {
    pub connector: String,
    pub day: String,
    pub available_from_source: u64,
    pub available_after_fanout: u64,
    pub imported: u64,
    pub partially_imported: u64,
    pub skipped_duplicates: u64,
    pub failed: u64,
    pub pending: u64,
    /// Of `imported` and `partially_imported`: items imported with
    /// attachments kept in the archive (the mail was over the server's limit).
    #[serde(default)]
    pub imported_attachments_kept: u64,
    /// One row per such item, with the reason and the files' keys.
    #[serde(default)]
    pub attachments_kept: Vec<FailureRow>,
    /// The chat events of the day's files (see [`EventCounts`]).
    #[serde(default)]
    pub events: EventCounts,
    pub failures: Vec<FailureRow>,
    /// Participants left out of items that were imported for others.
    pub unmapped_participants: Vec<FailureRow>,
    pub sources: Vec<SourceRecord>,
    pub notes: Vec<String>,
}

impl DayStatus {
    /// The invariant: every item is accounted for exactly once.
    pub fn counts_add_up(&self) -> bool {
        self.available_from_source
            == self.imported
                + self.partially_imported
                + self.skipped_duplicates
                + self.failed
                + self.pending
            && self.events.add_up()
    }

    pub fn from_records(
        connector: &str,
        day: &str,
        items: &[ItemRecord],
        sources: Vec<SourceRecord>,
    ) -> Self {
        let mut events = EventCounts::default();
        for source in &sources {
            events.add(&source.events);
        }
        let mut status = DayStatus {
            connector: connector.into(),
            day: day.into(),
            sources,
            events,
            ..Default::default()
        };
        for item in items {
            status.add(item);
        }
        if status.available_from_source == 0 {
            status.notes.push(format!("No items ingested on {day}"));
        }
        status
    }

    fn add(&mut self, item: &ItemRecord) {
        self.available_from_source += 1;
        self.available_after_fanout += item.targets.len() as u64;
        match item.state {
            ItemState::Pending => self.pending += 1,
            ItemState::Imported => self.imported += 1,
            ItemState::PartiallyImported => self.partially_imported += 1,
            ItemState::SkippedDuplicate => self.skipped_duplicates += 1,
            ItemState::Failed => self.failed += 1,
        }
        let row = |user: &str, mailbox: &str, reason: &str| FailureRow {
            item_id: item.item_id.clone(),
            source_user: user.into(),
            target_mailbox: mailbox.into(),
            reason: reason.into(),
        };
        if let Some(reason) = &item.attachments_kept {
            if matches!(
                item.state,
                ItemState::Imported | ItemState::PartiallyImported
            ) {
                self.imported_attachments_kept += 1;
                self.attachments_kept.push(row("", "", reason));
            }
        }
        for target in item
            .targets
            .iter()
            .filter(|t| t.state == TargetState::Failed)
        {
            let reason = target.reason.as_deref().unwrap_or("refused");
            self.failures
                .push(row(&target.im_ids.join(" "), &target.mailbox, reason));
        }
        let unmapped_rows = item.unmapped.iter().map(|u| row(&u.im_id, "", &u.reason));
        if item.state == ItemState::Failed {
            let reason = item.reason.as_deref().unwrap_or("failed");
            if item.unmapped.is_empty() && item.targets.is_empty() {
                self.failures.push(row("", "", reason));
            }
            for mut failure in unmapped_rows {
                failure.reason = format!("{reason}: {}", failure.reason);
                self.failures.push(failure);
            }
        } else {
            self.unmapped_participants.extend(unmapped_rows);
        }
    }

    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| Error::Config(format!("writing status CSV: {e}"));
        writer
            .write_record([
                "connector",
                "day",
                "row",
                "item_id",
                "source_user",
                "target_mailbox",
                "reason",
                "count",
            ])
            .map_err(csv_err)?;
        let counts = [
            ("available_from_source", self.available_from_source),
            ("available_after_fanout", self.available_after_fanout),
            ("imported", self.imported),
            ("partially_imported", self.partially_imported),
            ("imported_attachments_kept", self.imported_attachments_kept),
            ("skipped_duplicates", self.skipped_duplicates),
            ("failed", self.failed),
            ("pending", self.pending),
            ("events_received", self.events.received),
            ("events_delivered", self.events.delivered),
            ("events_already_delivered", self.events.already_delivered),
            ("events_quarantined", self.events.quarantined),
        ];
        for (name, count) in counts {
            let count = count.to_string();
            writer
                .write_record([
                    self.connector.as_str(),
                    &self.day,
                    name,
                    "",
                    "",
                    "",
                    "",
                    &count,
                ])
                .map_err(csv_err)?;
        }
        for note in &self.notes {
            writer
                .write_record([
                    self.connector.as_str(),
                    &self.day,
                    "note",
                    "",
                    "",
                    "",
                    note,
                    "",
                ])
                .map_err(csv_err)?;
        }
        for source in &self.sources {
            let e = &source.events;
            let summary = format!(
                "events received {}, delivered {}, already delivered {}, quarantined {}{}",
                e.received,
                e.delivered,
                e.already_delivered,
                e.quarantined,
                source
                    .problem
                    .as_deref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default()
            );
            writer
                .write_record([
                    self.connector.as_str(),
                    &self.day,
                    "source_file",
                    &source.key,
                    "",
                    "",
                    &summary,
                    &source.items.to_string(),
                ])
                .map_err(csv_err)?;
        }
        for (kind, rows) in [
            ("failed_item", &self.failures),
            ("unmapped_participant", &self.unmapped_participants),
            ("attachments_kept", &self.attachments_kept),
        ] {
            for r in rows {
                writer
                    .write_record([
                        self.connector.as_str(),
                        &self.day,
                        kind,
                        &r.item_id,
                        &r.source_user,
                        &r.target_mailbox,
                        &r.reason,
                        "",
                    ])
                    .map_err(csv_err)?;
            }
        }
        writer
            .into_inner()
            .map_err(|e| Error::Config(format!("writing status CSV: {e}")))
    }
}

async fn read_json_objects<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for key in store.list(prefix).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let bytes = store.get_bytes(&key).await?;
        out.push(
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::store(&key, format!("corrupt record: {e}")))?,
        );
    }
    Ok(out)
}

/// Folds a day's records into `status.json` and `status.csv` and returns it.
pub async fn rebuild_day(store: &dyn ObjectStore, connector: &str, day: &str) -> Result<DayStatus> {
    let prefix = layout::report_day_prefix(connector, day);
    let items: Vec<ItemRecord> = read_json_objects(store, &format!("{prefix}items/")).await?;
    let sources: Vec<SourceRecord> = read_json_objects(store, &format!("{prefix}sources/")).await?;
    let status = DayStatus::from_records(connector, day, &items, sources);
    let json = serde_json::to_vec_pretty(&status).map_err(Error::internal)?;
    store
        .put_bytes(&format!("{prefix}status.json"), json, &Metadata::new())
        .await?;
    store
        .put_bytes(
            &format!("{prefix}status.csv"),
            status.to_csv()?,
            &Metadata::new(),
        )
        .await?;
    Ok(status)
}

/// A day's status log as last folded, if it has one that reads (one written
/// by an older version that does not is folded again by the caller).
pub async fn read_day(
    store: &dyn ObjectStore,
    connector: &str,
    day: &str,
) -> Result<Option<DayStatus>> {
    let key = format!("{}status.json", layout::report_day_prefix(connector, day));
    let Some((bytes, _)) = store.get_versioned(&key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The days that have a status log, newest last.
pub async fn days(store: &dyn ObjectStore, connector: &str) -> Result<Vec<String>> {
    let prefix = layout::reports_prefix(connector);
    let days: BTreeSet<String> = store
        .list_children(&prefix)
        .await?
        .into_iter()
        .filter(|name| name != "mapping")
        .collect();
    Ok(days.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, targets: Vec<(&str, TargetState)>, unmapped: &[&str]) -> ItemRecord {
        let mut record = ItemRecord {
            connector: "ice".into(),
            day: "2026-11-20".into(),
            item_id: id.into(),
            subject: "s".into(),
            source: "raw/ice/x".into(),
            state: ItemState::Pending,
            targets: targets
                .into_iter()
                .map(|(m, state)| TargetRecord {
                    mailbox: m.into(),
                    im_ids: vec!["u".into()],
                    state,
                    reason: (state == TargetState::Failed).then(|| "quota".into()),
                })
                .collect(),
            unmapped: unmapped
                .iter()
                .map(|u| UnmappedRecord {
                    im_id: (*u).into(),
                    reason: "no CSV row".into(),
                })
                .collect(),
            reason: None,
            attachments_kept: None,
        };
        record.settle();
        record
    }

    #[test]
    fn counts_add_up_and_failures_are_listed() {
        let items = vec![
            item(
                "a",
                vec![
                    ("x@f", TargetState::Imported),
                    ("y@f", TargetState::Imported),
                ],
                &["ext1"],
            ),
            item(
                "b",
                vec![("x@f", TargetState::Imported), ("y@f", TargetState::Failed)],
                &[],
            ),
            item("c", vec![("x@f", TargetState::AlreadyPresent)], &[]),
            item("d", vec![], &["ext1", "ext2"]),
        ];
        let status = DayStatus::from_records("ice", "2026-11-20", &items, vec![]);
        assert_eq!(
            (
                status.available_from_source,
                status.available_after_fanout,
                status.imported,
                status.partially_imported,
                status.skipped_duplicates,
                status.failed
            ),
            (4, 5, 1, 1, 1, 1)
        );
        assert!(status.counts_add_up());
        assert_eq!(status.failures.len(), 3, "{:?}", status.failures);
        assert_eq!(status.unmapped_participants.len(), 1);
        assert!(status.notes.is_empty());
        let csv = String::from_utf8(status.to_csv().unwrap()).unwrap();
        assert!(
            csv.contains("failed_item,d,ext2,,no participant maps"),
            "{csv}"
        );
    }

    #[test]
    fn an_empty_day_says_so() {
        let status = DayStatus::from_records("ice", "2026-11-21", &[], vec![]);
        assert_eq!(
            status.notes,
            vec!["No items ingested on 2026-11-21".to_string()]
        );
        assert!(status.counts_add_up());
    }

    #[test]
    fn replays_keep_imported_history() {
        let first = item("a", vec![("x@f", TargetState::Imported)], &[]);
        let mut replay = item("a", vec![("x@f", TargetState::AlreadyPresent)], &[]);
        replay.merge_previous(&first);
        replay.settle();
        assert_eq!(replay.state, ItemState::Imported);
    }

    #[test]
    fn a_copy_delivered_before_its_record_was_written_counts_as_imported() {
        // The convert stage's record, never settled: the import that
        // delivered the copy stopped before recording it.
        let mut pending = item("a", vec![], &[]);
        pending.state = ItemState::Pending;
        pending.reason = None;
        let mut retry = item("a", vec![("x@f", TargetState::AlreadyPresent)], &[]);
        retry.merge_previous(&pending);
        retry.settle();
        assert_eq!(retry.state, ItemState::Imported);
        // Without any earlier record, a copy in place is a duplicate.
        let fresh = item("a", vec![("x@f", TargetState::AlreadyPresent)], &[]);
        assert_eq!(fresh.state, ItemState::SkippedDuplicate);
    }
}

/// A date written in a file name (`2026-11-20`, `2026_11_20` or `20261120`;
/// failing those, Bloomberg's `YYMMDD` as a dot-separated part:
/// `f886973.ib19.261124.xml.gpg`).
pub fn day_from_file_name(name: &str) -> Option<NaiveDate> {
    let base = name.rsplit('/').next().unwrap_or(name);
    four_digit_year(base).or_else(|| {
        base.split('.').find_map(|part| {
            let six = part.len() == 6 && part.bytes().all(|b| b.is_ascii_digit());
            six.then(|| NaiveDate::parse_from_str(&format!("20{part}"), "%Y%m%d").ok())
                .flatten()
        })
    })
}

fn four_digit_year(base: &str) -> Option<NaiveDate> {
    let bytes = base.as_bytes();
    (0..bytes.len()).find_map(|start| {
        let digits_at = |i: usize, n: usize| {
            bytes
                .get(i..i + n)
                .filter(|s| s.iter().all(u8::is_ascii_digit))
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        if start > 0 && bytes[start - 1].is_ascii_digit() {
            return None;
        }
        let (y, m, d) = if let (Some(y), Some(&sep)) = (digits_at(start, 4), bytes.get(start + 4)) {
            if matches!(sep, b'-' | b'_' | b'.') && bytes.get(start + 7) == Some(&sep) {
                (y, digits_at(start + 5, 2)?, digits_at(start + 8, 2)?)
            } else {
                let all = digits_at(start, 8)?;
                if bytes.get(start + 8).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
                (
                    all[..4].to_string(),
                    all[4..6].to_string(),
                    all[6..8].to_string(),
                )
            }
        } else {
            return None;
        };
        NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    })
}

/// The record of a whole file that could not be read: one failed item.
pub fn file_failure(connector: &str, day: &str, key: &str, reason: &str) -> ItemRecord {
    ItemRecord {
        connector: connector.into(),
        day: day.into(),
        item_id: crate::mail::item_id(connector, &["file", key]),
        subject: format!("file {key}"),
        source: key.into(),
        state: ItemState::Failed,
        targets: Vec::new(),
        unmapped: Vec::new(),
        reason: Some(reason.into()),
        attachments_kept: None,
    }
}

pub async fn read_item(
    store: &dyn ObjectStore,
    connector: &str,
    day: &str,
    item_id: &str,
) -> Result<Option<ItemRecord>> {
    let key = layout::item_record(connector, day, item_id);
    if store.head(&key).await?.is_none() {
        return Ok(None);
    }
    let bytes = store.get_bytes(&key).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::store(&key, format!("corrupt record: {e}")))
}

/// Writes an item's first record, unless it has one: a conditional write,
/// so a replayed convert racing the item's import can never put "pending"
/// over the import's outcome. Whether this call wrote it.
pub async fn create_item(store: &dyn ObjectStore, record: &ItemRecord) -> Result<bool> {
    let key = layout::item_record(&record.connector, &record.day, &record.item_id);
    let json = serde_json::to_vec_pretty(record).map_err(Error::internal)?;
    store.put_if(&key, json, &Metadata::new(), None).await
}

/// How often [`update_item`] reads again after another writer got in
/// between; each lost race means someone else's write landed, so a handful
/// is plenty.
const UPDATE_ATTEMPTS: usize = 16;

/// Replaces an item's record by `next(previous)`, as a compare-and-swap on
/// the version read: two imports of one item at once (a doubled event on
/// two Lambda containers) both see the other's outcome instead of the
/// later blindly overwriting the earlier. Nothing is written when the
/// record would not change.
pub async fn update_item(
    store: &dyn ObjectStore,
    connector: &str,
    day: &str,
    item_id: &str,
    next: impl Fn(Option<&ItemRecord>) -> ItemRecord,
) -> Result<ItemRecord> {
    let key = layout::item_record(connector, day, item_id);
    for _ in 0..UPDATE_ATTEMPTS {
        let current = store.get_versioned(&key).await?;
        let (previous, version) = match &current {
            Some((bytes, version)) => (
                Some(
                    serde_json::from_slice::<ItemRecord>(bytes)
                        .map_err(|e| Error::store(&key, format!("corrupt record: {e}")))?,
                ),
                Some(version.as_str()),
            ),
            None => (None, None),
        };
        let record = next(previous.as_ref());
        if previous.as_ref() == Some(&record) {
            return Ok(record);
        }
        let json = serde_json::to_vec_pretty(&record).map_err(Error::internal)?;
        if store.put_if(&key, json, &Metadata::new(), version).await? {
            return Ok(record);
        }
        tracing::debug!(
            key,
            "item record changed while it was updated: reading it again"
        );
    }
    Err(Error::store(
        key,
        format!("item record still changing after {UPDATE_ATTEMPTS} attempts"),
    ))
}

pub async fn write_item(store: &dyn ObjectStore, record: &ItemRecord) -> Result<()> {
    let key = layout::item_record(&record.connector, &record.day, &record.item_id);
    let json = serde_json::to_vec_pretty(record).map_err(Error::internal)?;
    store.put_bytes(&key, json, &Metadata::new()).await?;
    Ok(())
}

pub async fn write_source(
    store: &dyn ObjectStore,
    connector: &str,
    day: &str,
    record: &SourceRecord,
) -> Result<()> {
    let id = crate::mail::item_id(connector, &["source", &record.key]);
    let json = serde_json::to_vec_pretty(record).map_err(Error::internal)?;
    store
        .put_bytes(
            &layout::source_record(connector, day, &id),
            json,
            &Metadata::new(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod record_write_tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::LocalStore;

    fn pending(id: &str) -> ItemRecord {
        ItemRecord {
            connector: "ice".into(),
            day: "2026-11-20".into(),
            item_id: id.into(),
            subject: "conversation c".into(),
            source: "raw/ice/x".into(),
            state: ItemState::Pending,
            targets: Vec::new(),
            unmapped: Vec::new(),
            reason: None,
            attachments_kept: None,
        }
    }

    #[tokio::test]
    async fn a_replayed_convert_never_puts_pending_over_an_import() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(create_item(&store, &pending("i1")).await.unwrap());
        update_item(&store, "ice", "2026-11-20", "i1", |_| {
            let mut done = pending("i1");
            done.state = ItemState::Imported;
            done
        })
        .await
        .unwrap();
        assert!(!create_item(&store, &pending("i1")).await.unwrap());
        let now = read_item(&store, "ice", "2026-11-20", "i1").await.unwrap();
        assert_eq!(now.map(|r| r.state), Some(ItemState::Imported));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_of_one_record_each_see_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let mut writers = tokio::task::JoinSet::new();
        for n in 0..12 {
            let store = store.clone();
            writers.spawn(async move {
                update_item(store.as_ref(), "ice", "2026-11-20", "i2", |previous| {
                    let mut record = previous.cloned().unwrap_or_else(|| pending("i2"));
                    record.targets.push(TargetRecord {
                        mailbox: format!("u{n}@acme.example"),
                        im_ids: Vec::new(),
                        state: TargetState::Imported,
                        reason: None,
                    });
                    record
                })
                .await
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap().unwrap();
        }
        let record = read_item(store.as_ref(), "ice", "2026-11-20", "i2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.targets.len(), 12, "an update was lost: {record:?}");
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn days_are_found_in_file_names() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20);
        assert_eq!(day_from_file_name("raw/ice/ACME_2026-11-20.xml.pgp"), d);
        assert_eq!(day_from_file_name("ACME_20261120.xml.pgp"), d);
        assert_eq!(day_from_file_name("ACME.2026_11_20.zip"), d);
        assert_eq!(day_from_file_name("ACME_123456789.pgp"), None);
        assert_eq!(day_from_file_name("export.pgp"), None);
        assert_eq!(
            day_from_file_name("raw/bloomberg/f886973.ib19.261124.xml.gpg"),
            NaiveDate::from_ymd_opt(2026, 11, 24)
        );
        assert_eq!(
            day_from_file_name("f886973.ib19.att.261124.tar.gz"),
            NaiveDate::from_ymd_opt(2026, 11, 24)
        );
        assert_eq!(day_from_file_name("f886973.ib19.xml.gpg"), None);
    }
}
