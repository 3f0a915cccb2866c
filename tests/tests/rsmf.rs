//! RSMF 2.0 for review tools, checked by readers this project did not write
//! (Python's `email`, `zipfile`, and `jsonschema` against a schema written
//! from the spec's rules, `tests/readers/rsmf_check.py`) and by its own
//! validator (`chat-archive rsmf validate`): a day exported after it arrived
//! in two files (every event once), a custodian's share, and a connector
//! whose mailboxes receive RSMF instead of transcripts.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_archive_core::crypto::SignaturePolicy;
use integration_tests::fixtures::SAMPLE;
use integration_tests::local::Firm;
use serde_json::Value;

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";

fn ok(firm: &Firm, args: &[&str]) -> String {
    firm.run_cli_ok(env!("CARGO_BIN_EXE_chat-archive-cli"), args)
}

/// What the independent reader makes of each file.
fn read_back(files: &[PathBuf]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("readers/rsmf_check.py");
    let output = Command::new(integration_tests::moto::venv().join("bin/python"))
        .arg(script)
        .args(files)
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{output:?}");
    let read: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    read.as_array().expect("a list").clone()
}

/// Every file valid for both checkers (ours, `chat-archive rsmf validate`,
/// and the independent reader); what the reader made of each.
fn assert_valid(firm: &Firm, files: &[PathBuf]) -> Vec<Value> {
    let read = read_back(files);
    for file in &read {
        assert_eq!(file["problems"], serde_json::json!([]), "{file:#}");
    }
    let args: Vec<&str> = ["rsmf", "validate"]
        .into_iter()
        .chain(files.iter().map(|f| f.to_str().unwrap()))
        .collect();
    let validated = ok(firm, &args);
    assert_eq!(
        validated.matches("VALID ").count(),
        files.len(),
        "{validated}"
    );
    read
}

fn rsmf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rsmf"))
        .collect();
    files.sort();
    files
}

fn by_conversation<'a>(read: &'a [Value], id: &str) -> &'a Value {
    read.iter()
        .find(|r| r["manifest"]["conversations"][0]["id"] == id)
        .unwrap_or_else(|| panic!("no RSMF of {id}"))
}

fn bodies(read: &Value) -> Vec<String> {
    read["manifest"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect()
}

/// The sample again, later, with one more message in the rates room: the
/// day arrives in two files.
fn late_file() -> String {
    SAMPLE.replace(
        r#"<Left ImId="zmuller7" Timestamp="2026-11-20T10:05:00Z"/>"#,
        r#"<Message Id="m-13" ImId="jdoe1" Timestamp="2026-11-20T10:04:30Z" SenderEmail="jdoe@acme.example">Late add: 25 mio done.</Message>
    <Left ImId="zmuller7" Timestamp="2026-11-20T10:05:00Z"/>"#,
    )
}

#[test]
fn a_day_that_came_in_two_files_exports_as_one_valid_rsmf_per_conversation() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    firm.drop_export("ACME_2026-11-20_late.xml.pgp", late_file().as_bytes(), true);
    ok(&firm, &["run"]);

    let out = firm.dir.path().join("export");
    let printed = ok(
        &firm,
        &[
            "export",
            "rsmf",
            "--day",
            "2026-11-20",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(printed.contains("3 RSMF file(s)"), "{printed}");
    let files = rsmf_files(&out);
    assert_eq!(files.len(), 3, "one per conversation-day: {files:?}");
    let read = assert_valid(&firm, &files);
    // The rates room: every event once, the late message included, in order.
    let room = by_conversation(&read, "c-1002");
    let texts = bodies(room);
    let late = texts
        .iter()
        .filter(|b| b.contains("Late add: 25 mio done."))
        .count();
    assert_eq!(late, 1, "{texts:#?}");
    let greeting = texts
        .iter()
        .filter(|b| b.contains("Grüß dich John"))
        .count();
    assert_eq!(
        greeting, 1,
        "each event once though both files hold it: {texts:#?}"
    );
    let events = room["manifest"]["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in ["disclaimer", "join", "leave", "message"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in time order");
    // The file transfer: in the zip, byte for byte as its size says.
    let attachment = events
        .iter()
        .flat_map(|e| e["attachments"].as_array().into_iter().flatten())
        .next()
        .expect("the file transfer");
    assert_eq!(attachment["display"], "levels.txt");
    let id = attachment["id"].as_str().unwrap();
    assert_eq!(room["files"][id], attachment["size"], "{room:#}");
    // Unicode names, an external participant marked so, source fields
    // under custom.
    let participants = room["manifest"]["participants"].as_array().unwrap();
    let zoe = participants
        .iter()
        .find(|p| p["id"] == "zmuller7")
        .expect("Zoë");
    assert_eq!(zoe["display"], "Zoë Müller");
    assert!(zoe["custom"].to_string().contains("external"), "{zoe}");
    let custom = room["manifest"]["conversations"][0]["custom"].to_string();
    assert!(
        custom.contains("Source SHA-256") && custom.contains("raw/ice/"),
        "{custom}"
    );
    assert!(room["to"]
        .as_str()
        .unwrap()
        .contains("zoe.mueller@globex.example"));
    assert!(room["body"].as_str().unwrap().contains("Grüß dich John"));

    // The load file lists each with its digest.
    let load = std::fs::read_to_string(out.join("export.csv")).unwrap();
    assert_eq!(load.lines().count(), 4, "{load}");
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let digest = integration_tests::hostile::sha256_hex(&std::fs::read(file).unwrap());
        assert!(load.contains(name) && load.contains(&digest), "{load}");
    }
}

#[test]
fn a_custodians_export_holds_only_their_conversations_and_names_them() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    let out = firm.dir.path().join("asmith");
    ok(
        &firm,
        &[
            "export",
            "rsmf",
            "--since",
            "2026-11-19",
            "--until",
            "2026-11-21",
            "--custodian",
            ASMITH,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let read = assert_valid(&firm, &rsmf_files(&out));
    let ids: Vec<&str> = read
        .iter()
        .map(|r| r["manifest"]["conversations"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&"c-1002"), "not in the rates room: {ids:?}");
    for file in &read {
        assert_eq!(file["problems"], serde_json::json!([]), "{file:#}");
        assert_eq!(file["custodian"], ASMITH);
        assert_eq!(file["manifest"]["conversations"][0]["custodian"], "asmith2");
    }
}

#[test]
fn a_connector_with_rsmf_output_puts_valid_rsmf_into_the_mailboxes() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let settings = std::fs::read_to_string(firm.layout.settings()).unwrap();
    let settings = settings.replacen("output = \"mail\"", "output = \"rsmf\"", 1);
    assert!(settings.contains("output = \"rsmf\""), "{settings}");
    std::fs::write(firm.layout.settings(), settings).unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    let folder = chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
        .folder_dir(JDOE, "ICE Chat")
        .unwrap();
    let files: Vec<PathBuf> = ["cur", "new"]
        .iter()
        .filter_map(|d| std::fs::read_dir(folder.join(d)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert_valid(&firm, &files);
    // A second run delivers nothing again.
    ok(&firm, &["run"]);
    let again = ["cur", "new"]
        .iter()
        .filter_map(|d| std::fs::read_dir(folder.join(d)).ok())
        .flatten()
        .count();
    assert_eq!(again, 3);
}

#[test]
fn with_both_outputs_the_mail_carries_its_rsmf_as_an_attachment() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let settings = std::fs::read_to_string(firm.layout.settings()).unwrap();
    std::fs::write(
        firm.layout.settings(),
        settings.replacen("output = \"mail\"", "output = \"both\"", 1),
    )
    .unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    let mails = integration_tests::readback::read_folder(
        &chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
            .folder_dir(JDOE, "ICE Chat")
            .unwrap(),
    );
    assert_eq!(mails.len(), 3);
    let dir = firm.dir.path().join("attached");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, mail) in mails.iter().enumerate() {
        assert!(
            mail.plain.contains("ICE Chat conversation"),
            "the transcript stays"
        );
        let rsmf = mail
            .attachments
            .iter()
            .find(|a| a.filename.as_deref().is_some_and(|f| f.ends_with(".rsmf")))
            .unwrap_or_else(|| panic!("an .rsmf attachment: {mail:#?}"));
        assert!(rsmf.size > 0);
        // Out of the mail with mail-parser, then through both checkers.
        let raw = std::fs::read(&mail.file).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let bytes = {
            use mail_parser::MimeHeaders;
            parsed
                .attachments()
                .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".rsmf")))
                .map(|a| a.contents().to_vec())
                .unwrap()
        };
        let path = dir.join(format!("{i}.rsmf"));
        std::fs::write(&path, bytes).unwrap();
    }
    assert_valid(&firm, &rsmf_files(&dir));
}
