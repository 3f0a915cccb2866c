//! The ports: one small trait per kind of external system. Stages only ever
//! talk to these; each real system has its adapter in [`crate::adapters`].

mod mailbox;
mod object_store;
pub mod secrets;
mod source;

pub use mailbox::{outcome_in_batch, Delivery, DeliveryOutcome, MailBytes, MailboxSink};
pub use object_store::{ByteStream, Metadata, ObjectInfo, ObjectStore};
pub use secrets::{ConnectorSecret, SecretStore, SecretValue};
pub use source::{Pacing, RemoteFile, Source};
