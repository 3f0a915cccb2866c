//! Arbitrary bytes as a `.xip` file: verification, then (when it passes)
//! reading the items and building their mails, as the decrypt and convert
//! stages do. Whatever the bytes, this must return (Ok or an input error),
//! never panic, and never allocate without bound.
//!
//! The first byte picks the mode:
//! - 0: the rest is the file, trusted as "verified upstream" (what convert
//!   uses: no signature check);
//! - 1: the rest is the file, with a configured signer key and unsigned
//!   files allowed, so a present `manifest.json.sig` is parsed and checked;
//! - 2: the rest is an item's `item.json`, packed here into a valid
//!   container (right sizes and SHA-256 digests, one attachment), so that
//!   item parsing and conversion are reached: in modes 0 and 1 the digests
//!   stop almost every mutated item before it is read.
//!
//! `verify` takes a path, so the bytes go through a file in memory-backed
//! /dev/shm when there is one.
//!
//! Invariants checked beyond "no panic": a verified manifest lists unique
//! paths; every item read converts to mail.
#![no_main]

use std::collections::BTreeSet;
use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::formats::xip::{self, Limits, Trust};
use chat_archive_core::keygen::generate_pgp;
use chat_archive_core::mail::{build_mails, Lineage};
use libfuzzer_sys::fuzz_target;
use pgp::composed::SignedPublicKey;
use sha2::{Digest, Sha256};

fn signer() -> &'static [SignedPublicKey] {
    static KEY: OnceLock<[SignedPublicKey; 1]> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = generate_pgp("Fuzz signer <fuzz@acme.example>", "").expect("a key");
        [pair.public]
    })
}

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("xip-fuzz-{}.xip", std::process::id()))
    })
}

const ATTACHMENT: &str = "items/0001/attachments/a.bin";
const ITEM: &str = "items/0001/item.json";

/// A valid, unsigned container holding `item_json` and one attachment.
fn pack_item(item_json: &[u8]) -> Vec<u8> {
    let entries: [(&str, &[u8]); 2] = [(ATTACHMENT, b"hello"), (ITEM, item_json)];
    let manifest = xip::Manifest {
        format: xip::FORMAT.into(),
        version: xip::VERSION,
        producer: "fuzz".into(),
        created: chrono::DateTime::UNIX_EPOCH,
        entries: entries
            .iter()
            .map(|(path, bytes)| xip::ManifestEntry {
                path: (*path).into(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect(),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest");
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (path, bytes) in entries.iter().chain([&(xip::MANIFEST, &manifest[..])]) {
        zip.start_file(*path, options).expect("an entry");
        zip.write_all(bytes).expect("written");
    }
    zip.finish().expect("a ZIP").into_inner()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let packed;
    let (trust, file) = match mode {
        0 => (Trust::verified_upstream(), rest),
        2 => {
            packed = pack_item(rest);
            (Trust::verified_upstream(), &packed[..])
        }
        _ => (
            Trust {
                signers: signer(),
                allow_unsigned: true,
            },
            rest,
        ),
    };
    let path = scratch();
    std::fs::write(path, file).expect("scratch file written");
    let verified = match xip::verify(path, "fuzz.xip", &trust, &Limits::default()) {
        Ok(verified) => verified,
        Err(e) if mode == 2 => panic!("a packed container must verify: {e}"),
        Err(_) => return,
    };
    let mut paths = BTreeSet::new();
    for entry in &verified.manifest.entries {
        assert!(paths.insert(entry.path.as_str()), "{} twice", entry.path);
    }
    let config = ConnectorConfig::xip();
    let _ = xip::read_items(path, "fuzz.xip", &verified, |item| {
        let day = item.start.map(|t| t.date_naive()).unwrap_or_default();
        build_mails(&item, &config, &Lineage::default(), day).expect("mails are built");
        Ok(())
    });
});
