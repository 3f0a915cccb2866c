//! convert: `plain/<c>/<file>` -> one `.eml` and one `.json` sidecar per mail
//! under `mail/<c>/<day>/`. The export is parsed as a stream, one
//! conversation at a time; a broken document is quarantined with the place of
//! the fault, and the conversations read before it still go on.

use chrono::NaiveDate;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::{keys, lineage, quarantine, Context};
use crate::config::ConnectorConfig;
use crate::error::{Error, InputError, Place, Result};
use crate::formats::{ice::IceReader, payload, xip};
use crate::mail::{build_mails, BuiltMail, Lineage};
use crate::ports::{ByteStream, Metadata};
use crate::status::{self, ItemRecord, ItemState, SourceRecord};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOutcome {
    /// Sidecar keys written: each starts an import.
    pub sidecars: Vec<String>,
    /// The day the source file belongs to.
    pub day: String,
    pub quarantined: Option<(String, InputError)>,
}

/// Mails go from the parsing thread to the writer a few at a time.
const MAILS_IN_FLIGHT: usize = 4;

pub async fn run(ctx: &Context, plain_key: &str) -> Result<ConvertOutcome> {
    let (body, info) = ctx.store.get(plain_key).await?;
    let base = Lineage {
        raw_key: info
            .metadata
            .get(lineage::RAW_KEY)
            .cloned()
            .unwrap_or_default(),
        raw_sha256: info
            .metadata
            .get(lineage::RAW_SHA256)
            .cloned()
            .unwrap_or_default(),
        plain_key: plain_key.to_string(),
        plain_sha256: info.sha256.clone(),
        ..Lineage::default()
    };
    let (sender, mut receiver) = mpsc::channel(MAILS_IN_FLIGHT);
    let config = ctx.config.for_key(plain_key);
    let is_xip = config.name == ctx.config.xip.name;
    let parsing = {
        let (config, base, key) = (config.clone(), base.clone(), plain_key.to_string());
        tokio::task::spawn_blocking(move || match is_xip {
            true => parse_xip(body, &key, &config, &base, &sender),
            false => parse_all(body, &key, &config, &base, &sender),
        })
    };
    let mut outcome = ConvertOutcome::default();
    let mut first_day = None;
    while let Some(mail) = receiver.recv().await {
        first_day.get_or_insert(mail.sidecar.day);
        outcome.sidecars.push(write_mail(ctx, mail).await?);
    }
    let parsed = parsing
        .await
        .map_err(|e| Error::Config(format!("conversion task failed: {e}")))?;
    let (export_day, problem) = match parsed {
        Ok(day) => (day, None),
        Err(Error::Input(error)) => (None, Some(error)),
        Err(other) => return Err(other),
    };
    let day = export_day
        .or_else(|| status::day_from_file_name(plain_key))
        .or(first_day);
    outcome.day = status::day_label(day);
    if let Some(error) = problem {
        let quarantine_key = quarantine(ctx.store.as_ref(), plain_key, "convert", &error).await?;
        let mut record =
            status::file_failure(&config.name, &outcome.day, plain_key, &error.to_string());
        record.source = base.raw_key.clone();
        status::write_item(ctx.store.as_ref(), &record).await?;
        outcome.quarantined = Some((quarantine_key, error));
    }
    let source = SourceRecord {
        key: plain_key.to_string(),
        sha256: info.sha256,
        items: outcome.sidecars.len() as u64,
        problem: outcome.quarantined.as_ref().map(|(_, e)| e.to_string()),
    };
    status::write_source(ctx.store.as_ref(), &config.name, &outcome.day, &source).await?;
    tracing::info!(plain_key, mails = outcome.sidecars.len(), day = %outcome.day, "converted");
    Ok(outcome)
}

/// Parses every document of the payload and sends its mails; returns the
/// export's own day when the export states one.
fn parse_all(
    body: ByteStream,
    key: &str,
    config: &ConnectorConfig,
    base: &Lineage,
    sender: &mpsc::Sender<BuiltMail>,
) -> Result<Option<NaiveDate>> {
    let mut export_day = None;
    payload::for_each_document(SyncIoBridge::new(body), key, |document, reader| {
        let mut conversations = IceReader::new(reader, document);
        while let Some(conversation) = conversations.next() {
            let conversation = conversation?;
            let header_day = conversations.header().and_then(|h| h.export_date);
            export_day = export_day.or(header_day);
            let fallback = header_day.or_else(|| status::day_from_file_name(key));
            let lineage = Lineage {
                document: document.to_string(),
                line: conversation.line,
                ..base.clone()
            };
            let Some(fallback) = fallback
                .or(conversation.start.map(|t| t.date_naive()))
                .or_else(|| conversation.events.first().map(|e| e.time.date_naive()))
            else {
                return Err(InputError::new(
                    document,
                    Place::LineColumn {
                        line: conversation.line,
                        column: 1,
                    },
                    format!(
                        "conversation {:?} has no time and the export no date",
                        conversation.id
                    ),
                )
                .into());
            };
            for mail in build_mails(&conversation, config, &lineage, fallback)? {
                sender
                    .blocking_send(mail)
                    .map_err(|_| Error::Config("mail writer stopped".into()))?;
            }
        }
        export_day = export_day.or(conversations.header().and_then(|h| h.export_date));
        Ok(())
    })?;
    Ok(export_day)
}

/// A XIP container: verified by the decrypt stage, whose signature check the
/// plain object stands for; every entry's digest is checked again as it is
/// read. Items become one mail each.
fn parse_xip(
    body: ByteStream,
    key: &str,
    config: &ConnectorConfig,
    base: &Lineage,
    sender: &mpsc::Sender<BuiltMail>,
) -> Result<Option<NaiveDate>> {
    let mut temp =
        tempfile::NamedTempFile::new().map_err(|e| Error::io("creating a temporary file", e))?;
    std::io::copy(&mut SyncIoBridge::new(body), temp.as_file_mut())
        .map_err(|e| Error::io(format!("reading {key}"), e))?;
    let verified = xip::verify(
        temp.path(),
        key,
        &xip::Trust::verified_upstream(),
        &config.xip.limits,
    )?;
    xip::read_items(temp.path(), key, &verified, |item| {
        let lineage = Lineage {
            document: format!("{key}!{}", item.id),
            ..base.clone()
        };
        let day = item.start.map(|t| t.date_naive()).unwrap_or_default();
        for mail in build_mails(&item, config, &lineage, day)? {
            sender
                .blocking_send(mail)
                .map_err(|_| Error::Config("mail writer stopped".into()))?;
        }
        Ok(())
    })?;
    Ok(None)
}

/// Writes a mail and its sidecar (sidecar last: its arrival starts the import,
/// so the mail must already be there). A pending status record is written
/// first, and only if the item has none yet, so a replay never resets an
/// imported item to pending.
async fn write_mail(ctx: &Context, mail: BuiltMail) -> Result<String> {
    let store = ctx.store.as_ref();
    let side = &mail.sidecar;
    let day = side.day.to_string();
    if status::read_item(store, &side.connector, &day, &side.item_id)
        .await?
        .is_none()
    {
        let record = ItemRecord {
            connector: side.connector.clone(),
            day: day.clone(),
            item_id: side.item_id.clone(),
            subject: format!("conversation {}", side.conversation_id),
            source: side.lineage.raw_key.clone(),
            state: ItemState::Pending,
            targets: Vec::new(),
            unmapped: Vec::new(),
            reason: None,
        };
        status::write_item(store, &record).await?;
    }
    let mut metadata = Metadata::new();
    metadata.insert(lineage::SOURCE_KEY.into(), side.lineage.plain_key.clone());
    metadata.insert(
        lineage::SOURCE_SHA256.into(),
        side.lineage.plain_sha256.clone(),
    );
    metadata.insert(lineage::RAW_KEY.into(), side.lineage.raw_key.clone());
    metadata.insert(lineage::RAW_SHA256.into(), side.lineage.raw_sha256.clone());
    metadata.insert(lineage::STAGE.into(), "convert".into());
    store
        .put_bytes(
            &keys::mail(&side.connector, &day, &side.item_id),
            mail.raw,
            &metadata,
        )
        .await?;
    let sidecar_key = keys::sidecar(&side.connector, &day, &side.item_id);
    let json = serde_json::to_vec_pretty(side).map_err(|e| Error::Config(e.to_string()))?;
    store.put_bytes(&sidecar_key, json, &metadata).await?;
    Ok(sidecar_key)
}
