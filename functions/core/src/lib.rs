//! Chat archive connectors: the core.
//!
//! Data flows `source -> stages -> sink`:
//! - [`ports`] are the small traits every real system is reached through
//!   (object store, secrets, source, mailbox sink);
//! - [`adapters`] hold one implementation per real system;
//! - [`stages`] are the four pipeline steps (fetch, decrypt, convert, import),
//!   each reading one object and writing objects under the next prefix;
//! - [`formats`], [`crypto`], [`mail`], [`mapping`] and [`status`] are the
//!   pure logic the stages call;
//! - [`pipeline`] chains the stages in one process with the very event shapes
//!   that S3 delivers to the Lambda functions.

pub mod adapters;
pub mod alerts;
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod config;
pub mod crypto;
pub mod error;
pub mod events;
pub mod formats;
pub mod function;
pub mod keygen;
pub mod layout;
pub mod ledger;
pub mod mail;
pub mod mapping;
#[cfg(feature = "aws")]
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod ports;
pub mod retry;
pub mod rsmf;
pub mod spool;
pub mod stages;
pub mod status;
pub mod status_page;

pub use error::{Error, InputError, Place, Result};
