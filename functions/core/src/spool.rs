//! Bytes too large to hold in memory, kept in a temporary file instead: a
//! file transfer of gigabytes is spilled there by the parser
//! ([`crate::formats::spill`]), carried through the model as a handle, and
//! streamed back by the mail writer, so memory stays bounded whatever the
//! size of one item. The file goes when its last handle does.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Base64 as exporters write it: padding optional (they differ on it).
pub const EXPORT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Chunk size of every read and write through a spool file.
const CHUNK: usize = 256 * 1024;
/// Input bytes per MIME base64 line (76 characters).
const LINE_BYTES: usize = 57;

/// A temporary file of bytes.
pub struct Spool {
    path: tempfile::TempPath,
    len: u64,
}

impl Spool {
    /// Writes a new spool with `write`; the file is removed again if it fails.
    pub fn write(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<Spool> {
        let (file, path) = tempfile::NamedTempFile::new()?.into_parts();
        let mut out = io::BufWriter::with_capacity(CHUNK, file);
        write(&mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        let len = file.metadata()?.len();
        Ok(Spool { path, len })
    }

    /// A spool holding what `reader` yields.
    pub fn copy_from(reader: &mut dyn Read) -> io::Result<Spool> {
        Spool::write(|out| io::copy(reader, out).map(drop))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(&self) -> io::Result<BufReader<File>> {
        Ok(BufReader::with_capacity(CHUNK, File::open(&self.path)?))
    }

    /// The bytes `start..end` of the file.
    pub fn open_range(&self, start: u64, end: u64) -> io::Result<impl Read + Send> {
        use std::io::Seek;
        let mut file = File::open(&self.path)?;
        file.seek(io::SeekFrom::Start(start))?;
        Ok(BufReader::with_capacity(CHUNK, file).take(end.saturating_sub(start)))
    }

    /// The whole file in memory: only for what is known to be small.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spool({}, {} bytes)", self.path.display(), self.len)
    }
}

impl PartialEq for Spool {
    fn eq(&self, other: &Self) -> bool {
        *self.path == *other.path
    }
}

impl Eq for Spool {}

/// A file's bytes: in memory, or in a spool when too large to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Spooled(Arc<SpooledContent>),
}

/// Content in a spool, as its source wrote it, with what a first pass over
/// it found (so the size and digest are known without reading it again).
#[derive(Debug, PartialEq, Eq)]
pub struct SpooledContent {
    pub spool: Arc<Spool>,
    /// The spool holds base64 text (with line breaks) to be decoded.
    pub base64: bool,
    /// Length and SHA-256 of the decoded bytes.
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Default for Content {
    fn default() -> Self {
        Content::Bytes(Vec::new())
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        Content::Bytes(bytes)
    }
}

impl Content {
    /// Base64 text in a spool, checked whole: its decoded length and digest,
    /// or why it is not base64.
    pub fn from_base64_spool(spool: Arc<Spool>) -> Result<Content, String> {
        let mut decoded = Base64TextReader::new(spool.open().map_err(|e| e.to_string())?);
        let (len, sha256) = digest_of(&mut decoded).map_err(|e| e.to_string())?;
        Ok(Content::Spooled(Arc::new(SpooledContent {
            spool,
            base64: true,
            len,
            sha256,
        })))
    }

    /// A file already on disk, taken as it is.
    pub fn from_file(spool: Spool) -> io::Result<Content> {
        let (len, sha256) = digest_of(&mut spool.open()?)?;
        Ok(Content::Spooled(Arc::new(SpooledContent {
            spool: Arc::new(spool),
            base64: false,
            len,
            sha256,
        })))
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Spooled(spooled) => spooled.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sha256(&self) -> [u8; 32] {
        match self {
            Content::Bytes(bytes) => Sha256::digest(bytes).into(),
            Content::Spooled(spooled) => spooled.sha256,
        }
    }

    /// The bytes, when they are in memory.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Content::Bytes(bytes) => Some(bytes),
            Content::Spooled(_) => None,
        }
    }

    /// Reads the (decoded) bytes from the start.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            Content::Bytes(bytes) => Box::new(bytes.as_slice()),
            Content::Spooled(spooled) if spooled.base64 => {
                Box::new(Base64TextReader::new(spooled.spool.open()?))
            }
            Content::Spooled(spooled) => Box::new(spooled.spool.open()?),
        })
    }

    /// The whole content in memory (for writers that need it whole).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match self {
            Content::Bytes(bytes) => Ok(bytes.clone()),
            Content::Spooled(_) => {
                let mut out = Vec::new();
                self.open()?.read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// Bytes with holes, each filled with a spool's bytes at its place, written
/// in order.
pub fn write_filled(
    bytes: &[u8],
    holes: &[(usize, Arc<Spool>)],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut at = 0;
    for (place, spool) in holes {
        let place = (*place).clamp(at, bytes.len());
        out.write_all(&bytes[at..place])?;
        io::copy(&mut spool.open()?, out)?;
        at = place;
    }
    out.write_all(&bytes[at..])
}

/// The same, into memory.
pub fn fill_holes(bytes: &[u8], holes: &[(usize, Arc<Spool>)]) -> io::Result<Vec<u8>> {
    if holes.is_empty() {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    write_filled(bytes, holes, &mut out)?;
    Ok(out)
}

/// Length of bytes with their holes filled.
pub fn filled_len(bytes: &[u8], holes: &[(usize, Arc<Spool>)]) -> u64 {
    bytes.len() as u64 + holes.iter().map(|(_, s)| s.len()).sum::<u64>()
}

fn digest_of(reader: &mut dyn Read) -> io::Result<(u64, [u8; 32])> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hash.finalize().into()))
}

/// Decodes base64 text as an export holds it: line breaks and blanks (also
/// written as character references, `&#13;`) are skipped; anything else
/// that is not base64 is an error naming the byte's offset in the text.
pub struct Base64TextReader<R> {
    inner: R,
    /// Compact base64 characters not yet decoded (fewer than four at rest).
    pending: Vec<u8>,
    decoded: Vec<u8>,
    at: usize,
    /// Offset in the text of the next byte of `inner`.
    offset: u64,
    /// A character reference being read (from its `&`), when one is open.
    reference: Option<Vec<u8>>,
    ended: bool,
}

impl<R: BufRead> Base64TextReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            pending: Vec::with_capacity(CHUNK + 16),
            decoded: Vec::with_capacity(CHUNK),
            at: 0,
            offset: 0,
            reference: None,
            ended: false,
        }
    }

    /// Moves base64 characters from the text into `pending`, up to a chunk.
    fn gather(&mut self) -> io::Result<()> {
        while self.pending.len() < CHUNK {
            let data = self.inner.fill_buf()?;
            if data.is_empty() {
                if self.reference.is_some() {
                    return Err(invalid(self.offset, "the text ends inside a reference"));
                }
                self.ended = true;
                return Ok(());
            }
            let mut used = 0;
            while used < data.len() && self.pending.len() < CHUNK {
                if let Some(reference) = self.reference.as_mut() {
                    let byte = data[used];
                    reference.push(byte);
                    used += 1;
                    if byte == b';' || reference.len() > 12 {
                        if !is_blank_reference(reference) {
                            return Err(invalid(
                                self.offset + used as u64,
                                "a character reference that is not a blank",
                            ));
                        }
                        self.reference = None;
                    }
                    continue;
                }
                let rest = &data[used..];
                let run = memchr::memchr3(b'\n', b'\r', b'&', rest).unwrap_or(rest.len());
                let chars = &rest[..run];
                // Spaces and tabs are rare inside base64: checked per run.
                if memchr::memchr2(b' ', b'\t', chars).is_some() {
                    self.pending
                        .extend(chars.iter().filter(|b| !matches!(b, b' ' | b'\t')));
                } else {
                    self.pending.extend_from_slice(chars);
                }
                used += run;
                match rest.get(run) {
                    Some(b'&') => {
                        self.reference = Some(vec![b'&']);
                        used += 1;
                    }
                    Some(_) => used += 1,
                    None => {}
                }
            }
            self.offset += used as u64;
            self.inner.consume(used);
        }
        Ok(())
    }

    fn refill(&mut self) -> io::Result<()> {
        self.decoded.clear();
        self.at = 0;
        while self.decoded.is_empty() && !(self.ended && self.pending.is_empty()) {
            self.gather()?;
            let whole = match self.ended {
                true => self.pending.len(),
                false => self.pending.len() / 4 * 4,
            };
            if whole == 0 {
                continue;
            }
            EXPORT_BASE64
                .decode_vec(&self.pending[..whole], &mut self.decoded)
                .map_err(|e| invalid(self.offset, &e.to_string()))?;
            self.pending.drain(..whole);
        }
        Ok(())
    }
}

fn is_blank_reference(reference: &[u8]) -> bool {
    matches!(
        reference.to_ascii_lowercase().as_slice(),
        b"&#9;" | b"&#10;" | b"&#13;" | b"&#32;" | b"&#x9;" | b"&#xa;" | b"&#xd;" | b"&#x20;"
    )
}

fn invalid(offset: u64, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("content is not valid base64 (near byte {offset} of it): {reason}"),
    )
}

impl<R: BufRead> Read for Base64TextReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.decoded.len() {
            self.refill()?;
        }
        let n = (self.decoded.len() - self.at).min(out.len());
        out[..n].copy_from_slice(&self.decoded[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Length of `len` bytes as MIME base64: lines of 76 characters, each
/// ending in CRLF, the last one too (as mail-builder writes them).
pub fn mime_base64_len(len: u64) -> u64 {
    let chars = len.div_ceil(3) * 4;
    chars + chars.div_ceil(76) * 2
}

/// Writes what `input` yields as MIME base64 (the layout of
/// [`mime_base64_len`]); returns the bytes written.
pub fn write_mime_base64(input: &mut dyn Read, out: &mut dyn Write) -> io::Result<u64> {
    const BLOCK: usize = LINE_BYTES * 4096;
    let mut buf = vec![0u8; BLOCK];
    let mut encoded = Vec::with_capacity(BLOCK / 3 * 4 + BLOCK / LINE_BYTES * 2);
    let mut written = 0u64;
    loop {
        // Whole blocks, so every line but the last has 57 bytes behind it.
        let mut filled = 0;
        while filled < BLOCK {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(written);
        }
        encoded.clear();
        for line in buf[..filled].chunks(LINE_BYTES) {
            base64::engine::general_purpose::STANDARD.encode_string_into(line, &mut encoded);
            encoded.extend_from_slice(b"\r\n");
        }
        out.write_all(&encoded)?;
        written += encoded.len() as u64;
        if filled < BLOCK {
            return Ok(written);
        }
    }
}

/// `encode_string` into a byte vector.
trait EncodeInto {
    fn encode_string_into(&self, input: &[u8], out: &mut Vec<u8>);
}

impl<E: Engine> EncodeInto for E {
    fn encode_string_into(&self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + input.len().div_ceil(3) * 4, 0);
        let n = self
            .encode_slice(input, &mut out[start..])
            .unwrap_or_default();
        out.truncate(start + n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_base64_matches_mail_builder_and_its_length() {
        for len in [0usize, 1, 2, 3, 56, 57, 58, 114, 1000, 57 * 4096 + 5] {
            let input: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut ours = Vec::new();
            let n = write_mime_base64(&mut input.as_slice(), &mut ours).unwrap();
            let mut theirs = Vec::new();
            mail_builder::encoders::base64::base64_encode_mime(&input, &mut theirs, false).unwrap();
            assert_eq!(ours, theirs, "{len} bytes");
            assert_eq!(n, ours.len() as u64);
            assert_eq!(mime_base64_len(len as u64), ours.len() as u64, "{len}");
        }
    }

    #[test]
    fn base64_text_decodes_across_line_breaks_blanks_and_references() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut text = Vec::new();
        write_mime_base64(&mut data.as_slice(), &mut text).unwrap();
        let mut text = String::from_utf8(text)
            .unwrap()
            .replace("\r\n", "&#13;\n  ");
        text.insert_str(0, "\n\t");
        let mut decoded = Vec::new();
        Base64TextReader::new(BufReader::with_capacity(7, text.as_bytes()))
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);

        let spool = Arc::new(Spool::write(|out| out.write_all(text.as_bytes())).unwrap());
        let content = Content::from_base64_spool(spool).unwrap();
        assert_eq!(content.len(), data.len() as u64);
        assert_eq!(content.sha256(), Content::Bytes(data.clone()).sha256());
        assert_eq!(content.to_vec().unwrap(), data);
    }

    #[test]
    fn text_that_is_not_base64_is_refused_with_its_place() {
        for bad in ["QUJD!EVG", "QUJD&amp;", "QUJDRA=x"] {
            let spool = Arc::new(Spool::write(|out| out.write_all(bad.as_bytes())).unwrap());
            let error = Content::from_base64_spool(spool).unwrap_err();
            assert!(error.contains("not valid base64"), "{bad}: {error}");
        }
    }
}
