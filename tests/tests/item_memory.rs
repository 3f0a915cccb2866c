//! One file transfer of 1 GiB in one conversation, the way ICE writes it
//! (base64 in 76-character lines inside `<FileTransfer>`), goes through
//! convert and import on the embedded defaults while a counting allocator
//! watches the heap: neither stage may hold more than a bound far below the
//! file. The mail that reaches the Maildir is read back with mail-parser, and
//! the file and the conversation's original XML must come out whole.

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::s3_put_event;
use chat_archive_core::mapping::Mapper;
use chat_archive_core::pipeline::StageResult;
use chat_archive_core::ports::{ByteStream, MailboxSink, Metadata};
use chat_archive_core::stages::import;
use chat_archive_core::status::ItemState;
use integration_tests::counting_alloc::{self, Counting};
use integration_tests::local::Firm;
use integration_tests::synth;
use mail_parser::MimeHeaders;
use sha2::{Digest, Sha256};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;
/// The file sent in the chat.
const FILE: usize = 1024 * MIB;
/// What convert or import may hold at its peak, whatever the file's size.
const BOUND: usize = 64 * MIB;
const MAILBOX: &str = "jdoe@acme.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_file_transfer_is_converted_and_imported_in_bounded_memory() {
    let firm = Firm::new(&[MAILBOX], SignaturePolicy::Optional);
    let pipeline = firm.pipeline();
    let export = firm.dir.path().join("ACME_2026-11-20.xml");
    let (file_sha, original_sha) = synth::write_file_transfer_export(&export, FILE, MAILBOX);
    let key = "plain/ice/ACME_2026-11-20.xml".to_string();
    let body: ByteStream = Box::pin(tokio::fs::File::open(&export).await.unwrap());
    pipeline
        .ctx
        .store
        .put(&key, body, &Metadata::new())
        .await
        .expect("export stored");
    std::fs::remove_file(&export).unwrap();

    let table = import::load_mapping(&pipeline.ctx).await.expect("mapping");
    let config = pipeline.ctx.config.clone();
    let mut mapper = Mapper::new(&config, &table, pipeline.sink.as_ref() as &dyn MailboxSink);

    let baseline = counting_alloc::start();
    let converted = pipeline
        .handle_s3_event(&s3_put_event(&pipeline.bucket, &[key]), None, &mut mapper)
        .await
        .expect("converted");
    let convert_peak = counting_alloc::peak_since(baseline);
    let [StageResult::Converted(outcome)] = converted.as_slice() else {
        panic!("one conversion: {converted:?}");
    };
    assert!(outcome.quarantined.is_empty(), "{:?}", outcome.quarantined);
    assert_eq!(outcome.sidecars.len(), 1, "one conversation-day, one mail");

    let baseline = counting_alloc::start();
    let imported = pipeline
        .handle_s3_event(
            &s3_put_event(&pipeline.bucket, &outcome.sidecars),
            None,
            &mut mapper,
        )
        .await
        .expect("imported");
    let import_peak = counting_alloc::peak_since(baseline);
    let [StageResult::Imported(record)] = imported.as_slice() else {
        panic!("one import: {imported:?}");
    };
    assert_eq!(record.state, ItemState::Imported, "{record:?}");

    assert!(
        convert_peak < BOUND,
        "convert held {convert_peak} bytes at its peak for a {FILE}-byte file (bound {BOUND})"
    );
    assert!(
        import_peak < BOUND,
        "import held {import_peak} bytes at its peak for a {FILE}-byte file (bound {BOUND})"
    );

    // Read back by a reader this project did not write.
    let mails = firm.folder(MAILBOX, "ICE Chat");
    assert_eq!(mails.len(), 1, "one copy in the mailbox");
    let message = mail_parser::MessageParser::default()
        .parse(&mails[0])
        .expect("the mail parses");
    let deck = message
        .attachments()
        .find(|a| a.attachment_name() == Some("deck.bin"))
        .expect("the file is attached");
    assert_eq!(deck.contents().len(), FILE);
    assert_eq!(hex::encode(Sha256::digest(deck.contents())), file_sha);
    let original = message
        .attachments()
        .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".xml")))
        .expect("the original XML is attached");
    assert_eq!(
        hex::encode(Sha256::digest(original.contents())),
        original_sha,
        "the conversation's XML byte for byte"
    );
    let text = message.body_text(0).expect("a transcript");
    assert!(
        text.contains("the deck follows") && text.contains("got it"),
        "{text}"
    );
    println!("peak heap: convert {convert_peak} bytes, import {import_peak} bytes");
}
