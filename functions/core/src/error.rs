//! The library's error type. Bad input is its own variant so that stages can
//! tell "quarantine this and go on" apart from "the system is broken, retry".

use std::fmt;

/// Where in a bad input the problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The whole file (e.g. it is not an OpenPGP message at all).
    File,
    /// 1-based line and column in a text file.
    LineColumn { line: u64, column: u64 },
    /// 1-based byte offset in a binary file.
    Offset(u64),
    /// A named entry of a container (ZIP entry, XIP item).
    Entry(String),
    /// 1-based row of a CSV file, header included.
    Row(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File => write!(f, "whole file"),
            Place::LineColumn { line, column } => write!(f, "line {line}, column {column}"),
            Place::Offset(offset) => write!(f, "byte {offset}"),
            Place::Entry(name) => write!(f, "entry {name:?}"),
            Place::Row(row) => write!(f, "row {row}"),
        }
    }
}

/// Input that can never be processed as it is: it goes to quarantine with this
/// reason, and the rest of the batch goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {place}: {reason}")]
pub struct InputError {
    pub file: String,
    pub place: Place,
    pub reason: String,
}

impl InputError {
    pub fn new(file: impl Into<String>, place: Place, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            place,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),

    /// The named secret or one of its fields is missing. Never carries a value.
    #[error("secret {secret:?}: {problem}")]
    Secret { secret: String, problem: String },

    #[error("configuration: {0}")]
    Config(String),

    /// An event no function consumes, or a malformed one (a test event
    /// typed by hand, a notification of another bucket): fix the event.
    #[error("event: {0}")]
    Event(String),

    /// A broken invariant of this program (a lock poisoned by a panic, a
    /// value of its own that cannot be encoded, an adapter breaking its
    /// port's contract): a bug to report, not the input's fault.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("object store: {key}: {reason}")]
    Store { key: String, reason: String },

    #[error("mailbox {mailbox:?}: {reason}")]
    Mailbox { mailbox: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("OpenPGP: {0}")]
    Pgp(String),

    /// The source of export files (the SFTP site) failed. `retryable` tells a
    /// dropped connection or a timeout (worth another attempt after a pause)
    /// from a refusal no retry can fix: a host key that is not the pinned one,
    /// rejected credentials, a missing file. Never carries a secret.
    #[error("{site}: {reason}")]
    Source {
        site: String,
        reason: String,
        retryable: bool,
    },

    /// An operation got no answer in time (a hung server, or the work
    /// would outlast the Lambda deadline): worth another attempt.
    #[error("{operation}: no answer within {} s", after.as_secs())]
    Timeout {
        operation: String,
        after: std::time::Duration,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The kind of failure, for a caller that reports or routes it (a
    /// Lambda failure's `errorType` in the dead-letter queue).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Input(_) => "BadInput",
            Error::Secret { .. } => "Secret",
            Error::Config(_) => "Config",
            Error::Event(_) => "BadEvent",
            Error::Internal(_) => "Internal",
            Error::Store { .. } => "Store",
            Error::Mailbox { .. } => "Mailbox",
            Error::Io { .. } => "Io",
            Error::Pgp(_) => "OpenPgp",
            Error::Source { .. } => "Source",
            Error::Timeout { .. } => "Timeout",
        }
    }

    /// Whether the same work may succeed when tried again unchanged: the
    /// store, the disk or a server was out of reach or out of space. Bad
    /// input, a bad setting or secret, and a refusal are not: they need a
    /// person (or go to quarantine).
    pub fn retryable(&self) -> bool {
        match self {
            Error::Store { .. } | Error::Io { .. } | Error::Timeout { .. } => true,
            Error::Source { retryable, .. } => *retryable,
            Error::Input(_)
            | Error::Secret { .. }
            | Error::Config(_)
            | Error::Event(_)
            | Error::Internal(_)
            | Error::Mailbox { .. }
            | Error::Pgp(_) => false,
        }
    }

    /// [`Error::Internal`] from any failure (for `map_err`).
    pub fn internal(error: impl fmt::Display) -> Self {
        Error::Internal(error.to_string())
    }

    pub fn store(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Store {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
