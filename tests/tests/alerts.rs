//! Alerts before data is lost, each produced on purpose: a day with no
//! file, a signer key that expires in 20 days (made by GnuPG), something
//! left in quarantine, and a file stuck on a real SFTP site (unreadable, three
//! days old). Each is seen by `chat-archive run --strict` (a non-zero exit and
//! an ALERT line) and on the status page.

use std::process::{Command, Output};

use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::crypto::SignaturePolicy;
use integration_tests::fixtures::SAMPLE;
use integration_tests::local::Firm;
use integration_tests::sshd::Sshd;

const JDOE: &str = "jdoe@acme.example";

fn chat_archive(firm: &Firm, args: &[&str]) -> Output {
    firm.run_cli(env!("CARGO_BIN_EXE_chat-archive-cli"), args)
}

fn alerts(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("ALERT ").map(str::to_string))
        .collect()
}

/// The signer's public key in `key`, set by command.
fn set_signer_key(firm: &Firm, key: &std::path::Path) {
    let key = key.to_str().unwrap();
    let set = chat_archive(firm, &["secret", "set", "signer_public_key", "--file", key]);
    assert!(set.status.success(), "{set:?}");
}

fn config(configure: impl FnOnce(&mut ConnectorConfig)) -> ConnectorConfig {
    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    configure(&mut config);
    config
}

fn export_of(day: &str) -> String {
    SAMPLE.replace(
        "ExportDate=\"2026-11-20\"",
        &format!("ExportDate=\"{day}\""),
    )
}

#[test]
fn a_day_without_a_file_an_expiring_key_and_old_quarantine_fail_a_strict_run() {
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    firm.write_config(config(|c| {
        c.alerts.quarantine_after_hours = 0;
        // The sample's days stay in view whatever day the test runs on.
        c.alerts.lookback_days = 36_500;
    }));
    firm.drop_export(
        "ACME_2026-11-20.xml.pgp",
        export_of("2026-11-20").as_bytes(),
        true,
    );
    firm.drop_export(
        "ACME_2026-11-22.xml.pgp",
        export_of("2026-11-22").as_bytes(),
        true,
    );
    let healthy_run = chat_archive(&firm, &["run"]);
    assert!(
        healthy_run.status.success(),
        "without --strict alerts do not fail a run: {healthy_run:?}"
    );

    // The signer's key: one made today that expires in 20 days.
    firm.gpg
        .generate_signer_expiring("Short signer <short@ice.example>", "20d");
    let key = firm.dir.path().join("short-signer.asc");
    std::fs::write(&key, firm.gpg.export_public("short@ice.example")).unwrap();
    set_signer_key(&firm, &key);
    // A file signed by the old signer: quarantined, since the key changed.
    firm.drop_export("ACME_2026-11-23.xml.pgp", b"<IceChatExport", true);

    let strict = chat_archive(&firm, &["run", "--strict"]);
    assert!(!strict.status.success());
    let alerts = alerts(&strict);
    let has = |needle: &str| alerts.iter().any(|a| a.contains(needle));
    assert!(has("no file arrived for 2026-11-21"), "{alerts:#?}");
    assert!(
        !has("2026-11-20 ") && !has("for 2026-11-22"),
        "days with a file: {alerts:#?}"
    );
    assert!(has("the signer's key expires"), "{alerts:#?}");
    assert!(
        !has("the firm's OpenPGP key"),
        "it never expires: {alerts:#?}"
    );
    assert!(
        has("quarantine/raw/ice/ACME_2026-11-23.xml.pgp: in quarantine since"),
        "{alerts:#?}"
    );

    let page = firm.dir.path().join("status.html");
    let written = chat_archive(&firm, &["status", "--html", page.to_str().unwrap()]);
    assert!(written.status.success(), "{written:?}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(&format!("data-count=\"alerts\">{}<", alerts.len())),
        "the page shows them all"
    );
    assert!(html.contains("no file arrived for 2026-11-21"));

    // The doctor warns about the key (its run still passes) and says when
    // the last run was.
    let doctor = chat_archive(&firm, &["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let line = |check: &str| {
        out.lines()
            .find(|l| l[4..].trim_start().starts_with(check))
            .unwrap_or_else(|| panic!("no {check:?} line in:\n{out}"))
            .to_string()
    };
    let keys = line("keys");
    assert!(keys.starts_with("warn"), "{out}");
    assert!(keys.contains("the signer's key expires"), "{out}");
    assert!(line("schedule").contains("last run"), "{out}");
    assert!(doctor.status.success(), "a warning is no failure: {out}");

    // A key that has expired is a failure.
    firm.gpg
        .generate_signer_expiring("Past signer <past@ice.example>", "seconds=1");
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::write(&key, firm.gpg.export_public("past@ice.example")).unwrap();
    set_signer_key(&firm, &key);
    let doctor = chat_archive(&firm, &["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(!doctor.status.success(), "{out}");
    let keys = out.lines().find(|l| l.contains("keys")).unwrap_or_default();
    assert!(
        keys.starts_with("FAIL") && keys.contains("expired"),
        "{out}"
    );
}

#[tokio::test]
async fn a_file_stuck_on_the_sftp_site_for_days_is_an_alert() {
    let server = Sshd::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    firm.write_config(config(|c| {
        c.sftp = Some(server.site_config());
    }));
    server.grant_key_login(&firm).await;
    // Three days on the site, and the firm's login cannot read it.
    let stuck = server.export_dir.join("ACME_2026-11-30.xml.pgp");
    let encrypted = firm.drop_export("ACME_2026-11-30.xml.pgp", SAMPLE.as_bytes(), true);
    std::fs::rename(&encrypted, &stuck).expect("onto the site");
    let status = Command::new("chmod")
        .arg("000")
        .arg(&stuck)
        .status()
        .unwrap();
    assert!(status.success());
    let touched = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&stuck)
        .status()
        .unwrap();
    assert!(touched.success());

    let strict = chat_archive(&firm, &["run", "--strict"]);
    assert!(!strict.status.success());
    let alerts = alerts(&strict);
    assert!(
        alerts.iter().any(
            |a| a.contains("ACME_2026-11-30.xml.pgp: on the source since")
                && a.contains("still not fetched")
        ),
        "{alerts:#?}\n{}",
        String::from_utf8_lossy(&strict.stderr)
    );
}
