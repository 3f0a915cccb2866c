//! The firm's PGP key rotated between two runs, the way an operator does it
//! (docs/mapping.md's neighbour, `docs/reliability.md`, "Rotating the firm
//! key"): the new key becomes `pgp_private_key`, the old one moves to
//! `pgp_previous_private_key`, both with the operator's `secret set`. A
//! file fetched before the rotation (encrypted to the old key) still
//! decrypts; the files after it, encrypted to the new key, decrypt too; a
//! file encrypted to neither is quarantined with a reason naming both keys.

use std::path::Path;

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::Silent;
use integration_tests::faults::{assert_each_conversation_once, corpus, CorpusShape, MAILBOXES};
use integration_tests::hostile::assert_quarantined;
use integration_tests::local::{Firm, FIRM_PASSPHRASE, FIRM_UID, SIGNER_UID};

const BIN: &str = env!("CARGO_BIN_EXE_chat-archive-cli");
const NEW_UID: &str = "ACME archive 2027 <archive-2027@acme.example>";
const NEW_PASSPHRASE: &str = "a new passphrase for a new key";
const STRANGER_UID: &str = "Someone else <keys@globex.example>";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// Encrypts `xml` to `recipient` (signed by ICE's key) into the drop
/// directory.
fn drop_encrypted_to(firm: &Firm, name: &str, xml: &str, recipient: &str) {
    let plain = firm.dir.path().join(format!("{name}.plain"));
    std::fs::write(&plain, xml).expect("plain");
    let target = firm.layout.drop_dir().join(name);
    firm.gpg
        .encrypt(&plain, &target, recipient, Some(SIGNER_UID), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_files_fetched_before_it_still_decrypt_and_new_ones_use_the_new_key() {
    let files = corpus(CorpusShape {
        files: 3,
        conversations_per_file: 6,
        messages_per_conversation: 3,
        attachment_bytes: 0,
    });
    let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
    let schedule = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/schedule.json");

    // Day 1, encrypted to the old key, is fetched by the schedule; the
    // rotation comes before anything decrypts it.
    firm.drop_export(&files[0].name, files[0].xml.as_bytes(), true);
    firm.run_cli_ok(BIN, &["invoke", "fetch", &schedule.display().to_string()]);
    assert!(
        firm.layout
            .store()
            .join("raw/ice")
            .join(&files[0].name)
            .exists(),
        "day 1 was fetched before the rotation"
    );

    firm.gpg.generate_recipient(NEW_UID, NEW_PASSPHRASE);
    let keys = tempfile::tempdir().expect("temp dir");
    let old_key = write(
        keys.path(),
        "old.asc",
        &firm.gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE),
    );
    let old_pass = write(keys.path(), "old.pass", FIRM_PASSPHRASE);
    let new_key = write(
        keys.path(),
        "new.asc",
        &firm.gpg.export_secret(NEW_UID, NEW_PASSPHRASE),
    );
    let new_pass = write(keys.path(), "new.pass", NEW_PASSPHRASE);
    for (field, file) in [
        ("pgp_previous_private_key", &old_key),
        ("pgp_previous_passphrase", &old_pass),
        ("pgp_private_key", &new_key),
        ("pgp_passphrase", &new_pass),
    ] {
        firm.run_cli_ok(BIN, &["secret", "set", field, "--file", file]);
    }
    let listed = firm.run_cli_ok(BIN, &["secret", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("pgp_previous_private_key") && l.ends_with("set")),
        "{listed}"
    );

    // Days 2 and 3 are encrypted to the new key only.
    for file in &files[1..] {
        drop_encrypted_to(&firm, &file.name, &file.xml, NEW_UID);
    }
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run after the rotation");
    assert_eq!(summary.processed_files.len(), 3, "{summary:?}");
    let store = chat_archive_core::adapters::LocalStore::new(firm.layout.store());
    assert_each_conversation_once(&store, &firm.layout.mailboxes(), &files, "key rotated").await;

    // A file encrypted to a key the firm never had: quarantined, and the
    // reason names the current and the previous key.
    firm.gpg.generate_recipient(STRANGER_UID, "x");
    let stray = "ACME_2026-11-30.xml.pgp";
    drop_encrypted_to(&firm, stray, &files[0].xml, STRANGER_UID);
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run with the stray file");
    let error = assert_quarantined(
        &firm,
        &summary,
        &format!("raw/ice/{stray}"),
        "nor to the previous",
    );
    assert!(
        error.reason.matches(char::is_alphanumeric).count() > 80,
        "both fingerprints are named: {error}"
    );
}
