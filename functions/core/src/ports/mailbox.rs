use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;

/// One message to put into one folder of one mailbox.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub mailbox: &'a str,
    pub folder: &'a str,
    /// The deterministic Message-ID (without angle brackets): the key to
    /// exactly-once delivery.
    pub message_id: &'a str,
    pub raw: &'a [u8],
    /// When the chat happened (IMAP INTERNALDATE, Maildir mtime).
    pub internal_date: DateTime<Utc>,
    /// IMAP system flags such as `\Seen`.
    pub flags: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// The folder already holds this Message-ID: nothing written.
    AlreadyPresent,
    /// The server refused this message (too large, quota...): the reason is
    /// reported for this item and the rest goes on.
    Refused(String),
}

#[async_trait]
pub trait MailboxSink: Send + Sync {
    /// Whether the mailbox exists and can be opened by the sink. Answers may be
    /// cached for the life of the sink.
    async fn is_valid_mailbox(&self, mailbox: &str) -> Result<bool>;

    /// Puts the message into the folder (created when missing) unless the folder
    /// already holds its Message-ID.
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome>;
}
