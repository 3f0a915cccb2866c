//! A system clock that jumps: each stage of the chain runs as its own
//! process under `faketime` (libfaketime, from Debian's package), the clock
//! stepped forward and back between stages by days to a year, as a host
//! whose NTP is broken or a restored VM snapshot would. What is archived
//! must not depend on the clock: the same mails (byte for byte), in the
//! days the export names, each once; runs at other clocks afterwards change
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_archive_core::adapters::LocalStore;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::s3_put_event;
use integration_tests::faults::{
    assert_each_conversation_once, assert_store_objects_whole, corpus, CorpusShape, MAILBOXES,
};
use integration_tests::local::Firm;

const BIN: &str = env!("CARGO_BIN_EXE_chat-archive-cli");

/// `chat-archive ARGS` with the wall clock moved by `offset` (`+3d`,
/// `-365d`, ...). The monotonic clock is left alone: timers and timeouts
/// measure real time, as they do when NTP steps a clock.
fn at(offset: &str, firm: &Firm, args: &[&str]) -> String {
    let output = Command::new("faketime")
        .args(["-f", offset])
        .arg(BIN)
        .arg("--data-dir")
        .arg(&firm.layout.data_dir)
        .args(args)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("CHAT_ARCHIVE_LOG")
        .output()
        .expect("faketime runs (Debian package faketime)");
    assert!(
        output.status.success(),
        "chat-archive {args:?} at {offset}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The clock as the process saw it: proof the offset took effect.
fn faked_year(offset: &str) -> i32 {
    let output = Command::new("faketime")
        .args(["-f", offset, "date", "-u", "+%Y"])
        .output()
        .expect("faketime runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a year")
}

/// Invokes one function with an S3 event for `keys`; the keys it wrote.
fn invoke(offset: &str, firm: &Firm, function: &str, keys: &[String]) -> Vec<String> {
    let event = firm.dir.path().join(format!("{function}-event.json"));
    std::fs::write(
        &event,
        serde_json::to_vec(&s3_put_event("local", keys)).expect("event"),
    )
    .expect("write event");
    written(&at(
        offset,
        firm,
        &["invoke", function, &event.display().to_string()],
    ))
}

fn written(response: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(response).expect("a JSON response");
    value["written"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under the store, with its bytes (to compare runs).
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.starts_with(root.join("mail")) || path.starts_with(root.join("plain")) {
                out.push((path.clone(), std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_with_the_clock_stepped_forward_and_back_archive_the_same_mails_once() {
    let this_year = faked_year("+0d");
    assert_eq!(
        faked_year("-365d"),
        this_year - 1,
        "faketime moves the clock"
    );

    let files = corpus(CorpusShape {
        files: 2,
        conversations_per_file: 8,
        messages_per_conversation: 3,
        attachment_bytes: 0,
    });
    let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
    for file in &files {
        firm.drop_export(&file.name, file.xml.as_bytes(), true);
    }
    let schedule = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/schedule.json");

    // fetch three days ahead, decrypt two days behind, convert 40 days
    // ahead, import a year behind.
    let raw = written(&at(
        "+3d",
        &firm,
        &["invoke", "fetch", &schedule.display().to_string()],
    ));
    assert_eq!(raw.len(), 2, "{raw:?}");
    let plain = invoke("-2d", &firm, "decrypt", &raw);
    assert_eq!(plain.len(), 2, "{plain:?}");
    let sidecars = invoke("+40d", &firm, "convert", &plain);
    assert_eq!(
        sidecars.len(),
        16,
        "one mail per conversation: {sidecars:?}"
    );
    invoke("-365d", &firm, "import", &sidecars);

    // The whole run afterwards, at the real clock, then again an hour
    // behind: everything is found done, nothing is written differently.
    let store_dir = firm.layout.store();
    let before = snapshot(&store_dir);
    at("+0d", &firm, &["run"]);
    at("-1h", &firm, &["run"]);
    let after = snapshot(&store_dir);
    assert_eq!(
        before.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        after.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        "runs at other clocks added or removed mails"
    );
    for ((path, old), (_, new)) in before.iter().zip(&after) {
        assert!(old == new, "{} changed with the clock", path.display());
    }
    assert!(
        !store_dir.join(".versions").exists(),
        "an evidence object was replaced by different content"
    );

    let store = LocalStore::new(&store_dir);
    let context = "clock stepped between stages";
    assert_each_conversation_once(&store, &firm.layout.mailboxes(), &files, context).await;
    assert_store_objects_whole(&store, context).await;
}
