//! The payload inside the PGP layer may be plain XML, gzip-compressed XML or a
//! ZIP of XML documents. This module unwraps it as a stream (no seeking, so it
//! works straight off an S3 body) and hands each XML document to the caller.

use std::io::{BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, InputError, Place, Result};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Xml,
    Gzip,
    Zip,
}

/// Looks at the first bytes, without consuming them.
pub fn sniff<R: BufRead>(reader: &mut R) -> std::io::Result<PayloadKind> {
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        PayloadKind::Gzip
    } else if head.starts_with(ZIP_MAGIC) {
        PayloadKind::Zip
    } else {
        PayloadKind::Xml
    })
}

/// Calls `document(name, reader)` for every XML document in the payload, in
/// order. `name` is `file` itself, or `file!entry` for a ZIP entry.
pub fn for_each_document<R, F>(input: R, file: &str, mut document: F) -> Result<()>
where
    R: Read,
    F: FnMut(&str, &mut dyn BufRead) -> Result<()>,
{
    let mut reader = BufReader::with_capacity(BUFFER, input);
    let kind = sniff(&mut reader).map_err(|e| Error::io(format!("reading {file}"), e))?;
    match kind {
        PayloadKind::Xml => document(file, &mut reader),
        PayloadKind::Gzip => document(
            file,
            &mut BufReader::with_capacity(BUFFER, MultiGzDecoder::new(reader)),
        ),
        PayloadKind::Zip => for_each_zip_entry(reader, file, document),
    }
}

fn for_each_zip_entry<R, F>(mut reader: R, file: &str, mut document: F) -> Result<()>
where
    R: Read,
    F: FnMut(&str, &mut dyn BufRead) -> Result<()>,
{
    let mut index = 0usize;
    loop {
        let entry = zip::read::read_zipfile_from_stream(&mut reader).map_err(|e| {
            InputError::new(
                file,
                Place::Entry(format!("#{}", index + 1)),
                format!("corrupt ZIP: {e}"),
            )
        })?;
        let Some(entry) = entry else { return Ok(()) };
        index += 1;
        if entry.is_dir() {
            continue;
        }
        let name = format!("{file}!{}", entry.name());
        let mut entry_reader = BufReader::with_capacity(BUFFER, entry);
        let kind = sniff(&mut entry_reader).map_err(|e| {
            InputError::new(
                file,
                Place::Entry(name.clone()),
                format!("unreadable entry: {e}"),
            )
        })?;
        match kind {
            PayloadKind::Gzip => document(
                &name,
                &mut BufReader::with_capacity(BUFFER, MultiGzDecoder::new(&mut entry_reader)),
            )?,
            PayloadKind::Xml => document(&name, &mut entry_reader)?,
            PayloadKind::Zip => {
                return Err(InputError::new(
                    file,
                    Place::Entry(name),
                    "nested ZIP archives are not accepted",
                )
                .into())
            }
        }
        // Drain what the parser left so the stream is at the next local header.
        std::io::copy(&mut entry_reader, &mut std::io::sink()).map_err(|e| {
            InputError::new(file, Place::Entry(name), format!("corrupt entry: {e}"))
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(bytes: &[u8]) -> Vec<(String, String)> {
        let mut docs = Vec::new();
        for_each_document(bytes, "export", |name, reader| {
            let mut text = String::new();
            reader.read_to_string(&mut text).unwrap();
            docs.push((name.to_string(), text));
            Ok(())
        })
        .unwrap();
        docs
    }

    #[test]
    fn plain_gzip_and_zip_payloads_are_unwrapped() {
        assert_eq!(
            collect(b"<a/>"),
            vec![("export".to_string(), "<a/>".to_string())]
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"<b/>").unwrap();
        assert_eq!(collect(&gz.finish().unwrap())[0].1, "<b/>");

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("one.xml", options).unwrap();
        zip.write_all(b"<one/>").unwrap();
        zip.start_file("two.xml", options).unwrap();
        zip.write_all(b"<two/>").unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let docs = collect(&bytes);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1],
            ("export!two.xml".to_string(), "<two/>".to_string())
        );
    }
}
