use async_trait::async_trait;
use chrono::{DateTime, Utc};

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::spool::Spool;

/// One message to put into one folder of one mailbox.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub mailbox: &'a str,
    pub folder: &'a str,
    /// The deterministic Message-ID (without angle brackets): the key to
    /// exactly-once delivery.
    pub message_id: &'a str,
    pub raw: MailBytes<'a>,
    /// When the chat happened (IMAP INTERNALDATE, Maildir mtime).
    pub internal_date: DateTime<Utc>,
    /// IMAP system flags such as `\Seen`.
    pub flags: &'a [String],
}

/// A mail's bytes: in memory, or in a spool when too large to hold.
#[derive(Debug, Clone, Copy)]
pub enum MailBytes<'a> {
    Memory(&'a [u8]),
    Spooled(&'a Spool),
}

impl<'a> MailBytes<'a> {
    pub fn len(&self) -> u64 {
        match self {
            MailBytes::Memory(bytes) => bytes.len() as u64,
            MailBytes::Spooled(spool) => spool.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory: for a sink that needs them whole and has a
    /// size limit that bounds them.
    pub fn load(&self) -> std::io::Result<Cow<'a, [u8]>> {
        match self {
            MailBytes::Memory(bytes) => Ok(Cow::Borrowed(bytes)),
            MailBytes::Spooled(spool) => spool.read_all().map(Cow::Owned),
        }
    }

    /// Streams the bytes.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            MailBytes::Memory(bytes) => out.write_all(bytes),
            MailBytes::Spooled(spool) => std::io::copy(&mut spool.open()?, out).map(drop),
        }
    }
}

impl<'a> From<&'a [u8]> for MailBytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        MailBytes::Memory(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for MailBytes<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        MailBytes::Memory(bytes)
    }
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

    /// The largest message (bytes) the mailbox takes, when the sink knows
    /// one: a mail over it keeps its largest attachments in the store.
    async fn size_limit(&self, _mailbox: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Delivers many messages, one outcome per delivery in the same order.
    /// Sinks that can pipeline (IMAP) override it; the default delivers one
    /// by one. A problem of one mailbox (`Error::Mailbox`) becomes a refusal
    /// of its messages so the rest of the batch goes on; any other error
    /// aborts the batch (the stage is retried, and exactly-once delivery
    /// makes the retry safe).
    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Result<Vec<DeliveryOutcome>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(outcome_in_batch(self.deliver(delivery).await)?);
        }
        Ok(outcomes)
    }
}

/// What one delivery's result means for its batch: a mailbox error refuses
/// this message alone (the rest goes on); any other error aborts the batch.
pub fn outcome_in_batch(result: Result<DeliveryOutcome>) -> Result<DeliveryOutcome> {
    match result {
        Err(e @ Error::Mailbox { .. }) => Ok(DeliveryOutcome::Refused(e.to_string())),
        other => other,
    }
}
