//! import (map-and-import): `mail/<c>/<day>/<item>.json` -> every mapped
//! participant's mailbox, then the item's status record.

use std::collections::BTreeMap;

use super::Context;
use crate::error::{Error, Result};
use crate::layout;
use crate::mail::MailSidecar;
use crate::mapping::{Mapper, Mapping, MappingTable};
use crate::ports::{Delivery, DeliveryOutcome, MailboxSink, Metadata};
use crate::status::{self, ItemRecord, ItemState, TargetRecord, TargetState, UnmappedRecord};

/// Loads the connector's mapping CSV, if the store has one. Bad rows are
/// reported (`reports/<c>/mapping/problems.json` and the log) and skipped.
pub async fn load_mapping(ctx: &Context) -> Result<MappingTable> {
    let key = &ctx.config.mapping_csv;
    if key.is_empty() || ctx.store.head(key).await?.is_none() {
        return Ok(MappingTable::default());
    }
    let bytes = ctx.store.get_bytes(key).await?;
    let table = MappingTable::from_csv(&bytes, key);
    let problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
    for problem in &problems {
        tracing::warn!(problem = %problem, "mapping CSV row skipped");
    }
    let json = serde_json::to_vec_pretty(&problems).map_err(Error::internal)?;
    let report = layout::mapping_problems(&ctx.config.name);
    ctx.store.put_bytes(&report, json, &Metadata::new()).await?;
    Ok(table)
}

/// Imports one mail. `mapper` is shared across the mails of a batch so each
/// mailbox is checked once.
pub async fn run(
    ctx: &Context,
    mapper: &mut Mapper<'_>,
    sink: &dyn MailboxSink,
    sidecar_key: &str,
) -> Result<ItemRecord> {
    run_batch(ctx, mapper, sink, &[sidecar_key.to_string()])
        .await?
        .pop()
        .ok_or_else(|| Error::store(sidecar_key, "import produced no status record"))
}

/// Raw mail held in memory per sink call; a batch larger than this is
/// delivered in several calls.
const BATCH_BYTES: usize = 32 << 20;

/// One mail of a batch, loaded and mapped.
struct Loaded {
    sidecar: MailSidecar,
    raw: Vec<u8>,
    mailboxes: Vec<(String, Vec<String>)>,
    unmapped: Vec<UnmappedRecord>,
}

/// Imports several mails with one sink call per chunk of [`BATCH_BYTES`], so
/// a sink that can pipeline (IMAP) sends them back to back on one session per
/// mailbox. One status record per mail, exactly as [`run`] writes them.
pub async fn run_batch(
    ctx: &Context,
    mapper: &mut Mapper<'_>,
    sink: &dyn MailboxSink,
    sidecar_keys: &[String],
) -> Result<Vec<ItemRecord>> {
    let mut records = Vec::with_capacity(sidecar_keys.len());
    let mut chunk: Vec<Loaded> = Vec::new();
    let mut bytes = 0;
    for key in sidecar_keys {
        let loaded = load(ctx, mapper, key).await?;
        bytes += loaded.raw.len() * loaded.mailboxes.len().max(1);
        chunk.push(loaded);
        if bytes >= BATCH_BYTES {
            records.extend(deliver_chunk(ctx, sink, std::mem::take(&mut chunk)).await?);
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        records.extend(deliver_chunk(ctx, sink, chunk).await?);
    }
    Ok(records)
}

async fn load(ctx: &Context, mapper: &mut Mapper<'_>, sidecar_key: &str) -> Result<Loaded> {
    let sidecar: MailSidecar = serde_json::from_slice(&ctx.store.get_bytes(sidecar_key).await?)
        .map_err(|e| Error::store(sidecar_key, format!("not a mail sidecar: {e}")))?;
    let day = sidecar.day.to_string();
    let raw = ctx
        .store
        .get_bytes(&layout::mail(&sidecar.connector, &day, &sidecar.item_id))
        .await?;
    let (mailboxes, unmapped) = map_participants(mapper, &sidecar).await?;
    Ok(Loaded {
        sidecar,
        raw,
        mailboxes: mailboxes.into_iter().collect(),
        unmapped,
    })
}

async fn deliver_chunk(
    ctx: &Context,
    sink: &dyn MailboxSink,
    chunk: Vec<Loaded>,
) -> Result<Vec<ItemRecord>> {
    let mut deliveries = Vec::new();
    for mail in &chunk {
        for (mailbox, _) in &mail.mailboxes {
            deliveries.push(Delivery {
                mailbox,
                folder: &mail.sidecar.folder,
                message_id: &mail.sidecar.message_id,
                raw: &mail.raw,
                internal_date: mail.sidecar.internal_date,
                flags: &ctx.config.flags,
            });
        }
    }
    let mut outcomes = sink.deliver_batch(&deliveries).await?.into_iter();
    drop(deliveries);
    let mut records = Vec::with_capacity(chunk.len());
    for mail in chunk {
        let mut targets = Vec::with_capacity(mail.mailboxes.len());
        for (mailbox, im_ids) in mail.mailboxes {
            let outcome = outcomes.next().ok_or_else(|| {
                Error::Internal("the mailbox sink returned fewer outcomes than deliveries".into())
            })?;
            let (state, reason) = match outcome {
                DeliveryOutcome::Delivered => (TargetState::Imported, None),
                DeliveryOutcome::AlreadyPresent => (TargetState::AlreadyPresent, None),
                DeliveryOutcome::Refused(reason) => (TargetState::Failed, Some(reason)),
            };
            targets.push(TargetRecord {
                mailbox,
                im_ids,
                state,
                reason,
            });
        }
        records.push(settle_and_write(ctx, mail.sidecar, targets, mail.unmapped).await?);
    }
    Ok(records)
}

async fn settle_and_write(
    ctx: &Context,
    sidecar: MailSidecar,
    targets: Vec<TargetRecord>,
    unmapped: Vec<UnmappedRecord>,
) -> Result<ItemRecord> {
    let day = sidecar.day.to_string();
    let fresh = ItemRecord {
        connector: sidecar.connector.clone(),
        day: day.clone(),
        item_id: sidecar.item_id.clone(),
        subject: format!("conversation {}", sidecar.conversation_id),
        source: sidecar.lineage.raw_key.clone(),
        state: ItemState::Pending,
        targets,
        unmapped,
        reason: None,
    };
    let record = status::update_item(
        ctx.store.as_ref(),
        &fresh.connector,
        &day,
        &fresh.item_id,
        |previous| {
            let mut record = fresh.clone();
            if let Some(previous) = previous {
                record.merge_previous(previous);
            }
            record.settle();
            record
        },
    )
    .await?;
    crate::audit::imported(
        &record.connector,
        &layout::sidecar(&record.connector, &record.day, &record.item_id),
        &record.item_id,
        &record.state,
        record.targets.len(),
    );
    Ok(record)
}

/// Mailbox -> the ImIds mapped to it (one copy per mailbox, however many of
/// its users are in the chat), and the participants left unmapped.
async fn map_participants(
    mapper: &mut Mapper<'_>,
    sidecar: &MailSidecar,
) -> Result<(BTreeMap<String, Vec<String>>, Vec<UnmappedRecord>)> {
    let mut mailboxes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unmapped = Vec::new();
    for participant in &sidecar.participants {
        match mapper.map(participant).await? {
            Mapping::Unmapped { reason } => unmapped.push(UnmappedRecord {
                im_id: participant.im_id.clone(),
                reason,
            }),
            mapped => {
                let mailbox = mapped.mailbox().unwrap_or_default().to_string();
                mailboxes
                    .entry(mailbox)
                    .or_default()
                    .push(participant.im_id.clone());
            }
        }
    }
    Ok((mailboxes, unmapped))
}
