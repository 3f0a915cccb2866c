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
