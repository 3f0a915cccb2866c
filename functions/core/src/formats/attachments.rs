//! Bloomberg's attachment archives: the files sent in a day's chats come in a
//! separate `.tar.gz` beside the export (`f886973.ib19.att.261124.tar.gz`
//! for `f886973.ib19.261124.xml`), each member named by the `FileID` its
//! `<Attachment>` event gives. Either file may arrive first.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

/// The archive part that names an attachment archive.
const MARK: &str = "att";

/// Whether a key names an attachment archive (`*.att.*.tar.gz`, also `.tgz`).
pub fn is_archive(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    let name = ["", ".gpg", ".pgp", ".asc"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext).filter(|n| is_tar_gz(n)))
        .map(str::to_string);
    name.is_some_and(|n| n.split('.').any(|part| part == MARK))
}

fn is_tar_gz(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// The attachment archive of an export: `dir/f.ib19.261124.xml` ->
/// `dir/f.ib19.att.261124.tar.gz` (the mark goes before the date part).
pub fn archive_for_export(export_key: &str) -> Option<String> {
    let (dir, name) = export_key.rsplit_once('/').unwrap_or(("", export_key));
    let stem = name.strip_suffix(".xml")?;
    let parts: Vec<&str> = stem.split('.').collect();
    let date = parts.iter().rposition(|p| is_date_part(p))?;
    let mut named: Vec<&str> = parts[..date].to_vec();
    named.push(MARK);
    named.extend(&parts[date..]);
    let archive = format!("{}.tar.gz", named.join("."));
    Some(match dir {
        "" => archive,
        dir => format!("{dir}/{archive}"),
    })
}

/// The export an attachment archive belongs to (the inverse).
pub fn export_for_archive(archive_key: &str) -> Option<String> {
    let (dir, name) = archive_key.rsplit_once('/').unwrap_or(("", archive_key));
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))?;
    let parts: Vec<&str> = stem.split('.').filter(|p| *p != MARK).collect();
    let export = format!("{}.xml", parts.join("."));
    Some(match dir {
        "" => export,
        dir => format!("{dir}/{export}"),
    })
}

fn is_date_part(part: &str) -> bool {
    part.len() == 6 && part.bytes().all(|b| b.is_ascii_digit())
}

/// Every `FileID` an export names, read as a stream (one pass, nothing
/// kept but the ids).
pub fn wanted_file_ids<R: BufRead>(reader: R) -> std::result::Result<BTreeSet<String>, String> {
    let mut xml = quick_xml::Reader::from_reader(reader);
    let mut buf = Vec::new();
    let mut ids = BTreeSet::new();
    let mut in_file_id = false;
    loop {
        match xml.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => in_file_id = e.local_name().as_ref() == b"FileID",
            Ok(Event::End(_)) => in_file_id = false,
            Ok(Event::Text(text)) if in_file_id => {
                let id = text.xml10_content().map_err(|e| e.to_string())?;
                let id = id.trim();
                if !id.is_empty() {
                    ids.insert(id.to_string());
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            // The convert stage reports the syntax fault with its place.
            Err(_) => break,
        }
        buf.clear();
    }
    Ok(ids)
}

/// The members of an archive wanted by an export, extracted into `dir`
/// (each to a file of its own, named by position: a member's name is never
/// a path on this machine), by the `FileID` they stand for. A member matches
/// by its file name, with or without extension.
pub fn extract<R: Read>(
    archive: R,
    wanted: &BTreeSet<String>,
    dir: &Path,
) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for (index, entry) in tar.entries()?.enumerate() {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stem = name.split('.').next().unwrap_or(name);
        let Some(id) = [name, stem].into_iter().find(|n| wanted.contains(*n)) else {
            continue;
        };
        if found.contains_key(id) {
            continue;
        }
        let target = dir.join(format!("member-{index}"));
        let mut out = std::fs::File::create(&target)?;
        std::io::copy(&mut entry, &mut out)?;
        found.insert(id.to_string(), target);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_and_its_attachment_archive_name_each_other() {
        let export = "plain/bloomberg/f886973.ib19.261124.xml";
        let archive = "plain/bloomberg/f886973.ib19.att.261124.tar.gz";
        assert_eq!(archive_for_export(export).as_deref(), Some(archive));
        assert_eq!(export_for_archive(archive).as_deref(), Some(export));
        assert!(is_archive(archive));
        assert!(is_archive(
            "raw/bloomberg/f886973.ib19.att.261124.tar.gz.gpg"
        ));
        assert!(!is_archive(export));
        assert!(!is_archive("raw/ice/backup.tar.gz"));
        assert_eq!(archive_for_export("plain/ice/ACME_2026-11-20.xml"), None);
    }

    #[test]
    fn only_the_wanted_members_are_extracted_by_their_file_id() {
        let mut tarball = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, body) in [
            ("ATT-1", &b"first"[..]),
            ("ATT-2.pdf", b"second"),
            ("../../ATT-3", b"third"),
            ("other", b"not wanted"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            // Written raw: the builder itself refuses a name with "..".
            let field = &mut header.as_gnu_mut().expect("gnu header").name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            tarball.append(&header, body).unwrap();
        }
        let bytes = tarball.into_inner().unwrap().finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wanted: BTreeSet<String> = ["ATT-1", "ATT-2", "ATT-3", "ATT-9"]
            .map(String::from)
            .into();
        let found = extract(&bytes[..], &wanted, dir.path()).unwrap();
        let ids: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(
            ids,
            ["ATT-1", "ATT-2", "ATT-3"],
            "by name, with or without extension"
        );
        assert_eq!(std::fs::read(&found["ATT-2"]).unwrap(), b"second");
        assert_eq!(std::fs::read(&found["ATT-3"]).unwrap(), b"third");
        assert!(
            found.values().all(|p| p.parent() == Some(dir.path())),
            "a member's name never becomes a path"
        );
    }

    #[test]
    fn file_ids_are_read_from_the_export() {
        let xml = b"<FileDump><Conversation><Attachment><FileName>a.pdf</FileName>\
            <FileID> ATT-1 </FileID></Attachment><Message><Content>FileID</Content>\
            </Message><Attachment><FileID>ATT-2</FileID></Attachment></Conversation></FileDump>";
        let ids = wanted_file_ids(&xml[..]).unwrap();
        assert_eq!(ids, ["ATT-1".to_string(), "ATT-2".to_string()].into());
    }
}
