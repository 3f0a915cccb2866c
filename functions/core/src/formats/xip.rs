//! XIP: an open, signed container for chat items (see `docs/xip-format.md`).
//!
//! A ZIP archive holding `META-INF/manifest.json` (every entry's path, size
//! and SHA-256), `META-INF/manifest.json.sig` (a detached OpenPGP signature
//! over the manifest's exact bytes) and the items under `items/<id>/`.
//! [`verify`] checks the signature, the archive's shape and every entry's
//! size and digest *before* anything is extracted; hostile archives
//! (zip-slip, symlinks, duplicates, bombs, unlisted entries) are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, InputError, Place, Result};
use crate::model::{ChatEvent, Conversation, EventKind, FileTransfer, Participant};

pub const MANIFEST: &str = "META-INF/manifest.json";
pub const SIGNATURE: &str = "META-INF/manifest.json.sig";
pub const FORMAT: &str = "xip";
pub const VERSION: u32 = 1;
/// The manifest is read whole: it must stay small.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// Bounds against hostile archives; every one is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_entries: usize,
    /// Sum of the uncompressed sizes of all entries.
    pub max_total_bytes: u64,
    /// Largest uncompressed / compressed ratio of any entry.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_total_bytes: 8 * 1024 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub producer: String,
    pub created: DateTime<Utc>,
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    #[serde(default)]
    pub name: Option<String>,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// Entry path inside the archive.
    pub path: String,
    pub name: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One item (`items/<id>/item.json`): a message with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub sender: Person,
    pub timestamp: DateTime<Utc>,
    /// Every participant's address (the vendor's `Email` property).
    #[serde(rename = "Email")]
    pub email: Vec<String>,
    pub body: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
}

/// Who may sign, and whether unsigned files pass (off by default).
pub struct Trust<'a> {
    pub signers: &'a [SignedPublicKey],
    pub allow_unsigned: bool,
}

impl Trust<'static> {
    /// For a container whose signature an earlier stage checked (the plain
    /// object is written by that stage only): structure and digests are
    /// verified again, the signature is not.
    pub fn verified_upstream() -> Self {
        Trust {
            signers: &[],
            allow_unsigned: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Manifest,
    /// Fingerprint of the key that signed the manifest; `None` only when
    /// unsigned files are allowed and this one was unsigned.
    pub signer: Option<String>,
}

fn bad(file: &str, place: Place, reason: impl Into<String>) -> Error {
    InputError::new(file, place, reason).into()
}

fn entry(name: &str) -> Place {
    Place::Entry(name.to_string())
}

/// A path that can never escape an extraction directory or hide.
fn check_path(file: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("empty entry name")
    } else if name.starts_with('/')
        || name.contains('\\')
        || name.split('/').next().is_some_and(|s| s.contains(':'))
    {
        Some("absolute path (zip-slip)")
    } else if name.split('/').any(|s| s == ".." || s == ".") {
        Some("path traversal `..` (zip-slip)")
    } else if name.split('/').any(str::is_empty) {
        Some("empty path segment")
    } else if name.chars().any(char::is_control) {
        Some("control character in entry name")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(bad(file, entry(name), reason)),
        None => Ok(()),
    }
}

/// Reads an entry whole, refusing more than `limit` bytes.
fn read_small<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    file: &str,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let mut zipped = archive
        .by_name(name)
        .map_err(|e| bad(file, entry(name), format!("unreadable: {e}")))?;
    if zipped.size() > limit {
        return Err(bad(file, entry(name), format!("larger than {limit} bytes")));
    }
    let mut bytes = Vec::new();
    zipped
        .by_ref()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(file, entry(name), format!("corrupt: {e}")))?;
    Ok(bytes)
}

/// The shape of the archive from its central directory: names, types,
/// sizes, ratios. Returns each file entry's declared uncompressed size.
fn check_directory<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    file: &str,
    limits: &Limits,
) -> Result<BTreeMap<String, u64>> {
    if archive.len() > limits.max_entries {
        return Err(bad(
            file,
            Place::File,
            format!(
                "{} entries, more than the limit of {}",
                archive.len(),
                limits.max_entries
            ),
        ));
    }
    let mut sizes = BTreeMap::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let zipped = archive.by_index_raw(index).map_err(|e| {
            bad(
                file,
                Place::Entry(format!("#{}", index + 1)),
                format!("corrupt ZIP: {e}"),
            )
        })?;
        let name = zipped.name().to_string();
        check_path(file, name.trim_end_matches('/'))?;
        if zipped.is_symlink() {
            return Err(bad(file, entry(&name), "symbolic links are not allowed"));
        }
        if zipped.is_dir() {
            continue;
        }
        let (size, packed) = (zipped.size(), zipped.compressed_size().max(1));
        if size / packed > limits.max_ratio {
            return Err(bad(
                file,
                entry(&name),
                format!(
                    "compression ratio {}:1 exceeds {}:1 (zip bomb?)",
                    size / packed,
                    limits.max_ratio
                ),
            ));
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(bad(
                file,
                entry(&name),
                format!(
                    "uncompressed total exceeds {} bytes (zip bomb?)",
                    limits.max_total_bytes
                ),
            ));
        }
        if sizes.insert(name.clone(), size).is_some() {
            return Err(bad(file, entry(&name), "duplicate entry name"));
        }
    }
    Ok(sizes)
}

fn check_signature(
    file: &str,
    manifest: &[u8],
    signature: Option<&[u8]>,
    trust: &Trust<'_>,
) -> Result<Option<String>> {
    if trust.signers.is_empty() && trust.allow_unsigned {
        return Ok(None);
    }
    let Some(signature) = signature else {
        if trust.allow_unsigned {
            return Ok(None);
        }
        return Err(bad(
            file,
            entry(SIGNATURE),
            "the manifest is not signed and unsigned files are not allowed",
        ));
    };
    let (signature, _) = DetachedSignature::from_reader_single(signature).map_err(|e| {
        bad(
            file,
            entry(SIGNATURE),
            format!("not an OpenPGP signature: {e}"),
        )
    })?;
    for key in trust.signers {
        let verified = signature.verify(key, manifest).is_ok()
            || key
                .public_subkeys
                .iter()
                .any(|sub| signature.verify(sub, manifest).is_ok());
        if verified {
            return Ok(Some(key.fingerprint().to_string()));
        }
    }
    Err(bad(
        file,
        entry(SIGNATURE),
        "bad signature: the manifest is not signed by a configured signer key, or was changed after signing",
    ))
}

/// Verifies a whole XIP file: nothing in it may be used unless this passes.
pub fn verify(path: &Path, file: &str, trust: &Trust<'_>, limits: &Limits) -> Result<Verified> {
    let handle =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut archive = zip::ZipArchive::new(handle)
        .map_err(|e| bad(file, Place::File, format!("not a ZIP archive: {e}")))?;
    let mut sizes = check_directory(&mut archive, file, limits)?;
    if !sizes.contains_key(MANIFEST) {
        return Err(bad(file, entry(MANIFEST), "no manifest"));
    }
    let manifest_bytes = read_small(&mut archive, file, MANIFEST, MAX_MANIFEST_BYTES)?;
    let signature = match sizes.contains_key(SIGNATURE) {
        true => Some(read_small(
            &mut archive,
            file,
            SIGNATURE,
            MAX_SIGNATURE_BYTES,
        )?),
        false => None,
    };
    let signer = check_signature(file, &manifest_bytes, signature.as_deref(), trust)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        bad(
            file,
            entry(MANIFEST),
            format!(
                "invalid manifest at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(bad(
            file,
            entry(MANIFEST),
            format!(
                "unsupported format {:?} version {}",
                manifest.format, manifest.version
            ),
        ));
    }
    sizes.remove(MANIFEST);
    sizes.remove(SIGNATURE);
    check_listing(file, &manifest, &sizes)?;
    for listed in &manifest.entries {
        check_digest(&mut archive, file, listed)?;
    }
    Ok(Verified { manifest, signer })
}

/// The manifest lists exactly the archive's entries, with their sizes.
fn check_listing(file: &str, manifest: &Manifest, sizes: &BTreeMap<String, u64>) -> Result<()> {
    let mut listed = BTreeSet::new();
    for item in &manifest.entries {
        check_path(file, &item.path)?;
        if !listed.insert(item.path.as_str()) {
            return Err(bad(file, entry(&item.path), "listed twice in the manifest"));
        }
        match sizes.get(&item.path) {
            None => {
                return Err(bad(
                    file,
                    entry(&item.path),
                    "listed in the manifest but missing from the archive",
                ))
            }
            Some(size) if *size != item.size => {
                return Err(bad(
                    file,
                    entry(&item.path),
                    format!("the manifest says {} bytes, the archive {size}", item.size),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = sizes.keys().find(|name| !listed.contains(name.as_str())) {
        return Err(bad(file, entry(extra), "entry not listed in the manifest"));
    }
    Ok(())
}

/// Streams one entry (never more than its listed size) and checks its digest.
fn check_digest<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    file: &str,
    listed: &ManifestEntry,
) -> Result<()> {
    let zipped = archive
        .by_name(&listed.path)
        .map_err(|e| bad(file, entry(&listed.path), format!("unreadable: {e}")))?;
    let mut hasher = Sha256::new();
    let copied = std::io::copy(
        &mut zipped.take(listed.size + 1),
        &mut HashWriter(&mut hasher),
    )
    .map_err(|e| bad(file, entry(&listed.path), format!("corrupt: {e}")))?;
    if copied != listed.size {
        return Err(bad(
            file,
            entry(&listed.path),
            format!("{copied} bytes, the manifest says {}", listed.size),
        ));
    }
    if !hex::encode(hasher.finalize()).eq_ignore_ascii_case(&listed.sha256) {
        return Err(bad(
            file,
            entry(&listed.path),
            "SHA-256 differs from the manifest (content altered)",
        ));
    }
    Ok(())
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the items of a verified file as conversations (one message each,
/// attachments as file transfers, `item.json` kept as the original).
pub fn read_items<F>(path: &Path, file: &str, verified: &Verified, mut each: F) -> Result<()>
where
    F: FnMut(Conversation) -> Result<()>,
{
    let handle =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut archive = zip::ZipArchive::new(handle)
        .map_err(|e| bad(file, Place::File, format!("not a ZIP archive: {e}")))?;
    let listed: BTreeMap<&str, &ManifestEntry> = verified
        .manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    for item_entry in verified
        .manifest
        .entries
        .iter()
        .filter(|e| e.path.ends_with("/item.json"))
    {
        let raw = read_verified(&mut archive, file, item_entry)?;
        let item: Item = serde_json::from_slice(&raw).map_err(|e| {
            bad(
                file,
                entry(&item_entry.path),
                format!(
                    "invalid item at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let mut attachments = Vec::new();
        for attachment in &item.attachments {
            let listed = listed.get(attachment.path.as_str()).ok_or_else(|| {
                bad(
                    file,
                    entry(&item_entry.path),
                    format!("attachment {:?} is not in the manifest", attachment.path),
                )
            })?;
            attachments.push((
                attachment.clone(),
                read_verified(&mut archive, file, listed)?,
            ));
        }
        each(item_to_conversation(item, attachments, raw))?;
    }
    Ok(())
}

/// Reads an entry whole and checks it again against the manifest: the file
/// was verified, but the check is cheap next to a wrong archive.
fn read_verified<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    file: &str,
    listed: &ManifestEntry,
) -> Result<Vec<u8>> {
    let bytes = read_small(archive, file, &listed.path, listed.size)?;
    if bytes.len() as u64 != listed.size
        || !hex::encode(Sha256::digest(&bytes)).eq_ignore_ascii_case(&listed.sha256)
    {
        return Err(bad(
            file,
            entry(&listed.path),
            "content differs from the verified manifest",
        ));
    }
    Ok(bytes)
}

fn item_to_conversation(
    item: Item,
    attachments: Vec<(AttachmentRef, Vec<u8>)>,
    original: Vec<u8>,
) -> Conversation {
    let sender_id = item.sender.email.to_lowercase();
    let mut participants = vec![Participant {
        im_id: sender_id.clone(),
        name: item.sender.name.clone(),
        company: None,
        email: Some(item.sender.email.clone()),
    }];
    for email in &item.email {
        if !participants
            .iter()
            .any(|p| p.im_id.eq_ignore_ascii_case(email))
        {
            participants.push(Participant {
                im_id: email.to_lowercase(),
                email: Some(email.clone()),
                ..Participant::default()
            });
        }
    }
    let mut events = vec![ChatEvent {
        id: Some(item.id.clone()),
        time: item.timestamp,
        im_id: sender_id.clone(),
        kind: EventKind::Message { text: item.body },
    }];
    events.extend(attachments.into_iter().map(|(meta, content)| ChatEvent {
        id: None,
        time: item.timestamp,
        im_id: sender_id.clone(),
        kind: EventKind::FileTransfer(FileTransfer {
            file_name: meta.name,
            content_type: meta.content_type,
            content: content.into(),
        }),
    }));
    Conversation {
        id: item.id,
        kind: Some("XIP item".into()),
        room_name: Some(item.title),
        start: Some(item.timestamp),
        participants,
        events,
        original_xml: original,
        original_spilled: Vec::new(),
        original_format: crate::model::OriginalFormat::XipItemJson,
        line: 1,
    }
}

/// Builds and signs an XIP file from a folder holding `items/<id>/...`.
///
/// `sign` makes the detached signature over the manifest's bytes (see
/// [`pgp_signer`]); without it the file is unsigned.
pub fn pack<W, S>(folder: &Path, out: W, producer: &str, sign: Option<S>) -> Result<Manifest>
where
    W: Write + Seek,
    S: FnOnce(&[u8]) -> Result<Vec<u8>>,
{
    let mut entries = Vec::new();
    let mut files = Vec::new();
    collect_files(folder, folder, &mut files)?;
    files.sort();
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default().large_file(true);
    for (name, path) in &files {
        check_path("pack", name)?;
        let mut source =
            File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        zip.start_file(name.as_str(), options)
            .map_err(|e| Error::Config(format!("writing XIP: {e}")))?;
        let mut hasher = Sha256::new();
        let mut tee = Tee {
            out: &mut zip,
            hasher: &mut hasher,
        };
        let size = std::io::copy(&mut source, &mut tee)
            .map_err(|e| Error::io(format!("packing {}", path.display()), e))?;
        entries.push(ManifestEntry {
            path: name.clone(),
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        producer: producer.into(),
        created: Utc::now(),
        entries,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    let write_err = |e: &dyn std::fmt::Display| Error::Config(format!("writing XIP: {e}"));
    zip.start_file(MANIFEST, options)
        .map_err(|e| write_err(&e))?;
    zip.write_all(&manifest_bytes).map_err(|e| write_err(&e))?;
    if let Some(sign) = sign {
        let signature = sign(&manifest_bytes)?;
        zip.start_file(SIGNATURE, options)
            .map_err(|e| write_err(&e))?;
        zip.write_all(&signature).map_err(|e| write_err(&e))?;
    }
    zip.finish().map_err(|e| write_err(&e))?;
    Ok(manifest)
}

/// Signs with an OpenPGP key held here (armored detached signature).
pub fn pgp_signer<'a>(
    key: &'a SignedSecretKey,
    password: &'a Password,
) -> impl FnOnce(&[u8]) -> Result<Vec<u8>> + 'a {
    move |manifest| {
        let signature = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &key.primary_key,
            password,
            HashAlgorithm::Sha256,
            manifest,
        )
        .map_err(|e| Error::Pgp(format!("signing the manifest: {e}")))?;
        signature
            .to_armored_bytes(None.into())
            .map_err(|e| Error::Pgp(e.to_string()))
    }
}

struct Tee<'a, W: Write> {
    out: &'a mut W,
    hasher: &'a mut Sha256,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Every regular file under `dir`, as (archive path, file path). Symlinks
/// are refused rather than followed.
fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::path::PathBuf)>,
) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for found in entries {
        let found = found.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = found.path();
        let kind = found
            .file_type()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if kind.is_symlink() {
            return Err(Error::Config(format!(
                "{} is a symbolic link; XIP files hold regular files only",
                path.display()
            )));
        }
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::generate_pgp;

    fn item_dir(root: &Path, id: &str, attachment: &[u8]) {
        let dir = root.join("items").join(id);
        std::fs::create_dir_all(dir.join("attachments")).unwrap();
        std::fs::write(dir.join("attachments/a.bin"), attachment).unwrap();
        let item = serde_json::json!({
            "id": id, "title": "Trade recap", "timestamp": "2026-11-20T09:00:00Z",
            "sender": {"name": "John Doe", "email": "jdoe@acme.example"},
            "Email": ["jdoe@acme.example", "zoe@globex.example"],
            "body": "See attached.",
            "attachments": [{"path": format!("items/{id}/attachments/a.bin"), "name": "a.bin", "content_type": "application/octet-stream"}]
        });
        std::fs::write(dir.join("item.json"), serde_json::to_vec(&item).unwrap()).unwrap();
    }

    fn packed(signed: bool) -> (tempfile::TempDir, std::path::PathBuf, SignedPublicKey) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        item_dir(&src, "0001", b"hello");
        item_dir(&src, "0002", &[7u8; 4096]);
        let key = generate_pgp("Signer <s@x.example>", "").unwrap();
        let path = dir.path().join("f.xip");
        let password = Password::empty();
        let sign = signed.then(|| pgp_signer(&key.secret, &password));
        pack(&src, File::create(&path).unwrap(), "test", sign).unwrap();
        (dir, path, key.public)
    }

    #[test]
    fn a_signed_file_verifies_and_yields_its_items() {
        let (_dir, path, signer) = packed(true);
        let signers = [signer];
        let trust = Trust {
            signers: &signers,
            allow_unsigned: false,
        };
        let verified = verify(&path, "f.xip", &trust, &Limits::default()).unwrap();
        assert!(verified.signer.is_some());
        assert_eq!(verified.manifest.entries.len(), 4);
        let mut items = Vec::new();
        read_items(&path, "f.xip", &verified, |c| {
            items.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(items.len(), 2);
        let EventKind::FileTransfer(file) = &items[1].events[1].kind else {
            panic!("attachment")
        };
        assert_eq!(file.content, vec![7u8; 4096].into());
        assert_eq!(items[0].participants.len(), 2);
    }

    #[test]
    fn unsigned_and_foreign_signatures_are_refused_unless_allowed() {
        let (_dir, path, _) = packed(false);
        let other = generate_pgp("Other <o@x.example>", "").unwrap().public;
        let signers = [other];
        let strict = Trust {
            signers: &signers,
            allow_unsigned: false,
        };
        let err = verify(&path, "f.xip", &strict, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not signed"), "{err}");
        let lax = Trust {
            signers: &signers,
            allow_unsigned: true,
        };
        assert!(verify(&path, "f.xip", &lax, &Limits::default())
            .unwrap()
            .signer
            .is_none());

        let (_dir, path, _) = packed(true);
        let err = verify(&path, "f.xip", &strict, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad signature"), "{err}");
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "../evil",
            "/etc/passwd",
            "a/../../b",
            "C:/x",
            "a\\b",
            "a//b",
            "x\u{0}y",
        ] {
            assert!(check_path("f", name).is_err(), "{name}");
        }
        assert!(check_path("f", "items/0001/attachments/report 2026.pdf").is_ok());
    }

    #[test]
    fn limits_stop_bombs_before_reading() {
        let (_dir, path, signer) = packed(true);
        let signers = [signer];
        let trust = Trust {
            signers: &signers,
            allow_unsigned: false,
        };
        let tight = Limits {
            max_ratio: 2,
            ..Limits::default()
        };
        let err = verify(&path, "f.xip", &trust, &tight)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zip bomb"), "{err}");
        let few = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        assert!(verify(&path, "f.xip", &trust, &few)
            .unwrap_err()
            .to_string()
            .contains("entries"));
    }
}
