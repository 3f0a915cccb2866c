//! The FileDump vocabulary end to end: an Actiance-form export and a
//! Bloomberg IB export, signed and encrypted by GnuPG as a vendor sends
//! them, through the local pipeline into the firm's mailboxes, read back
//! with Python's `email` package.

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::Silent;
use integration_tests::hostile::day_status;
use integration_tests::local::Firm;
use integration_tests::readback::{read_folder, ReadMail};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const ACTIANCE: &str = include_str!("../../examples/filedump/actiance-sample.xml");
const BLOOMBERG: &str = include_str!("../../examples/filedump/bloomberg-sample.xml");

fn mails(firm: &Firm, mailbox: &str) -> Vec<ReadMail> {
    let dir = chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
        .folder_dir(mailbox, "ICE Chat")
        .expect("folder");
    read_folder(&dir)
}

#[tokio::test]
async fn actiance_and_bloomberg_exports_reach_the_firms_mailboxes_by_their_own_address_fields() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(
        "ACME_2026-11-20_actiance.xml.pgp",
        ACTIANCE.as_bytes(),
        true,
    );
    firm.drop_export(
        "ACME_2026-11-20_bloomberg.xml.pgp",
        BLOOMBERG.as_bytes(),
        true,
    );
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run");
    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);

    // Actiance: John Doe by his CorporateEmailID; the Globex counterparty
    // is outside the firm's domains.
    let jdoe = mails(&firm, JDOE);
    assert_eq!(jdoe.len(), 1, "{jdoe:#?}");
    let mail = &jdoe[0];
    assert_eq!(mail.dialect, "FileDump (Actiance)");
    assert_eq!(mail.conversation, "rates-desk-2026-11-20");
    for line in [
        "[2026-11-20 08:00:01 UTC] jdoe1 *** entered the conversation",
        "[2026-11-20 08:01:02 UTC] jdoe1: Morning Zoë, can you show Dec/Jan?",
        "[2026-11-20 08:02:05 UTC] zmuller7: 1.2 / 1.4, good for 50",
        "file transfer ended: term-sheet.pdf (stored as ft-77a1.pdf, status Completed)",
        "Disclaimer: This conversation is recorded for compliance.",
        "[2026-11-20 08:03:20 UTC] zmuller7 *** left the conversation",
    ] {
        assert!(
            mail.plain.contains(line),
            "{line:?} not in:\n{}",
            mail.plain
        );
    }
    assert!(
        mail.attachments
            .iter()
            .any(|a| a.filename.as_deref() == Some("conversation-rates-desk-2026-11-20.xml")),
        "the original conversation is attached: {:?}",
        mail.attachments
    );

    // Bloomberg: Alice Smith by her CorporateEmailAddress (her Bloomberg
    // address is not the firm's); names from the User block.
    let asmith = mails(&firm, ASMITH);
    assert_eq!(asmith.len(), 1, "{asmith:#?}");
    let mail = &asmith[0];
    assert_eq!(mail.dialect, "Bloomberg IB");
    for line in [
        "Alice Smith (20345678): Axe in 5y EUR swaps, anyone?",
        "Lei Li (30999111): 我们可以做 25 mio",
        "sent attachment levels.xlsx (18233 bytes, FileID ATT-6F2C-0001",
        "system message: Messages in this room are archived.",
        "Lei Li (30999111) *** left the conversation",
    ] {
        assert!(
            mail.plain.contains(line),
            "{line:?} not in:\n{}",
            mail.plain
        );
    }
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()]
    );

    let status = day_status(&firm, "2026-11-20");
    assert!(status.counts_add_up(), "{status:#?}");
    let mut dialects: Vec<_> = status
        .sources
        .iter()
        .map(|s| s.dialect.clone().unwrap_or_default())
        .collect();
    dialects.sort();
    assert_eq!(dialects, ["Bloomberg IB", "FileDump (Actiance)"]);
    assert_eq!(
        status.events.received, 14,
        "8 Actiance + 6 Bloomberg events: {status:#?}"
    );
}

const ICE_SAMPLE: &str = include_str!("../../examples/ice/sample-export.xml");

#[tokio::test]
async fn a_file_split_in_two_parts_is_read_as_one_document_whichever_part_is_there() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    // Cut inside the second conversation, as a size limit cuts.
    let cut = ICE_SAMPLE.find("Id=\"c-1002\"").expect("c-1002") + 200;
    let (first, second) = ICE_SAMPLE.split_at(cut);
    let run = || async {
        firm.pipeline()
            .run(&FetchRequest::default(), &Silent)
            .await
            .expect("run")
    };
    firm.drop_export("ACME_2026-11-20.xml1.pgp", first.as_bytes(), true);
    let summary = run().await;
    assert!(
        summary.quarantined.is_empty(),
        "a first part is not damaged: {:#?}",
        summary.quarantined
    );
    let conversations = |mailbox: &str| {
        let mut ids: Vec<String> = mails(&firm, mailbox)
            .into_iter()
            .map(|m| m.conversation)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        conversations(JDOE),
        ["c-1001"],
        "what the first part holds whole"
    );
    let status = day_status(&firm, "2026-11-20");
    let source = status
        .sources
        .iter()
        .find(|s| s.key.ends_with(".xml*"))
        .expect("one source");
    assert_eq!(
        source.problem.as_deref(),
        Some("split file: parts 1 to 1 read, waiting for part 2")
    );

    firm.drop_export("ACME_2026-11-20.xml2.pgp", second.as_bytes(), true);
    let summary = run().await;
    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    assert_eq!(
        conversations(JDOE),
        ["c-1001", "c-1002", "c-1003"],
        "each conversation once"
    );
    let status = day_status(&firm, "2026-11-20");
    assert!(status.counts_add_up(), "{status:#?}");
    assert_eq!(
        status.sources.len(),
        1,
        "one source for the two parts: {status:#?}"
    );
    assert_eq!(status.sources[0].problem, None);
    assert_eq!(status.sources[0].items, 3);
    assert_eq!(
        status.events.delivered, status.events.received,
        "{status:#?}"
    );
}
