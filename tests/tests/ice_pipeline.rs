//! The whole ICE Chat pipeline on embedded defaults, with fixtures made by
//! GnuPG: end to end, mapping precedence, replay, and bad input.

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::{s3_put_event, FetchRequest};
use chat_archive_core::function::{self, Function};
use chat_archive_core::pipeline::Silent;
use chat_archive_core::ports::ObjectStore;
use integration_tests::fixtures::{header, SAMPLE};
use integration_tests::hostile::day_status;
use integration_tests::local::Firm;
use mail_parser::{MessageParser, MimeHeaders};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const ZOE: &str = "zoe.mueller@globex.example";

fn find_by_conversation(messages: &[Vec<u8>], conversation: &str) -> Vec<u8> {
    messages
        .iter()
        .find(|raw| {
            let message = MessageParser::default().parse(raw.as_slice()).unwrap();
            header(&message, "X-Chat-Conversation-Id") == vec![conversation.to_string()]
        })
        .unwrap_or_else(|| panic!("no mail for conversation {conversation}"))
        .clone()
}

#[tokio::test]
async fn an_encrypted_signed_export_lands_in_the_right_mailboxes() {
    // The counterparty's mailbox exists on the mail system, yet is outside the
    // firm's domains: it must never receive a copy.
    let firm = Firm::new(&[JDOE, ASMITH, ZOE], SignaturePolicy::Required);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);

    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert!(summary.quarantined.is_empty(), "{:?}", summary.quarantined);
    assert_eq!(summary.mails, 3);

    let jdoe = firm.folder(JDOE, "ICE Chat");
    let asmith = firm.folder(ASMITH, "ICE Chat");
    assert_eq!(jdoe.len(), 3, "jdoe is in all three conversations");
    assert_eq!(
        asmith.len(),
        2,
        "asmith is in the one-to-one and the desk room"
    );
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()],
        "no copy outside the firm"
    );

    // The group room: unicode, join/leave, disclaimer, a file transfer.
    let raw = find_by_conversation(&jdoe, "c-1002");
    let message = MessageParser::default().parse(raw.as_slice()).unwrap();
    assert_eq!(header(&message, "X-Chat-Source"), vec!["ICE Chat"]);
    assert!(message
        .subject()
        .unwrap()
        .contains("ACME / Globex EUR rates"));
    assert!(message.message_id().unwrap().ends_with("@ice.chat-archive"));
    let participants = header(&message, "X-Chat-Participant").join("\n");
    for expected in ["jdoe1", "zmuller7", "lilei88", "Zoë Müller", "李雷", ZOE] {
        assert!(
            participants.contains(expected),
            "{expected} missing from {participants}"
        );
    }
    let text = message.body_text(0).unwrap();
    assert!(text.contains("all times are UTC"), "{text}");
    assert!(
        text.contains("[2026-11-20 10:01:12 UTC] Zoë Müller (zmuller7): Grüß dich John"),
        "{text}"
    );
    assert!(text.contains("entered the conversation") && text.contains("left the conversation"));
    assert!(text.contains("Disclaimer: This room is recorded."));
    assert!(message.body_html(0).unwrap().contains("<table"));
    let attachments: Vec<_> = message.attachments().collect();
    let levels = attachments
        .iter()
        .find(|a| a.attachment_name() == Some("levels.txt"))
        .expect("file transfer attached");
    assert_eq!(
        levels.contents(),
        b"Indicative EUR 5y IRS mid 2.415%, not an offer.\n"
    );
    let original = attachments
        .iter()
        .find(|a| a.attachment_name() == Some("conversation-c-1002.xml"))
        .expect("original XML attached");
    let original = String::from_utf8(original.contents().to_vec()).unwrap();
    assert!(
        original.starts_with("<Conversation Id=\"c-1002\"")
            && original.ends_with("</Conversation>")
    );

    // Times: the Date header is the chat's first event, in UTC.
    assert_eq!(message.date().unwrap().to_rfc3339(), "2026-11-20T10:00:00Z");

    let status = day_status(&firm, "2026-11-20");
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
    let unmapped: Vec<_> = status
        .unmapped_participants
        .iter()
        .map(|r| r.source_user.as_str())
        .collect();
    assert_eq!(unmapped, vec!["zmuller7", "lilei88"]);
    assert!(status.unmapped_participants[0]
        .reason
        .contains("outside the firm's domains"));
}

#[tokio::test]
async fn the_csv_wins_over_the_address_and_falls_back_when_invalid() {
    let desk = "rates.desk@acme.example";
    let firm = Firm::new(&[JDOE, ASMITH, desk], SignaturePolicy::Optional);
    let csv = "ImId,Mailbox\n\
               jdoe1,rates.desk@acme.example\n\
               asmith2,ghost@acme.example\n\
               this row is broken\n\
               zmuller7,zoe@globex.example\n";
    std::fs::create_dir_all(firm.layout.store().join("config/ice")).unwrap();
    let store = chat_archive_core::adapters::LocalStore::new(firm.layout.store());
    store
        .put_bytes(
            "config/ice/mapping.csv",
            csv.as_bytes().to_vec(),
            &Default::default(),
        )
        .await
        .unwrap();

    // A fourth conversation where nobody is of the firm.
    let external_only = SAMPLE.replace(
        "</IceChatExport>",
        r#"<Conversation Id="c-1004" Type="OneToOne" StartTime="2026-11-20T12:00:00Z">
    <Participants>
      <Participant ImId="zmuller7" Name="Zoë Müller" Email="zoe.mueller@globex.example"/>
      <Participant ImId="ext9" Name="Nobody"/>
    </Participants>
    <Message Id="m-40" ImId="zmuller7" Timestamp="2026-11-20T12:00:01Z">internal to Globex</Message>
  </Conversation>
</IceChatExport>"#,
    );
    firm.drop_export("ACME_2026-11-20.xml.gpg", external_only.as_bytes(), false);
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert!(summary.quarantined.is_empty(), "{:?}", summary.quarantined);

    // jdoe1 is mapped by the CSV to the desk mailbox, not to jdoe@.
    assert_eq!(firm.folder(desk, "ICE Chat").len(), 3);
    assert!(firm.folder(JDOE, "ICE Chat").is_empty());
    // asmith2's CSV row names no mailbox of the mail system: the address wins.
    assert_eq!(firm.folder(ASMITH, "ICE Chat").len(), 2);

    let status = day_status(&firm, "2026-11-20");
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (4, 3, 1)
    );
    assert!(status.counts_add_up());
    let failed: Vec<_> = status
        .failures
        .iter()
        .map(|f| (f.source_user.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(_, reason)| reason.contains("no participant maps to a mailbox")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|(user, reason)| *user == "zmuller7" && reason.contains("CSV row 5")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|(user, reason)| *user == "ext9" && reason.contains("no address")),
        "{failed:?}"
    );
    assert!(status
        .unmapped_participants
        .iter()
        .any(|u| u.source_user == "lilei88"));

    // The broken CSV row is reported with its row number; the rest was used.
    let problems = std::fs::read_to_string(
        firm.layout
            .store()
            .join("reports/ice/mapping/problems.json"),
    )
    .unwrap();
    assert!(
        problems.contains("config/ice/mapping.csv: row 4: expected 2 fields"),
        "{problems}"
    );
}

#[tokio::test]
async fn replays_leave_exactly_one_copy() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let pipeline = firm.pipeline();
    pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    let before = (
        firm.folder(JDOE, "ICE Chat"),
        firm.folder(ASMITH, "ICE Chat"),
    );
    assert_eq!((before.0.len(), before.1.len()), (3, 2));

    // 1. The same run again: nothing new to fetch, nothing imported.
    let again = pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert!(again.fetched.is_empty() && again.processed_files.is_empty());

    // 2. Every stage's event delivered a second time, as S3 may do.
    let store = chat_archive_core::adapters::LocalStore::new(firm.layout.store());
    let raw = "raw/ice/ACME_2026-11-20.xml.pgp".to_string();
    let event = serde_json::to_vec(&s3_put_event("local", &[raw])).unwrap();
    let decrypted = function::invoke(&pipeline, Function::Decrypt, &event)
        .await
        .unwrap();
    assert_eq!(decrypted.written, vec!["plain/ice/ACME_2026-11-20.xml"]);
    let event = serde_json::to_vec(&s3_put_event("local", &decrypted.written)).unwrap();
    let converted = function::invoke(&pipeline, Function::Convert, &event)
        .await
        .unwrap();
    assert_eq!(converted.written.len(), 3);
    let event = serde_json::to_vec(&s3_put_event("local", &converted.written)).unwrap();
    let imported = function::invoke(&pipeline, Function::Import, &event)
        .await
        .unwrap();
    assert_eq!(imported.imported.len(), 3);

    // 3. The same chats in a new file (ICE re-sent the day, freshly encrypted).
    firm.drop_export("ACME_2026-11-20_resent.xml.pgp", SAMPLE.as_bytes(), true);
    let resent = pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert_eq!(resent.fetched.len(), 1);

    let after = (
        firm.folder(JDOE, "ICE Chat"),
        firm.folder(ASMITH, "ICE Chat"),
    );
    assert_eq!(after, before, "replays must not add or change any mail");
    let status = day_status(&firm, "2026-11-20");
    assert_eq!(
        (
            status.available_from_source,
            status.imported,
            status.skipped_duplicates
        ),
        (3, 3, 0)
    );
    assert!(status.counts_add_up());
    assert_eq!(
        store.list("mail/ice/2026-11-20/").await.unwrap().len(),
        6,
        "3 mails and 3 sidecars, overwritten in place"
    );
}

#[tokio::test]
async fn bad_input_is_quarantined_with_place_and_reason_and_the_rest_goes_on() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let good = firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);

    // Encrypted to another firm's key.
    let other = integration_tests::gpg::Gpg::new();
    other.generate_recipient("Other <other@else.example>", "pw");
    let plain = firm.dir.path().join("other.xml");
    std::fs::write(&plain, SAMPLE).unwrap();
    other.encrypt(
        &plain,
        &firm
            .layout
            .drop_dir()
            .join("ACME_2026-11-23_wrongkey.xml.pgp"),
        "other@else.example",
        None,
        false,
    );

    // Truncated ciphertext.
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(
        firm.layout
            .drop_dir()
            .join("ACME_2026-11-24_truncated.xml.pgp"),
        &bytes[..bytes.len() * 2 / 3],
    )
    .unwrap();

    // Signed by a key that is not ICE's, and not signed at all.
    firm.gpg.generate_signer("Rogue <rogue@else.example>");
    let plain = firm.dir.path().join("rogue.xml");
    std::fs::write(&plain, SAMPLE).unwrap();
    let rogue = firm
        .layout
        .drop_dir()
        .join("ACME_2026-11-25_badsig.xml.pgp");
    firm.gpg.encrypt(
        &plain,
        &rogue,
        integration_tests::local::FIRM_UID,
        Some("rogue@else.example"),
        false,
    );
    firm.drop_export("ACME_2026-11-26_unsigned.xml.pgp", SAMPLE.as_bytes(), false);

    // Malformed XML inside a good envelope; an empty export.
    let malformed = "<?xml version=\"1.0\"?>\n<IceChatExport ExportDate=\"2026-11-22\">\n  <Conversation Id=\"x\">\n    <Message ImId=\"a\" Timestamp=\"2026-11-22T08:00:00Z\">hi</Mesage>\n";
    firm.drop_export(
        "ACME_2026-11-22_malformed.xml.asc",
        malformed.as_bytes(),
        true,
    );
    let empty =
        "<?xml version=\"1.0\"?>\n<IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-21\"/>\n";
    firm.drop_export("ACME_2026-11-21.xml.pgp", empty.as_bytes(), true);

    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert_eq!(summary.fetched.len(), 7);

    // The good file went through whole.
    assert_eq!(firm.folder(JDOE, "ICE Chat").len(), 3);
    assert_eq!(firm.folder(ASMITH, "ICE Chat").len(), 2);

    let errors: std::collections::BTreeMap<String, String> = summary
        .quarantined
        .iter()
        .map(|(key, e)| (key.clone(), e.to_string()))
        .collect();
    let expect = [
        (
            "raw/ice/ACME_2026-11-23_wrongkey.xml.pgp",
            "not encrypted to our key",
        ),
        (
            "raw/ice/ACME_2026-11-24_truncated.xml.pgp",
            "truncated or corrupt",
        ),
        ("raw/ice/ACME_2026-11-25_badsig.xml.pgp", "bad signature"),
        ("raw/ice/ACME_2026-11-26_unsigned.xml.pgp", "not signed"),
        ("plain/ice/ACME_2026-11-22_malformed.xml", "line 4, column"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (key, reason) in expect {
        let error = errors
            .get(key)
            .unwrap_or_else(|| panic!("{key} not quarantined: {errors:#?}"));
        assert!(error.contains(reason), "{key}: {error}");
        assert!(
            error.contains(key.rsplit('/').next().unwrap()),
            "error names the file: {error}"
        );
        let copy = firm.layout.store().join("quarantine").join(key);
        assert!(copy.is_file(), "{} missing", copy.display());
        let reason_json = std::fs::read_to_string(
            copy.with_file_name(format!("{}.reason.json", key.rsplit('/').next().unwrap())),
        )
        .unwrap();
        assert!(reason_json.contains(reason), "{reason_json}");
    }
    for key in [
        "raw/ice/ACME_2026-11-23_wrongkey.xml.pgp",
        "raw/ice/ACME_2026-11-24_truncated.xml.pgp",
    ] {
        assert!(
            errors[key].contains(": byte "),
            "a binary file's place is a byte offset: {}",
            errors[key]
        );
    }
    // Nothing of a file that failed decryption or verification became plaintext.
    for stem in ["wrongkey", "truncated", "badsig", "unsigned"] {
        let plain = firm.layout.store().join(format!(
            "plain/ice/ACME_2026-11-2{}_{stem}.xml",
            match stem {
                "wrongkey" => 3,
                "truncated" => 4,
                "badsig" => 5,
                _ => 6,
            }
        ));
        assert!(!plain.exists(), "{} must not exist", plain.display());
    }

    // The status log accounts for every file and the empty day says so.
    let empty_day = day_status(&firm, "2026-11-21");
    assert_eq!(empty_day.available_from_source, 0);
    assert_eq!(
        empty_day.notes,
        vec!["No items ingested on 2026-11-21".to_string()]
    );
    assert_eq!(empty_day.sources.len(), 1);
    for day in [
        "2026-11-22",
        "2026-11-23",
        "2026-11-24",
        "2026-11-25",
        "2026-11-26",
    ] {
        let status = day_status(&firm, day);
        assert_eq!(
            (status.failed, status.available_from_source),
            (1, 1),
            "{day}: {status:?}"
        );
        assert!(!status.failures[0].reason.is_empty());
        assert!(status.counts_add_up());
    }
    let good_day = day_status(&firm, "2026-11-20");
    assert_eq!((good_day.imported, good_day.failed), (3, 0));
}

/// A bad conversation holding a run too long to hold (a 6 MB file whose
/// `Size` is wrong) is quarantined alone, its copy streamed back from the
/// spool byte for byte, and the good conversation after it is archived.
#[tokio::test]
async fn a_bad_conversation_with_a_huge_file_is_quarantined_whole_and_the_rest_goes_on() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let base64 = "QUJD".repeat(1_500_000);
    let bad = format!(
        "<Conversation Id=\"c-bad\">\n<Participants><Participant ImId=\"j\" Email=\"{JDOE}\"/></Participants>\n\
         <FileTransfer Id=\"f-1\" ImId=\"j\" Timestamp=\"2026-11-20T08:00:00Z\" FileName=\"a.bin\" Size=\"7\">{base64}</FileTransfer>\n\
         </Conversation>"
    );
    let export = format!(
        "<IceChatExport>\n{bad}\n<Conversation Id=\"c-good\">\n\
         <Participants><Participant ImId=\"j\" Email=\"{JDOE}\"/></Participants>\n\
         <Message ImId=\"j\" Timestamp=\"2026-11-20T09:00:00Z\">after the bad one</Message>\n\
         </Conversation>\n</IceChatExport>\n"
    );
    firm.drop_export("ACME_2026-11-20.xml.pgp", export.as_bytes(), true);
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    let mails = firm.folder(JDOE, "ICE Chat");
    assert_eq!(mails.len(), 1, "the good conversation is archived");
    assert!(String::from_utf8_lossy(&mails[0]).contains("after the bad one"));
    let [(copy, error)] = summary.quarantined.as_slice() else {
        panic!("one quarantined conversation: {:?}", summary.quarantined);
    };
    assert!(error.reason.contains("Size says 7 bytes"), "{error}");
    let stored = std::fs::read(firm.layout.store().join("quarantine").join(copy)).unwrap();
    assert_eq!(stored, bad.as_bytes(), "the conversation byte for byte");
}
