//! import (map-and-import): `mail/<c>/<day>/<item>.json` -> every mapped
//! participant's mailbox, then the item's status record.

use std::collections::BTreeMap;

use super::{keys, Context};
use crate::error::{Error, Result};
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
    let json = serde_json::to_vec_pretty(&problems).map_err(|e| Error::Config(e.to_string()))?;
    let report = format!("reports/{}/mapping/problems.json", ctx.config.name);
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
    let sidecar: MailSidecar = serde_json::from_slice(&ctx.store.get_bytes(sidecar_key).await?)
        .map_err(|e| Error::store(sidecar_key, format!("not a mail sidecar: {e}")))?;
    let day = sidecar.day.to_string();
    let raw = ctx
        .store
        .get_bytes(&keys::mail(&sidecar.connector, &day, &sidecar.item_id))
        .await?;

    let (mailboxes, unmapped) = map_participants(mapper, &sidecar).await?;
    let mut targets = Vec::with_capacity(mailboxes.len());
    for (mailbox, im_ids) in mailboxes {
        let delivery = Delivery {
            mailbox: &mailbox,
            folder: &sidecar.folder,
            message_id: &sidecar.message_id,
            raw: &raw,
            internal_date: sidecar.internal_date,
            flags: &ctx.config.flags,
        };
        let (state, reason) = match sink.deliver(&delivery).await {
            Ok(DeliveryOutcome::Delivered) => (TargetState::Imported, None),
            Ok(DeliveryOutcome::AlreadyPresent) => (TargetState::AlreadyPresent, None),
            Ok(DeliveryOutcome::Refused(reason)) => (TargetState::Failed, Some(reason)),
            Err(e @ Error::Mailbox { .. }) => (TargetState::Failed, Some(e.to_string())),
            Err(other) => return Err(other),
        };
        targets.push(TargetRecord {
            mailbox,
            im_ids,
            state,
            reason,
        });
    }

    let mut record = ItemRecord {
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
    if let Some(previous) =
        status::read_item(ctx.store.as_ref(), &record.connector, &day, &record.item_id).await?
    {
        record.merge_previous(&previous);
    }
    record.settle();
    status::write_item(ctx.store.as_ref(), &record).await?;
    tracing::info!(item = %record.item_id, state = ?record.state, targets = record.targets.len(), "imported");
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
