//! One adapter per real system. The embedded defaults (one machine) live here;
//! the AWS, SFTP and IMAP adapters join them beside.

pub mod drop_dir;
pub mod imap;
pub mod local_store;
pub mod maildir;
#[cfg(feature = "aws")]
pub mod s3;
pub mod secrets_file;
#[cfg(feature = "aws")]
pub mod secrets_manager;
pub mod sftp;

pub use drop_dir::DropDirectory;
pub use imap::{ImapConfig, ImapSink};
pub use local_store::LocalStore;
pub use maildir::MaildirSink;
pub use secrets_file::SecretsFile;
pub use sftp::{SftpConfig, SftpSource};

/// The entries of a local directory; none when it does not exist (yet).
fn dir_entries(dir: &std::path::Path) -> crate::error::Result<Vec<std::fs::DirEntry>> {
    let listing = |e| crate::error::Error::io(format!("listing {}", dir.display()), e);
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.map_err(listing)).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(listing(e)),
    }
}
