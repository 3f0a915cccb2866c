//! Mailboxes as a Maildir++ tree: the embedded stand-in for a mail server.
//!
//! `ROOT/<mailbox>/Maildir/.<Folder>/{tmp,new,cur}` is the layout Dovecot uses,
//! so a Dovecot pointed at `ROOT/%u/Maildir` serves what this sink wrote.
//! A mailbox is valid when its directory `ROOT/<mailbox>` exists (it has been
//! provisioned); the sink never invents mailboxes.
//!
//! Exactly once: the file's unique name is derived from the Message-ID, so a
//! second delivery finds it (or, in a race, renames onto the same name).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ports::{outcome_in_batch, Delivery, DeliveryOutcome, MailboxSink};

#[derive(Debug)]
pub struct MaildirSink {
    root: PathBuf,
    /// Unique names already present, per folder directory, loaded on first use.
    present: Mutex<HashMap<PathBuf, HashSet<String>>>,
}

impl MaildirSink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            present: Mutex::new(HashMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Provisions a mailbox (for set-up and tests).
    pub fn create_mailbox(&self, mailbox: &str) -> Result<PathBuf> {
        let dir = self.mailbox_dir(mailbox)?.join("Maildir");
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(dir)
    }

    fn mailbox_dir(&self, mailbox: &str) -> Result<PathBuf> {
        let bad = mailbox.is_empty()
            || mailbox.starts_with('.')
            || mailbox.contains(['/', '\\', '\0', '\r', '\n']);
        if bad {
            return Err(Error::Mailbox {
                mailbox: mailbox.into(),
                reason: "not a usable mailbox name".into(),
            });
        }
        Ok(self.root.join(mailbox.to_lowercase()))
    }

    /// The Maildir++ directory of a folder: `ICE Chat` -> `Maildir/.ICE Chat`,
    /// `Inbox/XIP` -> `Maildir/.Inbox.XIP`, `INBOX` -> `Maildir`.
    pub fn folder_dir(&self, mailbox: &str, folder: &str) -> Result<PathBuf> {
        let maildir = self.mailbox_dir(mailbox)?.join("Maildir");
        if folder.eq_ignore_ascii_case("inbox") {
            return Ok(maildir);
        }
        let segments: Vec<&str> = folder.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s.contains(['.', '\0', '\r', '\n']))
        {
            return Err(Error::Config(format!(
                "folder name {folder:?} cannot be stored in Maildir++"
            )));
        }
        Ok(maildir.join(format!(".{}", segments.join("."))))
    }

    fn is_present(&self, dir: &Path, unique: &str) -> Result<bool> {
        let mut present = self.present.lock().map_err(|_| poisoned())?;
        if !present.contains_key(dir) {
            present.insert(dir.to_path_buf(), scan_unique_names(dir)?);
        }
        Ok(present.get(dir).is_some_and(|names| names.contains(unique)))
    }

    fn mark_present(&self, dir: &Path, unique: String) -> Result<()> {
        let mut present = self.present.lock().map_err(|_| poisoned())?;
        present.entry(dir.to_path_buf()).or_default().insert(unique);
        Ok(())
    }
}

impl MaildirSink {
    /// One delivery, written and synced before it returns.
    fn deliver_now(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome> {
        if !self
            .mailbox_dir(delivery.mailbox)
            .is_ok_and(|dir| dir.is_dir())
        {
            return Err(Error::Mailbox {
                mailbox: delivery.mailbox.into(),
                reason: "no such mailbox".into(),
            });
        }
        let folder = self.folder_dir(delivery.mailbox, delivery.folder)?;
        let unique = unique_name(delivery.message_id);
        if self.is_present(&folder, &unique)? {
            return Ok(DeliveryOutcome::AlreadyPresent);
        }
        write_message(&folder, &unique, delivery)
            .map_err(|e| write_failure(delivery.mailbox, &folder, e))?;
        self.mark_present(&folder, unique)?;
        Ok(DeliveryOutcome::Delivered)
    }

    /// Deliveries written side by side, each synced on its own (the file
    /// system commits concurrent syncs together: one after the other, a
    /// batch of short chats waits on a sync per mail). A message that comes
    /// twice in the group waits for its first copy and finds it there.
    fn deliver_group(&self, group: &[Delivery<'_>]) -> Vec<Result<DeliveryOutcome>> {
        let mut seen = HashSet::new();
        let (first, again): (Vec<usize>, Vec<usize>) =
            (0..group.len()).partition(|&i| seen.insert((group[i].mailbox, group[i].message_id)));
        let mut results: Vec<Option<Result<DeliveryOutcome>>> = Vec::new();
        results.resize_with(group.len(), || None);
        std::thread::scope(|scope| {
            let writers: Vec<_> = first
                .iter()
                .map(|&i| (i, scope.spawn(move || self.deliver_now(&group[i]))))
                .collect();
            for (i, writer) in writers {
                results[i] = Some(writer.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a Maildir writer thread panicked".into()))
                }));
            }
        });
        for i in again {
            results[i] = Some(self.deliver_now(&group[i]));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a delivery was not made".into()))))
            .collect()
    }
}

/// Messages written at once by one batch.
const WRITES_IN_FLIGHT: usize = 16;

fn poisoned() -> Error {
    Error::Internal("maildir index lock poisoned by an earlier panic".into())
}

/// The unique part of every message file in `new/` and `cur/`.
fn scan_unique_names(folder: &Path) -> Result<HashSet<String>> {
    let mut names = HashSet::new();
    for sub in ["new", "cur"] {
        for entry in super::dir_entries(&folder.join(sub))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unique = name.split(':').next().unwrap_or(&name).to_string();
            names.insert(unique);
        }
    }
    Ok(names)
}

/// The Maildir unique name of a message: stable for a Message-ID.
pub fn unique_name(message_id: &str) -> String {
    hex::encode(&Sha256::digest(message_id.as_bytes())[..16])
}

/// Maildir info flags (`S`, `F`, ...) for IMAP system flags, in ASCII order.
fn maildir_flags(flags: &[String]) -> String {
    let mut letters: Vec<char> = flags
        .iter()
        .filter_map(|flag| match flag.to_ascii_lowercase().as_str() {
            "\\seen" => Some('S'),
            "\\flagged" => Some('F'),
            "\\answered" => Some('R'),
            "\\draft" => Some('D'),
            _ => None,
        })
        .collect();
    letters.sort_unstable();
    letters.dedup();
    letters.into_iter().collect()
}

fn write_message(folder: &Path, unique: &str, delivery: &Delivery<'_>) -> std::io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(folder.join(sub))?;
    }
    // Dovecot marks a folder directory with this file; harmless elsewhere.
    let marker = folder.join("maildirfolder");
    if !marker.exists()
        && folder
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        std::fs::File::create(marker)?;
    }
    // Unique per delivery attempt, as Maildir requires: two writers of the
    // same message (two threads, or two Lambda containers on one EFS tree,
    // whose processes often have the same PID) must never share a temporary
    // file, or one truncates what the other is about to rename into cur/.
    let tmp = folder.join("tmp").join(format!(
        "{unique}.{}.{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        delivery.raw.write_to(&mut file)?;
        file.set_modified(delivery.internal_date.into())?;
        file.sync_all()?;
        let name = format!("{unique}:2,{}", maildir_flags(delivery.flags));
        std::fs::rename(&tmp, folder.join("cur").join(name))
    })();
    if written.is_err() {
        // A full disk leaves a partial file in tmp/: readers never see
        // tmp/, but it holds the space the retry needs.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// What a failed write means for the message. A message too large for the
/// file system is this message's problem (refused, the rest goes on);
/// anything else (disk or quota full, I/O error, permissions) is the
/// mailbox store's, and the same delivery succeeds once it is mended: a
/// retryable error, so the item is tried again instead of being recorded
/// as failed.
fn write_failure(mailbox: &str, folder: &Path, error: std::io::Error) -> Error {
    let place = format!("mailbox {mailbox:?}: writing into {}", folder.display());
    if error.kind() == std::io::ErrorKind::FileTooLarge {
        return Error::Mailbox {
            mailbox: mailbox.into(),
            reason: format!("writing into {}: {error}", folder.display()),
        };
    }
    Error::io(place, error)
}

#[async_trait]
impl MailboxSink for MaildirSink {
    async fn is_valid_mailbox(&self, mailbox: &str) -> Result<bool> {
        let Ok(dir) = self.mailbox_dir(mailbox) else {
            return Ok(false);
        };
        Ok(dir.is_dir())
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome> {
        self.deliver_now(delivery)
    }

    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Result<Vec<DeliveryOutcome>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for group in deliveries.chunks(WRITES_IN_FLIGHT) {
            for result in self.deliver_group(group) {
                outcomes.push(outcome_in_batch(result)?);
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn delivers_once_into_a_maildir_plus_plus_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sink = MaildirSink::new(dir.path());
        sink.create_mailbox("alice@acme.example").unwrap();
        assert!(sink.is_valid_mailbox("alice@acme.example").await.unwrap());
        assert!(!sink.is_valid_mailbox("bob@globex.example").await.unwrap());
        let flags = vec!["\\Seen".to_string()];
        let delivery = Delivery {
            mailbox: "alice@acme.example",
            folder: "ICE Chat",
            message_id: "abc@ice-chat",
            raw: b"Subject: x\r\n\r\nbody\r\n".as_slice().into(),
            internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap(),
            flags: &flags,
        };
        assert_eq!(
            sink.deliver(&delivery).await.unwrap(),
            DeliveryOutcome::Delivered
        );
        assert_eq!(
            sink.deliver(&delivery).await.unwrap(),
            DeliveryOutcome::AlreadyPresent
        );
        // A fresh sink (a new process) sees it too.
        let again = MaildirSink::new(dir.path());
        assert_eq!(
            again.deliver(&delivery).await.unwrap(),
            DeliveryOutcome::AlreadyPresent
        );
        let cur = dir.path().join("alice@acme.example/Maildir/.ICE Chat/cur");
        let files: Vec<_> = std::fs::read_dir(&cur).unwrap().collect();
        assert_eq!(files.len(), 1);
        let name = files[0]
            .as_ref()
            .unwrap()
            .file_name()
            .into_string()
            .unwrap();
        assert!(name.ends_with(":2,S"), "{name}");
    }

    use chrono::Utc;

    #[test]
    fn folder_names_map_to_maildir_plus_plus() {
        let sink = MaildirSink::new("/m");
        assert_eq!(
            sink.folder_dir("a@x", "ICE Chat").unwrap(),
            Path::new("/m/a@x/Maildir/.ICE Chat")
        );
        assert_eq!(
            sink.folder_dir("a@x", "Inbox/XIP").unwrap(),
            Path::new("/m/a@x/Maildir/.Inbox.XIP")
        );
        assert_eq!(
            sink.folder_dir("A@X", "INBOX").unwrap(),
            Path::new("/m/a@x/Maildir")
        );
        assert!(sink.folder_dir("../x", "ICE Chat").is_err());
    }
}
