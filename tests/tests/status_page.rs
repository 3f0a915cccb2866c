//! The status page in a real browser: headless Chromium (its own empty
//! profile, no network) renders the page `chat-archive status --html`
//! writes; the numbers in the DOM equal the status JSON, nothing is loaded
//! from outside, and a screenshot is kept as a CI artifact.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_archive_core::crypto::SignaturePolicy;
use integration_tests::fixtures::SAMPLE;
use integration_tests::hostile::day_status;
use integration_tests::local::Firm;

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";

fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    // `timeout` ends the browser by its own PID should it hang.
    Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs (scripts/install-test-deps.sh installs it)")
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// The text of the first element after `marker` (`<td ... data-count="x">N</td>`).
fn counts_of_day(dom: &str, day: &str) -> Vec<(String, u64)> {
    let row_start = dom
        .find(&format!("data-day=\"{day}\""))
        .unwrap_or_else(|| panic!("no row for {day} in the DOM"));
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").expect("row end")];
    row.split("data-count=\"")
        .skip(1)
        .map(|cell| {
            let (name, rest) = cell.split_once('"').expect("attribute");
            let value = rest[rest.find('>').expect(">") + 1..rest.find('<').expect("<")].trim();
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn the_status_page_renders_offline_and_its_numbers_equal_the_status_json() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    // A damaged file and an unsigned one: quarantine and failures to show.
    firm.drop_export(
        "ACME_2026-11-21.xml.pgp",
        b"<IceChatExport ExportDate=\"2026-11-21\"><Conversation Id=\"c\"><Message",
        true,
    );
    firm.drop_export("ACME_2026-11-22.xml.pgp", SAMPLE.as_bytes(), false);
    let cli = env!("CARGO_BIN_EXE_chat-archive-cli");
    let run = Command::new(cli)
        .arg("--data-dir")
        .arg(&firm.layout.data_dir)
        .arg("run")
        .output()
        .expect("run");
    assert!(
        !run.status.success(),
        "quarantine makes the run say so: {run:?}"
    );
    let page = firm.dir.path().join("status.html");
    let written = Command::new(cli)
        .arg("--data-dir")
        .arg(&firm.layout.data_dir)
        .args(["status", "--html"])
        .arg(&page)
        .output()
        .expect("status --html");
    assert!(written.status.success(), "{written:?}");
    let html = std::fs::read_to_string(&page).expect("page");
    for external in ["<script", "<link", "src=\"http", "url(http", "@import"] {
        assert!(
            !html.contains(external),
            "the page loads nothing: {external}"
        );
    }

    let profile = tempfile::tempdir().expect("profile");
    let url = format!("file://{}", page.display());
    let dom = chromium(profile.path(), &["--dump-dom", &url]);
    assert!(dom.status.success(), "{dom:?}");
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !stderr.contains("CONSOLE") && !stderr.contains("Uncaught"),
        "console: {stderr}"
    );
    let dom = String::from_utf8(dom.stdout).expect("DOM");
    assert!(dom.contains("<svg"), "the chart is drawn");

    for day in ["2026-11-20", "2026-11-21"] {
        let status = day_status(&firm, day);
        let shown = counts_of_day(&dom, day);
        let want = [
            ("available_from_source", status.available_from_source),
            ("available_after_fanout", status.available_after_fanout),
            ("imported", status.imported),
            ("partially_imported", status.partially_imported),
            (
                "imported_attachments_kept",
                status.imported_attachments_kept,
            ),
            ("skipped_duplicates", status.skipped_duplicates),
            ("failed", status.failed),
            ("pending", status.pending),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(shown, want, "{day}");
    }
    let quarantined = walk_count(&firm.layout.store().join("quarantine"), ".reason.json");
    assert!(quarantined >= 2, "the damaged and the unsigned file");
    assert!(
        dom.contains(&format!("data-count=\"quarantined\">{quarantined}<")),
        "quarantine count in the DOM"
    );
    assert!(
        dom.contains("ACME_2026-11-22"),
        "the unsigned file is named with its reason"
    );

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().expect("profile");
    let taken = chromium(
        profile.path(),
        &[
            "--window-size=1100,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(taken.status.success(), "{taken:?}");
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}

fn walk_count(dir: &Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_count(&path, suffix)
            } else {
                usize::from(path.to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}
