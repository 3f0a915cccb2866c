//! Exactly once per chat event, with exports shaped the way they really
//! arrive: a UTC day split over two files (ICE's day is New York time), a
//! room listed again the next day, the same file sent twice under two names,
//! a file regenerated under its old name with more in it, two overlapping
//! files processed at once, a crash between claiming a continuation's events
//! and delivering it, and one mail per message with a repeated file.
//!
//! Every check reads the mailboxes back with Python's `email` package and
//! counts each message's unique token in the text bodies: every token is in
//! every right mailbox exactly once, and in no other. No evidence object
//! (`raw/`, `plain/`, `mail/`, `quarantine/`) ever changes once written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chat_archive_core::config::{ConnectorConfig, Granularity};
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::{RunSummary, Silent};
use chat_archive_core::status::DayStatus;
use integration_tests::faults::{at_nth_call, Call, HookStore};
use integration_tests::hostile::day_status;
use integration_tests::local::Firm;
use integration_tests::readback::{occurrences, read_folder, ReadMail};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const FOLDER: &str = "ICE Chat";

/// The participants every test room lists: two of the firm, one
/// counterparty of another firm, who must never get a copy.
const PARTICIPANTS: &str = "<Participants>\
    <Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"jdoe@acme.example\"/>\
    <Participant ImId=\"asmith2\" Name=\"Alice Smith\" Email=\"asmith@acme.example\"/>\
    <Participant ImId=\"zmuller7\" Name=\"Zoë Müller\" Company=\"Globex\" Email=\"zoe@globex.example\"/>\
    </Participants>";

/// A chat message whose text carries `[[token]]`.
fn message(time: &str, who: &str, token: &str) -> String {
    format!("<Message ImId=\"{who}\" Timestamp=\"{time}\">[[{token}]] about the Dec/Jan spread</Message>")
}

fn room(id: &str, events: &[String]) -> String {
    format!(
        "<Conversation Id=\"{id}\" Type=\"PersistentChat\" RoomName=\"Rates desk {id}\">{PARTICIPANTS}<Events>{}</Events></Conversation>",
        events.concat()
    )
}

fn export(day: &str, rooms: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n{}\n</IceChatExport>\n",
        rooms.join("\n")
    )
}

/// ICE's export of New York's 2026-11-20 (05:00Z to 05:00Z): room r-1's
/// UTC 20th and the first hours of the UTC 21st.
fn file_of_the_20th() -> String {
    export(
        "2026-11-20",
        &[room(
            "r-1",
            &[
                message("2026-11-20T14:00:00Z", "jdoe1", "A1"),
                message("2026-11-20T14:01:00Z", "asmith2", "A2"),
                message("2026-11-21T02:00:00Z", "jdoe1", "A3"),
            ],
        )],
    )
}

/// The next day's export: the room listed again, repeating the last
/// message of the day before (exports of this family overlap), someone
/// entering, and new messages, on the UTC 21st.
fn file_of_the_21st() -> String {
    export(
        "2026-11-21",
        &[room(
            "r-1",
            &[
                message("2026-11-21T02:00:00Z", "jdoe1", "A3"),
                "<Entered ImId=\"asmith2\" Timestamp=\"2026-11-21T06:00:00Z\"/>".to_string(),
                message("2026-11-21T06:01:00Z", "asmith2", "B1"),
                message("2026-11-21T06:02:00Z", "zmuller7", "B2"),
            ],
        )],
    )
}

const NAME_20: &str = "ACME_2026-11-20.xml.pgp";
const NAME_21: &str = "ACME_2026-11-21.xml.pgp";

fn new_firm(granularity: Granularity) -> Firm {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    config.granularity = granularity;
    firm.write_config(config);
    firm
}

async fn run(firm: &Firm) -> RunSummary {
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run")
}

fn folder_dir(firm: &Firm, mailbox: &str) -> PathBuf {
    chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
        .folder_dir(mailbox, FOLDER)
        .expect("folder")
}

fn mails(firm: &Firm, mailbox: &str) -> Vec<ReadMail> {
    read_folder(&folder_dir(firm, mailbox))
}

/// Every token exactly once in each of the firm's mailboxes (both are in
/// every room), and no mailbox of anyone else ever created.
fn assert_each_token_once(firm: &Firm, tokens: &[&str], context: &str) {
    for mailbox in [JDOE, ASMITH] {
        let mails = mails(firm, mailbox);
        for token in tokens {
            let token = format!("[[{token}]]");
            assert_eq!(
                occurrences(&mails, &token),
                1,
                "{context}: {token} in {mailbox}:\n{}",
                describe(&mails)
            );
        }
    }
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()],
        "{context}: only the firm's mailboxes hold mail"
    );
}

fn describe(mails: &[ReadMail]) -> String {
    mails
        .iter()
        .map(|m| {
            format!(
                "{} {} | {}",
                m.message_id,
                m.subject,
                m.plain.replace('\n', " / ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn evidence(firm: &Firm) -> BTreeMap<String, String> {
    integration_tests::faults::evidence(&firm.layout.store())
}

/// Nothing written before has changed, and the store never had to keep an
/// earlier version of an evidence object.
fn assert_append_only(firm: &Firm, before: &BTreeMap<String, String>, context: &str) {
    let after = evidence(firm);
    for (key, sha) in before {
        assert_eq!(
            after.get(key),
            Some(sha),
            "{context}: evidence object {key} changed or vanished"
        );
    }
    let versions = firm.layout.store().join(".versions");
    assert!(
        !versions.exists(),
        "{context}: an evidence object was overwritten with other content"
    );
}

fn assert_adds_up(status: &DayStatus, context: &str) {
    assert!(status.counts_add_up(), "{context}: {status:#?}");
}

#[tokio::test]
async fn a_day_split_over_two_files_gets_a_continuation_with_only_the_new_events() {
    let firm = new_firm(Granularity::ConversationDay);
    firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    run(&firm).await;
    assert_each_token_once(&firm, &["A1", "A2", "A3"], "after the 20th");
    let before = evidence(&firm);

    firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);
    run(&firm).await;
    let context = "after the 21st";
    assert_each_token_once(&firm, &["A1", "A2", "A3", "B1", "B2"], context);
    assert_append_only(&firm, &before, context);

    // Day 21 has two mails in each mailbox: the first (from the file of
    // the 20th) and a continuation threaded to it, carrying only B1, B2.
    for mailbox in [JDOE, ASMITH] {
        let mails = mails(&firm, mailbox);
        let of_21st: Vec<&ReadMail> = mails.iter().filter(|m| m.day == "2026-11-21").collect();
        assert_eq!(of_21st.len(), 2, "{mailbox}:\n{}", describe(&mails));
        let first = of_21st
            .iter()
            .find(|m| m.in_reply_to.is_empty())
            .expect("the day's first mail");
        let continuation = of_21st
            .iter()
            .find(|m| !m.in_reply_to.is_empty())
            .expect("a continuation");
        assert!(first.plain.contains("[[A3]]"));
        assert_eq!(continuation.in_reply_to, first.message_id);
        assert_eq!(continuation.references, first.message_id);
        assert!(
            continuation.subject.contains("part 2"),
            "{}",
            continuation.subject
        );
        assert!(
            continuation.plain.contains("continues an earlier part"),
            "{}",
            continuation.plain
        );
        assert!(continuation.plain.contains("entered the conversation"));
        assert!(!continuation.plain.contains("[[A3]]"), "no event repeated");
        assert!(continuation.source_file.ends_with(NAME_21));
        assert!(first.source_file.ends_with(NAME_20));
    }

    let status = day_status(&firm, "2026-11-21");
    assert_adds_up(&status, context);
    assert_eq!(
        (status.available_from_source, status.imported),
        (2, 2),
        "{status:#?}"
    );
    let events = status.events;
    assert_eq!(
        (events.received, events.delivered, events.already_delivered),
        (5, 4, 1),
        "A3 from the 20th's file, A3 again + entered + B1 + B2 from the 21st's: {status:#?}"
    );
    let share = |name: &str| {
        status
            .sources
            .iter()
            .find(|s| s.key.ends_with(&name.replace(".pgp", "")))
            .unwrap_or_else(|| panic!("no source record for {name}: {status:#?}"))
    };
    assert_eq!(
        (share(NAME_20).items, share(NAME_20).events.delivered),
        (1, 1)
    );
    assert_eq!(
        (
            share(NAME_21).items,
            share(NAME_21).events.delivered,
            share(NAME_21).events.already_delivered
        ),
        (1, 3, 1)
    );
    // The 20th: one file, one mail.
    let status_20 = day_status(&firm, "2026-11-20");
    assert_adds_up(&status_20, "the 20th");
    assert_eq!((status_20.imported, status_20.events.delivered), (1, 2));

    // A run with nothing new changes nothing at all.
    let settled = evidence(&firm);
    run(&firm).await;
    assert_each_token_once(
        &firm,
        &["A1", "A2", "A3", "B1", "B2"],
        "a run with nothing new",
    );
    assert_eq!(
        evidence(&firm),
        settled,
        "a run with nothing new wrote evidence"
    );
}

#[tokio::test]
async fn the_same_file_twice_and_a_regenerated_file_are_counted_never_doubled() {
    let firm = new_firm(Granularity::ConversationDay);
    let first = firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    run(&firm).await;
    let before = evidence(&firm);

    // The very same encrypted file again, under another name.
    let resent = "ACME_2026-11-20_resent.xml.pgp";
    std::fs::copy(&first, firm.layout.drop_dir().join(resent)).expect("copy");
    let summary = run(&firm).await;
    assert_eq!(summary.processed_files.len(), 1, "{summary:?}");
    assert_each_token_once(
        &firm,
        &["A1", "A2", "A3"],
        "the same file under another name",
    );
    assert_append_only(&firm, &before, "the same file under another name");
    for day in ["2026-11-20", "2026-11-21"] {
        let status = day_status(&firm, day);
        assert_adds_up(&status, day);
        let again = status
            .sources
            .iter()
            .find(|s| s.key.contains("_resent"))
            .unwrap_or_else(|| panic!("{day}: the resent file has no record: {status:#?}"));
        assert_eq!(again.items, 0, "{day}: {again:?}");
        assert!(again.events.received > 0, "{day}: {again:?}");
        assert_eq!(
            again.events.already_delivered, again.events.received,
            "{day}: {again:?}"
        );
    }

    // The file regenerated under its old name: one more message in r-1 and
    // a new room. Both versions stay in the store, each traceable.
    let before = evidence(&firm);
    let mut regenerated = file_of_the_20th().replace(
        "</Events>",
        &format!(
            "{}</Events>",
            message("2026-11-20T15:00:00Z", "asmith2", "A4")
        ),
    );
    regenerated = regenerated.replace(
        "</IceChatExport>",
        &format!(
            "{}\n</IceChatExport>",
            room("r-2", &[message("2026-11-20T16:00:00Z", "jdoe1", "C1")])
        ),
    );
    // A visibly later modification time, as a regenerated file has.
    std::thread::sleep(std::time::Duration::from_millis(20));
    firm.drop_export(NAME_20, regenerated.as_bytes(), true);
    let summary = run(&firm).await;
    let context = "a regenerated file under the same name";
    assert_eq!(summary.fetched.len(), 1, "{context}: {summary:?}");
    let versioned = &summary.fetched[0];
    assert_ne!(
        versioned,
        &format!("raw/ice/{NAME_20}"),
        "{context}: kept beside the first"
    );
    assert!(versioned.ends_with(NAME_20), "{versioned}");
    assert_each_token_once(&firm, &["A1", "A2", "A3", "A4", "C1"], context);
    assert_append_only(&firm, &before, context);
    let jdoe = mails(&firm, JDOE);
    let c1 = jdoe
        .iter()
        .find(|m| m.plain.contains("[[C1]]"))
        .expect("C1");
    assert_eq!(
        &c1.source_file, versioned,
        "the new mail names the regenerated file"
    );
    let a1 = jdoe
        .iter()
        .find(|m| m.plain.contains("[[A1]]"))
        .expect("A1");
    assert_eq!(
        a1.source_file,
        format!("raw/ice/{NAME_20}"),
        "the first mail keeps its source"
    );
    let status = day_status(&firm, "2026-11-20");
    assert_adds_up(&status, context);
    assert_eq!(
        status.events.delivered, 4,
        "A1 A2 from the first, A4 C1 from the second: {status:#?}"
    );
}

#[tokio::test]
async fn one_mail_per_message_with_a_repeated_and_a_split_file() {
    let firm = new_firm(Granularity::Message);
    let first = firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    run(&firm).await;
    let before = evidence(&firm);
    std::fs::copy(
        &first,
        firm.layout.drop_dir().join("ACME_2026-11-20_again.xml.pgp"),
    )
    .expect("copy");
    firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);
    run(&firm).await;
    let context = "per message, a repeated and a split file";
    let tokens = ["A1", "A2", "A3", "B1", "B2"];
    assert_each_token_once(&firm, &tokens, context);
    assert_append_only(&firm, &before, context);
    for mailbox in [JDOE, ASMITH] {
        let mails = mails(&firm, mailbox);
        assert_eq!(mails.len(), tokens.len(), "{mailbox}: one mail per message");
        for mail in &mails {
            assert_eq!(mail.plain.matches("[[").count(), 1, "{}", mail.plain);
        }
    }
    for day in ["2026-11-20", "2026-11-21"] {
        assert_adds_up(&day_status(&firm, day), day);
    }
}

/// The operator's binary, as `scripts/` and cron run it.
fn chat_archive_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chat-archive-cli"))
}

#[tokio::test]
async fn two_processes_converting_overlapping_files_at_once_deliver_each_event_once() {
    let firm = new_firm(Granularity::ConversationDay);
    firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);
    let start = |log: &str| {
        let log = std::fs::File::create(firm.dir.path().join(log)).expect("log");
        Command::new(chat_archive_bin())
            .arg("--data-dir")
            .arg(&firm.layout.data_dir)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("chat-archive starts")
    };
    let mut runs = [start("one.log"), start("two.log")];
    for (run, log) in runs.iter_mut().zip(["one.log", "two.log"]) {
        let status = run.wait().expect("wait");
        assert!(
            status.success(),
            "{log}: {status}\n{}",
            std::fs::read_to_string(firm.dir.path().join(log)).unwrap_or_default()
        );
    }
    let context = "two processes at once";
    assert_each_token_once(&firm, &["A1", "A2", "A3", "B1", "B2"], context);
    for day in ["2026-11-20", "2026-11-21"] {
        let status = firm.pipeline().ctx.store.clone();
        let status = chat_archive_core::status::rebuild_day(status.as_ref(), "ice", day)
            .await
            .expect("status");
        assert_adds_up(&status, day);
        assert_eq!(status.failed + status.pending, 0, "{day}: {status:#?}");
    }
}

/// A crash (the process stops at that very operation; everything written
/// before it stays) at a point of the second file's run, then a rerun.
async fn crash_then_rerun(
    crash_at: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
    nth: usize,
    context: &str,
) {
    let firm = new_firm(Granularity::ConversationDay);
    firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    run(&firm).await;
    firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);

    let mut crashing = firm.pipeline();
    crashing.ctx.store = Arc::new(HookStore::new(
        crashing.ctx.store.clone(),
        at_nth_call(nth, crash_at, || panic!("crash injected by the test")),
    ));
    let crashed = tokio::spawn(async move {
        crashing
            .run(&FetchRequest::default(), &Silent)
            .await
            .map(|_| ())
    })
    .await;
    assert!(
        !matches!(crashed, Ok(Ok(()))),
        "{context}: the crash point was never reached"
    );

    let summary = run(&firm).await;
    assert_eq!(summary.processed_files.len(), 1, "{context}: {summary:?}");
    assert_each_token_once(&firm, &["A1", "A2", "A3", "B1", "B2"], context);
    let status = day_status(&firm, "2026-11-21");
    assert_adds_up(&status, context);
    assert_eq!(
        (
            status.imported,
            status.skipped_duplicates,
            status.events.delivered
        ),
        (2, 0, 4),
        "{context}: the continuation counts as imported once: {status:#?}"
    );
}

#[tokio::test]
async fn a_crash_after_claiming_a_continuation_and_before_writing_it_then_a_rerun() {
    crash_then_rerun(
        |call| matches!(call, Call::Put(key) if key.starts_with("mail/ice/2026-11-21/") && key.ends_with(".eml")),
        1,
        "crash between the ledger claim and the continuation mail",
    )
    .await;
}

#[tokio::test]
async fn a_crash_after_delivering_a_continuation_and_before_recording_it_then_a_rerun() {
    // The first write of the continuation's record is its pending record
    // (convert); the second is the import's, after the delivery.
    crash_then_rerun(
        |call| matches!(call, Call::Put(key) if key.starts_with("reports/ice/2026-11-21/items/")),
        2,
        "crash between delivering the continuation and recording it",
    )
    .await;
}

#[tokio::test]
async fn a_room_listed_without_events_converted_again_and_then_given_a_late_event_rewrites_nothing()
{
    // The 20th's file lists room r-9 without any event: one mail of its
    // own. The run stops before the file is marked done (at the status
    // log), so the next run converts the file again.
    let firm = new_firm(Granularity::ConversationDay);
    let quiet = export(
        "2026-11-20",
        &[
            room("r-1", &[message("2026-11-20T14:00:00Z", "jdoe1", "A1")]),
            room("r-9", &[]),
        ],
    );
    firm.drop_export(NAME_20, quiet.as_bytes(), true);
    let mut crashing = firm.pipeline();
    crashing.ctx.store = Arc::new(HookStore::new(
        crashing.ctx.store.clone(),
        at_nth_call(
            1,
            |call| matches!(call, Call::Put(key) if key.ends_with("/status.json")),
            || panic!("crash injected by the test"),
        ),
    ));
    let crashed = tokio::spawn(async move {
        crashing
            .run(&FetchRequest::default(), &Silent)
            .await
            .map(|_| ())
    })
    .await;
    assert!(crashed.is_err(), "the crash point was never reached");
    let before = evidence(&firm);
    let summary = run(&firm).await;
    assert_eq!(summary.processed_files.len(), 1, "{summary:?}");
    let context = "the file with a quiet room converted again";
    assert_append_only(&firm, &before, context);

    // A late event of r-9's 20th in the next file: a continuation of the
    // quiet day's mail, not that mail's id again.
    let before = evidence(&firm);
    let late = export(
        "2026-11-21",
        &[room(
            "r-9",
            &[message("2026-11-20T23:00:00Z", "asmith2", "Q1")],
        )],
    );
    firm.drop_export(NAME_21, late.as_bytes(), true);
    run(&firm).await;
    let context = "a late event of the quiet room's day";
    assert_append_only(&firm, &before, context);
    assert_each_token_once(&firm, &["A1", "Q1"], context);
    for mailbox in [JDOE, ASMITH] {
        let mails = mails(&firm, mailbox);
        let r9: Vec<&ReadMail> = mails.iter().filter(|m| m.subject.contains("r-9")).collect();
        assert_eq!(r9.len(), 2, "{mailbox}:\n{}", describe(&mails));
        assert!(
            r9.iter()
                .any(|m| m.plain.contains("[[Q1]]") && !m.in_reply_to.is_empty()),
            "{mailbox}: Q1 in a continuation:\n{}",
            describe(&mails)
        );
    }
    let status = day_status(&firm, "2026-11-20");
    assert_adds_up(&status, context);
    assert_eq!((status.imported, status.failed), (3, 0), "{status:#?}");
}

#[cfg(feature = "aws")]
mod on_s3 {
    use chat_archive_core::function::Function;
    use integration_tests::lambda_chain::{
        self as chain, take_events, MAIL_EVENTS, PLAIN_EVENTS, RAW_EVENTS,
    };
    use integration_tests::moto::Moto;

    use super::*;

    /// Two overlapping files converted by two function instances at the same
    /// moment, then their mails imported by two instances at once: the
    /// ledger's conditional writes on S3 decide which file carries each event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_lambda_invocations_converting_overlapping_files_at_once_deliver_each_event_once() {
        let moto = Moto::start();
        let firm = new_firm(Granularity::ConversationDay);
        firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
        firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);
        let kms_key = chain::set_up(&moto, &firm);
        let a = Arc::new(chain::lambda(moto.sdk_options(), &firm, &kms_key).await);
        let b = Arc::new(chain::lambda(moto.sdk_options(), &firm, &kms_key).await);
        a.handle(Function::Fetch, chain::schedule_event())
            .await
            .expect("fetch");
        for event in take_events(&moto, RAW_EVENTS) {
            a.handle(Function::Decrypt, event).await.expect("decrypt");
        }
        let plain = take_events(&moto, PLAIN_EVENTS);
        assert_eq!(plain.len(), 2);
        for (function, events) in [(Function::Convert, plain), (Function::Import, Vec::new())] {
            let events = match function {
                Function::Import => take_events(&moto, MAIL_EVENTS),
                _ => events,
            };
            let mut tasks = tokio::task::JoinSet::new();
            for (i, event) in events.into_iter().enumerate() {
                // Convert: file one on instance a and file two on b at once.
                // Import: every mail event on both instances at once.
                let instances = match function {
                    Function::Convert => vec![if i % 2 == 0 { a.clone() } else { b.clone() }],
                    _ => vec![a.clone(), b.clone()],
                };
                for lambda in instances {
                    let event = event.clone();
                    tasks.spawn(async move { lambda.handle(function, event).await });
                }
            }
            while let Some(joined) = tasks.join_next().await {
                joined
                    .expect("task")
                    .unwrap_or_else(|e| panic!("{function:?}: {e}"));
            }
        }
        assert!(
            take_events(&moto, MAIL_EVENTS).is_empty(),
            "the chain did not settle"
        );
        let context = "two Lambda instances at once on S3";
        assert_each_token_once(&firm, &["A1", "A2", "A3", "B1", "B2"], context);
        a.handle(Function::Import, chain::rebuild_status_event())
            .await
            .expect("status");
        let page = a
            .pipeline
            .ctx
            .store
            .get_bytes(chat_archive_core::layout::STATUS_PAGE)
            .await
            .expect("the status schedule writes the status page");
        let page = String::from_utf8(page).expect("utf-8");
        assert!(page.contains("data-day=\"2026-11-21\""), "{page}");
        for day in ["2026-11-20", "2026-11-21"] {
            let status =
                chat_archive_core::status::rebuild_day(a.pipeline.ctx.store.as_ref(), "ice", day)
                    .await
                    .expect("status");
            assert_adds_up(&status, day);
            let delivered = if day == "2026-11-20" { 2 } else { 4 };
            assert_eq!(status.events.delivered, delivered, "{day}: {status:#?}");
            assert_eq!(status.failed + status.pending, 0, "{day}: {status:#?}");
        }
    }
}

#[tokio::test]
async fn an_archive_made_before_the_ledger_gets_its_state_rebuilt_then_takes_continuations() {
    let firm = new_firm(Granularity::ConversationDay);
    firm.drop_export(NAME_20, file_of_the_20th().as_bytes(), true);
    run(&firm).await;
    // An archive from before the event ledger: mails keyed by conversation
    // and day, no state of which events they carry.
    let state = firm.layout.store().join("state/ice/events");
    assert!(
        state.is_dir(),
        "the run keeps its ledger under {}",
        state.display()
    );
    std::fs::remove_dir_all(&state).expect("remove the ledger");
    std::fs::remove_dir_all(firm.layout.store().join(".meta/state/ice/events")).expect("metadata");

    let rebuild = |context: &str| {
        let output = Command::new(chat_archive_bin())
            .arg("--data-dir")
            .arg(&firm.layout.data_dir)
            .args(["state", "rebuild", "--json"])
            .output()
            .expect("chat-archive runs");
        assert!(output.status.success(), "{context}: {output:?}");
        let line = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .map(str::to_string)
            .unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        report["rebuilt"].clone()
    };
    let first = rebuild("first rebuild");
    assert_eq!(first["parts"], 2, "two mails (the 20th, the 21st): {first}");
    assert_eq!(first["ledgers"], 2, "{first}");
    let again = rebuild("second rebuild");
    assert_eq!(
        (again["parts"].as_u64(), again["already_recorded"].as_u64()),
        (Some(0), Some(2))
    );

    firm.drop_export(NAME_21, file_of_the_21st().as_bytes(), true);
    run(&firm).await;
    assert_each_token_once(&firm, &["A1", "A2", "A3", "B1", "B2"], "after the rebuild");
    let status = day_status(&firm, "2026-11-21");
    assert_adds_up(&status, "after the rebuild");
    assert_eq!(
        status.events.already_delivered, 1,
        "A3 came again: {status:#?}"
    );
}
