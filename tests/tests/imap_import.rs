//! The import stage delivering into real mailboxes on a real Dovecot over
//! IMAP (TLS, master user): end to end, validity of mailboxes, credentials and
//! certificates, exactly-once across restarts, replays and concurrent writers,
//! refused messages, folders in the server's namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chat_archive_core::adapters::imap::{ImapAuth, ImapConfig, ImapSink};
use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::events::{s3_put_event, FetchRequest};
use chat_archive_core::function::{self, Function};
use chat_archive_core::pipeline::{Pipeline, Silent};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{Delivery, DeliveryOutcome, MailboxSink, ObjectStore, SecretValue};
use chrono::{TimeZone, Utc};
use integration_tests::dovecot::{self, client, Dovecot, Options};
use integration_tests::fixtures::{parse, SAMPLE};
use integration_tests::hostile::day_status;
use integration_tests::local::Firm;

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const ZOE: &str = "zoe.mueller@globex.example";
const DAY: &str = "2026-11-20";

/// A firm whose import goes to the Dovecot over TLS with the master user.
async fn imap_firm(server: &Dovecot, configure: impl FnOnce(&mut ConnectorConfig)) -> Firm {
    dovecot::firm_importing_to(server.imap_config(), configure).await
}

fn header_text(message: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    message
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .and_then(|h| h.value().as_text())
        .map(|t| t.trim().to_string())
}

/// Message-ID -> copies in a folder.
fn copies(messages: &[client::Fetched]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in messages {
        let id = parse(&m.raw).message_id().expect("Message-ID").to_string();
        *out.entry(id).or_default() += 1;
    }
    out
}

/// Every sidecar the convert stage wrote, for replaying the import.
async fn sidecars(firm: &Firm) -> Vec<String> {
    let store = chat_archive_core::adapters::LocalStore::new(firm.layout.store());
    let mut keys: Vec<String> = store
        .list("mail/ice/")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    keys
}

async fn replay_import(pipeline: &Pipeline, keys: &[String]) -> Vec<String> {
    let mut imported = Vec::new();
    for chunk in keys.chunks(500) {
        let event = serde_json::to_vec(&s3_put_event("local", chunk)).unwrap();
        imported.extend(
            function::invoke(pipeline, Function::Import, &event)
                .await
                .unwrap()
                .imported,
        );
    }
    imported
}

#[tokio::test]
async fn ice_chat_export_lands_in_the_right_imap_mailboxes() {
    // zoe has a mailbox on this server but is outside the firm's domains.
    let server = Dovecot::start(&[JDOE, ASMITH, ZOE]);
    let firm = imap_firm(&server, |c| {
        c.flags = vec!["\\Seen".into(), "\\Flagged".into()]
    })
    .await;
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let pipeline = firm.pipeline();
    let summary = pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert!(summary.quarantined.is_empty(), "{:?}", summary.quarantined);
    assert_eq!(summary.mails, 3);

    let jdoe = client::messages(server.imap_port, JDOE, "ICE Chat").await;
    let asmith = client::messages(server.imap_port, ASMITH, "ICE Chat").await;
    assert_eq!(jdoe.len(), 3, "jdoe is in all three conversations");
    assert_eq!(
        asmith.len(),
        2,
        "asmith is in the one-to-one and the desk room"
    );
    assert!(
        client::messages(server.imap_port, ZOE, "ICE Chat")
            .await
            .is_empty(),
        "no copy outside the firm"
    );
    assert!(client::folders(server.imap_port, JDOE)
        .await
        .contains(&"ICE Chat".to_string()));

    let mut conversations = Vec::new();
    for fetched in &jdoe {
        let message = parse(&fetched.raw);
        assert!(message.message_id().unwrap().ends_with("@ice.chat-archive"));
        assert_eq!(
            header_text(&message, "X-Chat-Source").as_deref(),
            Some("ICE Chat")
        );
        // INTERNALDATE is the chat's time (the Date header: its first event).
        let date = message.date().expect("Date").to_timestamp();
        assert_eq!(
            fetched.internal_date.expect("INTERNALDATE").timestamp(),
            date
        );
        assert!(
            fetched.flags.iter().any(|f| f == "Seen"),
            "{:?}",
            fetched.flags
        );
        assert!(
            fetched.flags.iter().any(|f| f == "Flagged"),
            "{:?}",
            fetched.flags
        );
        conversations.push(header_text(&message, "X-Chat-Conversation-Id").unwrap());
    }
    conversations.sort();
    assert_eq!(conversations, ["c-1001", "c-1002", "c-1003"]);
    let group = jdoe
        .iter()
        .find(|m| {
            header_text(&parse(&m.raw), "X-Chat-Conversation-Id").as_deref() == Some("c-1002")
        })
        .unwrap();
    assert_eq!(
        group.internal_date.unwrap().to_rfc3339(),
        "2026-11-20T10:00:00+00:00"
    );
    assert!(parse(&group.raw)
        .body_text(0)
        .unwrap()
        .contains("Grüß dich John"));

    let status = day_status(&firm, DAY);
    assert_eq!(
        (
            status.available_from_source,
            status.available_after_fanout,
            status.imported,
            status.failed
        ),
        (3, 5, 3, 0)
    );
    assert!(status.counts_add_up());

    // A replay of the whole import adds nothing and keeps the history.
    let keys = sidecars(&firm).await;
    assert_eq!(replay_import(&pipeline, &keys).await.len(), 3);
    let uids = |ms: &[client::Fetched]| ms.iter().map(|m| m.uid).collect::<Vec<_>>();
    assert_eq!(
        uids(&client::messages(server.imap_port, JDOE, "ICE Chat").await),
        uids(&jdoe)
    );
    assert_eq!(
        uids(&client::messages(server.imap_port, ASMITH, "ICE Chat").await),
        uids(&asmith)
    );
    let store = pipeline.ctx.store.clone();
    let status = chat_archive_core::status::rebuild_day(store.as_ref(), "ice", DAY)
        .await
        .unwrap();
    assert_eq!((status.imported, status.skipped_duplicates), (3, 0));

    // Without the earlier records, the same replay is counted as skipped duplicates.
    std::fs::remove_dir_all(firm.layout.store().join(format!("reports/ice/{DAY}/items"))).unwrap();
    replay_import(&pipeline, &keys).await;
    let status = chat_archive_core::status::rebuild_day(store.as_ref(), "ice", DAY)
        .await
        .unwrap();
    assert_eq!(
        (status.imported, status.skipped_duplicates, status.failed),
        (0, 3, 0)
    );
    assert!(status.counts_add_up());
    assert_eq!(
        client::messages(server.imap_port, JDOE, "ICE Chat")
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn an_unknown_user_is_not_a_valid_mailbox_and_its_item_fails() {
    let server = Dovecot::start(&[JDOE]);
    let firm = imap_firm(&server, |_| {}).await;
    let export = SAMPLE.replace(
        "</IceChatExport>",
        r#"<Conversation Id="c-1005" Type="OneToOne" StartTime="2026-11-20T13:00:00Z">
    <Participants>
      <Participant ImId="ghost1" Name="Gone Trader" Email="ghost@acme.example"/>
      <Participant ImId="zmuller7" Name="Zoë Müller" Email="zoe.mueller@globex.example"/>
    </Participants>
    <Message Id="m-50" ImId="ghost1" Timestamp="2026-11-20T13:00:01Z">anyone?</Message>
  </Conversation>
</IceChatExport>"#,
    );
    firm.drop_export("ACME_2026-11-20.xml.pgp", export.as_bytes(), true);
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();

    // asmith has no mailbox on this server: jdoe gets all three, nobody else.
    assert_eq!(
        client::messages(server.imap_port, JDOE, "ICE Chat")
            .await
            .len(),
        3
    );
    let status = day_status(&firm, DAY);
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (4, 3, 1)
    );
    assert!(status.counts_add_up());
    let ghost = status
        .failures
        .iter()
        .find(|f| f.source_user == "ghost1")
        .expect("ghost's item failed");
    assert!(
        ghost
            .reason
            .contains("ghost@acme.example is not a mailbox of the mail system"),
        "{}",
        ghost.reason
    );
    let asmith = status
        .unmapped_participants
        .iter()
        .find(|u| u.source_user == "asmith2")
        .expect("asmith unmapped");
    assert!(
        asmith
            .reason
            .contains("asmith@acme.example is not a mailbox"),
        "{}",
        asmith.reason
    );

    // The sink itself: valid, not valid, and a delivery to the unknown user
    // is a refusal of that item, not an error of the batch.
    let sink = ImapSink::with_credential(
        server.imap_config(),
        SecretValue::new(dovecot::MASTER_PASSWORD),
    )
    .unwrap();
    assert!(!sink.is_valid_mailbox("ghost@acme.example").await.unwrap());
    assert!(sink.is_valid_mailbox(JDOE).await.unwrap());
    let flags = vec!["\\Seen".to_string()];
    let raw = b"Message-ID: <direct-1@test>\r\nSubject: direct\r\n\r\nbody\r\n";
    let delivery = |mailbox| Delivery {
        mailbox,
        folder: "ICE Chat",
        message_id: "direct-1@test",
        raw: raw.as_slice().into(),
        internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        flags: &flags,
    };
    let outcomes = sink
        .deliver_batch(&[delivery("ghost@acme.example"), delivery(JDOE)])
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[0], DeliveryOutcome::Refused(r) if r.contains("AUTHORIZATIONFAILED")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], DeliveryOutcome::Delivered);
}

/// Log lines of the current thread, async-imap's `log` records included.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_master_password_fails_clearly_without_printing_it() {
    const WRONG: &str = "Wr0ng-Passw0rd-123";
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_log::LogTracer::init();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Thread-local: a global capture would also catch the other tests' own
    // IMAP client (async-imap traces its LOGIN), which is not the product.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Dovecot::start(&[JDOE]);
    let sink = ImapSink::with_credential(server.imap_config(), SecretValue::new(WRONG)).unwrap();
    let error = sink
        .is_valid_mailbox(JDOE)
        .await
        .expect_err("the login must fail");
    let shown = format!("{error} / {error:?}");
    assert!(
        shown.contains("mailbox_password") && shown.contains("refused"),
        "{shown}"
    );
    assert!(shown.contains("AUTHENTICATIONFAILED"), "{shown}");
    assert!(
        !shown.contains(WRONG) && !shown.contains(dovecot::MASTER_PASSWORD),
        "{shown}"
    );

    // Through the pipeline: the run stops with the same clear error.
    let firm = imap_firm(&server, |_| {}).await;
    firm.pipeline()
        .secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::MAILBOX_PASSWORD.to_string(),
                SecretValue::new(WRONG),
            )]),
        )
        .await
        .unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let error = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect_err("run fails");
    let shown = format!("{error} / {error:?}");
    assert!(
        shown.contains("mailbox_password") && shown.contains("refused"),
        "{shown}"
    );
    assert!(!shown.contains(WRONG), "{shown}");

    // A working session under the same capture: async-imap's trace output
    // and ours are captured, and neither password shows anywhere.
    let sink = ImapSink::with_credential(
        server.imap_config(),
        SecretValue::new(dovecot::MASTER_PASSWORD),
    )
    .unwrap();
    assert!(sink.is_valid_mailbox(JDOE).await.unwrap());
    let flags = vec!["\\Seen".to_string()];
    let delivery = Delivery {
        mailbox: JDOE,
        folder: "ICE Chat",
        message_id: "log-1@test",
        raw: b"Message-ID: <log-1@test>\r\nSubject: log\r\n\r\nbody\r\n"
            .as_slice()
            .into(),
        internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        flags: &flags,
    };
    assert_eq!(
        sink.deliver(&delivery).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        // async-imap's protocol trace of this session was captured: the layer
        // that would show a LOGIN line. (The sink's own lines may be logged
        // from a worker thread, outside this thread-local capture.)
        logs.contains("decode"),
        "capture incomplete: {logs}"
    );
    assert!(!logs.contains(WRONG), "the wrong password was logged");
    assert!(
        !logs.contains(dovecot::MASTER_PASSWORD),
        "the password was logged"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let server = Dovecot::start(&[JDOE]);
    let untrusted = ImapConfig {
        ca_file: None,
        ..server.imap_config()
    };
    let sink =
        ImapSink::with_credential(untrusted, SecretValue::new(dovecot::MASTER_PASSWORD)).unwrap();
    let error = sink
        .is_valid_mailbox(JDOE)
        .await
        .expect_err("self-signed certificate must be refused");
    let shown = error.to_string();
    assert!(
        shown.contains("certificate") && shown.contains("not trusted"),
        "{shown}"
    );
    assert_eq!(sink.stats().sessions_opened, 0);

    // The same server with its certificate configured as the CA: accepted.
    let trusted = ImapSink::with_credential(
        server.imap_config(),
        SecretValue::new(dovecot::MASTER_PASSWORD),
    )
    .unwrap();
    assert!(trusted.is_valid_mailbox(JDOE).await.unwrap());
}

/// An export of `n` one-to-one conversations of jdoe with a counterparty,
/// each a mail of about 4 KB.
fn big_export(n: usize) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-20\" Version=\"1\">\n");
    for i in 0..n {
        let (h, m, s) = (8 + i / 3600, (i / 60) % 60, i % 60);
        xml.push_str(&format!(
            r#"<Conversation Id="v-{i}" Type="OneToOne" StartTime="2026-11-20T{h:02}:{m:02}:{s:02}Z">
<Participants><Participant ImId="jdoe1" Name="John Doe" Email="jdoe@acme.example"/><Participant ImId="b{i}" Name="Broker {i}" Email="b{i}@globex.example"/></Participants>
<Message Id="m-{i}" ImId="jdoe1" Timestamp="2026-11-20T{h:02}:{m:02}:{s:02}Z">Quote {i}: Bund 10y bid 2.41 offer 2.42, size 25m.</Message>
</Conversation>
"#
        ));
    }
    xml.push_str("</IceChatExport>\n");
    xml
}

/// Messages Dovecot has stored in jdoe's ICE Chat folder (files in its Maildir).
fn stored(server: &Dovecot) -> usize {
    ["cur", "new"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(server.maildir(JDOE).join(".ICE Chat").join(sub))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Stops Dovecot once part of the import is stored; `restart` starts it
/// again right away. Returns how many messages were stored when it stopped.
async fn stop_mid_import(
    server: &Arc<Dovecot>,
    total: usize,
    restart: bool,
    run: &tokio::task::JoinHandle<impl Sized>,
) -> usize {
    loop {
        let now = stored(server);
        if now >= total / 4 || run.is_finished() {
            server.stop();
            if restart {
                server.restart();
            }
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

const BIG: usize = 2000;

async fn assert_one_copy_each(server: &Dovecot) {
    let messages = client::messages(server.imap_port, JDOE, "ICE Chat").await;
    let copies = copies(&messages);
    assert_eq!(copies.len(), BIG, "every message is there");
    assert!(
        copies.values().all(|n| *n == 1),
        "a Message-ID has several copies"
    );
    assert_eq!(messages.len(), BIG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_the_batch_without_duplicates() {
    let server = Arc::new(Dovecot::start(&[JDOE]));
    let firm = imap_firm(&server, |c| {
        if let Some(imap) = c.imap.as_mut() {
            imap.reconnect_attempts = 8;
        }
    })
    .await;
    firm.drop_export("ACME_2026-11-20.xml.pgp", big_export(BIG).as_bytes(), true);
    let pipeline = firm.pipeline();
    let run = tokio::spawn(async move { pipeline.run(&FetchRequest::default(), &Silent).await });
    let at_stop = stop_mid_import(&server, BIG, true, &run).await;
    assert!(
        at_stop < BIG,
        "Dovecot was stopped after the import had finished"
    );
    let summary = run.await.unwrap().expect("the run survives the restart");
    assert_eq!(summary.mails, BIG);
    // The sink logged in once before the stop and again after it (the
    // restarted server logs afresh into the same file).
    let logins = server
        .log()
        .matches("Login: user=<jdoe@acme.example>")
        .count();
    assert!(logins >= 2, "no reconnection happened ({logins} logins)");
    assert_one_copy_each(&server).await;
    let status = day_status(&firm, DAY);
    assert_eq!((status.imported, status.failed), (BIG as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_stopped_mid_import_then_a_rerun_leaves_one_copy_each() {
    let server = Arc::new(Dovecot::start(&[JDOE]));
    let firm = imap_firm(&server, |c| {
        if let Some(imap) = c.imap.as_mut() {
            imap.reconnect_attempts = 1;
        }
    })
    .await;
    firm.drop_export("ACME_2026-11-20.xml.pgp", big_export(BIG).as_bytes(), true);
    let pipeline = firm.pipeline();
    let run = tokio::spawn(async move { pipeline.run(&FetchRequest::default(), &Silent).await });
    let at_stop = stop_mid_import(&server, BIG, false, &run).await;
    assert!(
        at_stop < BIG,
        "Dovecot was stopped after the import had finished"
    );
    let error = match run.await.unwrap() {
        Err(error) => error,
        Ok(summary) => panic!(
            "the import finished without its server (stopped at {at_stop} stored, {} mails); log:\n{}",
            summary.mails,
            server.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        ),
    };
    assert!(error.to_string().contains("IMAP server"), "{error}");
    let partial = stored(&server);
    assert!(partial < BIG, "{partial}");

    server.restart();
    let pipeline = firm.pipeline();
    let summary = pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("the rerun completes");
    assert_eq!(
        summary.processed_files.len(),
        1,
        "the unfinished file is processed again"
    );
    assert_one_copy_each(&server).await;
    let status = day_status(&firm, DAY);
    // Every item imported once, by this pipeline: the copies the stopped
    // run delivered before it could record them are its own, not duplicates.
    assert_eq!(
        (
            status.available_from_source,
            status.imported,
            status.skipped_duplicates,
            status.failed,
            status.pending
        ),
        (BIG as u64, BIG as u64, 0, 0, 0)
    );
    assert!(status.counts_add_up());

    // A replay of the whole import adds nothing.
    let keys = sidecars(&firm).await;
    assert_eq!(replay_import(&pipeline, &keys).await.len(), BIG);
    assert_one_copy_each(&server).await;
}

fn chat_mail(i: usize) -> (String, Vec<u8>) {
    let id = format!("conc-{i}@ice.chat-archive");
    let raw = format!(
        "Message-ID: <{id}>\r\nSubject: chat {i}\r\nFrom: a@acme.example\r\n\r\nline {i}\r\n"
    );
    (id, raw.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_and_left_over_copies_end_with_one_copy() {
    let server = Dovecot::start(&[JDOE]);
    // A crash between two writers' appends left two copies of message 0.
    let (_, first) = chat_mail(0);
    client::append(server.imap_port, JDOE, "ICE Chat", &first).await;
    client::append(server.imap_port, JDOE, "ICE Chat", &first).await;

    let mails: Vec<(String, Vec<u8>)> = (0..300).map(chat_mail).collect();
    let flags = vec!["\\Seen".to_string()];
    let deliveries: Vec<Delivery<'_>> = mails
        .iter()
        .map(|(id, raw)| Delivery {
            mailbox: JDOE,
            folder: "ICE Chat",
            message_id: id,
            raw: raw.into(),
            internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
            flags: &flags,
        })
        .collect();
    // Two invocations for the same mailbox at once (small commands, so they
    // interleave), each its own sink as two Lambda containers would be.
    let config = ImapConfig {
        multiappend_max_messages: 5,
        ..server.imap_config()
    };
    let a = ImapSink::with_credential(config.clone(), SecretValue::new(dovecot::MASTER_PASSWORD))
        .unwrap();
    let b = ImapSink::with_credential(config, SecretValue::new(dovecot::MASTER_PASSWORD)).unwrap();
    let (ra, rb) = tokio::join!(a.deliver_batch(&deliveries), b.deliver_batch(&deliveries));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.iter().chain(&rb).all(|o| matches!(
        o,
        DeliveryOutcome::Delivered | DeliveryOutcome::AlreadyPresent
    )));
    assert_eq!(ra[0], DeliveryOutcome::AlreadyPresent);

    let messages = client::messages(server.imap_port, JDOE, "ICE Chat").await;
    let copies = copies(&messages);
    assert_eq!(copies.len(), 300);
    assert!(
        copies.values().all(|n| *n == 1),
        "{:?}",
        copies.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        a.stats().duplicates_removed + b.stats().duplicates_removed >= 1,
        "the left-over copy was removed"
    );
}

#[tokio::test]
async fn a_message_the_server_refuses_fails_alone_with_the_servers_reason() {
    let server = Dovecot::start_with(
        &[JDOE, ASMITH],
        Options {
            max_mail_size: Some("1M".into()),
            ..Options::default()
        },
    );
    let firm = imap_firm(&server, |_| {}).await;
    // A 1.5 MB file transfer makes one conversation's mail too large.
    let big_file = "QUJD".repeat(400_000);
    let export = SAMPLE.replace(
        "</IceChatExport>",
        &format!(
            r#"<Conversation Id="c-1006" Type="OneToOne" StartTime="2026-11-20T14:00:00Z">
    <Participants>
      <Participant ImId="jdoe1" Name="John Doe" Email="jdoe@acme.example"/>
      <Participant ImId="asmith2" Name="Alice Smith" Email="asmith@acme.example"/>
    </Participants>
    <FileTransfer Id="f-9" ImId="jdoe1" Timestamp="2026-11-20T14:00:01Z" FileName="big.bin" ContentType="application/octet-stream" Size="1200000">{big_file}</FileTransfer>
  </Conversation>
</IceChatExport>"#
        ),
    );
    firm.drop_export("ACME_2026-11-20.xml.pgp", export.as_bytes(), true);
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();

    assert_eq!(
        client::messages(server.imap_port, JDOE, "ICE Chat")
            .await
            .len(),
        3
    );
    assert_eq!(
        client::messages(server.imap_port, ASMITH, "ICE Chat")
            .await
            .len(),
        2
    );
    let status = day_status(&firm, DAY);
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (4, 3, 1)
    );
    assert!(status.counts_add_up());
    let refused: Vec<_> = status
        .failures
        .iter()
        .filter(|f| !f.target_mailbox.is_empty())
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "both targets of the big mail: {:?}",
        status.failures
    );
    assert!(
        refused
            .iter()
            .all(|f| f.reason.contains("larger than the maximum size")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn folders_follow_the_servers_namespace_and_delimiter() {
    // A Cyrus-like layout: personal folders under "INBOX.".
    let server = Dovecot::start_with(
        &[JDOE],
        Options {
            namespace_prefix: Some("INBOX.".into()),
            ..Options::default()
        },
    );
    let config = ImapConfig {
        // Proxy login (SASL PLAIN authorization identity) instead of user*admin.
        auth: ImapAuth::SaslProxy {
            admin_user: dovecot::MASTER_USER.into(),
        },
        ..server.imap_config()
    };
    let sink =
        ImapSink::with_credential(config, SecretValue::new(dovecot::MASTER_PASSWORD)).unwrap();
    assert!(sink.is_valid_mailbox(JDOE).await.unwrap());
    assert!(!sink.is_valid_mailbox("ghost@acme.example").await.unwrap());
    let flags = vec!["\\Seen".to_string()];
    let (id_a, raw_a) = chat_mail(1);
    let (id_b, raw_b) = chat_mail(2);
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap();
    let outcomes = sink
        .deliver_batch(&[
            Delivery {
                mailbox: JDOE,
                folder: "ICE Chat",
                message_id: &id_a,
                raw: (&raw_a).into(),
                internal_date: at,
                flags: &flags,
            },
            Delivery {
                mailbox: JDOE,
                folder: "Inbox/XIP",
                message_id: &id_b,
                raw: (&raw_b).into(),
                internal_date: at,
                flags: &flags,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![DeliveryOutcome::Delivered, DeliveryOutcome::Delivered]
    );
    let folders = client::folders(server.imap_port, JDOE).await;
    assert!(
        folders.contains(&"INBOX.ICE Chat".to_string()),
        "{folders:?}"
    );
    assert!(folders.contains(&"INBOX.XIP".to_string()), "{folders:?}");
    assert_eq!(
        client::messages(server.imap_port, JDOE, "INBOX.XIP")
            .await
            .len(),
        1
    );
    assert_eq!(
        client::messages(server.imap_port, JDOE, "INBOX.ICE Chat")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn xoauth2_bearer_tokens_open_mailboxes_and_a_bad_token_fails_clearly() {
    let key = b"0123456789abcdef0123456789abcdef".to_vec();
    let server = Dovecot::start_with(
        &[JDOE, ASMITH],
        Options {
            oauth2_hs256_key: Some(key.clone()),
            ..Options::default()
        },
    );
    let config = ImapConfig {
        auth: ImapAuth::Xoauth2,
        ..server.imap_config()
    };

    // The token in the secret store, as the pipeline reads it.
    let firm = imap_firm(&server, |c| c.imap = Some(config.clone())).await;
    let token = dovecot::oauth2_token(&key, JDOE);
    let secrets = firm.pipeline().secrets;
    secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::MAILBOX_OAUTH_TOKEN.to_string(),
                SecretValue::new(token.clone()),
            )]),
        )
        .await
        .unwrap();
    let sink = ImapSink::new(config.clone(), secrets, "ice").unwrap();
    assert!(sink.is_valid_mailbox(JDOE).await.unwrap());
    // This test server binds a token to one user (as Google does): another
    // mailbox is refused, and with a credential known to work that means
    // "not a valid mailbox", not "bad credential".
    assert!(!sink.is_valid_mailbox(ASMITH).await.unwrap());
    let (id, raw) = chat_mail(7);
    let flags = vec!["\\Seen".to_string()];
    let delivery = Delivery {
        mailbox: JDOE,
        folder: "ICE Chat",
        message_id: &id,
        raw: (&raw).into(),
        internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        flags: &flags,
    };
    assert_eq!(
        sink.deliver(&delivery).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    assert_eq!(
        client::messages(server.imap_port, JDOE, "ICE Chat")
            .await
            .len(),
        1
    );
    assert!(
        server.log().contains("method=XOAUTH2"),
        "not logged in with XOAUTH2"
    );

    // A token signed with another key: a clear error that names the field,
    // not the token.
    let forged = dovecot::oauth2_token(b"another key, another issuer.....", JDOE);
    let bad = ImapSink::with_credential(config, SecretValue::new(forged.clone())).unwrap();
    let error = bad
        .is_valid_mailbox(JDOE)
        .await
        .expect_err("a forged token must fail");
    let shown = format!("{error} / {error:?}");
    assert!(
        shown.contains("mailbox_oauth_token") && shown.contains("AUTHENTICATIONFAILED"),
        "{shown}"
    );
    assert!(
        !shown.contains(&forged) && !shown.contains(&token),
        "{shown}"
    );
}
