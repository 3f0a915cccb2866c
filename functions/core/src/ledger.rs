//! The event ledger: exactly once per chat event, across export files.
//!
//! A mail is a vehicle; the chat *event* (message, file transfer, join,
//! leave, disclaimer) is what must reach a folder exactly once. Real exports
//! split a conversation's UTC day over files, re-list rooms every day and
//! come again late or regenerated, so per conversation, day and destination
//! folder the store keeps one ledger object naming every mail (part) built so
//! far and the events each carries. A file that brings events the ledger
//! does not hold yet gets exactly those into a *continuation* mail of its
//! own; events already held are counted as already delivered.
//!
//! The ledger is claimed before the mail is written, by a conditional write
//! (S3 `If-Match` / `If-None-Match`, a file lock locally), so two files
//! converted at once can never both claim an event. Mails are never
//! rewritten: a part's key derives from the events it carries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Granularity;
use crate::error::{Error, Result};
use crate::mail::item_id;
use crate::model::{ChatEvent, EventKind, Participant};
use crate::ports::{Metadata, ObjectStore};
use mail_parser::MimeHeaders;

/// Attempts at a conditional write before giving up (each one lost to
/// another writer that made progress).
const CLAIM_ATTEMPTS: u32 = 100;

/// The identity of every event of one conversation-day, in order: the
/// export's own id when it gives one, else a digest of conversation, time,
/// ImId, kind and content. The n-th repeat of the same identity within the
/// list gets `#n`, so two identical messages sent in the same second stay two.
pub fn event_ids(conversation_id: &str, events: &[&ChatEvent]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    events
        .iter()
        .map(|event| {
            let base = match &event.id {
                Some(id) => format!("id:{id}"),
                None => digest(conversation_id, event),
            };
            let count = seen.entry(base.clone()).or_insert(0);
            *count += 1;
            match *count {
                1 => base,
                n => format!("{base}#{n}"),
            }
        })
        .collect()
}

fn digest(conversation_id: &str, event: &ChatEvent) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(conversation_id.as_bytes());
    field(event.time.to_rfc3339().as_bytes());
    field(event.im_id.as_bytes());
    match &event.kind {
        EventKind::Message { text } => {
            field(b"message");
            field(text.as_bytes());
        }
        EventKind::Disclaimer { text } => {
            field(b"disclaimer");
            field(text.as_bytes());
        }
        EventKind::Entered => field(b"entered"),
        EventKind::Left => field(b"left"),
        EventKind::Notice { text } => {
            field(b"notice");
            field(text.as_bytes());
        }
        EventKind::FileTransfer(file) => {
            field(b"file");
            field(file.file_name.as_bytes());
            field(&file.content.sha256());
        }
        // Not yet resolved: a file that turns up later is a new event (a
        // continuation brings it), never lost behind this one.
        EventKind::Attachment(attachment) => {
            field(b"attachment");
            field(attachment.file_id.as_bytes());
        }
    }
    format!("d:{}", hex::encode(&hasher.finalize()[..16]))
}

/// Everything archived so far of one conversation-day in one folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub connector: String,
    pub conversation_id: String,
    pub day: Option<NaiveDate>,
    pub folder: String,
    /// Everyone listed for the conversation-day in any file so far: each
    /// continuation goes to all of them, so no one who holds the first part
    /// misses a later one.
    pub participants: Vec<Participant>,
    /// In the order they were claimed; the first is the day's first mail.
    pub parts: Vec<LedgerPart>,
}

/// One mail of a conversation-day and the events it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPart {
    pub item_id: String,
    /// Without angle brackets.
    pub message_id: String,
    /// The plain object whose events went into this mail.
    pub source_key: String,
    pub source_sha256: String,
    pub events: Vec<String>,
}

impl Ledger {
    /// Event identity -> the part that carries it.
    pub fn holders(&self) -> HashMap<&str, &LedgerPart> {
        self.parts
            .iter()
            .flat_map(|part| part.events.iter().map(move |e| (e.as_str(), part)))
            .collect()
    }

    pub fn first_message_id(&self) -> Option<&str> {
        self.parts.first().map(|p| p.message_id.as_str())
    }

    /// Adds the participants not listed yet (by ImId), keeping the order.
    pub fn add_participants(&mut self, participants: &[Participant]) {
        let known: HashSet<String> = self.participants.iter().map(|p| p.im_id.clone()).collect();
        self.participants.extend(
            participants
                .iter()
                .filter(|p| !known.contains(&p.im_id))
                .cloned(),
        );
    }
}

/// Where the ledger of a conversation-day in a folder lives.
pub fn key(connector: &str, folder: &str, day: NaiveDate, conversation_id: &str) -> String {
    let id = item_id(connector, &["ledger", folder, conversation_id]);
    crate::layout::ledger_entry(connector, &day.to_string(), &id)
}

/// A mail to build: its item id and the positions of its events in the
/// day's event list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPart {
    pub item_id: String,
    pub events: Vec<usize>,
}

/// How much one mail of a conversation-day may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCap {
    pub events: usize,
    /// Estimated transcript bytes (see [`transcript_weight`]).
    pub bytes: u64,
}

impl PartCap {
    pub const NONE: PartCap = PartCap {
        events: usize::MAX,
        bytes: u64::MAX,
    };
}

/// What an event adds to a mail's transcripts, roughly: its text in the
/// plain and the HTML body (escaped, and re-encoded when 8-bit) plus the
/// markup and time stamp around it. A file's bytes are not counted: they
/// travel as an attachment, which the import stage keeps in the archive when
/// it does not fit.
pub fn transcript_weight(event: &ChatEvent) -> u64 {
    let text = match &event.kind {
        EventKind::Message { text }
        | EventKind::Disclaimer { text }
        | EventKind::Notice { text } => text.len(),
        EventKind::FileTransfer(file) => file.file_name.len(),
        _ => 0,
    };
    3 * text as u64 + 400
}

/// The events in order, cut into runs within the cap (each run has at least
/// one event, whatever its weight).
fn split_by_cap(new: &[usize], events: &[&ChatEvent], cap: PartCap) -> Vec<Vec<usize>> {
    let mut parts = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0u64;
    for &i in new {
        let weight = transcript_weight(events[i]);
        let full = current.len() >= cap.events.max(1) || bytes.saturating_add(weight) > cap.bytes;
        if !current.is_empty() && full {
            parts.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(weight);
        current.push(i);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// The mails that carry the events not `held` yet; `first` when the
/// conversation-day has no part at all yet (not merely no event held: a
/// conversation listed without events has a first part that holds none,
/// and a rerun must not plan it again, nor later events as a first part).
/// Conversation-day
/// granularity: one mail (the day's first keeps the id an archive made
/// before the ledger existed: connector, conversation and day; a
/// continuation's id derives from the events it carries). Message
/// granularity: one mail per message or file transfer; joins, leaves and
/// disclaimers ride with the next one (trailing ones with the last).
/// With conversation-day granularity the new events are split into mails
/// within `cap` (RSMF output: a review platform takes at most 10,000 events
/// a file; a mail server's size limit: a busy room's day does not fit one
/// mail); the parts after the first are continuations.
#[allow(clippy::too_many_arguments)]
pub fn plan_parts(
    connector: &str,
    conversation_id: &str,
    day: NaiveDate,
    granularity: Granularity,
    events: &[&ChatEvent],
    ids: &[String],
    held: &HashSet<&str>,
    first: bool,
    cap: PartCap,
) -> Vec<PlannedPart> {
    let new: Vec<usize> = (0..events.len())
        .filter(|&i| !held.contains(ids[i].as_str()))
        .collect();
    let day_text = day.to_string();
    let whole_as = |events: Vec<usize>, first: bool| {
        let item_id = if first {
            item_id(connector, &[conversation_id, &day_text])
        } else {
            let mut parts = vec![conversation_id, day_text.as_str(), "continuation"];
            parts.extend(events.iter().map(|&i| ids[i].as_str()));
            item_id(connector, &parts)
        };
        PlannedPart { item_id, events }
    };
    let whole = |events: Vec<usize>| whole_as(events, first);
    if new.is_empty() {
        // A conversation-day with no event at all is archived once, as a
        // mail of its own; after that there is nothing new to carry.
        return match first {
            true => vec![whole(Vec::new())],
            false => Vec::new(),
        };
    }
    if granularity == Granularity::ConversationDay {
        return split_by_cap(&new, events, cap)
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| whole_as(chunk, first && i == 0))
            .collect();
    }
    let mut planned: Vec<PlannedPart> = Vec::new();
    let mut pending = Vec::new();
    for i in new {
        pending.push(i);
        if matches!(
            events[i].kind,
            EventKind::Message { .. } | EventKind::FileTransfer(_)
        ) {
            planned.push(PlannedPart {
                item_id: item_id(connector, &[conversation_id, "message", &ids[i]]),
                events: std::mem::take(&mut pending),
            });
        }
    }
    match planned.last_mut() {
        Some(last) => last.events.append(&mut pending),
        None => planned.push(whole(pending)),
    }
    planned
}

/// Reads a ledger and the version a conditional write must name.
pub async fn load(store: &dyn ObjectStore, key: &str) -> Result<Option<(Ledger, String)>> {
    match store.get_versioned(key).await? {
        Some((bytes, version)) => {
            let ledger = serde_json::from_slice(&bytes)
                .map_err(|e| Error::store(key, format!("corrupt event ledger: {e}")))?;
            Ok(Some((ledger, version)))
        }
        None => Ok(None),
    }
}

/// Reads the ledger, lets `update` add to it, and writes it back only if no
/// other writer changed it in between; otherwise reads again and retries.
/// `update` returns `false` when it has nothing to add (nothing is written).
/// Returns the ledger as stored.
pub async fn update(
    store: &dyn ObjectStore,
    key: &str,
    fresh: impl Fn() -> Ledger,
    mut update: impl FnMut(&mut Ledger) -> bool,
) -> Result<Ledger> {
    for attempt in 0..CLAIM_ATTEMPTS {
        let (mut ledger, version) = match load(store, key).await? {
            Some((ledger, version)) => (ledger, Some(version)),
            None => (fresh(), None),
        };
        if !update(&mut ledger) {
            return Ok(ledger);
        }
        let json = serde_json::to_vec_pretty(&ledger).map_err(|e| Error::store(key, e))?;
        if store
            .put_if(key, json, &Metadata::new(), version.as_deref())
            .await?
        {
            return Ok(ledger);
        }
        tracing::debug!(
            key,
            attempt,
            "event ledger changed by another writer: reading it again"
        );
        let pause = 5 + rand::random::<u64>() % (10 * u64::from(attempt.min(20) + 1));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Err(Error::store(
        key,
        format!("event ledger still contended after {CLAIM_ATTEMPTS} attempts"),
    ))
}

/// What [`rebuild`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    /// Conversation-day ledgers written.
    pub ledgers: u64,
    /// Mails recorded as parts of them.
    pub parts: u64,
    /// Mails already named by a ledger (nothing to do).
    pub already_recorded: u64,
    /// Mails that could not be read back, each with the reason.
    pub skipped: Vec<String>,
}

/// Rebuilds the event ledgers of a connector from the mails in the store, for
/// an archive made before the ledger existed (mails keyed by conversation and
/// day). Each mail's events are read back from the conversation's original
/// XML attached to it (its day's events), so every event a mail carries is
/// recorded as delivered and a later file brings only what is really new.
/// Idempotent: mails a ledger already names are left alone.
pub async fn rebuild(store: &dyn ObjectStore, connector: &str) -> Result<Rebuilt> {
    let mut rebuilt = Rebuilt::default();
    for sidecar_key in store.list(&crate::layout::mail_prefix(connector)).await? {
        if !sidecar_key.ends_with(".json") {
            continue;
        }
        match rebuild_one(store, &sidecar_key).await {
            Ok(true) => rebuilt.parts += 1,
            Ok(false) => rebuilt.already_recorded += 1,
            Err(reason) => {
                tracing::warn!(sidecar_key, %reason, "mail not recorded in the event ledger");
                rebuilt.skipped.push(format!("{sidecar_key}: {reason}"));
            }
        }
    }
    rebuilt.ledgers = store
        .list(&crate::layout::ledger_prefix(connector))
        .await?
        .len() as u64;
    Ok(rebuilt)
}

/// Records one mail; `false` when a ledger named it already.
async fn rebuild_one(store: &dyn ObjectStore, sidecar_key: &str) -> Result<bool> {
    let sidecar: crate::mail::MailSidecar =
        serde_json::from_slice(&store.get_bytes(sidecar_key).await?)
            .map_err(|e| Error::store(sidecar_key, format!("not a mail sidecar: {e}")))?;
    let day_text = sidecar.day.to_string();
    let raw = store
        .get_bytes(&crate::layout::mail(
            &sidecar.connector,
            &day_text,
            &sidecar.item_id,
        ))
        .await?;
    let events =
        events_of_mail(&raw, &sidecar).map_err(|reason| Error::store(sidecar_key, reason))?;
    let key = key(
        &sidecar.connector,
        &sidecar.folder,
        sidecar.day,
        &sidecar.conversation_id,
    );
    let mut added = false;
    update(
        store,
        &key,
        || Ledger {
            connector: sidecar.connector.clone(),
            conversation_id: sidecar.conversation_id.clone(),
            day: Some(sidecar.day),
            folder: sidecar.folder.clone(),
            ..Ledger::default()
        },
        |ledger| {
            added = !ledger.parts.iter().any(|p| p.item_id == sidecar.item_id);
            if added {
                let first = item_id(&sidecar.connector, &[&sidecar.conversation_id, &day_text]);
                let part = LedgerPart {
                    item_id: sidecar.item_id.clone(),
                    message_id: sidecar.message_id.clone(),
                    source_key: sidecar.lineage.plain_key.clone(),
                    source_sha256: sidecar.lineage.plain_sha256.clone(),
                    events: events.clone(),
                };
                // The day's first mail stays first: continuations thread to it.
                match sidecar.item_id == first {
                    true => ledger.parts.insert(0, part),
                    false => ledger.parts.push(part),
                }
                ledger.add_participants(&sidecar.participants);
            }
            added
        },
    )
    .await?;
    Ok(added)
}

/// The identities of the events a mail carries: its conversation's events
/// of the mail's day, from the original XML attached to it.
fn events_of_mail(raw: &[u8], sidecar: &crate::mail::MailSidecar) -> Result<Vec<String>, String> {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or("not a readable mail")?;
    let original = message
        .attachments()
        .find(|a| {
            a.attachment_name()
                .is_some_and(|n| n.starts_with("conversation-") && n.ends_with(".xml"))
        })
        .ok_or("no original conversation XML attached (only ICE mails can be read back)")?;
    let mut xml = b"<IceChatExport>".to_vec();
    xml.extend_from_slice(original.contents());
    xml.extend_from_slice(b"</IceChatExport>");
    let conversation = crate::formats::ice::IceReader::new(xml.as_slice(), "attached XML")
        .next()
        .ok_or("the attached XML holds no conversation")?
        .map_err(|e| e.to_string())?;
    let of_day: Vec<&ChatEvent> = conversation
        .events
        .iter()
        .filter(|e| e.time.date_naive() == sidecar.day)
        .collect();
    Ok(event_ids(&conversation.id, &of_day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn message(id: Option<&str>, second: u32, who: &str, text: &str) -> ChatEvent {
        ChatEvent {
            id: id.map(str::to_string),
            time: Utc
                .with_ymd_and_hms(2026, 11, 20, 9, 0, second)
                .single()
                .expect("valid"),
            im_id: who.into(),
            kind: EventKind::Message { text: text.into() },
        }
    }

    #[test]
    fn identity_is_the_export_id_or_a_digest_and_repeats_stay_distinct() {
        let a = message(Some("m1"), 1, "jdoe", "hi");
        let b = message(None, 2, "jdoe", "ok");
        let b_again = message(None, 2, "jdoe", "ok");
        let c = message(None, 2, "jdoe", "ok!");
        let ids = event_ids("conv", &[&a, &b, &b_again, &c]);
        assert_eq!(ids[0], "id:m1");
        assert!(ids[1].starts_with("d:"));
        assert_eq!(ids[2], format!("{}#2", ids[1]));
        assert_ne!(ids[3], ids[1]);
        // The same event in another conversation is another event.
        assert_ne!(event_ids("other", &[&b])[0], ids[1]);
        // Stable: the same input gives the same identities in every run.
        assert_eq!(ids, event_ids("conv", &[&a, &b, &b_again, &c]));
    }

    #[test]
    fn a_day_over_the_size_cap_is_split_in_order_and_only_the_first_keeps_the_day_id() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid");
        let events: Vec<ChatEvent> = (0..10)
            .map(|i| message(None, i, "a", &"x".repeat(100)))
            .collect();
        let refs: Vec<&ChatEvent> = events.iter().collect();
        let ids = event_ids("c", &refs);
        let weight = transcript_weight(&events[0]);
        let cap = PartCap {
            events: usize::MAX,
            bytes: 3 * weight,
        };
        let by_day = Granularity::ConversationDay;
        let parts = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &HashSet::new(),
            true,
            cap,
        );
        let sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        let order: Vec<usize> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        let whole = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &HashSet::new(),
            true,
            PartCap::NONE,
        );
        assert_eq!(
            parts[0].item_id, whole[0].item_id,
            "the first part keeps the day's id"
        );
        let distinct: HashSet<&str> = parts.iter().map(|p| p.item_id.as_str()).collect();
        assert_eq!(distinct.len(), 4);
        // An event heavier than the cap still goes, alone.
        let tiny = PartCap {
            events: usize::MAX,
            bytes: 1,
        };
        assert_eq!(
            plan_parts(
                "ice",
                "c",
                day,
                by_day,
                &refs,
                &ids,
                &HashSet::new(),
                true,
                tiny
            )
            .len(),
            10
        );
    }

    #[test]
    fn only_events_not_held_are_planned_and_a_continuation_has_its_own_id() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid");
        let events = [
            message(None, 1, "a", "one"),
            message(None, 2, "b", "two"),
            message(None, 3, "a", "three"),
        ];
        let refs: Vec<&ChatEvent> = events.iter().collect();
        let ids = event_ids("c", &refs);
        let by_day = Granularity::ConversationDay;
        let first = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &HashSet::new(),
            true,
            PartCap::NONE,
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].events, vec![0, 1, 2]);
        assert_eq!(first[0].item_id, item_id("ice", &["c", "2026-11-20"]));

        let held: HashSet<&str> = ids[..2].iter().map(String::as_str).collect();
        let next = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &held,
            false,
            PartCap::NONE,
        );
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].events, vec![2]);
        assert_ne!(next[0].item_id, first[0].item_id);

        let all: HashSet<&str> = ids.iter().map(String::as_str).collect();
        assert!(plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &all,
            false,
            PartCap::NONE
        )
        .is_empty());

        let per_message = plan_parts(
            "ice",
            "c",
            day,
            Granularity::Message,
            &refs,
            &ids,
            &held,
            false,
            PartCap::NONE,
        );
        assert_eq!(per_message.len(), 1);
        assert_eq!(
            per_message[0].item_id,
            item_id("ice", &["c", "message", &ids[2]])
        );
    }

    #[test]
    fn a_day_whose_first_part_holds_no_event_is_not_planned_again_and_later_events_continue_it() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid");
        let by_day = Granularity::ConversationDay;
        let none = HashSet::new();
        let quiet = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &[],
            &[],
            &none,
            true,
            PartCap::NONE,
        );
        assert_eq!(
            quiet.len(),
            1,
            "a conversation listed without events: one mail"
        );
        // A rerun of the same file: the ledger has that part, which holds no event.
        assert!(plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &[],
            &[],
            &none,
            false,
            PartCap::NONE
        )
        .is_empty());
        // A later file with an event of that day: a continuation, not the first id again.
        let events = [message(None, 1, "a", "one")];
        let refs: Vec<&ChatEvent> = events.iter().collect();
        let ids = event_ids("c", &refs);
        let later = plan_parts(
            "ice",
            "c",
            day,
            by_day,
            &refs,
            &ids,
            &none,
            false,
            PartCap::NONE,
        );
        assert_eq!(later.len(), 1);
        assert_ne!(later[0].item_id, quiet[0].item_id);
    }
}
