//! Arbitrary bytes as the plaintext of an ICE Chat export (what the decrypt
//! stage hands to convert): payload unwrapping (plain XML, gzip, ZIP), the
//! streaming XML reader, then the mails of every conversation read, exactly
//! as `stages::convert` chains them. Nothing may panic, whatever the input.
//!
//! Invariants checked beyond "no panic":
//! - the reader is fused: after an error it yields nothing more;
//! - every conversation has a non-empty id and its `original_xml` is the
//!   UTF-8 text of its own `<Conversation>` element;
//! - the mail builder accepts every conversation the parser yields.
#![no_main]

use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::formats::ice::{IceReader, ReadError};
use chat_archive_core::formats::payload;
use chat_archive_core::mail::{build_mails, Lineage};
use chrono::NaiveDate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = ConnectorConfig::ice();
    let fallback = NaiveDate::from_ymd_opt(2026, 11, 20).expect("a valid date");
    let _ = payload::for_each_document(data, "fuzz.xml", |document, reader| {
        let mut conversations = IceReader::new(reader, document);
        while let Some(result) = conversations.next() {
            let conversation = match result {
                Ok(conversation) => conversation,
                // A bad conversation: its bytes are the element, start tag
                // to end tag, and reading goes on after it.
                Err(ReadError::Conversation(bad)) => {
                    assert!(bad.raw.starts_with(b"<Conversation"), "quarantined bytes");
                    continue;
                }
                Err(ReadError::File(_)) => {
                    assert!(conversations.next().is_none(), "reader not fused");
                    break;
                }
            };
            assert!(!conversation.id.is_empty(), "conversation without id");
            let raw = std::str::from_utf8(&conversation.original_xml)
                .expect("original_xml is valid UTF-8");
            assert!(raw.starts_with("<Conversation"), "original_xml: {raw:?}");
            assert!(raw.ends_with('>'), "original_xml: {raw:?}");
            let lineage = Lineage {
                document: document.to_string(),
                line: conversation.line,
                ..Lineage::default()
            };
            let day = conversations
                .header()
                .and_then(|h| h.export_date)
                .unwrap_or(fallback);
            build_mails(&conversation, &config, &lineage, day).expect("mails are built");
        }
        Ok(())
    });
});
