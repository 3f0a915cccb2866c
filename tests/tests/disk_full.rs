//! A full disk, for real: the mailboxes (Maildir) and then the object store
//! of a local run live on a tmpfs of a few MB that the test mounts, so the
//! kernel answers `ENOSPC` in the middle of the run. The run must stop with
//! an error that names the cause and the place, leave nothing half-written
//! where a reader looks, record nothing as failed for good; once the file
//! system is grown, the next run must bring every conversation into each of
//! its mailboxes exactly once.
//!
//! Mounting needs root (as CI has); without it the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_archive_core::adapters::LocalStore;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::ports::ObjectStore;
use chat_archive_core::status::{ItemRecord, TargetState};
use integration_tests::faults::{
    assert_local_invariant, assert_store_objects_whole, copy_tree, corpus, count_files,
    CorpusShape, ExportFile, MAILBOXES,
};
use integration_tests::local::Firm;

/// A tmpfs mounted over a directory for the life of the value; unmounted
/// on drop (also when the test fails).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`4m`, ...) at `at`, keeping what `at` held.
    /// `None` when not running as root.
    fn over(at: &Path, size: &str) -> Option<Self> {
        if !is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        let kept = at.with_extension("before-mount");
        std::fs::rename(at, &kept).expect("move aside");
        std::fs::create_dir(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs at {}", at.display());
        let mounted = Self { at: at.into() };
        copy_tree(&kept, at);
        std::fs::remove_dir_all(&kept).expect("remove copy");
        Some(mounted)
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {}", self.at.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chat_archive(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chat-archive-cli"))
        .arg("--data-dir")
        .arg(dir)
        .arg("run")
        .env_remove("CHAT_ARCHIVE_LOG")
        .output()
        .expect("chat-archive runs")
}

/// Three days; the last holds a 1.5 MB file transfer, so its mail (the
/// transfer once as the attachment, once inside the original XML) cannot
/// fit beside the others on a few MB.
fn exports() -> (Firm, Vec<ExportFile>) {
    let files = corpus(CorpusShape {
        files: 3,
        conversations_per_file: 12,
        messages_per_conversation: 3,
        attachment_bytes: 1_500_000,
    });
    let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
    for file in &files {
        firm.drop_export(&file.name, file.xml.as_bytes(), true);
    }
    (firm, files)
}

/// Files left in `tmp/` directories (Maildir) or `.tmp/` (the store):
/// partial writes holding space.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if name == "tmp" || name == ".tmp" {
            found.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            found.extend(leftovers(&path));
        }
    }
    found
}

fn assert_stopped_by_full_disk(output: &std::process::Output, place: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the run succeeded on a full disk:\n{stderr}"
    );
    assert!(
        stderr.contains("No space left on device") && stderr.contains(place),
        "the error names neither the cause nor {place:?}:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_out_of_space_stop_the_run_retryably_and_after_growing_each_mail_lands_once() {
    let (firm, files) = exports();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("data");
    copy_tree(&firm.layout.data_dir, &dir);
    let Some(disk) = Tmpfs::over(&dir.join("mailboxes"), "3m") else {
        return;
    };

    let full = chat_archive(&dir);
    assert_stopped_by_full_disk(&full, "mailbox \"");
    let mailboxes = dir.join("mailboxes");
    assert_eq!(
        leftovers(&mailboxes),
        Vec::<PathBuf>::new(),
        "partial mails left in tmp/"
    );
    let delivered = count_files(&mailboxes, &["tmp"]);
    assert!(
        delivered > 0,
        "the first mails fitted before the disk filled"
    );
    // Nothing recorded as failed for good: the full disk was the store's
    // problem, not the mail's.
    let statuses = count_status_failures(&dir).await;
    assert_eq!(
        statuses, 0,
        "a mail was recorded as failed because the disk was full"
    );

    disk.grow("64m");
    let after = chat_archive(&dir);
    assert!(
        after.status.success(),
        "the run after growing the disk failed:\n{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_local_invariant(&dir, &files, "mailboxes out of space, then grown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_out_of_space_stops_the_run_with_nothing_half_written_then_completes_once() {
    let (firm, files) = exports();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("data");
    copy_tree(&firm.layout.data_dir, &dir);
    std::fs::create_dir_all(dir.join("store")).expect("store dir");
    let Some(disk) = Tmpfs::over(&dir.join("store"), "5m") else {
        return;
    };

    let full = chat_archive(&dir);
    assert_stopped_by_full_disk(&full, "object store: ");
    let store_dir = dir.join("store");
    assert_eq!(
        leftovers(&store_dir),
        Vec::<PathBuf>::new(),
        "partial objects left in .tmp/"
    );
    let store = LocalStore::new(&store_dir);
    assert_store_objects_whole(&store, "store out of space").await;

    disk.grow("128m");
    let after = chat_archive(&dir);
    assert!(
        after.status.success(),
        "the run after growing the disk failed:\n{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_local_invariant(&dir, &files, "store out of space, then grown").await;
}

/// Mailbox targets recorded as failed in the item records so far.
async fn count_status_failures(dir: &Path) -> usize {
    let store = LocalStore::new(dir.join("store"));
    let mut failed = 0;
    for key in store.list("reports/ice/").await.expect("list") {
        if !key.contains("/items/") {
            continue;
        }
        let bytes = store.get_bytes(&key).await.expect("item record");
        let record: ItemRecord = serde_json::from_slice(&bytes).expect("an item record");
        failed += record
            .targets
            .iter()
            .filter(|t| t.state == TargetState::Failed)
            .count();
    }
    failed
}
