//! Bloomberg as a second connector beside ICE, as its files are delivered:
//! `f886973.ib19.YYMMDD.xml.gpg` encrypted to the firm by GnuPG, a detached
//! `.sig` beside it made by Bloomberg's own key, into its own folder,
//! mapping (Bloomberg UUID first) and status log; and two connectors of one
//! kind side by side. Run as the `chat-archive`
//! binary; mail read back with Python's `email` package.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::status::DayStatus;
use integration_tests::local::{Firm, FIRM_PASSPHRASE, FIRM_UID, SIGNER_UID};
use integration_tests::readback::{read_folder, ReadMail};
use mail_parser::MimeHeaders;

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const ICE_SAMPLE: &str = include_str!("../../examples/ice/sample-export.xml");
const BLOOMBERG: &str = include_str!("../../examples/filedump/bloomberg-sample.xml");
const BLOOMBERG_SIGNER: &str = "Bloomberg signer <signer@bloomberg.example>";

fn chat_archive(firm: &Firm, args: &[&str]) -> Output {
    firm.run_cli(env!("CARGO_BIN_EXE_chat-archive-cli"), args)
}

fn folder(firm: &Firm, mailbox: &str, folder: &str) -> Vec<ReadMail> {
    let dir = chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
        .folder_dir(mailbox, folder)
        .expect("folder");
    read_folder(&dir)
}

fn status(firm: &Firm, connector: &str, day: &str) -> DayStatus {
    let path = firm
        .layout
        .store()
        .join(format!("reports/{connector}/{day}/status.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("status JSON")
}

/// The firm with ICE and Bloomberg, each with its own signer key; the
/// Bloomberg secret set by command.
fn firm_with_bloomberg() -> Firm {
    firm_with_bloomberg_settings("")
}

fn firm_with_bloomberg_settings(bloomberg: &str) -> Firm {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    std::fs::write(
        firm.layout.settings(),
        format!(
            r#"
[firm]
domains = ["acme.example"]

[connectors.ice]
signature_policy = "required"

[connectors.bloomberg]
signature_policy = "required"
{bloomberg}

[connectors.xip]
secret = "ice"
"#
        ),
    )
    .unwrap();
    firm.gpg.generate_signer(BLOOMBERG_SIGNER);
    let dir = firm.dir.path();
    for (field, value) in [
        (
            "pgp_private_key",
            firm.gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE),
        ),
        ("pgp_passphrase", FIRM_PASSPHRASE.to_string()),
        (
            "signer_public_key",
            firm.gpg.export_public("signer@bloomberg.example"),
        ),
    ] {
        let file = dir.join(format!("{field}.txt"));
        std::fs::write(&file, value).unwrap();
        let set = chat_archive(
            &firm,
            &[
                "secret",
                "set",
                field,
                "--connector",
                "bloomberg",
                "--file",
                file.to_str().unwrap(),
            ],
        );
        assert!(set.status.success(), "{set:?}");
    }
    // Alice by her Bloomberg UUID into jdoe's mailbox: the CSV comes before
    // the export's own CorporateEmailAddress.
    let csv = dir.join("bloomberg-mapping.csv");
    std::fs::write(&csv, "ImId,Mailbox\n20345678,jdoe@acme.example\n").unwrap();
    let set = chat_archive(
        &firm,
        &[
            "mapping",
            "set",
            csv.to_str().unwrap(),
            "--connector",
            "bloomberg",
        ],
    );
    assert!(set.status.success(), "{set:?}");
    firm
}

/// A Bloomberg file in `drop/bloomberg/`: encrypted (not signed inside) and,
/// when `signer` is given, its detached `.sig` beside it.
fn deliver(firm: &Firm, name: &str, xml: &str, signer: Option<&str>) -> PathBuf {
    let dir = firm.layout.drop_dir().join("bloomberg");
    std::fs::create_dir_all(&dir).unwrap();
    let plain = firm.dir.path().join(format!("{name}.plain"));
    std::fs::write(&plain, xml).unwrap();
    let target = dir.join(name);
    firm.gpg.encrypt(&plain, &target, FIRM_UID, None, false);
    if let Some(signer) = signer {
        sign_beside(firm, &target, signer);
    }
    target
}

fn sign_beside(firm: &Firm, file: &Path, signer: &str) -> PathBuf {
    let made = firm.gpg.detach_sign(file, signer);
    let beside = PathBuf::from(format!("{}.sig", file.display()));
    std::fs::rename(&made, &beside).unwrap();
    beside
}

/// The sample as another room, without its attachment.
fn room(xml: &str, id: &str) -> String {
    let without = match (xml.find("<Attachment>"), xml.find("</Attachment>")) {
        (Some(start), Some(end)) => {
            format!("{}{}", &xml[..start], &xml[end + "</Attachment>".len()..])
        }
        _ => xml.to_string(),
    };
    without.replace("PCHAT-0x1000000002A9F1", id)
}

#[test]
fn a_bloomberg_export_beside_an_ice_export_lands_in_its_own_folder_and_status_log() {
    let firm = firm_with_bloomberg();
    firm.drop_export("ACME_2026-11-20.xml.pgp", ICE_SAMPLE.as_bytes(), true);
    deliver(
        &firm,
        "f886973.ib19.261120.xml.gpg",
        BLOOMBERG,
        Some("signer@bloomberg.example"),
    );
    deliver_attachments(
        &firm,
        "f886973.ib19.att.261120.tar.gz",
        &[("ATT-6F2C-0001", b"levels")],
    );
    let run = chat_archive(&firm, &["run"]);
    assert!(run.status.success(), "{run:?}");

    // ICE's mail in ICE's folder, Bloomberg's in its own.
    let ice = folder(&firm, JDOE, "ICE Chat");
    assert!(!ice.is_empty());
    assert!(
        ice.iter().all(|m| m.dialect == "ICE Chat export"),
        "{ice:#?}"
    );
    let bloomberg = folder(&firm, JDOE, "Bloomberg");
    assert_eq!(bloomberg.len(), 1, "{bloomberg:#?}");
    let mail = &bloomberg[0];
    assert_eq!(mail.dialect, "Bloomberg IB");
    assert!(
        mail.source_file.contains("f886973.ib19.261120.xml"),
        "{mail:#?}"
    );
    assert!(
        mail.plain.contains("Axe in 5y EUR swaps, anyone?"),
        "{mail:#?}"
    );
    assert!(mail.plain.contains("entered the conversation"), "{mail:#?}");
    // Alice's UUID mapped her to jdoe: asmith (her CorporateEmailAddress)
    // gets nothing, and the Globex counterparty is outside the domains.
    assert!(
        folder(&firm, ASMITH, "Bloomberg").is_empty(),
        "the CSV comes first"
    );
    assert!(
        !firm
            .mailboxes_with_mail()
            .iter()
            .any(|m| m.contains("globex")),
        "never another firm"
    );

    // Each connector's own status log, each adding up.
    let ice_day = status(&firm, "ice", "2026-11-20");
    let bloomberg_day = status(&firm, "bloomberg", "2026-11-20");
    assert!(ice_day.counts_add_up() && bloomberg_day.counts_add_up());
    assert_eq!(bloomberg_day.available_from_source, 1, "{bloomberg_day:#?}");
    assert_eq!(bloomberg_day.imported, 1, "{bloomberg_day:#?}");
    assert!(ice_day.imported >= 1, "{ice_day:#?}");
    // Objects under the connector's prefix.
    let store = firm.layout.store();
    assert!(store
        .join("raw/bloomberg/f886973.ib19.261120.xml.gpg")
        .exists());
    assert!(store
        .join("raw/bloomberg/f886973.ib19.261120.xml.gpg.sig")
        .exists());
    assert!(store
        .join("plain/bloomberg/f886973.ib19.261120.xml")
        .exists());
}

#[test]
fn a_signature_that_does_not_match_quarantines_the_file_before_it_is_opened() {
    let firm = firm_with_bloomberg();
    // Signed by ICE's key, not Bloomberg's.
    deliver(
        &firm,
        "f886973.ib19.261121.xml.gpg",
        &room(BLOOMBERG, "PCHAT-0x21"),
        Some(SIGNER_UID),
    );
    // Bloomberg's key, but over another file.
    let file = deliver(
        &firm,
        "f886973.ib19.261122.xml.gpg",
        &room(BLOOMBERG, "PCHAT-0x22"),
        None,
    );
    let other = firm.dir.path().join("other.bin");
    std::fs::write(&other, b"another file").unwrap();
    let sig = sign_beside(&firm, &other, "signer@bloomberg.example");
    std::fs::rename(sig, PathBuf::from(format!("{}.sig", file.display()))).unwrap();

    let run = chat_archive(&firm, &["run", "--json"]);
    assert!(!run.status.success(), "quarantine fails the run: {run:?}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    let quarantined = report["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 2, "{report:#}");
    for name in ["f886973.ib19.261121.xml.gpg", "f886973.ib19.261122.xml.gpg"] {
        let entry = quarantined
            .iter()
            .find(|q| q["key"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} quarantined: {report:#}"));
        let error = entry["error"].as_str().unwrap();
        assert!(
            error.contains(name) && error.contains(".sig") && error.contains("bad signature"),
            "names the file, the signature and the reason: {error}"
        );
        let store = firm.layout.store();
        assert!(store
            .join(format!("quarantine/raw/bloomberg/{name}"))
            .exists());
        assert!(
            !store
                .join(format!("plain/bloomberg/{}", name.trim_end_matches(".gpg")))
                .exists(),
            "nothing extracted"
        );
    }
    assert!(firm.mailboxes_with_mail().is_empty());
}

#[test]
fn a_file_waits_for_its_signature_and_goes_out_once_it_arrives() {
    let firm = firm_with_bloomberg();
    let file = deliver(
        &firm,
        "f886973.ib19.261123.xml.gpg",
        &room(BLOOMBERG, "PCHAT-0x23"),
        None,
    );
    let first = chat_archive(&firm, &["run"]);
    assert!(first.status.success(), "{first:?}");
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("WAITING") && out.contains("f886973.ib19.261123.xml.gpg"),
        "{out}"
    );
    assert!(
        folder(&firm, JDOE, "Bloomberg").is_empty(),
        "not without it"
    );

    sign_beside(&firm, &file, "signer@bloomberg.example");
    let second = chat_archive(&firm, &["run"]);
    assert!(second.status.success(), "{second:?}");
    let delivered = folder(&firm, JDOE, "Bloomberg");
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert!(delivered[0].plain.contains("Axe in 5y EUR swaps"));
    // A third run changes nothing.
    let third = chat_archive(&firm, &["run"]);
    assert!(third.status.success(), "{third:?}");
    assert_eq!(folder(&firm, JDOE, "Bloomberg").len(), 1);
}

/// The attachment archive of a day, made by the system's `tar`, with its
/// `.sig` beside it: members named by FileID.
fn deliver_attachments(firm: &Firm, name: &str, members: &[(&str, &[u8])]) {
    let staging = firm.dir.path().join(format!("{name}.members"));
    std::fs::create_dir_all(&staging).unwrap();
    for (file_id, bytes) in members {
        std::fs::write(staging.join(file_id), bytes).unwrap();
    }
    let target = firm.layout.drop_dir().join("bloomberg").join(name);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let status = Command::new("tar")
        .arg("czf")
        .arg(&target)
        .arg("-C")
        .arg(&staging)
        .args(members.iter().map(|(id, _)| *id))
        .status()
        .expect("tar runs");
    assert!(status.success());
    sign_beside(firm, &target, "signer@bloomberg.example");
}

/// Bytes that compress badly, as real attachments do.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The attachment of the one mail in jdoe's Bloomberg folder, as mail-parser
/// (not our writer) decodes it.
fn attachment_bytes(firm: &Firm, file_name: &str) -> Option<Vec<u8>> {
    let raw = firm.folder(JDOE, "Bloomberg");
    assert_eq!(raw.len(), 1, "one mail");
    let message = mail_parser::MessageParser::default()
        .parse(&raw[0])
        .expect("a mail");
    let found = message
        .attachments()
        .find(|a| a.attachment_name() == Some(file_name))
        .map(|a| a.contents().to_vec());
    found
}

#[test]
fn attachments_that_arrive_a_run_later_go_out_with_the_mail_byte_for_byte() {
    let firm = firm_with_bloomberg();
    deliver(
        &firm,
        "f886973.ib19.261120.xml.gpg",
        BLOOMBERG,
        Some("signer@bloomberg.example"),
    );
    let first = chat_archive(&firm, &["run"]);
    assert!(first.status.success(), "{first:?}");
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("WAITING") && out.contains("f886973.ib19.att.261120.tar.gz"),
        "{out}"
    );
    assert!(
        folder(&firm, JDOE, "Bloomberg").is_empty(),
        "the mail waits"
    );
    let waiting = status(&firm, "bloomberg", "2026-11-20");
    assert!(
        waiting.sources.iter().any(|s| s
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("waiting for the attachment archive"))),
        "reported: {waiting:#?}"
    );

    let levels = noise(300_000);
    deliver_attachments(
        &firm,
        "f886973.ib19.att.261120.tar.gz",
        &[("ATT-6F2C-0001", &levels), ("ATT-UNUSED", b"other day")],
    );
    let second = chat_archive(&firm, &["run"]);
    assert!(second.status.success(), "{second:?}");
    let mails = folder(&firm, JDOE, "Bloomberg");
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0]
            .attachments
            .iter()
            .any(|a| a.filename.as_deref() == Some("levels.xlsx")),
        "{mails:#?}"
    );
    assert_eq!(
        attachment_bytes(&firm, "levels.xlsx").as_deref(),
        Some(&levels[..]),
        "byte-identical"
    );
    let day = status(&firm, "bloomberg", "2026-11-20");
    assert!(day.counts_add_up(), "{day:#?}");
    assert_eq!(day.failed, 0, "{day:#?}");
    // Nothing more on a third run.
    assert!(chat_archive(&firm, &["run"]).status.success());
    assert_eq!(folder(&firm, JDOE, "Bloomberg").len(), 1);
}

#[test]
fn past_the_wait_a_mail_goes_out_saying_its_attachment_is_missing_with_a_failure_row() {
    let firm = firm_with_bloomberg_settings("attachment_wait_hours = 0");
    deliver(
        &firm,
        "f886973.ib19.261120.xml.gpg",
        BLOOMBERG,
        Some("signer@bloomberg.example"),
    );
    let run = chat_archive(&firm, &["run"]);
    assert!(run.status.success(), "{run:?}");
    let mails = folder(&firm, JDOE, "Bloomberg");
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0].plain.contains("ATTACHMENT MISSING")
            && mails[0].plain.contains("levels.xlsx")
            && mails[0]
                .plain
                .contains("no attachment archive f886973.ib19.att.261120.tar.gz arrived"),
        "{}",
        mails[0].plain
    );
    assert!(
        !mails[0]
            .attachments
            .iter()
            .any(|a| a.filename.as_deref() == Some("levels.xlsx")),
        "{mails:#?}"
    );
    let day = status(&firm, "bloomberg", "2026-11-20");
    assert!(day.counts_add_up(), "{day:#?}");
    assert_eq!(
        day.failed, 1,
        "the missing attachment is a failure row: {day:#?}"
    );
    let csv = std::fs::read_to_string(
        firm.layout
            .store()
            .join("reports/bloomberg/2026-11-20/status.csv"),
    )
    .unwrap();
    assert!(csv.contains("attachment missing"), "{csv}");
}

/// Two connectors of one kind (two ICE firm codes): each its own drop
/// directory, folder, objects and status log.
#[test]
fn two_ice_connectors_keep_their_files_folders_and_logs_apart() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    std::fs::write(
        firm.layout.settings(),
        r#"
[firm]
domains = ["acme.example"]

[connectors.ice]
signature_policy = "required"

[connectors.ice-uk]
kind = "ice"
folder = "ICE Chat UK"
secret = "ice"
signature_policy = "required"
"#,
    )
    .unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", ICE_SAMPLE.as_bytes(), true);
    let uk = firm.layout.drop_dir().join("ice-uk");
    std::fs::create_dir_all(&uk).unwrap();
    let made = firm.drop_export("ACMEUK_2026-11-20.xml.pgp", ICE_SAMPLE.as_bytes(), true);
    std::fs::rename(&made, uk.join("ACMEUK_2026-11-20.xml.pgp")).unwrap();

    let run = chat_archive(&firm, &["run"]);
    assert!(run.status.success(), "{run:?}");
    let us = folder(&firm, JDOE, "ICE Chat");
    let gb = folder(&firm, JDOE, "ICE Chat UK");
    assert!(!us.is_empty());
    assert_eq!(us.len(), gb.len(), "the same export, once per connector");
    assert!(
        us.iter().all(|m| m.source_file.starts_with("raw/ice/")),
        "{us:#?}"
    );
    assert!(
        gb.iter().all(|m| m.source_file.starts_with("raw/ice-uk/")),
        "{gb:#?}"
    );
    let (a, b) = (
        status(&firm, "ice", "2026-11-20"),
        status(&firm, "ice-uk", "2026-11-20"),
    );
    assert!(a.counts_add_up() && b.counts_add_up());
    assert_eq!(a.imported, b.imported);
    let config = chat_archive(&firm, &["config"]);
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(
        text.contains("[connectors.ice-uk]") && text.contains("ICE Chat UK"),
        "{text}"
    );
}
