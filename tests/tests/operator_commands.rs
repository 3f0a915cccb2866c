//! The operator's first hour, by command, as the README tells it: a mapping
//! CSV stored with `mapping set` (or copied into the store by hand), a
//! mailbox provisioned with `mailbox add`, secret fields set and listed
//! without ever showing a value. Each is run as the `chat-archive` binary.

use std::path::Path;
use std::process::{Command, Output};

use chat_archive_core::crypto::SignaturePolicy;
use integration_tests::fixtures::SAMPLE;
use integration_tests::local::Firm;
use integration_tests::readback::{occurrences, read_folder};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";

fn chat_archive(firm: &Firm, args: &[&str]) -> Output {
    firm.run_cli(env!("CARGO_BIN_EXE_chat-archive-cli"), args)
}

fn ok(firm: &Firm, args: &[&str]) -> String {
    firm.run_cli_ok(env!("CARGO_BIN_EXE_chat-archive-cli"), args)
}

fn ice_folder(firm: &Firm, mailbox: &str) -> std::path::PathBuf {
    chat_archive_core::adapters::MaildirSink::new(firm.layout.mailboxes())
        .folder_dir(mailbox, "ICE Chat")
        .expect("folder")
}

#[test]
fn mapping_set_reports_each_bad_row_and_what_changed_then_a_run_uses_it() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let csv = firm.dir.path().join("mapping.csv");
    std::fs::write(
        &csv,
        "ImId,Mailbox\nasmith2,asmith@acme.example\nbroken row\nzmuller7,not-an-address\n",
    )
    .unwrap();
    let out = ok(&firm, &["mapping", "set", csv.to_str().unwrap()]);
    assert!(out.contains("row 3: expected 2 fields"), "{out}");
    assert!(out.contains("row 4:"), "{out}");
    assert!(
        out.contains("1 row(s); 1 added, 0 removed, 0 changed"),
        "{out}"
    );
    assert!(out.contains("+ asmith2 -> asmith@acme.example"), "{out}");

    // A new version: one row changed, one added, one removed.
    std::fs::write(
        &csv,
        "ImId,Mailbox\nbwayne3,bwayne@acme.example\nzmuller7,asmith@acme.example\n",
    )
    .unwrap();
    let out = ok(&firm, &["mapping", "set", csv.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["rows"], 2);
    assert_eq!(
        report["changes"]["added"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(report["changes"]["removed"][0][0], "asmith2", "{report}");
    let shown = ok(&firm, &["mapping", "show"]);
    assert!(shown.contains("zmuller7,asmith@acme.example"), "{shown}");
    assert!(
        shown.contains(report["sha256"].as_str().unwrap()),
        "{shown}"
    );

    // Nothing usable: refused, the mapping in use stays.
    let empty = firm.dir.path().join("empty.csv");
    std::fs::write(&empty, "ImId,Mailbox\nonly one field\n").unwrap();
    let refused = chat_archive(&firm, &["mapping", "set", empty.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("row 2") && stderr.contains("no usable row"),
        "{stderr}"
    );
    assert_eq!(ok(&firm, &["mapping", "show"]), shown);

    // The run maps the counterparty row of the CSV into asmith's mailbox
    // (the CSV names a valid mailbox of the firm).
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    let asmith = read_folder(&ice_folder(&firm, ASMITH));
    let globex_room = asmith.iter().filter(|m| m.conversation == "c-1002").count();
    assert_eq!(globex_room, 1, "{asmith:#?}");
    // Entered, one message, left: her three lines, once each.
    assert_eq!(
        occurrences(&asmith, "Zoë Müller (zmuller7)"),
        3,
        "{asmith:#?}"
    );
}

#[test]
fn a_mapping_csv_copied_into_the_store_by_hand_is_read() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    let dir = firm.layout.store().join("config/ice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mapping.csv"),
        "ImId,Mailbox\nzmuller7,asmith@acme.example\n",
    )
    .unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let out = ok(&firm, &["run"]);
    assert!(!out.contains("metadata unreadable"), "{out}");
    let asmith = read_folder(&ice_folder(&firm, ASMITH));
    assert!(
        asmith.iter().any(|m| m.conversation == "c-1002"),
        "{asmith:#?}"
    );
}

#[test]
fn mailbox_add_then_a_run_delivers_there_and_list_counts_the_mail() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let refused = chat_archive(&firm, &["mailbox", "add", "zoe@globex.example"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not one of the firm's domains"));
    // asmith2 has no address in the sample's first room; before the mailbox
    // exists her messages reach only jdoe.
    ok(&firm, &["mailbox", "add", ASMITH]);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    ok(&firm, &["run"]);
    let asmith = read_folder(&ice_folder(&firm, ASMITH));
    assert!(!asmith.is_empty(), "the new mailbox received mail");
    let listed = ok(&firm, &["mailbox", "list"]);
    let line = format!("ICE Chat             {} mail(s)", asmith.len());
    assert!(
        listed.contains(ASMITH) && listed.contains(&line),
        "{listed}"
    );
}

/// What scripts read: every reporting command speaks JSON on --json, and
/// its numbers are the ones on disk.
#[test]
fn reporting_commands_speak_json_for_scripts() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let json = |args: &[&str]| -> serde_json::Value {
        let output = chat_archive(&firm, args);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {output:?}"))
    };
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    firm.drop_export("ACME_2026-11-21.xml.pgp", b"<IceChatExport", true);
    let run = json(&["run", "--json"]);
    assert_eq!(run["fetched"].as_array().map(Vec::len), Some(2), "{run}");
    let quarantined = run["quarantined"].as_array().expect("list");
    assert_eq!(quarantined.len(), 1, "{run}");
    assert!(
        quarantined[0]["key"]
            .as_str()
            .unwrap()
            .contains("ACME_2026-11-21"),
        "{run}"
    );
    let day = run["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["day"] == "2026-11-20")
        .expect("the day's record");
    let jdoe = read_folder(&ice_folder(&firm, JDOE));
    assert_eq!(day["imported"], jdoe.len(), "{day}");

    let listed = json(&["mailbox", "list", "--json"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mailbox"] == JDOE)
        .expect("jdoe listed");
    assert_eq!(entry["folders"]["ICE Chat"], jdoe.len(), "{listed}");

    let secrets = json(&["secret", "list", "--json"]);
    assert!(secrets["set"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "pgp_private_key"));
    let doctor = json(&["doctor", "--json"]);
    assert!(doctor["checks"].as_array().unwrap().len() >= 5, "{doctor}");
    let status = json(&["status", "--json", "--day", "2026-11-20"]);
    assert!(status.to_string().contains("\"imported\""), "{status}");
}

#[test]
fn secret_fields_are_set_by_command_and_listed_by_name_only() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let value = "s3cr3t-VALUE-never-shown";
    let file = firm.dir.path().join("pw.txt");
    std::fs::write(&file, format!("{value}\n")).unwrap();
    let out = ok(
        &firm,
        &[
            "secret",
            "set",
            "mailbox_password",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert!(!out.contains(value), "{out}");
    let listed = ok(&firm, &["secret", "list"]);
    assert!(!listed.contains(value), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("mailbox_password") && l.ends_with("set")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("sftp_password") && l.ends_with('-')),
        "{listed}"
    );
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(firm.layout.secrets()).unwrap()).unwrap();
    assert_eq!(
        secrets["ice"]["mailbox_password"], value,
        "stored without the newline"
    );
    assert!(
        secrets["ice"]["pgp_private_key"].is_string(),
        "other fields kept"
    );
    let unknown = chat_archive(&firm, &["secret", "set", "passwrd", "--stdin"]);
    assert!(!unknown.status.success());
    assert!(Path::new(&firm.layout.secrets()).exists());
}

/// The doctor's verdict line for a check (`ok` or `FAIL`), from its output.
fn verdict<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l[4..].trim_start().starts_with(check))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{out}"))
}

#[test]
fn doctor_is_healthy_on_a_fresh_firm_and_names_each_fault() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let healthy = chat_archive(&firm, &["doctor"]);
    let out = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert!(healthy.status.success(), "{out}");
    assert!(out.lines().all(|l| l.starts_with("ok ")), "{out}");

    // A CSV naming a mailbox that was never provisioned, and a secret
    // field gone.
    let dir = firm.layout.store().join("config/ice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mapping.csv"),
        "ImId,Mailbox\nasmith2,asmith@acme.example\n",
    )
    .unwrap();
    let mut secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(firm.layout.secrets()).unwrap()).unwrap();
    let removed = secrets["ice"]
        .as_object_mut()
        .unwrap()
        .remove("signer_public_key")
        .unwrap();
    std::fs::write(firm.layout.secrets(), serde_json::to_vec(&secrets).unwrap()).unwrap();
    let sick = chat_archive(&firm, &["doctor", "--json"]);
    assert!(!sick.status.success());
    let report: serde_json::Value = serde_json::from_slice(&sick.stdout).expect("JSON");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {report}"))
    };
    assert_eq!(check("mailboxes")["ok"], false);
    assert!(check("mailboxes")["detail"]
        .as_str()
        .unwrap()
        .contains(ASMITH));
    assert_eq!(check("secret fields")["ok"], false);
    assert!(check("secret fields")["detail"]
        .as_str()
        .unwrap()
        .contains("signer_public_key"));
    let text = String::from_utf8_lossy(&sick.stdout);
    assert!(
        !text.contains(removed.as_str().unwrap_or("never")),
        "no secret value shown"
    );
    assert_eq!(check("store")["ok"], true);
}

#[tokio::test]
async fn doctor_checks_the_sftp_site_with_the_pinned_host_key() {
    use chat_archive_core::adapters::sftp::SftpConfig;

    use chat_archive_core::config::ConnectorConfig;

    use integration_tests::sshd::Sshd;

    let server = Sshd::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let site = |host_key: String| SftpConfig {
        host_keys: vec![host_key],
        ..server.site_config()
    };
    let configure = |host_key: String| {
        let mut config = ConnectorConfig::ice();
        config.firm_domains = vec!["acme.example".into()];
        config.signature_policy = SignaturePolicy::Required;
        config.sftp = Some(site(host_key));
        firm.write_config(config);
    };
    server.grant_key_login(&firm).await;

    configure(server.host_key());
    let out = ok(&firm, &["doctor"]);
    assert!(verdict(&out, "SFTP site").starts_with("ok"), "{out}");
    let validated: serde_json::Value =
        serde_json::from_str(&ok(&firm, &["validate-connection", "--json"])).expect("JSON");
    assert_eq!(validated["passed"], true, "{validated}");
    assert!(validated["server_key"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));

    // Another server's key pinned: a hard failure, never trust on first use.
    let other = chat_archive_core::keygen::generate_ssh("other host").expect("key");
    configure(other.public_openssh.clone());
    let wrong = chat_archive(&firm, &["doctor"]);
    assert!(!wrong.status.success());
    let out = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert!(verdict(&out, "SFTP site").starts_with("FAIL"), "{out}");
    assert!(out.to_lowercase().contains("host key"), "{out}");
    let refused = chat_archive(&firm, &["validate-connection", "--json"]);
    assert!(!refused.status.success());
    let validated: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("JSON");
    assert_eq!(validated["passed"], false, "{validated}");
    let failed: Vec<&serde_json::Value> = validated["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{validated}");
}

#[tokio::test]
async fn doctor_checks_the_mail_server_credential_and_every_mapped_mailbox_on_dovecot() {
    use chat_archive_core::config::ConnectorConfig;
    use chat_archive_core::ports::secrets::fields;
    use chat_archive_core::ports::SecretValue;
    use integration_tests::dovecot::{self, Dovecot};

    let server = Dovecot::start(&[JDOE, ASMITH]);
    let firm = Firm::new(&[], SignaturePolicy::Required);
    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    config.imap = Some(server.imap_config());
    firm.write_config(config);
    let set_password = |password: &'static str| {
        let pipeline = firm.pipeline();
        async move {
            pipeline
                .secrets
                .update(
                    "ice",
                    std::collections::BTreeMap::from([(
                        fields::MAILBOX_PASSWORD.to_string(),
                        SecretValue::new(password),
                    )]),
                )
                .await
                .expect("secret")
        }
    };
    set_password(dovecot::MASTER_PASSWORD).await;
    let dir = firm.layout.store().join("config/ice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mapping.csv"),
        "ImId,Mailbox\njdoe1,jdoe@acme.example\nasmith2,asmith@acme.example\n",
    )
    .unwrap();
    let out = ok(&firm, &["doctor"]);
    assert!(verdict(&out, "mail server").starts_with("ok"), "{out}");
    assert!(verdict(&out, "mailboxes").starts_with("ok"), "{out}");

    // A mailbox the server does not have.
    std::fs::write(
        dir.join("mapping.csv"),
        "ImId,Mailbox\njdoe1,jdoe@acme.example\nbwayne3,bwayne@acme.example\n",
    )
    .unwrap();
    let missing = chat_archive(&firm, &["doctor"]);
    assert!(!missing.status.success());
    let out = String::from_utf8_lossy(&missing.stdout).into_owned();
    assert!(verdict(&out, "mail server").starts_with("ok"), "{out}");
    let line = verdict(&out, "mailboxes");
    assert!(
        line.starts_with("FAIL") && line.contains("bwayne@acme.example"),
        "{out}"
    );

    // The admin credential refused.
    set_password("not-the-master-password").await;
    let refused = chat_archive(&firm, &["doctor"]);
    assert!(!refused.status.success());
    let out = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(verdict(&out, "mail server").starts_with("FAIL"), "{out}");
    assert!(
        !out.contains("not-the-master-password"),
        "no secret value shown: {out}"
    );
}

/// The same commands against a deployed archive: the mapping into the bucket,
/// secret fields into Secrets Manager, each read back with boto3.
#[test]
fn mapping_and_secret_commands_write_to_the_bucket_and_secrets_manager() {
    use integration_tests::moto::Moto;

    let moto = Moto::start();
    moto.boto(
        r#"
s3.create_bucket(Bucket="archive")
sm.create_secret(Name="chat-archive/ice", SecretString=json.dumps({"firm_code": "ACME"}))
"#,
        serde_json::Value::Null,
    );
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let aws = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-archive-cli"))
            .arg("--data-dir")
            .arg(&firm.layout.data_dir)
            .args(args)
            .envs(moto.env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chat-archive runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin written");
        child.wait_with_output().expect("chat-archive ends")
    };

    let csv = firm.dir.path().join("mapping.csv");
    std::fs::write(&csv, "ImId,Mailbox\njdoe1,jdoe@acme.example\nbroken\n").unwrap();
    let set = aws(
        &[
            "mapping",
            "set",
            csv.to_str().unwrap(),
            "--bucket",
            "archive",
        ],
        "",
    );
    assert!(set.status.success(), "{set:?}");
    let out = String::from_utf8_lossy(&set.stdout);
    assert!(out.contains("row 3"), "{out}");
    assert!(out.contains("+ jdoe1 -> jdoe@acme.example"), "{out}");
    let in_bucket = moto.boto(
        r#"out(s3.get_object(Bucket="archive", Key="config/ice/mapping.csv")["Body"].read().decode())"#,
        serde_json::Value::Null,
    );
    assert_eq!(
        in_bucket.as_str(),
        Some("ImId,Mailbox\njdoe1,jdoe@acme.example\nbroken\n")
    );
    // Nothing was written to the data directory's own store.
    assert!(!firm.layout.store().join("config/ice/mapping.csv").exists());
    // A mistyped SDK limit is refused, naming the variable, before any call.
    let mistyped = Command::new(env!("CARGO_BIN_EXE_chat-archive-cli"))
        .arg("--data-dir")
        .arg(&firm.layout.data_dir)
        .args(["mapping", "show", "--bucket", "archive"])
        .envs(moto.env())
        .env("SDK_ATTEMPT_TIMEOUT_SECS", "60s")
        .output()
        .expect("chat-archive runs");
    let said = String::from_utf8_lossy(&mistyped.stderr);
    assert!(
        !mistyped.status.success() && said.contains("SDK_ATTEMPT_TIMEOUT_SECS"),
        "{mistyped:?}"
    );
    let show = aws(&["mapping", "show", "--bucket", "archive", "--json"], "");
    assert!(show.status.success(), "{show:?}");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("JSON");
    assert_eq!(
        shown["rows"],
        serde_json::json!([{"im_id": "jdoe1", "mailbox": "jdoe@acme.example"}])
    );

    // A secret field set from standard input, merged into the secret.
    let set = aws(
        &[
            "secret",
            "set",
            "mailbox_password",
            "--stdin",
            "--secret-id",
            "chat-archive/ice",
        ],
        "s3cret-imap\n",
    );
    assert!(set.status.success(), "{set:?}");
    let stored = moto.boto(
        r#"out(json.loads(sm.get_secret_value(SecretId="chat-archive/ice")["SecretString"]))"#,
        serde_json::Value::Null,
    );
    assert_eq!(
        stored,
        serde_json::json!({"firm_code": "ACME", "mailbox_password": "s3cret-imap"})
    );
    let list = aws(
        &[
            "secret",
            "list",
            "--secret-id",
            "chat-archive/ice",
            "--json",
        ],
        "",
    );
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains("s3cret-imap"), "no value shown: {text}");
    let listed: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        listed["set"],
        serde_json::json!(["firm_code", "mailbox_password"])
    );

    // A bucket that does not exist: one line naming it.
    let missing = aws(
        &[
            "mapping",
            "set",
            csv.to_str().unwrap(),
            "--bucket",
            "no-such-bucket",
        ],
        "",
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no-such-bucket") || err.contains("NoSuchBucket"),
        "{err}"
    );
}
