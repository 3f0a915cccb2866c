//! Mail read back by a reader this project did not write: Python's `email`
//! package (`tests/readers/maildir_messages.py`), as a mail client would see
//! it, so a test never trusts our own parser to judge our own writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ReadMail {
    pub file: String,
    pub message_id: String,
    pub in_reply_to: String,
    pub references: String,
    pub subject: String,
    pub conversation: String,
    pub day: String,
    pub dialect: String,
    pub source_file: String,
    /// The text/plain body, decoded.
    pub plain: String,
    pub attachments: Vec<ReadAttachment>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: u64,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("readers/maildir_messages.py")
}

/// Every message of each Maildir++ folder (a directory with `cur/`, `new/`).
pub fn read_folders(folders: &[PathBuf]) -> BTreeMap<PathBuf, Vec<ReadMail>> {
    let output = Command::new("python3")
        .arg(script())
        .args(folders)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python mail reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: BTreeMap<String, Vec<ReadMail>> =
        serde_json::from_slice(&output.stdout).expect("reader JSON");
    read.into_iter()
        .map(|(folder, mails)| (PathBuf::from(folder), mails))
        .collect()
}

/// The messages of one folder.
pub fn read_folder(folder: &Path) -> Vec<ReadMail> {
    read_folders(&[folder.to_path_buf()])
        .into_values()
        .next()
        .unwrap_or_default()
}

/// How often `token` occurs in the text bodies of `mails`.
pub fn occurrences(mails: &[ReadMail], token: &str) -> usize {
    mails.iter().map(|m| m.plain.matches(token).count()).sum()
}
