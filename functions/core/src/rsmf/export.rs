//! `chat-archive export rsmf`: RSMF files for legal review, built from what
//! the store holds (the plain exports and the event ledger), independent of
//! what reached the mailboxes. A conversation-day that arrived in several
//! files is one RSMF with every event once: the ledger names the files, and
//! the events are merged by their identity.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{build_from, parts, Provenance};
use crate::config::{ConnectorConfig, ConnectorKind};
use crate::error::{Error, Result};
use crate::formats::ice::IceReader;
use crate::formats::payload;
use crate::layout;
use crate::ledger::{self, Ledger};
use crate::mail::{transcript::Transcript, Lineage};
use crate::model::{ChatEvent, Conversation};
use crate::ports::ObjectStore;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub since: NaiveDate,
    pub until: NaiveDate,
    /// Only conversations this address took part in (and it is named the
    /// custodian).
    pub custodian: Option<String>,
    pub conversation: Option<String>,
    pub out: PathBuf,
}

/// One file written, as the load file lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub file: String,
    pub connector: String,
    pub conversation: String,
    pub day: NaiveDate,
    pub part: usize,
    pub events: usize,
    pub attachments: usize,
    pub sha256: String,
}

/// The name of the load file in the output directory.
pub const LOAD_FILE: &str = "export.csv";

/// Writes one RSMF per conversation-day (and part) of the connector in the
/// range, then the load file. Returns what was written.
pub async fn export(
    store: &dyn ObjectStore,
    config: &ConnectorConfig,
    request: &ExportRequest,
) -> Result<Vec<Exported>> {
    if config.kind == ConnectorKind::Xip {
        return Err(Error::Config(format!(
            "connector {:?}: RSMF export reads chat exports; XIP items are not exported yet",
            config.name
        )));
    }
    std::fs::create_dir_all(&request.out)
        .map_err(|e| Error::io(format!("creating {}", request.out.display()), e))?;
    let mut cache: HashMap<String, Vec<Conversation>> = HashMap::new();
    let mut written = Vec::new();
    let mut day = request.since;
    while day <= request.until {
        let prefix = crate::layout::ledger_day_prefix(&config.name, &day.to_string());
        for key in store.list(&prefix).await? {
            let Some((ledger, _)) = ledger::load(store, &key).await? else {
                continue;
            };
            if ledger.folder != config.folder {
                continue;
            }
            if request
                .conversation
                .as_ref()
                .is_some_and(|c| *c != ledger.conversation_id)
            {
                continue;
            }
            let merged = merge_day(store, &ledger, day, &mut cache).await?;
            let Some((conversation, lineage)) = merged else {
                continue;
            };
            if let Some(custodian) = &request.custodian {
                let took_part = conversation.participants.iter().any(|p| {
                    p.email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(custodian))
                });
                if !took_part {
                    continue;
                }
            }
            written.extend(write_day(config, request, &conversation, day, &lineage)?);
        }
        day = day.succ_opt().unwrap_or(day);
        if day == NaiveDate::MAX {
            break;
        }
    }
    write_load_file(&request.out, &written)?;
    Ok(written)
}

/// The conversation-day as one: every file the ledger names, read, and
/// their events of the day merged by identity, in time order.
async fn merge_day(
    store: &dyn ObjectStore,
    ledger: &Ledger,
    day: NaiveDate,
    cache: &mut HashMap<String, Vec<Conversation>>,
) -> Result<Option<(Conversation, Lineage)>> {
    let mut merged: Option<Conversation> = None;
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut lineage = Lineage::default();
    for part in &ledger.parts {
        if !cache.contains_key(&part.source_key) {
            let read = read_plain(store, &part.source_key).await?;
            cache.insert(part.source_key.clone(), read);
        }
        let Some(found) = cache[&part.source_key]
            .iter()
            .find(|c| c.id == ledger.conversation_id)
        else {
            continue;
        };
        if lineage.plain_key.is_empty() {
            lineage.plain_key = part.source_key.clone();
            lineage.plain_sha256 = part.source_sha256.clone();
            if let Some(info) = store.head(&part.source_key).await? {
                lineage.raw_key = info.metadata.get("raw-key").cloned().unwrap_or_default();
                lineage.raw_sha256 = info.metadata.get("raw-sha256").cloned().unwrap_or_default();
            }
        }
        let of_day: Vec<&ChatEvent> = found
            .events
            .iter()
            .filter(|e| e.time.date_naive() == day)
            .collect();
        let ids = ledger::event_ids(&found.id, &of_day);
        let target = merged.get_or_insert_with(|| Conversation {
            events: Vec::new(),
            ..found.clone()
        });
        for participant in &found.participants {
            if !target
                .participants
                .iter()
                .any(|p| p.im_id == participant.im_id)
            {
                target.participants.push(participant.clone());
            }
        }
        for (event, id) in of_day.into_iter().zip(ids) {
            if seen.insert(id, ()).is_none() {
                target.events.push(event.clone());
            }
        }
    }
    if let Some(conversation) = merged.as_mut() {
        conversation.events.sort_by_key(|e| e.time);
    }
    Ok(merged.map(|c| (c, lineage)))
}

/// Every conversation of a plain object (a split file's parts read as one).
async fn read_plain(store: &dyn ObjectStore, key: &str) -> Result<Vec<Conversation>> {
    let keys_to_read = match key.strip_suffix('*') {
        None => vec![key.to_string()],
        Some(base) => {
            let mut numbered: Vec<(u32, String)> = store
                .list(base)
                .await?
                .into_iter()
                .filter_map(|k| layout::split_part(&k).map(|(_, n)| (n, k.clone())))
                .collect();
            numbered.sort();
            numbered.into_iter().map(|(_, k)| k).collect()
        }
    };
    let mut bytes = Vec::new();
    for key in &keys_to_read {
        bytes.extend(store.get_bytes(key).await?);
    }
    let name = key.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conversations = Vec::new();
        payload::for_each_document(&bytes[..], &name, |document, reader| {
            // Conversations the convert stage quarantined are not in the
            // ledger; skipping them here loses nothing the archive holds.
            conversations.extend(IceReader::new(reader, document).filter_map(|c| c.ok()));
            Ok(())
        })?;
        Ok(conversations)
    })
    .await
    .map_err(|e| Error::Config(format!("reading {key} failed: {e}")))?
}

fn write_day(
    config: &ConnectorConfig,
    request: &ExportRequest,
    conversation: &Conversation,
    day: NaiveDate,
    lineage: &Lineage,
) -> Result<Vec<Exported>> {
    let events: Vec<&ChatEvent> = conversation.events.iter().collect();
    let ids = ledger::event_ids(&conversation.id, &events);
    let provenance = Provenance {
        config,
        lineage,
        custodian: request.custodian.as_deref(),
        message_id: None,
    };
    let mut written = Vec::new();
    for part in parts(conversation, day, &events, &ids) {
        let transcript = Transcript {
            conversation,
            events: &part.events,
            day,
            source_label: &config.source_label,
            disclaimer: &config.disclaimer,
            continues: None,
        };
        let (manifest, files) = super::manifest(&part, &provenance);
        let raw = build_from(&part, &provenance, &manifest, &files, &transcript.text())?;
        let digest = hex::encode(Sha256::digest(&raw));
        let file = format!(
            "{}-{day}-{}-{}.rsmf",
            config.name,
            &crate::mail::item_id(&config.name, &[&conversation.id])[..12],
            part.part
        );
        let path = request.out.join(&file);
        std::fs::write(&path, &raw)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written.push(Exported {
            file,
            connector: config.name.clone(),
            conversation: conversation.id.clone(),
            day,
            part: part.part,
            events: manifest.events.len(),
            attachments: files.len(),
            sha256: digest,
        });
    }
    Ok(written)
}

fn write_load_file(out: &Path, written: &[Exported]) -> Result<()> {
    let path = out.join(LOAD_FILE);
    let mut csv = csv::Writer::from_path(&path).map_err(|e| {
        Error::io(
            format!("writing {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    for row in written {
        csv.serialize(row).map_err(|e| {
            Error::io(
                format!("writing {}", path.display()),
                std::io::Error::other(e),
            )
        })?;
    }
    csv.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
