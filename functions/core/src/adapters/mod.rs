//! One adapter per real system. The embedded defaults (one machine) live here;
//! the AWS, SFTP and IMAP adapters join them beside.

pub mod drop_dir;
pub mod local_store;
pub mod maildir;
pub mod secrets_file;

pub use drop_dir::DropDirectory;
pub use local_store::LocalStore;
pub use maildir::MaildirSink;
pub use secrets_file::SecretsFile;
