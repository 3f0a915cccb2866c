//! Helpers of the hostile-input tests (`tests/tests/hostile_inputs.rs`):
//! checks of quarantine copies and status logs, scans for data that must
//! not have leaked anywhere, mail header checks, and a streaming generator
//! of an export with one huge chat message.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chat_archive_core::error::InputError;
use chat_archive_core::pipeline::RunSummary;
use chat_archive_core::status::DayStatus;
use sha2::{Digest, Sha256};

use crate::local::Firm;

/// The status log of one ICE day, as the pipeline wrote it.
pub fn day_status(firm: &Firm, day: &str) -> DayStatus {
    let path = firm
        .layout
        .store()
        .join(format!("reports/ice/{day}/status.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks that `key` was quarantined by the run with a reason containing
/// `reason`: the error names the file, the copy under `quarantine/` holds
/// exactly the bytes of the object, and `*.reason.json` beside it carries
/// the same file, place and reason. Returns the error for further checks.
pub fn assert_quarantined(
    firm: &Firm,
    summary: &RunSummary,
    key: &str,
    reason: &str,
) -> InputError {
    let error = summary
        .quarantined
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, e)| e.clone())
        .unwrap_or_else(|| panic!("{key} was not quarantined: {:#?}", summary.quarantined));
    let file_name = key.rsplit('/').next().unwrap_or(key);
    let message = error.to_string();
    assert!(
        message.contains(file_name),
        "the error names the file: {message}"
    );
    assert!(error.reason.contains(reason), "{key}: {message}");
    assert!(
        message.contains(&error.place.to_string()),
        "the error names the place: {message}"
    );

    let store = firm.layout.store();
    let copy = store.join("quarantine").join(key);
    let original = std::fs::read(store.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
    let quarantined =
        std::fs::read(&copy).unwrap_or_else(|e| panic!("{} missing: {e}", copy.display()));
    assert!(
        quarantined == original,
        "{}: the quarantined copy differs from the object",
        copy.display()
    );
    let reason_path = copy.with_file_name(format!("{file_name}.reason.json"));
    let reason_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&reason_path)
            .unwrap_or_else(|e| panic!("{} missing: {e}", reason_path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", reason_path.display()));
    let field = |name: &str| {
        reason_json[name]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no {name:?}: {reason_json}", reason_path.display()))
            .to_string()
    };
    assert_eq!(field("key"), key);
    assert_eq!(field("file"), error.file);
    assert_eq!(field("place"), error.place.to_string());
    assert_eq!(field("reason"), error.reason);
    error
}

/// Checks a day whose only source was one bad file: one failed item whose
/// reason is the file's error, and the counts add up.
pub fn assert_failed_file_day(firm: &Firm, day: &str, error: &InputError) {
    let status = day_status(firm, day);
    assert!(status.counts_add_up(), "{day}: {status:?}");
    assert_eq!(
        (status.available_from_source, status.failed, status.imported),
        (1, 1, 0),
        "{day}: {status:?}"
    );
    assert_eq!(status.failures.len(), 1, "{day}: {status:?}");
    assert_eq!(status.failures[0].reason, error.to_string());
}

/// Every file under `root` whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every file under `root` (recursively), as paths relative to it.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// The raw header section of a message or MIME part (up to the empty line).
pub fn header_section(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(raw.len());
    &raw[..end]
}

/// RFC 5322 framing of a header section: every line ends in CRLF (no bare
/// CR or LF that a mail system could read as a line end), no line is longer
/// than 998 octets, and every line is a field (`Name:`) or a folded
/// continuation (starting with white space), up to the empty line that
/// ends the section (if included). Returns the field names.
pub fn check_header_framing(section: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = section;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("header line without CRLF: {:?}", lossy(rest)));
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            // The empty line that ends the section.
            break;
        }
        assert!(
            !line.contains(&b'\r') && !line.contains(&b'\n'),
            "bare CR or LF in a header line: {:?}",
            lossy(line)
        );
        assert!(
            line.len() <= 998,
            "header line of {} octets (RFC 5322 allows 998)",
            line.len()
        );
        match line.first() {
            Some(b' ' | b'\t') => {}
            _ => {
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .unwrap_or_else(|| panic!("not a header field: {:?}", lossy(line)));
                let name = &line[..colon];
                assert!(
                    !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic()),
                    "bad field name in {:?}",
                    lossy(line)
                );
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    names
}

fn lossy(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(200)];
    String::from_utf8_lossy(shown).into_owned()
}

/// SHA-256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the huge-message generator wrote.
pub struct HugeExport {
    /// The message text as a parser must return it (entities resolved).
    pub text_len: u64,
    pub text_sha256: String,
    /// The same text as the plain transcript carries it: CRLF line ends,
    /// each continuation line indented by four spaces (so that no line of
    /// chat text can pass for an entry of its own).
    pub text_crlf_len: u64,
    pub text_crlf_sha256: String,
    /// The `<Conversation>` element holding the message, byte for byte.
    pub conversation_len: u64,
    pub conversation_sha256: String,
    /// The first and last line of the text, to find them in the HTML body.
    pub first_line: String,
    pub last_line: String,
}

/// Writes an ICE export for `day` whose conversation `c-huge` holds one
/// message of exactly `text_bytes` bytes of text (lines of ~70 bytes, each
/// different, every 4096th with characters XML must escape), sent by jdoe1
/// to zmuller7, followed by a small conversation `c-after`. Streams to
/// `out` a megabyte at a time: memory stays small whatever the size.
pub fn write_huge_message_export(
    out: impl Write,
    day: &str,
    text_bytes: u64,
) -> io::Result<HugeExport> {
    const PLAIN: &[u8] = b"0000000000 Bund 10y bid 2.41 / offer 2.42, Bobl flat, size 25m\n";
    const SPECIAL: &[u8] = b"0000000000 Bund <2.41%> & Bobl \"flat\" - escaped line\n";
    const CHUNK: usize = 1 << 20;
    let mut out = io::BufWriter::with_capacity(CHUNK, out);
    let head = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n  "
    );
    out.write_all(head.as_bytes())?;
    let open = format!(
        "<Conversation Id=\"c-huge\" Type=\"OneToOne\" StartTime=\"{day}T08:00:00Z\">\n    \
         <Participants>\n      \
         <Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"jdoe@acme.example\"/>\n      \
         <Participant ImId=\"zmuller7\" Name=\"Zoe Mueller\" Email=\"zoe.mueller@globex.example\"/>\n    \
         </Participants>\n    \
         <Message Id=\"m-huge\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:01Z\">"
    );
    let mut conversation = Sha256::new();
    let mut conversation_len = 0u64;
    conversation.update(open.as_bytes());
    conversation_len += open.len() as u64;
    out.write_all(open.as_bytes())?;

    let (mut text, mut text_crlf) = (Sha256::new(), Sha256::new());
    let (mut written, mut crlf_len) = (0u64, 0u64);
    let (mut first_line, mut last_line) = (String::new(), Vec::new());
    let (mut plain, mut crlf, mut xml) = (Vec::new(), Vec::new(), Vec::new());
    let mut line_number = 0u64;
    while written < text_bytes {
        let mut line = if line_number.is_multiple_of(4096) {
            SPECIAL
        } else {
            PLAIN
        }
        .to_vec();
        let mut n = line_number;
        for digit in line[..10].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let remaining = usize::try_from(text_bytes - written).unwrap_or(usize::MAX);
        if line.len() >= remaining {
            // The last line: cut to size, without a trailing newline.
            line.truncate(remaining.saturating_sub(1));
            line.push(b'.');
        }
        if line_number == 0 {
            first_line = String::from_utf8_lossy(line.trim_ascii_end()).into_owned();
        }
        written += line.len() as u64;
        plain.extend_from_slice(&line);
        match line.strip_suffix(b"\n") {
            Some(body) => {
                crlf.extend_from_slice(body);
                crlf.extend_from_slice(b"\r\n    ");
            }
            None => crlf.extend_from_slice(&line),
        }
        if !line_number.is_multiple_of(4096) {
            xml.extend_from_slice(&line); // nothing to escape
        } else {
            for &byte in &line {
                match byte {
                    b'&' => xml.extend_from_slice(b"&amp;"),
                    b'<' => xml.extend_from_slice(b"&lt;"),
                    b'>' => xml.extend_from_slice(b"&gt;"),
                    _ => xml.push(byte),
                }
            }
        }
        if plain.len() >= CHUNK || written >= text_bytes {
            text.update(&plain);
            text_crlf.update(&crlf);
            crlf_len += crlf.len() as u64;
            conversation.update(&xml);
            conversation_len += xml.len() as u64;
            out.write_all(&xml)?;
            plain.clear();
            crlf.clear();
            xml.clear();
        }
        last_line = line;
        line_number += 1;
    }
    let close: &[u8] = b"</Message>\n  </Conversation>";
    conversation.update(close);
    conversation_len += close.len() as u64;
    out.write_all(close)?;
    let tail = format!(
        "\n  <Conversation Id=\"c-after\" Type=\"OneToOne\" StartTime=\"{day}T09:00:00Z\">\n    \
         <Participants>\n      \
         <Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"jdoe@acme.example\"/>\n      \
         <Participant ImId=\"asmith2\" Name=\"Alice Smith\" Email=\"asmith@acme.example\"/>\n    \
         </Participants>\n    \
         <Message Id=\"m-after\" ImId=\"asmith2\" Timestamp=\"{day}T09:00:01Z\">got it, thanks</Message>\n  \
         </Conversation>\n</IceChatExport>\n"
    );
    out.write_all(tail.as_bytes())?;
    out.flush()?;
    Ok(HugeExport {
        text_len: written,
        text_sha256: hex::encode(text.finalize()),
        text_crlf_len: crlf_len,
        text_crlf_sha256: hex::encode(text_crlf.finalize()),
        conversation_len,
        conversation_sha256: hex::encode(conversation.finalize()),
        first_line,
        last_line: String::from_utf8_lossy(&last_line).into_owned(),
    })
}

/// Whether `needle` occurs in `haystack` within `window` bytes of its start
/// (`from_end` false) or of its end.
pub fn occurs_near(haystack: &[u8], needle: &[u8], window: usize, from_end: bool) -> bool {
    let window = window.min(haystack.len());
    let region = match from_end {
        false => &haystack[..window],
        true => &haystack[haystack.len() - window..],
    };
    region.windows(needle.len()).any(|w| w == needle)
}

/// RFC 5322 sections 2.1 and 2.3: in the whole message (headers and
/// bodies) CR and LF only ever appear together, as CRLF, and there is no
/// NUL. Panics at the first offender.
pub fn assert_clean_lines(raw: &[u8]) {
    for (i, &b) in raw.iter().enumerate() {
        let bad = match b {
            b'\r' if raw.get(i + 1) != Some(&b'\n') => "bare CR",
            b'\n' if i == 0 || raw[i - 1] != b'\r' => "bare LF",
            0 => "NUL",
            _ => continue,
        };
        let from = i.saturating_sub(60);
        let to = (i + 60).min(raw.len());
        panic!(
            "{bad} at byte {i}: {:?}",
            String::from_utf8_lossy(&raw[from..to])
        );
    }
}
