//! The chat data model shared by every source format and the mail builder.
//!
//! A parser turns its input into [`Conversation`]s; the mail builder turns a
//! conversation (or one day / one message of it) into an RFC 5322 message.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::spool::Content;
use crate::spool::Spool;

/// One participant of a conversation, as the source names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The user's id on the chat network (ICE: `ImId`).
    pub im_id: String,
    pub name: Option<String>,
    pub company: Option<String>,
    /// The address the source gives for the user (ICE: `SenderEmail` /
    /// `RecipientEmail` / `Email`; XIP: the `Email` property).
    pub email: Option<String>,
}

/// A file sent in the conversation. The content is kept whole: no size
/// limit (a large one waits in a spool, not in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub file_name: String,
    pub content_type: Option<String>,
    pub content: Content,
}

/// A file an event names by id, delivered apart from the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    pub file_name: String,
    pub file_id: String,
    pub size: Option<u64>,
}

impl AttachmentRef {
    /// The transcript line for it while its bytes are not at hand.
    pub fn describe(&self) -> String {
        format!(
            "sent attachment {} ({} bytes, FileID {})",
            self.file_name,
            self.size.map_or("unknown".to_string(), |s| s.to_string()),
            self.file_id
        )
    }
}

/// What happened at one point of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Message {
        text: String,
    },
    Entered,
    Left,
    Disclaimer {
        text: String,
    },
    FileTransfer(FileTransfer),
    /// A file whose bytes come separately (Bloomberg's attachment archive);
    /// the convert stage puts the file in its place, or says it is missing.
    Attachment(AttachmentRef),
    /// A system line the transcript shows as it is (an invitation, a file
    /// transfer whose bytes ship elsewhere, a system message).
    Notice {
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEvent {
    /// The source's id for the event, when it has one (ICE: `Message/@Id`).
    pub id: Option<String>,
    pub time: DateTime<Utc>,
    /// The acting user's ImId; empty for system events (e.g. a room disclaimer).
    pub im_id: String,
    pub kind: EventKind,
}

/// One conversation (a one-to-one chat or a room) as found in one export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    /// `OneToOne`, `Group`, `PersistentChat`, ... as the source says it.
    pub kind: Option<String>,
    pub room_name: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub participants: Vec<Participant>,
    pub events: Vec<ChatEvent>,
    /// The conversation's own XML, as read, attached to every mail built from
    /// it so that conversion loses nothing (unknown elements included).
    pub original_xml: Vec<u8>,
    /// Runs of text too long to hold, cut out of `original_xml`: each spool's
    /// bytes belong at its offset there (see [`crate::spool::write_filled`]).
    pub original_spilled: Vec<(usize, Arc<Spool>)>,
    /// What `original_xml` holds, which names its attachment.
    pub original_format: OriginalFormat,
    /// 1-based line of the conversation's start tag in its source file.
    pub line: u64,
}

/// The source's own record of a conversation, attached to its mails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OriginalFormat {
    /// The `<Conversation>` element of an ICE Chat export.
    #[default]
    IceXml,
    /// The `<Conversation>` element of a FileDump export (Actiance form).
    FileDumpXml,
    /// The `<Conversation>` element of a Bloomberg IB FileDump export.
    BloombergXml,
    /// The `item.json` of a XIP item.
    XipItemJson,
}

impl OriginalFormat {
    /// The dialect the conversation was read in, for headers and status logs.
    pub fn dialect(self) -> &'static str {
        match self {
            OriginalFormat::IceXml => "ICE Chat export",
            OriginalFormat::FileDumpXml => "FileDump (Actiance)",
            OriginalFormat::BloombergXml => "Bloomberg IB",
            OriginalFormat::XipItemJson => "XIP",
        }
    }

    /// File name and media type of the attachment for conversation `id`.
    pub fn attachment(self, id: &str) -> (String, &'static str) {
        match self {
            OriginalFormat::IceXml | OriginalFormat::FileDumpXml | OriginalFormat::BloombergXml => {
                (format!("conversation-{id}.xml"), "application/xml")
            }
            OriginalFormat::XipItemJson => (format!("item-{id}.json"), "application/json"),
        }
    }
}

impl Conversation {
    pub fn participant(&self, im_id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.im_id == im_id)
    }
}
