//! Source formats: how export files are laid out and parsed.

pub mod attachments;
pub mod filedump;
pub mod ice;
pub mod payload;
pub mod spill;
pub mod xip;
