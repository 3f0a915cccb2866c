//! A file that takes longer than one invocation: the convert function hands
//! the rest of the file on before its deadline (it writes where it stopped
//! under `work/`, and that write's S3 event starts the next conversion), so
//! a day of any size finishes on Lambda. Run against moto with a deadline
//! that is always already past, every conversion carries one conversation:
//! every conversation must arrive exactly once, the counts add up, and hand-
//! offs delivered again (as S3 may) change nothing.

use std::time::Instant;

use chat_archive_core::adapters::MaildirSink;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::function::{Function, Response};
use chat_archive_core::stages::with_hand_off_by;
use chat_archive_core::status::DayStatus;
use integration_tests::lambda_chain::{
    self, event_key, rebuild_status_event, schedule_event, take_events, MAIL_EVENTS, PLAIN_EVENTS,
    RAW_EVENTS,
};
use integration_tests::local::Firm;
use integration_tests::moto::Moto;
use integration_tests::readback;
use serde_json::Value;

const JDOE: &str = "jdoe@acme.example";
const EXPORT: &str = "ACME_2026-11-20.xml.pgp";
/// Conversations in the export; every fifth runs over midnight (two mails).
const CONVERSATIONS: usize = 12;

fn export() -> String {
    let mut xml = String::from("<IceChatExport>\n");
    for n in 0..CONVERSATIONS {
        xml.push_str(&format!(
            "<Conversation Id=\"room-{n}\" Type=\"OneToOne\">\n\
             <Participants><Participant ImId=\"jdoe\" Email=\"{JDOE}\"/>\n\
             <Participant ImId=\"cp{n}\" Email=\"cp{n}@other.example\"/></Participants>\n\
             <Message ImId=\"jdoe\" Timestamp=\"2026-11-20T10:{n:02}:00Z\">token-{n}-a</Message>\n"
        ));
        if n % 5 == 0 {
            xml.push_str(&format!(
                "<Message ImId=\"cp{n}\" Timestamp=\"2026-11-21T00:{n:02}:30Z\">token-{n}-b</Message>\n"
            ));
        }
        xml.push_str("</Conversation>\n");
        if n == 6 {
            xml.push_str(
                "<Conversation Id=\"room-bad\"><Message ImId=\"jdoe\">no time</Message></Conversation>\n",
            );
        }
    }
    xml.push_str("</IceChatExport>\n");
    xml
}

/// The mail-days the export holds: one per conversation, one more for each
/// that runs over midnight.
fn expected_mails() -> usize {
    CONVERSATIONS + CONVERSATIONS.div_ceil(5)
}

struct Chain {
    moto: Moto,
    firm: Firm,
    lambda: chat_archive_core::aws::Lambda,
    conversions: usize,
    hand_offs: Vec<Value>,
}

impl Chain {
    async fn invoke(&self, function: Function, event: Value) -> Response {
        // The deadline has always passed: each run hands on after the one
        // conversation every run is owed.
        let by = Some(Instant::now());
        match with_hand_off_by(by, self.lambda.handle(function, event)).await {
            Ok(response) => response,
            Err(e) => panic!("{function:?} failed: {e}\nmoto log:\n{}", self.moto.log()),
        }
    }

    /// Converts and imports until no event is left.
    async fn drain(&mut self) {
        loop {
            let plain = take_events(&self.moto, PLAIN_EVENTS);
            let mails = take_events(&self.moto, MAIL_EVENTS);
            if plain.is_empty() && mails.is_empty() {
                return;
            }
            for event in plain {
                // (moto encodes the key's slashes too)
                if event_key(&event).starts_with("work") {
                    self.hand_offs.push(event.clone());
                }
                self.invoke(Function::Convert, event).await;
                self.conversions += 1;
            }
            for event in mails {
                self.invoke(Function::Import, event).await;
            }
        }
    }

    fn mails(&self) -> Vec<readback::ReadMail> {
        let folder = MaildirSink::new(self.firm.layout.mailboxes())
            .folder_dir(JDOE, "ICE Chat")
            .expect("folder");
        readback::read_folder(&folder)
    }

    async fn day_status(&self, day: &str) -> DayStatus {
        let key = format!("reports/ice/{day}/status.json");
        let bytes = self
            .lambda
            .pipeline
            .ctx
            .store
            .get_bytes(&key)
            .await
            .expect("status.json");
        serde_json::from_slice(&bytes).expect("status JSON")
    }
}

#[tokio::test]
async fn a_file_longer_than_one_invocation_is_handed_on_and_every_conversation_arrives_once() {
    let moto = Moto::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let kms_key = lambda_chain::set_up(&moto, &firm);
    firm.drop_export(EXPORT, export().as_bytes(), true);
    let lambda = lambda_chain::lambda(moto.sdk_options(), &firm, &kms_key).await;
    let mut chain = Chain {
        moto,
        firm,
        lambda,
        conversions: 0,
        hand_offs: Vec::new(),
    };
    chain.invoke(Function::Fetch, schedule_event()).await;
    for event in take_events(&chain.moto, RAW_EVENTS) {
        chain.invoke(Function::Decrypt, event).await;
    }
    // After the first run the status log shows the file so far, going on.
    let [first_event] = take_events(&chain.moto, PLAIN_EVENTS)
        .try_into()
        .expect("one event");
    chain.invoke(Function::Convert, first_event).await;
    chain.conversions += 1;
    chain.invoke(Function::Import, rebuild_status_event()).await;
    let so_far = chain.day_status("2026-11-20").await;
    let note = so_far.sources[0].problem.clone().unwrap_or_default();
    assert!(
        note.contains("being converted: 1 conversations read"),
        "{note}"
    );
    chain.drain().await;

    // One run per conversation read (the bad one included): each run after
    // the first was started by the hand-off of the one before.
    assert_eq!(chain.conversions, CONVERSATIONS + 1);
    assert_eq!(chain.hand_offs.len(), CONVERSATIONS);
    let mails = chain.mails();
    assert_eq!(
        mails.len(),
        expected_mails(),
        "one mail per conversation-day"
    );
    for n in 0..CONVERSATIONS {
        assert_eq!(
            readback::occurrences(&mails, &format!("token-{n}-a")),
            1,
            "room-{n}"
        );
        if n % 5 == 0 {
            assert_eq!(readback::occurrences(&mails, &format!("token-{n}-b")), 1);
        }
    }

    chain.invoke(Function::Import, rebuild_status_event()).await;
    let first = chain.day_status("2026-11-20").await;
    let second = chain.day_status("2026-11-21").await;
    assert!(first.counts_add_up() && second.counts_add_up());
    // The days as the status page finds them: S3's delimited listing.
    let store = chain.lambda.pipeline.ctx.store.clone();
    let days = chat_archive_core::status::days(store.as_ref(), "ice")
        .await
        .unwrap();
    assert_eq!(days, ["2026-11-20", "2026-11-21"]);
    assert_eq!(first.sources.len(), 1, "the file's one record");
    assert_eq!(first.sources[0].problem, None, "read to its end");
    // Every conversation of the file is counted once, by the file's one
    // record per day, however many runs read it (the bad one is an item
    // too: failed, with its reason).
    assert_eq!(first.available_from_source, CONVERSATIONS as u64 + 1);
    assert_eq!(
        second.available_from_source,
        CONVERSATIONS.div_ceil(5) as u64
    );
    assert_eq!(first.imported + second.imported, expected_mails() as u64);
    assert_eq!(first.failed, 1, "the bad conversation, with its reason");

    // Hand-offs delivered again, twice each, carry the file on again: the
    // ledger knows every event, so nothing new reaches the mailbox and the
    // counts stay as they were.
    let again: Vec<Value> = [0, CONVERSATIONS / 2, CONVERSATIONS - 1]
        .iter()
        .map(|&i| chain.hand_offs[i].clone())
        .collect();
    for event in again.iter().chain(again.iter()) {
        chain.invoke(Function::Convert, event.clone()).await;
    }
    chain.drain().await;
    chain.invoke(Function::Import, rebuild_status_event()).await;
    assert_eq!(chain.mails().len(), expected_mails(), "nothing doubled");
    let first_again = chain.day_status("2026-11-20").await;
    assert_eq!(
        (
            first_again.available_from_source,
            first_again.imported,
            first_again.failed
        ),
        (first.available_from_source, first.imported, first.failed)
    );
    assert!(first_again.counts_add_up());
}
