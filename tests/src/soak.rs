//! A seeded soak: `days` days of ICE exports shaped the way real ones
//! arrive, run day by day through the local pipeline while faults drawn from
//! the seed strike it, then checked with a reader this project did not write.
//!
//! What the exports hold ([`generate`]): persistent rooms listed again every
//! day under the same id, each day's file repeating a room's last event of
//! the file before and carrying the first hours of the next UTC day (ICE's
//! day is New York time, so a UTC conversation-day spans two files); ad hoc
//! conversations; now and then a bad conversation (a message without a
//! valid time), a file sent again byte for byte under another name, a file
//! regenerated under its old name (same events in another order and layout,
//! or with one more message); unicode names and text; file transfers;
//! counterparties of other firms; a firm address without a mailbox; and a
//! room where no one has a mailbox.
//!
//! What strikes each day ([`Fault`]): the pipeline stopping at a store
//! operation (a crash: everything written before stays), `chat-archive run`
//! killed with SIGKILL, the store or the mail server going away mid-run;
//! after the day's run, events delivered a second time and whole re-runs.
//! A failed run is retried at once or only by the next day's run.
//!
//! What must hold at the end ([`Soak::check`]): every message of every
//! export is in each right mailbox exactly once and in no other, or, when
//! no one in its room has a mailbox or its conversation is bad, in none and
//! reported (failed with a reason, quarantined with a reason); every file
//! transfer likewise; no mailbox outside the firm's domain received mail;
//! per day the status log adds up and agrees with what the mailboxes hold;
//! no evidence object ever changed once written.
//!
//! Everything is drawn from the seed (generation and faults from two
//! streams, so a fault schedule does not shift the exports): a failing run
//! is replayed with `scripts/soak.sh SEED DAYS [message]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chat_archive_core::adapters::LocalStore;
use chat_archive_core::config::{ConnectorConfig, Granularity};
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::{s3_put_event, FetchRequest};
use chat_archive_core::mapping::Mapper;
use chat_archive_core::pipeline::Silent;
use chat_archive_core::ports::{MailboxSink, ObjectStore};
use chat_archive_core::stages::import;
use chat_archive_core::status::{self, DayStatus};
use chrono::{Duration as Days, NaiveDate};
use serde::Serialize;

use crate::faults::{
    assert_store_objects_whole, evidence, ice_folder, outage, run_killed_at, work_done, Call,
    HookStore, OutageSink, Rng, DOMAIN, GHOST, MAILBOXES,
};
use crate::local::{Firm, FIRM_UID, SIGNER_UID};
use crate::readback::{read_folders, ReadMail};

/// What to run: the seed, the number of days, the connector's granularity,
/// and the operator's binary (only a test target can name it; without it
/// no run is killed by SIGKILL).
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub seed: u64,
    pub days: usize,
    pub granularity: Granularity,
    pub cli: Option<PathBuf>,
}

impl SoakConfig {
    /// `SOAK_SEED`, `SOAK_DAYS` and `SOAK_GRANULARITY` (`conversation-day`,
    /// `message`) from the environment (what `scripts/soak.sh` sets), else
    /// the defaults (conversation-day).
    pub fn from_env(seed: u64, days: usize, cli: Option<PathBuf>) -> Self {
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v:?}")),
            _ => default,
        };
        let granularity = match std::env::var("SOAK_GRANULARITY").as_deref() {
            Ok("message") => Granularity::Message,
            Ok("conversation-day") | Ok("") | Err(_) => Granularity::ConversationDay,
            Ok(other) => panic!("SOAK_GRANULARITY: conversation-day or message, not {other:?}"),
        };
        Self {
            seed: number("SOAK_SEED", seed),
            days: number("SOAK_DAYS", days as u64) as usize,
            granularity,
            cli,
        }
    }

    /// How to run this very soak again; starts every failure message.
    pub fn replay(&self) -> String {
        let (label, arg) = match self.granularity {
            Granularity::Message => (", one mail per message", " message"),
            Granularity::ConversationDay => ("", ""),
        };
        format!(
            "soak seed {} over {} days{label} (replay: scripts/soak.sh {} {}{arg})",
            self.seed, self.days, self.seed, self.days
        )
    }
}

// ---------------------------------------------------------------------------
// The exports.

const FIRST_DAY: (i32, u32, u32) = (2026, 10, 1);
/// External counterparties' firms: never the firm's domain.
const OTHER_FIRMS: [&str; 2] = ["globex.example", "initech.example"];
const NAMES: [&str; 6] = [
    "Zoë Müller",
    "Łukasz Żółć",
    "李雷",
    "Ηλέκτρα Π.",
    "José Núñez",
    "Søren Ærø",
];
const TEXTS: [&str; 6] = [
    "Bund 10y bid 2.41 / offer 2.42 — size 5m",
    "€STR fixing ✓, Dec/Jan roll?",
    "日本国債 10年 spread unchanged",
    "Привет, can you show 25m?",
    "Ünïcödé check: naïve café, 📈 done",
    "ok &amp; thanks",
];

#[derive(Debug, Clone)]
struct Person {
    im_id: String,
    name: String,
    email: String,
}

/// A persistent room: the same id and members every day.
#[derive(Debug, Clone)]
struct Room {
    id: String,
    people: Vec<Person>,
    /// Members with a mailbox of the firm: the right mailboxes.
    mailboxes: BTreeSet<String>,
    /// The last event of the latest file that listed it (repeated by the next).
    last: Option<Event>,
}

#[derive(Debug, Clone)]
struct Event {
    /// Its UTC day, `YYYY-MM-DD`.
    day: String,
    xml: String,
    /// Our name for its identity (the product derives its own).
    identity: String,
    /// `[[kN]]` in a message's text.
    token: Option<String>,
    /// A file transfer's file name.
    transfer: Option<String>,
}

/// Where an event must end up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// In each of these mailboxes exactly once (none: reported failed).
    Mailboxes(BTreeSet<String>),
    /// Nowhere: its conversation is quarantined with a reason.
    Quarantined,
}

/// One file to put into the drop directory on a given day.
#[derive(Debug, Clone)]
struct Arrival {
    on_day: usize,
    name: String,
    /// The encrypted file, made once (a re-delivery copies it byte for byte).
    encrypted: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Daily,
    Redelivered,
    RegeneratedReordered,
    RegeneratedSuperset,
}

impl FileKind {
    fn label(self) -> &'static str {
        match self {
            FileKind::Daily => "daily",
            FileKind::Redelivered => "sent again, same bytes",
            FileKind::RegeneratedReordered => "regenerated, same events reordered",
            FileKind::RegeneratedSuperset => "regenerated, one more message",
        }
    }
}

/// The exports of every day and what must become of each of their events.
struct Plan {
    drops: Vec<Arrival>,
    fates: BTreeMap<String, Fate>,
    transfers: BTreeMap<String, BTreeSet<String>>,
    /// Per UTC day, the identities of its events in good conversations.
    events_by_day: BTreeMap<String, BTreeSet<String>>,
    /// Bad conversations: (conversation id, the file day that holds it).
    bad: Vec<(String, String)>,
    figures: Figures,
}

/// What the soak ran: reported at the end (docs/reliability.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub seed: u64,
    pub days: usize,
    pub granularity: String,
    pub files: BTreeMap<String, usize>,
    pub conversations_listed: usize,
    pub bad_conversations: usize,
    pub messages_listed: usize,
    pub distinct_messages: usize,
    pub file_transfers: usize,
    pub events_distinct: usize,
    pub faults_injected: BTreeMap<String, usize>,
    pub faults_not_reached: BTreeMap<String, usize>,
    pub events_redelivered: usize,
    pub reruns: usize,
    pub failed_runs: usize,
    pub mails_in_mailboxes: usize,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.range(0, items.len() as u64) as usize]
}

fn firm_person(mailbox: &str) -> Person {
    let user = mailbox.split('@').next().unwrap_or(mailbox);
    Person {
        im_id: format!("{user}1"),
        name: format!(
            "{} {}",
            user.to_uppercase(),
            NAMES[user.len() % NAMES.len()]
        ),
        email: mailbox.to_string(),
    }
}

fn external(rng: &mut Rng, n: usize) -> Person {
    let name = pick(rng, &NAMES).to_string();
    let firm = pick(rng, &OTHER_FIRMS);
    Person {
        im_id: format!("ext{n}"),
        name,
        email: format!("trader{n}@{firm}"),
    }
}

fn ghost() -> Person {
    Person {
        im_id: "ghost9".into(),
        name: "Gabriel Ghost".into(),
        email: GHOST.into(),
    }
}

/// Persistent rooms: one to three of the firm's mailboxes, a counterparty,
/// sometimes the firm address without a mailbox; the last room has no one
/// with a mailbox (each of its mails must be reported failed).
fn rooms(rng: &mut Rng) -> Vec<Room> {
    let mut out = Vec::new();
    for r in 0..5 {
        let mut people = Vec::new();
        let mut mailboxes = BTreeSet::new();
        if r < 4 {
            for _ in 0..rng.range(1, 4) {
                let mailbox = *pick(rng, &MAILBOXES);
                if mailboxes.insert(mailbox.to_string()) {
                    people.push(firm_person(mailbox));
                }
            }
        }
        people.push(external(rng, r));
        if r == 4 || rng.range(0, 3) == 0 {
            people.push(ghost());
        }
        out.push(Room {
            id: format!("room-{r}"),
            people,
            mailboxes,
            last: None,
        });
    }
    out
}

struct Generator {
    rng: Rng,
    next: usize,
    start: NaiveDate,
}

impl Generator {
    fn date(&self, day: usize) -> NaiveDate {
        self.start + Days::days(day as i64)
    }

    /// A time on `date` between the hours `from` and `to`.
    fn time(&mut self, date: NaiveDate, from: u64, to: u64) -> String {
        let second = self.rng.range(from * 3600, to * 3600);
        format!(
            "{date}T{:02}:{:02}:{:02}Z",
            second / 3600,
            second / 60 % 60,
            second % 60
        )
    }

    fn message(&mut self, conversation: &str, who: &Person, time: String) -> Event {
        let n = self.next;
        self.next += 1;
        let token = format!("[[k{n}]]");
        let text = pick(&mut self.rng, &TEXTS);
        Event {
            day: time[..10].to_string(),
            xml: format!(
                "<Message Id=\"m-{n}\" ImId=\"{}\" Timestamp=\"{time}\">{text} {token}</Message>",
                who.im_id
            ),
            identity: format!("{conversation}/m-{n}"),
            token: Some(token),
            transfer: None,
        }
    }

    fn transfer(&mut self, conversation: &str, who: &Person, time: String) -> Event {
        let n = self.next;
        self.next += 1;
        let name = format!("Termsheet t{n} – {}.pdf", pick(&mut self.rng, &NAMES));
        let size = self.rng.range(200, 3000) as usize;
        let data = base64::engine::general_purpose::STANDARD.encode(self.rng.bytes(size));
        Event {
            day: time[..10].to_string(),
            xml: format!(
                "<FileTransfer Id=\"f-{n}\" ImId=\"{}\" Timestamp=\"{time}\" FileName=\"{}\" ContentType=\"application/pdf\" Size=\"{size}\">{data}</FileTransfer>",
                who.im_id,
                escape(&name)
            ),
            identity: format!("{conversation}/f-{n}"),
            token: None,
            transfer: Some(name),
        }
    }

    fn entered(&mut self, conversation: &str, who: &Person, time: String) -> Event {
        Event {
            day: time[..10].to_string(),
            xml: format!("<Entered ImId=\"{}\" Timestamp=\"{time}\"/>", who.im_id),
            identity: format!("{conversation}/entered/{}/{time}", who.im_id),
            token: None,
            transfer: None,
        }
    }

    /// A room's events in day `day`'s file: the last event of the file
    /// before again, then new ones from 05:00 (00:00 on the first day) to
    /// 05:00 of the next UTC day.
    fn room_events(&mut self, room: &Room, day: usize) -> Vec<Event> {
        let (date, next) = (self.date(day), self.date(day + 1));
        let mut times = Vec::new();
        let from = if day == 0 { 0 } else { 5 };
        for _ in 0..self.rng.range(0, 4) {
            times.push(self.time(date, from, 24));
        }
        for _ in 0..self.rng.range(0, 2) {
            times.push(self.time(next, 0, 5));
        }
        times.sort();
        let mut events: Vec<Event> = room.last.iter().cloned().collect();
        if self.rng.range(0, 4) == 0 {
            let who = pick(&mut self.rng, &room.people).clone();
            let time = self.time(date, from, 24);
            events.push(self.entered(&room.id, &who, time));
        }
        for time in times {
            let who = pick(&mut self.rng, &room.people).clone();
            let event = if self.rng.range(0, 8) == 0 {
                self.transfer(&room.id, &who, time)
            } else {
                self.message(&room.id, &who, time)
            };
            events.push(event);
        }
        events
    }

    /// A one-to-one chat of the day between one of the firm and a counterparty.
    fn ad_hoc(&mut self, day: usize, k: usize) -> Room {
        let mailbox = *pick(&mut self.rng, &MAILBOXES);
        let n = self.next;
        self.next += 1;
        let counterparty = external(&mut self.rng, 100 + n);
        Room {
            id: format!("chat-{day}-{k}"),
            people: vec![firm_person(mailbox), counterparty],
            mailboxes: BTreeSet::from([mailbox.to_string()]),
            last: None,
        }
    }

    fn fresh_events(&mut self, room: &Room, day: usize, count: u64) -> Vec<Event> {
        let date = self.date(day);
        let mut times: Vec<String> = (0..count).map(|_| self.time(date, 6, 23)).collect();
        times.sort();
        times
            .into_iter()
            .map(|time| {
                let who = pick(&mut self.rng, &room.people).clone();
                self.message(&room.id, &who, time)
            })
            .collect()
    }
}

fn conversation_xml(room: &Room, kind: &str, events: &[Event], indent: &str) -> String {
    let mut xml = format!(
        "{indent}<Conversation Id=\"{}\" Type=\"{kind}\" RoomName=\"Desk {} – Zürich\">\n{indent}  <Participants>\n",
        room.id, room.id
    );
    for p in &room.people {
        xml.push_str(&format!(
            "{indent}    <Participant ImId=\"{}\" Name=\"{}\" Company=\"Co\" Email=\"{}\"/>\n",
            p.im_id,
            escape(&p.name),
            p.email
        ));
    }
    xml.push_str(&format!("{indent}  </Participants>\n"));
    for event in events {
        xml.push_str(&format!("{indent}  {}\n", event.xml));
    }
    xml.push_str(&format!("{indent}</Conversation>\n"));
    xml
}

fn export_xml(date: NaiveDate, conversations: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IceChatExport FirmCode=\"ACME\" ExportDate=\"{date}\" Version=\"1\">\n{}</IceChatExport>\n",
        conversations.concat()
    )
}

impl Plan {
    fn expect(&mut self, room: &Room, events: &[Event]) {
        for event in events {
            if let Some(token) = &event.token {
                self.fates
                    .insert(token.clone(), Fate::Mailboxes(room.mailboxes.clone()));
            }
            if let Some(name) = &event.transfer {
                self.transfers.insert(name.clone(), room.mailboxes.clone());
            }
            self.events_by_day
                .entry(event.day.clone())
                .or_default()
                .insert(event.identity.clone());
        }
        self.figures.conversations_listed += 1;
        self.figures.messages_listed += events.iter().filter(|e| e.token.is_some()).count();
    }
}

/// A conversation as one file lists it: the room, its `Type`, its events.
type Listing = (Room, &'static str, Vec<Event>);

/// Where the encrypted exports are made.
struct Staging<'a> {
    firm: &'a Firm,
    dir: &'a Path,
    days: usize,
}

impl Staging<'_> {
    /// Encrypts (to the firm) and signs (as ICE) an export with GnuPG.
    fn encrypt(&self, name: &str, xml: &str) -> PathBuf {
        let plain = self.dir.join(format!("{name}.plain"));
        if let Some(parent) = plain.parent() {
            std::fs::create_dir_all(parent).expect("staging dir");
        }
        std::fs::write(&plain, xml).expect("plain export");
        let target = self.dir.join(name);
        self.firm
            .gpg
            .encrypt(&plain, &target, FIRM_UID, Some(SIGNER_UID), false);
        target
    }
}

/// The exports of `days` days from the seed, encrypted and signed by GnuPG
/// into `staging`, with the day each file arrives on.
fn generate(staging: &Staging<'_>, seed: u64) -> Plan {
    let (y, m, d) = FIRST_DAY;
    let mut gen = Generator {
        rng: Rng::new(seed),
        next: 0,
        start: NaiveDate::from_ymd_opt(y, m, d).expect("a date"),
    };
    let mut rooms = rooms(&mut gen.rng);
    let mut plan = Plan {
        drops: Vec::new(),
        fates: BTreeMap::new(),
        transfers: BTreeMap::new(),
        events_by_day: BTreeMap::new(),
        bad: Vec::new(),
        figures: Figures {
            seed,
            days: staging.days,
            ..Default::default()
        },
    };
    for day in 0..staging.days {
        let mut listed = listings(&mut gen, &mut rooms, &mut plan, day);
        files_of_the_day(&mut gen, &mut plan, &mut listed, staging, day);
    }
    plan.figures.distinct_messages = plan.fates.len();
    plan.figures.file_transfers = plan.transfers.len();
    plan.figures.events_distinct = plan.events_by_day.values().map(BTreeSet::len).sum();
    plan.figures.bad_conversations = plan.bad.len();
    plan
}

/// What day `day`'s file lists, in file order: every persistent room, the
/// day's ad hoc chats, now and then a bad conversation.
fn listings(gen: &mut Generator, rooms: &mut [Room], plan: &mut Plan, day: usize) -> Vec<Listing> {
    let mut listed = Vec::new();
    for room in rooms.iter_mut() {
        let events = gen.room_events(room, day);
        room.last = events.last().cloned();
        plan.expect(room, &events);
        listed.push((room.clone(), "PersistentChat", events));
    }
    for k in 0..gen.rng.range(0, 3) as usize {
        let room = gen.ad_hoc(day, k);
        let count = gen.rng.range(1, 4);
        let events = gen.fresh_events(&room, day, count);
        plan.expect(&room, &events);
        listed.push((room, "OneToOne", events));
    }
    if gen.rng.range(0, 3) == 0 {
        listed.push(bad_conversation(gen, plan, day));
    }
    listed
}

/// The day's file, and perhaps the same bytes again under another name
/// (that day or the next) and a regenerated version under its name (a day
/// or two later; on the last day that day, replacing the first before any
/// run fetches it).
fn files_of_the_day(
    gen: &mut Generator,
    plan: &mut Plan,
    listed: &mut [Listing],
    staging: &Staging<'_>,
    day: usize,
) {
    let date = gen.date(day);
    let last = staging.days - 1;
    let xml = |listed: &[Listing], indent: &str| {
        let conversations: Vec<String> = listed
            .iter()
            .map(|(room, kind, events)| conversation_xml(room, kind, events, indent))
            .collect();
        export_xml(date, &conversations)
    };
    let name = format!("ACME_{date}.xml.pgp");
    let daily = staging.encrypt(&name, &xml(listed, "  "));
    plan.push(day, &name, daily.clone(), FileKind::Daily);
    if gen.rng.range(0, 5) == 0 {
        let again = format!("ACME_{date}_resent.xml.pgp");
        let copy = staging.dir.join(&again);
        std::fs::copy(&daily, &copy).expect("copy");
        let on = (day + gen.rng.range(0, 2) as usize).min(last);
        plan.push(on, &again, copy, FileKind::Redelivered);
    }
    if gen.rng.range(0, 5) == 0 {
        let kind = regenerate(gen, plan, listed, day);
        let file = staging.encrypt(&format!("regenerated-{day}/{name}"), &xml(listed, "    "));
        let on = (day + 1 + gen.rng.range(0, 2) as usize).min(last);
        plan.push(on, &name, file, kind);
    }
}

impl Plan {
    fn push(&mut self, on_day: usize, name: &str, encrypted: PathBuf, kind: FileKind) {
        *self.figures.files.entry(kind.label().into()).or_default() += 1;
        self.drops.push(Arrival {
            on_day,
            name: name.to_string(),
            encrypted,
        });
    }
}

/// A conversation of the day with one message whose time is not a time:
/// quarantined whole, with a reason, while the rest of its file goes on.
fn bad_conversation(gen: &mut Generator, plan: &mut Plan, day: usize) -> Listing {
    let mut room = gen.ad_hoc(day, 9);
    room.id = format!("bad-{day}");
    let mut events = gen.fresh_events(&room, day, 2);
    events[1].xml = events[1].xml.replace(
        &format!("Timestamp=\"{}", &events[1].day),
        "Timestamp=\"yesterday-",
    );
    for event in &events {
        if let Some(token) = &event.token {
            plan.fates.insert(token.clone(), Fate::Quarantined);
        }
    }
    plan.bad.push((room.id.clone(), gen.date(day).to_string()));
    plan.figures.conversations_listed += 1;
    (room, "OneToOne", events)
}

/// The day's file as the source regenerates it under its old name: the
/// same conversations in another order (and layout), or with one more
/// message in one of them.
fn regenerate(
    gen: &mut Generator,
    plan: &mut Plan,
    listed: &mut [Listing],
    day: usize,
) -> FileKind {
    let n = listed.len();
    for i in (1..n).rev() {
        let j = gen.rng.range(0, i as u64 + 1) as usize;
        listed.swap(i, j);
    }
    let good: Vec<usize> = (0..n)
        .filter(|&i| !listed[i].0.id.starts_with("bad-"))
        .collect();
    if gen.rng.range(0, 2) == 0 || good.is_empty() {
        return FileKind::RegeneratedReordered;
    }
    let i = *pick(&mut gen.rng, &good);
    let extra = gen.fresh_events(&listed[i].0, day, 1);
    plan.expect(&listed[i].0, &extra);
    // One more listing of the room counted by `expect`; it is the same one.
    plan.figures.conversations_listed -= 1;
    listed[i].2.extend(extra);
    FileKind::RegeneratedSuperset
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The process stops at its n-th store operation.
    Crash(usize),
    /// `chat-archive run` killed with SIGKILL once it has written n files.
    Sigkill(usize),
    /// The store unreachable from its n-th operation to the end of the run.
    StoreOutage(usize),
    /// The mail server unreachable from the n-th delivery on.
    MailOutage(usize),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Crash(_) => "crash at a store operation",
            Fault::Sigkill(_) => "SIGKILL of chat-archive run",
            Fault::StoreOutage(_) => "store outage",
            Fault::MailOutage(_) => "mail server outage",
        }
    }
}

/// How a run ended.
#[derive(Debug)]
enum Ended {
    Completed,
    /// The fault struck: the run failed or was stopped.
    Struck(String),
    /// The run ended before the fault's point.
    NotReached,
}

/// How much a clean run did, to place the next faults inside a run.
#[derive(Debug, Clone, Copy)]
struct RunSize {
    store_calls: usize,
    deliveries: usize,
    files_written: usize,
}

/// The store hook of a run: counts operations, and at the fault's point
/// stops the process (a panic: the run ends at that very operation) or
/// takes the store away for the rest of the run.
fn strike_at_store_operation(
    fault: Option<Fault>,
    calls: Arc<AtomicUsize>,
    struck: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) -> impl Fn(Call<'_>) + Send + Sync + 'static {
    move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        match fault {
            Some(Fault::Crash(at)) if n == at => {
                struck.store(true, Ordering::SeqCst);
                panic!("crash injected by the soak at store operation {n}");
            }
            Some(Fault::StoreOutage(at)) if n == at => {
                struck.store(true, Ordering::SeqCst);
                down.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

pub struct Soak {
    pub config: SoakConfig,
    firm: Firm,
    plan: Plan,
    faults: Rng,
    size: RunSize,
    /// Every evidence object seen so far and its SHA-256.
    evidence: BTreeMap<String, String>,
    /// The day being run (for the fault log).
    today: usize,
}

impl Soak {
    /// The firm (keys by GnuPG, the five mailboxes) and every day's exports.
    pub fn new(config: SoakConfig) -> Self {
        let mut firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
        if std::env::var_os("SOAK_KEEP").is_some() {
            // For a post-mortem of a failing seed: the store, the mailboxes, the logs.
            firm.dir.disable_cleanup(true);
            eprintln!(
                "soak data directory (kept): {}",
                firm.layout.data_dir.display()
            );
        }
        let mut connector = ConnectorConfig::ice();
        connector.firm_domains = vec![DOMAIN.into()];
        connector.signature_policy = SignaturePolicy::Required;
        connector.granularity = config.granularity;
        firm.write_config(connector);
        let staging = firm.dir.path().join("staging");
        std::fs::create_dir_all(&staging).expect("staging");
        let mut plan = generate(
            &Staging {
                firm: &firm,
                dir: &staging,
                days: config.days,
            },
            config.seed,
        );
        plan.figures.granularity = match config.granularity {
            Granularity::Message => "message".into(),
            Granularity::ConversationDay => "conversation-day".into(),
        };
        Self {
            faults: Rng::new(config.seed ^ 0xFA17_5EED_0000_0001),
            config,
            firm,
            plan,
            size: RunSize {
                store_calls: 200,
                deliveries: 10,
                files_written: 40,
            },
            evidence: BTreeMap::new(),
            today: 0,
        }
    }

    fn context(&self) -> String {
        self.config.replay()
    }

    /// Day by day: the day's files arrive, a run (perhaps struck by a
    /// fault), a retry now or tomorrow, events delivered again, re-runs.
    pub async fn run_days(&mut self) {
        for day in 0..self.config.days {
            self.today = day;
            self.arrive(day);
            let fault = self.draw_fault();
            let struck = self.run(fault).await;
            if struck && self.faults.range(0, 2) == 0 {
                self.run(None).await;
            }
            if self.faults.range(0, 3) == 0 {
                self.redeliver_events().await;
            }
            if self.faults.range(0, 5) == 0 {
                self.plan.figures.reruns += 1;
                self.run(None).await;
            }
            self.assert_append_only(&format!("after day {day}"));
        }
        // The last day's fault (if any) is over: the next run catches up.
        self.run(None).await;
        let settled = evidence(&self.firm.layout.store());
        self.plan.figures.reruns += 1;
        self.run(None).await;
        assert_eq!(
            evidence(&self.firm.layout.store()),
            settled,
            "{}: a run with nothing new wrote evidence",
            self.context()
        );
    }

    /// Puts the files that arrive on `day` into the drop directory, with a
    /// modification time of that day (a regenerated file is visibly newer).
    fn arrive(&mut self, day: usize) {
        let (y, m, d) = FIRST_DAY;
        let base = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                NaiveDate::from_ymd_opt(y, m, d)
                    .and_then(|d| d.and_hms_opt(6, 0, 0))
                    .expect("a time")
                    .and_utc()
                    .timestamp() as u64,
            );
        for (k, drop) in self.plan.drops.iter().enumerate() {
            if drop.on_day != day {
                continue;
            }
            let target = self.firm.layout.drop_dir().join(&drop.name);
            std::fs::copy(&drop.encrypted, &target).expect("into the drop directory");
            let mtime = base + Duration::from_secs(day as u64 * 86_400 + k as u64);
            std::fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(mtime))
                .expect("mtime");
        }
    }

    /// A fault at a point drawn within the size of the last clean run (a
    /// point beyond the run's end leaves it unstruck, which is counted).
    fn draw_fault(&mut self) -> Option<Fault> {
        let (size, cli) = (self.size, self.config.cli.is_some());
        // Each kind on about one day in five, no fault on the fifth left.
        let roll = self.faults.range(0, 10);
        let mut within = |n: usize| self.faults.range(1, n.max(2) as u64 + 1) as usize;
        match roll {
            0..=1 => Some(Fault::Crash(within(size.store_calls))),
            2..=3 if cli => Some(Fault::Sigkill(within(size.files_written))),
            2..=3 => Some(Fault::Crash(within(size.store_calls))),
            4..=5 => Some(Fault::StoreOutage(within(size.store_calls))),
            6..=7 => Some(Fault::MailOutage(within(size.deliveries))),
            _ => None,
        }
    }

    /// One run of the pipeline, struck by `fault`. Returns whether it struck.
    async fn run(&mut self, fault: Option<Fault>) -> bool {
        let ended = match fault {
            Some(Fault::Sigkill(n)) => self.run_cli_killed(n),
            _ => self.run_in_process(fault).await,
        };
        let kind = fault.map(|f| f.kind()).unwrap_or("none");
        match &ended {
            Ended::Completed => false,
            Ended::NotReached => {
                *self
                    .plan
                    .figures
                    .faults_not_reached
                    .entry(kind.into())
                    .or_default() += 1;
                false
            }
            Ended::Struck(how) => {
                *self
                    .plan
                    .figures
                    .faults_injected
                    .entry(kind.into())
                    .or_default() += 1;
                self.plan.figures.failed_runs += 1;
                // One line per fault, for the post-mortem of a failing seed.
                let first = how.lines().next().unwrap_or_default();
                let at = fault.map(|f| format!("{f:?}")).unwrap_or_default();
                eprintln!("day {}: {kind} ({at}): {first:.200}", self.today);
                true
            }
        }
    }

    /// The pipeline in this process, its store and sink wrapped so that the
    /// fault strikes at an exact operation. A run without a fault must
    /// complete; its size places the next faults.
    async fn run_in_process(&mut self, fault: Option<Fault>) -> Ended {
        let mut pipeline = self.firm.pipeline();
        let calls = Arc::new(AtomicUsize::new(0));
        let struck = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let store: Arc<dyn ObjectStore> = Arc::new(HookStore::fallible(
            pipeline.ctx.store.clone(),
            outage(down.clone()),
        ));
        let hook = strike_at_store_operation(fault, calls.clone(), struck.clone(), down);
        pipeline.ctx.store = Arc::new(HookStore::new(store, hook));
        let mail_at = match fault {
            Some(Fault::MailOutage(at)) => at,
            _ => 0,
        };
        let sink = Arc::new(OutageSink::new(pipeline.sink.clone(), mail_at));
        pipeline.sink = sink.clone();
        let before = work_done(&self.firm.layout.data_dir);
        let outcome = tokio::spawn(async move {
            pipeline
                .run(&FetchRequest::default(), &Silent)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|panic| panic.to_string());
        let struck = struck.load(Ordering::SeqCst) || sink.down.load(Ordering::SeqCst);
        if outcome.is_ok() && !struck {
            self.size = RunSize {
                store_calls: calls.load(Ordering::SeqCst),
                deliveries: sink.deliveries.load(Ordering::SeqCst),
                files_written: work_done(&self.firm.layout.data_dir) - before,
            };
        }
        match (outcome, struck) {
            (Ok(Ok(())), false) if fault.is_some() => Ended::NotReached,
            (Ok(Ok(())), false) => Ended::Completed,
            (Ok(Ok(())), true) => Ended::Struck("the run completed after the fault".into()),
            (Ok(Err(e)) | Err(e), true) => Ended::Struck(e),
            (Ok(Err(e)), false) => panic!("{}: a run failed without a fault: {e}", self.context()),
            (Err(e), false) => panic!("{}: a run panicked without a fault: {e}", self.context()),
        }
    }

    /// `chat-archive run` as the operator starts it, killed once it has
    /// written `n` files beyond what the data directory held.
    fn run_cli_killed(&mut self, n: usize) -> Ended {
        let bin = self.config.cli.clone().expect("the CLI binary");
        let dir = self.firm.layout.data_dir.clone();
        let kill_at = work_done(&dir) + n;
        match run_killed_at(&bin, &dir, kill_at) {
            Ok(done) => Ended::Struck(format!("SIGKILL after {done} files")),
            Err(status) => {
                let log = std::fs::read_to_string(dir.join("killed.log")).unwrap_or_default();
                // A run that finished exits non-zero when it quarantined
                // something, for the operator to look: not a failure here.
                if status.success() || log.contains("Run finished.") {
                    Ended::NotReached
                } else {
                    panic!(
                        "{}: chat-archive run failed ({status}):\n{log}",
                        self.context()
                    )
                }
            }
        }
    }

    /// Events of earlier stages delivered again (at-least-once delivery):
    /// a few raw, plain and mail objects of the store, each stage run again
    /// on them. Nothing may change.
    async fn redeliver_events(&mut self) {
        let pipeline = self.firm.pipeline();
        let store = pipeline.ctx.store.clone();
        let mut keys = Vec::new();
        for prefix in ["raw/ice/", "plain/ice/", "mail/ice/"] {
            let listed = store.list(prefix).await.expect("list");
            let listed: Vec<String> = listed
                .into_iter()
                .filter(|k| !k.starts_with("mail/") || k.ends_with(".json"))
                .collect();
            if !listed.is_empty() {
                keys.push(pick(&mut self.faults, &listed).clone());
            }
        }
        let Some(raw) = keys.iter().find(|k| k.starts_with("raw/")).cloned() else {
            return;
        };
        let decrypt_keys = pipeline.decrypt_keys(&raw).await.expect("keys");
        let table = import::load_mapping(&pipeline.ctx).await.expect("mapping");
        let config = pipeline.ctx.config.clone();
        let mut mapper = Mapper::new(&config, &table, pipeline.sink.as_ref() as &dyn MailboxSink);
        for key in keys {
            let event = s3_put_event(&pipeline.bucket, std::slice::from_ref(&key));
            pipeline
                .handle_s3_event(&event, Some(&decrypt_keys), &mut mapper)
                .await
                .unwrap_or_else(|e| panic!("{}: {key} delivered again: {e}", self.context()));
            self.plan.figures.events_redelivered += 1;
        }
    }

    /// Nothing written before has changed; the store never had to keep an
    /// earlier version of an evidence object.
    fn assert_append_only(&mut self, when: &str) {
        let now = evidence(&self.firm.layout.store());
        for (key, sha) in &self.evidence {
            assert_eq!(
                now.get(key),
                Some(sha),
                "{}: {when}: evidence object {key} changed or vanished",
                self.context()
            );
        }
        let versions = self.firm.layout.store().join(".versions");
        assert!(
            !versions.exists(),
            "{}: {when}: an evidence object was overwritten with other content: {}",
            self.context(),
            versions.display()
        );
        self.evidence = now;
    }
}

// ---------------------------------------------------------------------------
// The invariants, read back independently.

impl Soak {
    /// Every invariant; returns the figures of what ran.
    pub async fn check(&mut self) -> Figures {
        let context = self.context();
        self.assert_append_only("at the end");
        let store = LocalStore::new(self.firm.layout.store());
        assert_store_objects_whole(&store, &context).await;
        let pending = self
            .firm
            .pipeline()
            .pending_raw_keys()
            .await
            .expect("pending");
        assert!(
            pending.is_empty(),
            "{context}: files left half-way: {pending:?}"
        );

        let mails = self.read_mailboxes();
        self.assert_outside_gets_nothing(&context);
        self.assert_each_event_once(&mails, &context);
        self.assert_quarantined_with_reason(&store, &context).await;
        self.assert_status_matches(&store, &mails, &context).await;
        self.plan.figures.mails_in_mailboxes = mails.values().map(Vec::len).sum();
        self.plan.figures.clone()
    }

    /// Each firm mailbox's folder, read by Python's `email` package.
    fn read_mailboxes(&self) -> BTreeMap<String, Vec<ReadMail>> {
        let root = self.firm.layout.mailboxes();
        let folders: Vec<PathBuf> = MAILBOXES.iter().map(|m| ice_folder(&root, m)).collect();
        let read = read_folders(&folders);
        MAILBOXES
            .iter()
            .zip(folders)
            .map(|(m, f)| (m.to_string(), read.get(&f).cloned().unwrap_or_default()))
            .collect()
    }

    /// Only the firm's mailboxes hold mail (not the firm address without a
    /// mailbox, no one of another firm).
    fn assert_outside_gets_nothing(&self, context: &str) {
        let with_mail = self.firm.mailboxes_with_mail();
        for mailbox in &with_mail {
            assert!(
                MAILBOXES.contains(&mailbox.as_str()),
                "{context}: {mailbox} received mail"
            );
        }
    }

    fn assert_each_event_once(&self, mails: &BTreeMap<String, Vec<ReadMail>>, context: &str) {
        for (mailbox, folder) in mails {
            let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
            for mail in folder {
                *ids.entry(mail.message_id.as_str()).or_default() += 1;
            }
            let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
            assert!(
                doubled.is_empty(),
                "{context}: {mailbox}: Message-IDs with several copies: {doubled:?}"
            );
            let mut wrong = Vec::new();
            for (token, fate) in &self.plan.fates {
                let want = usize::from(matches!(fate, Fate::Mailboxes(m) if m.contains(mailbox)));
                let got: usize = folder.iter().map(|m| m.plain.matches(token).count()).sum();
                if got != want {
                    wrong.push(format!("{token}: {got} (want {want}, {fate:?})"));
                }
            }
            for (name, right) in &self.plan.transfers {
                let want = usize::from(right.contains(mailbox));
                let got = folder
                    .iter()
                    .flat_map(|m| &m.attachments)
                    .filter(|a| a.filename.as_deref() == Some(name.as_str()))
                    .count();
                if got != want {
                    wrong.push(format!("file transfer {name:?}: {got} (want {want})"));
                }
            }
            assert!(
                wrong.is_empty(),
                "{context}: {mailbox}: {} events not there exactly as often as they must be:\n{}",
                wrong.len(),
                wrong.join("\n")
            );
        }
    }

    /// Each bad conversation is under `quarantine/` (a copy per file that
    /// held it, the original XML of that conversation) with a reason beside
    /// it that names the file and the bad time; nothing else is there.
    async fn assert_quarantined_with_reason(&self, store: &LocalStore, context: &str) {
        let keys = store.list("quarantine/").await.expect("list quarantine/");
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for key in keys.iter().filter(|k| k.ends_with(".xml")) {
            let body =
                String::from_utf8_lossy(&store.get_bytes(key).await.expect("copy")).into_owned();
            let reason_key = format!("{key}.reason.json");
            let reason = store
                .get_bytes(&reason_key)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| panic!("{context}: {key} has no reason ({reason_key}): {e}"));
            let bad = self.plan.bad.iter().find(|(id, day)| {
                body.contains(&format!("Id=\"{id}\"")) && key.contains(day.as_str())
            });
            let Some((id, _)) = bad else {
                panic!("{context}: quarantined although nothing in it is bad: {key}");
            };
            let file = key
                .strip_prefix("quarantine/")
                .and_then(|k| k.rsplit_once('/'))
                .map_or("", |(file, _)| file);
            assert!(
                reason.contains("yesterday-") && reason.contains(file),
                "{context}: {reason_key} does not name the file {file} and the bad time: {reason}"
            );
            *copies.entry(id.clone()).or_default() += 1;
        }
        for (id, file_day) in &self.plan.bad {
            assert!(
                copies.contains_key(id),
                "{context}: bad conversation {id} (file of {file_day}) not quarantined: {keys:?}"
            );
        }
    }

    /// Per day: the status log (rebuilt from its records, as the daily
    /// status schedule does) adds up, nothing is pending, partial or a
    /// duplicate, its copies and items are what the mailboxes hold, every
    /// failure has a reason, and its delivered events are the day's events.
    async fn assert_status_matches(
        &self,
        store: &LocalStore,
        mails: &BTreeMap<String, Vec<ReadMail>>,
        context: &str,
    ) {
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        let mut items: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for mail in mails.values().flatten() {
            *copies.entry(mail.day.as_str()).or_default() += 1;
            items
                .entry(mail.day.as_str())
                .or_default()
                .insert(mail.message_id.as_str());
        }
        for (day, events) in &self.plan.events_by_day {
            let status: DayStatus = status::rebuild_day(store, "ice", day)
                .await
                .unwrap_or_else(|e| panic!("{context}: status of {day}: {e}"));
            let here = format!("{context}: {day}");
            assert!(status.counts_add_up(), "{here}: {status:#?}");
            assert_eq!(
                (
                    status.pending,
                    status.partially_imported,
                    status.skipped_duplicates
                ),
                (0, 0, 0),
                "{here}: pending, partial, duplicates: {status:#?}"
            );
            let refused = status
                .failures
                .iter()
                .filter(|f| !f.target_mailbox.is_empty())
                .count() as u64;
            assert_eq!(
                (
                    status.available_after_fanout.saturating_sub(refused),
                    status.imported
                ),
                (
                    copies.get(day.as_str()).copied().unwrap_or(0) as u64,
                    items.get(day.as_str()).map_or(0, BTreeSet::len) as u64
                ),
                "{here}: (copies, items imported) by the status log and in the mailboxes"
            );
            assert!(
                status.failures.iter().all(|f| !f.reason.trim().is_empty()),
                "{here}: a failure without its reason: {:?}",
                status.failures
            );
            assert_eq!(
                status.events.delivered,
                events.len() as u64,
                "{here}: events delivered by the status log and events of the day in the exports"
            );
        }
    }
}

/// Runs a whole soak; on any failure the panic message (and a last line
/// on stderr) says how to replay it.
pub async fn soak(config: SoakConfig) -> Figures {
    let replay = config.replay();
    eprintln!("{replay}");
    let outcome = tokio::spawn(async move {
        let mut soak = Soak::new(config);
        soak.run_days().await;
        soak.check().await
    })
    .await;
    match outcome {
        Ok(figures) => {
            eprintln!(
                "soak figures: {}",
                serde_json::to_string(&figures).expect("figures JSON")
            );
            figures
        }
        Err(e) => {
            eprintln!("FAILED: {replay}");
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("{replay}: {e}"),
            }
        }
    }
}
