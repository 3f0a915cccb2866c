//! A run of character data too long to hold (a file transfer of a GB is one
//! run of base64 text in the export) goes to a [`Spool`] as it is read, and
//! the XML parser reads a short processing instruction in its place, which
//! names the spool: `<?chat-archive-spill-<nonce> <index>?>`. The nonce is
//! drawn per reader, so no input can forge a marker.
//!
//! The reader knows just enough XML to tell character data from markup
//! (tags with their quoted values, comments, CDATA, processing
//! instructions); the parser above it judges everything else. Runs up to
//! the threshold pass through unchanged, so for the usual export nothing
//! changes but one copy of the bytes.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use crate::spool::Spool;

/// Runs of text longer than this are spilled.
pub const SPILL_AT: usize = 4 << 20;
/// Bytes read from the input at a time.
const READ: usize = 64 * 1024;
/// The longest markup opening the reader tells apart (`<![CDATA[`).
const LOOKAHEAD: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Character data, from `run_start`.
    Text,
    /// At a `<` (at `safe`), not yet told which markup it opens.
    Open,
    /// Inside a tag or a declaration, within quotes when set.
    Tag(Option<u8>),
    /// Inside a comment, CDATA section or processing instruction, up to
    /// the closing sequence.
    Until(&'static [u8]),
}

pub struct SpillingReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Handed out up to here.
    start: usize,
    /// Known not to belong to a run that may still be spilled: may be
    /// handed out up to here.
    safe: usize,
    /// Looked at up to here.
    scanned: usize,
    /// Where the current run of text begins (in [`Scan::Text`]).
    run_start: usize,
    state: Scan,
    limit: usize,
    target: String,
    spills: Vec<Option<(Arc<Spool>, u64)>>,
    eof: bool,
}

impl<R: BufRead> SpillingReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, SPILL_AT)
    }

    /// Spills runs longer than `limit` (tests use small ones).
    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(READ + LOOKAHEAD),
            start: 0,
            safe: 0,
            scanned: 0,
            run_start: 0,
            state: Scan::Text,
            limit: limit.max(1),
            target: format!("chat-archive-spill-{:016x}", rand::random::<u64>()),
            spills: Vec::new(),
            eof: false,
        }
    }

    /// The target of this reader's marker instructions.
    pub fn marker_target(&self) -> &str {
        &self.target
    }

    /// The spool a marker names and the lines its run held (once: the
    /// caller owns it from then on).
    pub fn take_spill(&mut self, index: usize) -> Option<(Arc<Spool>, u64)> {
        self.spills.get_mut(index).and_then(Option::take)
    }

    /// Scans on; `false` when more input is needed.
    fn scan(&mut self) -> io::Result<bool> {
        let before = self.safe;
        loop {
            let len = self.buf.len();
            let state = self.state;
            match state {
                Scan::Text => match memchr::memchr(b'<', &self.buf[self.scanned..]) {
                    Some(i) if self.scanned + i - self.run_start > self.limit => {
                        self.spill(Some(self.scanned + i))?
                    }
                    Some(i) => {
                        self.safe = self.scanned + i;
                        self.scanned = self.safe;
                        self.state = Scan::Open;
                    }
                    None if len - self.run_start > self.limit => self.spill(None)?,
                    None if self.eof => {
                        self.safe = len;
                        self.scanned = len;
                        self.run_start = len;
                        return Ok(self.safe > before);
                    }
                    None => {
                        self.scanned = len;
                        return Ok(self.safe > before);
                    }
                },
                Scan::Open => {
                    let rest = &self.buf[self.safe..];
                    if rest.len() < LOOKAHEAD && !self.eof {
                        return Ok(self.safe > before);
                    }
                    let (skip, next) = if rest.starts_with(b"<!--") {
                        (4, Scan::Until(b"-->"))
                    } else if rest.starts_with(b"<![CDATA[") {
                        (9, Scan::Until(b"]]>"))
                    } else if rest.starts_with(b"<?") {
                        (2, Scan::Until(b"?>"))
                    } else {
                        (1, Scan::Tag(None))
                    };
                    self.safe = (self.safe + skip).min(len);
                    self.scanned = self.safe;
                    self.state = next;
                }
                Scan::Tag(None) if self.whole_tag_ahead() => {}
                Scan::Tag(quote) => {
                    let rest = &self.buf[self.scanned..];
                    match memchr::memchr3(b'>', b'"', b'\'', rest) {
                        Some(i) => {
                            let at = self.scanned + i;
                            let byte = self.buf[at];
                            self.scanned = at + 1;
                            self.state = match (quote, byte) {
                                (None, b'>') => {
                                    self.run_start = self.scanned;
                                    Scan::Text
                                }
                                (None, q) if q != b'>' => Scan::Tag(Some(q)),
                                (Some(q), b) if q == b => Scan::Tag(None),
                                (other, _) => Scan::Tag(other),
                            };
                            self.safe = self.scanned;
                        }
                        None => {
                            self.safe = len;
                            self.scanned = len;
                            return Ok(self.safe > before);
                        }
                    }
                }
                Scan::Until(end) => {
                    match memchr::memmem::find(&self.buf[self.scanned..], end) {
                        Some(i) => {
                            self.scanned += i + end.len();
                            self.safe = self.scanned;
                            self.run_start = self.scanned;
                            self.state = Scan::Text;
                        }
                        None => {
                            // The closing sequence may be cut by the end of
                            // the data: its first bytes are looked at again.
                            let keep = if self.eof { 0 } else { end.len() - 1 };
                            self.scanned = len.saturating_sub(keep).max(self.scanned);
                            self.safe = self.scanned;
                            return Ok(self.safe > before);
                        }
                    }
                }
            }
        }
    }

    /// The usual tag in one step: up to the next `>`, when the values
    /// before it are all in double quotes (an even number of them, and no
    /// single quote) so that `>` is outside them. Most tags of an export
    /// hold several values; stepping quote by quote cost a call per quote.
    fn whole_tag_ahead(&mut self) -> bool {
        let rest = &self.buf[self.scanned..];
        let Some(end) = memchr::memchr(b'>', rest) else {
            return false;
        };
        let tag = &rest[..end];
        let outside = memchr::memchr(b'\'', tag).is_none()
            && memchr::memchr_iter(b'"', tag).count().is_multiple_of(2);
        if outside {
            self.scanned += end + 1;
            self.safe = self.scanned;
            self.run_start = self.scanned;
            self.state = Scan::Text;
        }
        outside
    }

    /// The run from `run_start` goes to a spool up to the next `<` (at
    /// `end` when already read), and a marker takes its place.
    fn spill(&mut self, end: Option<usize>) -> io::Result<()> {
        let (run_start, inner, buf) = (self.run_start, &mut self.inner, &self.buf);
        let held = end.unwrap_or(buf.len());
        let mut ended = false;
        let mut lines = 0u64;
        let mut count = |bytes: &[u8]| lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
        let spool = Spool::write(|out| {
            count(&buf[run_start..held]);
            out.write_all(&buf[run_start..held])?;
            if end.is_some() {
                return Ok(());
            }
            loop {
                let data = inner.fill_buf()?;
                if data.is_empty() {
                    ended = true;
                    return Ok(());
                }
                match memchr::memchr(b'<', data) {
                    Some(i) => {
                        count(&data[..i]);
                        out.write_all(&data[..i])?;
                        inner.consume(i);
                        return Ok(());
                    }
                    None => {
                        let n = data.len();
                        count(data);
                        out.write_all(data)?;
                        inner.consume(n);
                    }
                }
            }
        })?;
        self.eof |= ended;
        let index = self.spills.len();
        self.spills.push(Some((Arc::new(spool), lines)));
        let marker = format!("<?{} {index}?>", self.target);
        self.buf
            .splice(self.run_start..held, marker.bytes())
            .for_each(drop);
        self.safe = self.run_start + marker.len();
        self.scanned = self.safe;
        self.run_start = self.safe;
        Ok(())
    }

    /// Drops what was handed out and reads the next chunk of input.
    fn read_more(&mut self) -> io::Result<()> {
        let cut = self.start;
        if cut > 0 {
            self.buf.drain(..cut);
            self.start = 0;
            self.safe -= cut;
            self.scanned -= cut;
            self.run_start = self.run_start.saturating_sub(cut);
        }
        let data = self.inner.fill_buf()?;
        if data.is_empty() {
            self.eof = true;
            return Ok(());
        }
        let n = data.len().min(READ);
        self.buf.extend_from_slice(&data[..n]);
        self.inner.consume(n);
        Ok(())
    }
}

impl<R: BufRead> Read for SpillingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for SpillingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.start == self.safe {
            if self.scan()? {
                break;
            }
            if self.eof {
                break;
            }
            self.read_more()?;
        }
        Ok(&self.buf[self.start..self.safe])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.safe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(xml: &str, limit: usize, chunk: usize) -> (String, Vec<Vec<u8>>, String) {
        let mut reader =
            SpillingReader::with_limit(io::BufReader::with_capacity(chunk, xml.as_bytes()), limit);
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        let target = reader.marker_target().to_string();
        let spills = (0..reader.spills.len())
            .map(|i| reader.take_spill(i).unwrap().0.read_all().unwrap())
            .collect();
        (out, spills, target)
    }

    #[test]
    fn short_runs_and_all_markup_pass_through_unchanged() {
        let xml = "<?xml version=\"1.0\"?><a x='>' y=\"<\"><!-- a > b --><![CDATA[ 1 < 2 ]]>\
                   text &amp; more<b/><?pi x > y?></a>";
        for chunk in [1, 2, 3, 7, 64] {
            let (out, spills, _) = through(xml, 64, chunk);
            assert_eq!(out, xml, "chunk {chunk}");
            assert!(spills.is_empty());
        }
    }

    #[test]
    fn a_long_run_of_text_is_spilled_whole_and_marked() {
        let long = "QUJD\n".repeat(100);
        let xml = format!("<a><f x=\"1\">{long}</f><m>short</m><g>{long}</g>{long}");
        for chunk in [1, 5, 64, 4096] {
            let (out, spills, target) = through(&xml, 64, chunk);
            assert_eq!(
                out,
                format!("<a><f x=\"1\"><?{target} 0?></f><m>short</m><g><?{target} 1?></g><?{target} 2?>"),
                "chunk {chunk}"
            );
            assert_eq!(spills, vec![long.as_bytes().to_vec(); 3]);
        }
    }

    #[test]
    fn markup_lookalikes_inside_quotes_comments_and_cdata_do_not_start_text() {
        // A long stretch inside a comment or CDATA is markup: not spilled.
        let inside = "x".repeat(500);
        let xml = format!(
            "<a t='{inside}>'><b u=\">{inside}\" v=\"1\"/><!--{inside}--><![CDATA[{inside}]]></a>"
        );
        let (out, spills, _) = through(&xml, 64, 3);
        assert_eq!(out, xml);
        assert!(spills.is_empty());
    }
}
