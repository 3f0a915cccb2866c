//! import (map-and-import): `mail/<c>/<day>/<item>.json` -> every mapped
//! participant's mailbox, then the item's status record.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use super::{lineage, Context};
use crate::error::{Error, Result};
use crate::layout;
use crate::mail::{oversize, MailSidecar};
use crate::mapping::{Mapper, Mapping, MappingTable};
use crate::ports::{Delivery, DeliveryOutcome, MailBytes, MailboxSink, Metadata};
use crate::spool::Spool;
use crate::status::{self, ItemRecord, TargetRecord, TargetState, UnmappedRecord};

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
/// Store reads and status writes in flight at once: a batch of short chats
/// is mostly round trips to the store.
const STORE_CALLS_IN_FLIGHT: usize = 16;
/// Mails up to this size are read ahead; a larger one is read when its
/// turn comes, so what is read ahead stays small whatever the mails' size.
const READ_AHEAD_MAIL_BYTES: u64 = 1 << 20;

/// Mails over this size wait in a spool, not in memory.
const SPOOL_MAIL_BYTES: u64 = 16 << 20;

/// A mail as read from the store.
enum MailBody {
    Memory(Vec<u8>),
    Spooled(Arc<Spool>),
}

impl MailBody {
    fn bytes(&self) -> MailBytes<'_> {
        match self {
            MailBody::Memory(bytes) => MailBytes::Memory(bytes),
            MailBody::Spooled(spool) => MailBytes::Spooled(spool),
        }
    }
}

/// One mail of a batch, loaded and mapped.
struct Loaded {
    sidecar: MailSidecar,
    raw: MailBody,
    mailboxes: Vec<(String, Vec<String>)>,
    unmapped: Vec<UnmappedRecord>,
    /// Set when the mail was over the server's limit and some attachments
    /// went to the store instead: the reason and the files.
    attachments_kept: Option<String>,
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
    // Read ahead a few mails at a time (in order); mapping stays one at a
    // time, since the mapper keeps what it learnt of each mailbox.
    // (The futures are made first: a stream holding the closure that makes
    // them would not be Send for every lifetime, which a spawned run needs.)
    let reads: Vec<_> = sidecar_keys.iter().map(|key| read(ctx, key)).collect();
    let mut reads = futures_util::stream::iter(reads).buffered(STORE_CALLS_IN_FLIGHT);
    while let Some(read) = reads.next().await {
        let (sidecar, raw) = read?;
        let raw = match raw {
            Some(raw) => MailBody::Memory(raw),
            None => read_at_its_turn(ctx, &mail_key(&sidecar)).await?,
        };
        let loaded = map(mapper, sidecar, raw).await?;
        // A spooled mail costs no memory; it still closes the chunk.
        let held = match &loaded.raw {
            MailBody::Memory(raw) => raw.len(),
            MailBody::Spooled(_) => BATCH_BYTES,
        };
        bytes += held * loaded.mailboxes.len().max(1);
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

/// A sidecar and the mail it names, when that is small enough to read ahead.
async fn read(ctx: &Context, sidecar_key: &str) -> Result<(MailSidecar, Option<Vec<u8>>)> {
    let sidecar: MailSidecar = serde_json::from_slice(&ctx.store.get_bytes(sidecar_key).await?)
        .map_err(|e| Error::store(sidecar_key, format!("not a mail sidecar: {e}")))?;
    let raw = ctx
        .store
        .get_bytes_within(&mail_key(&sidecar), READ_AHEAD_MAIL_BYTES)
        .await?;
    Ok((sidecar, raw))
}

/// A mail too large to read ahead: in memory up to [`SPOOL_MAIL_BYTES`],
/// else copied into a spool as it streams from the store.
async fn read_at_its_turn(ctx: &Context, key: &str) -> Result<MailBody> {
    if let Some(raw) = ctx.store.get_bytes_within(key, SPOOL_MAIL_BYTES).await? {
        return Ok(MailBody::Memory(raw));
    }
    let (body, _) = ctx.store.get(key).await?;
    let spooled = tokio::task::spawn_blocking(move || {
        Spool::copy_from(&mut tokio_util::io::SyncIoBridge::new(body))
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::store(key, format!("spooling the mail: {e}")))?;
    Ok(MailBody::Spooled(Arc::new(spooled)))
}

fn mail_key(sidecar: &MailSidecar) -> String {
    layout::mail(
        &sidecar.connector,
        &sidecar.day.to_string(),
        &sidecar.item_id,
    )
}

async fn map(mapper: &mut Mapper<'_>, sidecar: MailSidecar, raw: MailBody) -> Result<Loaded> {
    let (mailboxes, unmapped) = map_participants(mapper, &sidecar).await?;
    Ok(Loaded {
        sidecar,
        raw,
        mailboxes: mailboxes.into_iter().collect(),
        unmapped,
        attachments_kept: None,
    })
}

async fn deliver_chunk(
    ctx: &Context,
    sink: &dyn MailboxSink,
    mut chunk: Vec<Loaded>,
) -> Result<Vec<ItemRecord>> {
    for mail in &mut chunk {
        fit_to_limit(ctx, sink, mail).await?;
    }
    let mut deliveries = Vec::new();
    for mail in &chunk {
        for (mailbox, _) in &mail.mailboxes {
            deliveries.push(Delivery {
                mailbox,
                folder: &mail.sidecar.folder,
                message_id: &mail.sidecar.message_id,
                raw: mail.raw.bytes(),
                internal_date: mail.sidecar.internal_date,
                flags: &ctx.config.flags,
            });
        }
    }
    let mut outcomes = sink.deliver_batch(&deliveries).await?.into_iter();
    drop(deliveries);
    let mut settled = Vec::with_capacity(chunk.len());
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
        settled.push((mail.sidecar, targets, mail.unmapped, mail.attachments_kept));
    }
    // Each mail's record is its own object: written a few at a time.
    let writes: Vec<_> = settled
        .into_iter()
        .map(|(sidecar, targets, unmapped, kept)| {
            settle_and_write(ctx, sidecar, targets, unmapped, kept)
        })
        .collect();
    futures_util::stream::iter(writes)
        .buffered(STORE_CALLS_IN_FLIGHT)
        .try_collect()
        .await
}

async fn settle_and_write(
    ctx: &Context,
    sidecar: MailSidecar,
    targets: Vec<TargetRecord>,
    unmapped: Vec<UnmappedRecord>,
    attachments_kept: Option<String>,
) -> Result<ItemRecord> {
    let day = sidecar.day.to_string();
    let fresh = ItemRecord {
        targets,
        unmapped,
        attachments_kept,
        ..sidecar.pending_record()
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

/// A mail over the size limit of one of its mailboxes is never dropped or
/// truncated: its largest attachments are written to the store
/// (`attachments/...`, named by digest) and the mail that goes out names
/// each of them instead. A mail still over the limit (its transcript alone)
/// goes as it is and the server's refusal is reported.
async fn fit_to_limit(ctx: &Context, sink: &dyn MailboxSink, mail: &mut Loaded) -> Result<()> {
    let mut limit: Option<u64> = None;
    for (mailbox, _) in &mail.mailboxes {
        if let Some(l) = sink.size_limit(mailbox).await? {
            limit = Some(limit.map_or(l, |m| m.min(l)));
        }
    }
    let size = mail.raw.bytes().len();
    let Some(limit) = limit.filter(|l| size > *l) else {
        return Ok(());
    };
    let side = &mail.sidecar;
    let (connector, day, item) = (
        side.connector.clone(),
        side.day.to_string(),
        side.item_id.clone(),
    );
    let key_for = move |sha256: &str, name: &str| {
        layout::kept_attachment(&connector, &day, &item, sha256, name)
    };
    let reduced = match &mail.raw {
        MailBody::Memory(raw) => oversize::keep_attachments_in_archive(raw, limit, key_for),
        MailBody::Spooled(spool) => {
            let (spool, parts) = (spool.clone(), side.spliced.clone());
            tokio::task::spawn_blocking(move || shed_spooled(&spool, &parts, limit, key_for))
                .await
                .map_err(Error::internal)?
                .map_err(|e| Error::store(mail_key(side), format!("cutting the mail: {e}")))?
        }
    };
    let Some(reduced) = reduced else {
        return Ok(());
    };
    let mail_key = mail_key(side);
    for file in &reduced.kept {
        // Named by digest: present means written whole by an earlier run.
        if ctx.store.head(&file.key).await?.is_some() {
            continue;
        }
        let mut metadata = Metadata::new();
        metadata.insert(lineage::SOURCE_KEY.into(), mail_key.clone());
        metadata.insert(lineage::STAGE.into(), "import".into());
        let body = content_stream(&file.content)
            .await
            .map_err(|e| Error::store(&file.key, format!("reading the kept file: {e}")))?;
        ctx.store.put(&file.key, body, &metadata).await?;
    }
    let files: Vec<String> = reduced
        .kept
        .iter()
        .map(|f| {
            format!(
                "{} ({} bytes, SHA-256 {}) at {}",
                f.name, f.size, f.sha256, f.key
            )
        })
        .collect();
    tracing::info!(item = %side.item_id, files = files.len(), limit, "mail over the server's limit; attachments kept in the archive");
    mail.attachments_kept = Some(format!(
        "imported, attachments kept in the archive: the mail of {} bytes exceeds the {limit} \
         bytes the mail server accepts; {}",
        size,
        files.join("; ")
    ));
    mail.raw = MailBody::Memory(reduced.raw);
    Ok(())
}

/// A spooled mail's spliced parts leave first (cut by their places, the
/// mail never parsed whole); if the rest is still too large, its largest
/// attachments follow as for a mail in memory.
fn shed_spooled(
    spool: &Spool,
    parts: &[crate::mail::SplicedPart],
    limit: u64,
    key_for: impl Fn(&str, &str) -> String,
) -> std::io::Result<Option<oversize::Reduced>> {
    let Some(mut reduced) = oversize::shed_spliced(spool, parts, limit, &key_for)? else {
        return Ok(None);
    };
    if reduced.raw.len() as u64 > limit {
        if let Some(more) = oversize::keep_attachments_in_archive(&reduced.raw, limit, &key_for) {
            reduced.kept.extend(more.kept);
            reduced.raw = more.raw;
        }
    }
    Ok(Some(reduced))
}

/// A kept file's bytes as a store body.
async fn content_stream(
    content: &crate::model::Content,
) -> std::io::Result<crate::ports::ByteStream> {
    use crate::model::Content;
    Ok(match content {
        Content::Bytes(bytes) => Box::pin(std::io::Cursor::new(bytes.clone())),
        Content::Spooled(spooled) if !spooled.base64 => {
            Box::pin(tokio::fs::File::open(spooled.spool.path()).await?)
        }
        other => Box::pin(std::io::Cursor::new(other.to_vec()?)),
    })
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
