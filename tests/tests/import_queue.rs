//! The import function fed by its queue, as the template wires it: S3
//! notifies `mail/*.json` into an SQS queue and Lambda's event source hands
//! the function batches of those messages (`ReportBatchItemFailures`).
//! Against a real moto (S3, SQS, Secrets Manager); the mails are read back
//! from the Maildir with Python's `email` package.
//!
//! What the user's world does to a batch: many one-message conversations at
//! once, a notification delivered twice (SQS is at-least-once), S3's test
//! message, a message that is not an S3 notification at all, and one whose
//! mail is gone from the store. The good ones must land exactly once and
//! only the bad ones go back to the queue.

use std::collections::BTreeMap;

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::function::Function;
use integration_tests::faults::ice_folder;
use integration_tests::lambda_chain::{
    self as chain, sqs_batches, take_events, take_queued, MAIL_EVENTS, PLAIN_EVENTS, RAW_EVENTS,
};
use integration_tests::local::Firm;
use integration_tests::moto::Moto;
use integration_tests::readback::read_folder;
use integration_tests::synth::{write_export, Shape};
use serde_json::{json, Value};

const TRADER: &str = "trader0@acme.example";
const CONVERSATIONS: u64 = 150;
/// The template's default `ImportBatchSize`.
const BATCH: usize = 100;

/// A day of one-message conversations, every one with the firm's trader.
fn export_of_short_chats() -> Vec<u8> {
    let shape = Shape {
        conversations: CONVERSATIONS,
        messages_per_conversation: 1,
        participants_per_conversation: 2,
        message_bytes: 60,
    };
    let mut xml = Vec::new();
    write_export(&mut xml, &shape, "2026-11-20", 1).expect("export");
    xml
}

/// An SQS record like `template` with another message id and body.
fn queued(template: &Value, id: &str, body: String) -> Value {
    let mut record = template.clone();
    record["messageId"] = json!(id);
    record["body"] = json!(body);
    record
}

fn failed_ids(response: &Value) -> Vec<String> {
    let mut ids: Vec<String> = response["batchItemFailures"]
        .as_array()
        .map(|failures| {
            failures
                .iter()
                .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mails_are_imported_in_batches_and_only_the_bad_messages_go_back() {
    let moto = Moto::start();
    let firm = Firm::new(&[TRADER], SignaturePolicy::Required);
    firm.drop_export("ACME_20261120.xml.pgp", &export_of_short_chats(), true);
    let kms_key = chain::set_up(&moto, &firm);
    let lambda = chain::lambda(moto.sdk_options(), &firm, &kms_key).await;
    lambda
        .handle(Function::Fetch, chain::schedule_event())
        .await
        .expect("fetch");
    for event in take_events(&moto, RAW_EVENTS) {
        lambda
            .handle(Function::Decrypt, event)
            .await
            .expect("decrypt");
    }
    for event in take_events(&moto, PLAIN_EVENTS) {
        lambda
            .handle(Function::Convert, event)
            .await
            .expect("convert");
    }
    let mut records = take_queued(&moto, MAIL_EVENTS);
    assert_eq!(
        records.len() as u64,
        CONVERSATIONS,
        "one queued notification per mail sidecar"
    );

    // What else a day's queue holds: a notification delivered twice, S3's
    // test message, a message that is no S3 notification, and the
    // notification of a sidecar no longer in the store.
    let first = records[0].clone();
    let body = first["body"].as_str().expect("body").to_string();
    let gone = body.replace(".json", "-gone.json");
    assert_ne!(gone, body, "the notification names a .json sidecar");
    records.insert(3, queued(&first, "redelivered", body));
    records.insert(
        5,
        queued(
            &first,
            "s3-test-event",
            json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": chain::BUCKET})
                .to_string(),
        ),
    );
    records.insert(
        7,
        queued(&first, "not-a-notification", "{\"hello\": 1".into()),
    );
    records.insert(9, queued(&first, "sidecar-gone", gone));

    let mut failed = Vec::new();
    let mut imported = 0;
    for batch in sqs_batches(&records, BATCH) {
        let response = lambda
            .handle(Function::Import, batch)
            .await
            .expect("a batch with good mails in it succeeds");
        // What Lambda reads of the answer: the JSON.
        let response = serde_json::to_value(&response).expect("response JSON");
        imported += response["imported"].as_array().map_or(0, Vec::len);
        failed.extend(failed_ids(&response));
    }
    failed.sort();
    assert_eq!(
        failed,
        vec!["not-a-notification", "sidecar-gone"],
        "exactly the bad messages go back to the queue"
    );
    assert!(imported > 0, "the response names the mails imported");

    // Read back with Python's email package: every conversation once.
    let mails = read_folder(&ice_folder(&firm.layout.mailboxes(), TRADER));
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for mail in &mails {
        *copies.entry(mail.conversation.as_str()).or_default() += 1;
    }
    assert_eq!(
        copies.len() as u64,
        CONVERSATIONS,
        "every conversation arrived"
    );
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "conversations not exactly once: {doubled:?}"
    );

    // The queue hands the two back: the bad ones fail again, alone, and
    // nothing else changes.
    let again: Vec<Value> = records
        .iter()
        .filter(|r| failed.iter().any(|id| r["messageId"] == json!(id)))
        .cloned()
        .collect();
    // When every message of a batch fails, the invocation fails (the whole
    // batch comes back), naming the first failure.
    let retried = lambda
        .handle(Function::Import, json!({ "Records": again }))
        .await
        .expect_err("a batch of only failing messages fails");
    assert!(
        retried.to_string().contains("-gone.json"),
        "the failure names the missing object: {retried}"
    );
    assert_eq!(
        read_folder(&ice_folder(&firm.layout.mailboxes(), TRADER)).len(),
        mails.len(),
        "a retried batch adds nothing"
    );

    // The sample batch in events/ is what the event source sends: read as a
    // batch, its one mail (not in this store) handed back by its id.
    let sample: Value = serde_json::from_slice(
        &std::fs::read(integration_tests::moto::repo_root().join("events/sqs-mail-batch.json"))
            .expect("events/sqs-mail-batch.json"),
    )
    .expect("sample JSON");
    let failed = lambda
        .handle(Function::Import, sample)
        .await
        .expect_err("the sample's mail is not in this store");
    assert!(
        failed
            .to_string()
            .contains("8ffb3fd2c602dae9d5a9c9a1a2c94f2a.json"),
        "the sample's missing mail is named: {failed}"
    );
}
