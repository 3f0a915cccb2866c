//! A mail over the mail server's size limit, kept whole: its largest
//! attachments move to the store and, in the mail, each is replaced by a
//! short part naming the file, its size, its SHA-256 and its object key, so
//! search and legal hold still find the conversation and the file can be
//! produced. Everything else (headers, Message-ID, transcripts, the other
//! attachments) stays byte for byte: the parts are cut out of the raw mail
//! at the offsets the MIME parser reports, not rebuilt.

use std::io::{self, Read};

use mail_parser::MimeHeaders;
use sha2::{Digest, Sha256};

use super::SplicedPart;
use crate::spool::{Base64TextReader, Content, Spool};

/// A file taken out of a mail, to be written to the store at `key`.
#[derive(Debug, Clone)]
pub struct KeptFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub key: String,
    pub content: Content,
}

/// The mail and the files it no longer carries.
#[derive(Debug)]
pub struct Reduced {
    pub raw: Vec<u8>,
    pub kept: Vec<KeptFile>,
}

/// One attachment: where its part is in the raw mail, and what it holds.
struct Candidate {
    start: usize,
    end: usize,
    name: String,
    content: Vec<u8>,
}

/// Takes the largest attachments out of `raw` until it fits `limit` bytes;
/// `key_for(sha256, file name)` names each file's object. `None` when the
/// mail cannot be parsed or holds no attachment; the result may still be
/// over the limit when the transcript itself is (the caller decides).
pub fn keep_attachments_in_archive(
    raw: &[u8],
    limit: u64,
    key_for: impl Fn(&str, &str) -> String,
) -> Option<Reduced> {
    let mut candidates = attachments(raw)?;
    // Largest first: the fewest files leave the mail.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.end - c.start));
    let mut size = raw.len() as u64;
    let mut chosen: Vec<(Candidate, Vec<u8>, KeptFile)> = Vec::new();
    for candidate in candidates {
        if size <= limit {
            break;
        }
        let file = kept_file(&candidate, &key_for);
        let notice = notice_part(&file, limit);
        size = size + notice.len() as u64 - (candidate.end - candidate.start) as u64;
        chosen.push((candidate, notice, file));
    }
    if chosen.is_empty() {
        return None;
    }
    chosen.sort_by_key(|(c, _, _)| c.start);
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    let mut kept = Vec::with_capacity(chosen.len());
    for (candidate, notice, file) in chosen {
        // Leaf parts never overlap; a parser that said otherwise is not
        // trusted with a cut.
        if candidate.start < at {
            return None;
        }
        out.extend_from_slice(&raw[at..candidate.start]);
        out.extend_from_slice(&notice);
        at = candidate.end;
        kept.push(file);
    }
    out.extend_from_slice(&raw[at..]);
    Some(Reduced { raw: out, kept })
}

fn attachments(raw: &[u8]) -> Option<Vec<Candidate>> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    let candidates: Vec<Candidate> = message
        .attachments()
        .filter_map(|part| {
            let start = part.raw_header_offset() as usize;
            let end = part.raw_end_offset() as usize;
            (start < end && end <= raw.len()).then(|| Candidate {
                start,
                end,
                name: part
                    .attachment_name()
                    .unwrap_or("attachment.bin")
                    .to_string(),
                content: part.contents().to_vec(),
            })
        })
        .collect();
    (!candidates.is_empty()).then_some(candidates)
}

fn kept_file(candidate: &Candidate, key_for: &impl Fn(&str, &str) -> String) -> KeptFile {
    let sha256 = hex::encode(Sha256::digest(&candidate.content));
    let name = safe_name(&candidate.name);
    KeptFile {
        key: key_for(&sha256, &name),
        size: candidate.content.len() as u64,
        sha256,
        name,
        content: candidate.content.clone().into(),
    }
}

/// The same for a mail in a spool, cut by the places of its spliced parts
/// (its sidecar names them), so the mail is never parsed or held whole: the
/// largest parts leave first, each decoded to a spool of its own; the rest
/// of the mail comes back in memory. `None` when no part is to leave.
pub fn shed_spliced(
    mail: &Spool,
    parts: &[SplicedPart],
    limit: u64,
    key_for: impl Fn(&str, &str) -> String,
) -> io::Result<Option<Reduced>> {
    let mut order: Vec<&SplicedPart> = parts
        .iter()
        .filter(|p| p.start <= p.body && p.body <= p.end && p.end <= mail.len())
        .collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.end - p.start));
    let mut size = mail.len();
    let mut chosen = Vec::new();
    for part in order {
        if size <= limit {
            break;
        }
        let file = kept_spliced(mail, part, &key_for)?;
        let notice = notice_part(&file, limit);
        size = size - (part.end - part.start) + notice.len() as u64;
        chosen.push((part, notice, file));
    }
    if chosen.is_empty() {
        return Ok(None);
    }
    chosen.sort_by_key(|(part, _, _)| part.start);
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut kept = Vec::with_capacity(chosen.len());
    let mut at = 0;
    for (part, notice, file) in chosen {
        if part.start < at {
            return Ok(None);
        }
        mail.open_range(at, part.start)?.read_to_end(&mut out)?;
        out.extend_from_slice(&notice);
        at = part.end;
        kept.push(file);
    }
    mail.open_range(at, mail.len())?.read_to_end(&mut out)?;
    Ok(Some(Reduced { raw: out, kept }))
}

fn kept_spliced(
    mail: &Spool,
    part: &SplicedPart,
    key_for: &impl Fn(&str, &str) -> String,
) -> io::Result<KeptFile> {
    let body = mail.open_range(part.body, part.end)?;
    let decoded = Spool::copy_from(&mut Base64TextReader::new(io::BufReader::new(body)))?;
    let content = Content::from_file(decoded)?;
    let sha256 = hex::encode(content.sha256());
    let name = safe_name(&part.name);
    Ok(KeptFile {
        key: key_for(&sha256, &name),
        size: content.len(),
        sha256,
        name,
        content,
    })
}

/// A file name that fits a quoted header parameter and an object key.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+ ()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '.' || c == ' ');
    if cleaned.is_empty() {
        "attachment.bin".into()
    } else {
        cleaned.to_string()
    }
}

/// The part that stands in for a file: readable, searchable, and with the
/// object key also in a header for tools.
fn notice_part(file: &KeptFile, limit: u64) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=\"utf-8\"\r\n\
         Content-Disposition: inline; filename=\"{name}.kept-in-archive.txt\"\r\n\
         X-Chat-Archive-Kept-File: {key}\r\n\
         \r\n\
         This file is kept whole in the archive, not in this mail: with it the mail\r\n\
         would exceed the {limit} bytes the mail server accepts.\r\n\
         \r\n\
         File: {name}\r\n\
         Size: {size} bytes\r\n\
         SHA-256: {sha256}\r\n\
         Object key: {key}\r\n",
        name = file.name,
        key = file.key,
        size = file.size,
        sha256 = file.sha256,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_builder::mime::MimePart;
    use mail_builder::MessageBuilder;

    fn mail(big: &[u8]) -> Vec<u8> {
        MessageBuilder::new()
            .message_id("m1@ice.chat-archive")
            .subject("chat")
            .from("a@acme.example")
            .to("b@acme.example")
            .body(MimePart::new(
                "multipart/mixed",
                vec![
                    MimePart::new("text/plain", "the transcript"),
                    MimePart::new("application/octet-stream", big.to_vec()).attachment("big.bin"),
                    MimePart::new("text/xml", "<Conversation/>").attachment("original.xml"),
                ],
            ))
            .write_to_vec()
            .unwrap()
    }

    #[test]
    fn the_largest_attachment_leaves_and_a_notice_names_it() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let raw = mail(&big);
        let reduced = keep_attachments_in_archive(&raw, 50_000, |sha, name| {
            format!("attachments/ice/2026-11-20/item/{sha}/{name}")
        })
        .expect("reduced");
        assert!(reduced.raw.len() < 50_000, "{}", reduced.raw.len());
        assert_eq!(reduced.kept.len(), 1);
        let file = &reduced.kept[0];
        assert_eq!(file.content, Content::Bytes(big.clone()));
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&big)));
        let parsed = mail_parser::MessageParser::default()
            .parse(&reduced.raw)
            .unwrap();
        assert_eq!(parsed.message_id(), Some("m1@ice.chat-archive"));
        // The notice is an inline text part: mail clients show it and
        // search indexes it with the transcript.
        let names: Vec<&str> = parsed
            .attachments()
            .filter_map(|a| a.attachment_name())
            .collect();
        assert_eq!(names, vec!["original.xml"]);
        let notice = parsed
            .parts
            .iter()
            .find(|p| p.attachment_name() == Some("big.bin.kept-in-archive.txt"))
            .and_then(|p| p.text_contents())
            .expect("the notice part")
            .to_string();
        assert!(
            notice.contains(&file.sha256) && notice.contains(&file.key),
            "{notice}"
        );
        assert!(notice.contains("Size: 200000 bytes"), "{notice}");
        assert_eq!(
            parsed.attachments().next().unwrap().contents(),
            b"<Conversation/>"
        );
        // A mail that fits is left alone.
        assert!(keep_attachments_in_archive(&raw, 10_000_000, |_, _| String::new()).is_none());
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("../ré\"port.pdf"), "_r__port.pdf");
        assert_eq!(safe_name(".."), "attachment.bin");
    }
}
