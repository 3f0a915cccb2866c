//! Arbitrary bytes as a `.xip` file: verification, then (when it passes)
//! reading the items and building their mails, as the decrypt and convert
//! stages do. Whatever the bytes, this must return (Ok or an input error),
//! never panic, and never allocate without bound.
//!
//! The first byte picks the trust: 0 = "verified upstream" (what convert
//! uses: no signature check), else a configured signer key with unsigned
//! files allowed, so a present `manifest.json.sig` is parsed and checked.
//! The rest is the file. `verify` takes a path, so the bytes go through a
//! file in memory-backed /dev/shm when there is one.
//!
//! Invariants checked beyond "no panic": a verified manifest lists unique
//! paths; every item read converts to mail.
#![no_main]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::formats::xip::{self, Limits, Trust};
use chat_archive_core::keys::generate_pgp;
use chat_archive_core::mail::{build_mails, Lineage};
use libfuzzer_sys::fuzz_target;
use pgp::composed::SignedPublicKey;

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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let trust = if mode == 0 {
        Trust::verified_upstream()
    } else {
        Trust {
            signers: signer(),
            allow_unsigned: true,
        }
    };
    let path = scratch();
    std::fs::write(path, file).expect("scratch file written");
    let Ok(verified) = xip::verify(path, "fuzz.xip", &trust, &Limits::default()) else {
        return;
    };
    let mut paths = BTreeSet::new();
    for entry in &verified.manifest.entries {
        assert!(paths.insert(entry.path.as_str()), "{} twice", entry.path);
    }
    let config = ConnectorConfig::ice().for_xip();
    let _ = xip::read_items(path, "fuzz.xip", &verified, |item| {
        let day = item.start.map(|t| t.date_naive()).unwrap_or_default();
        build_mails(&item, &config, &Lineage::default(), day).expect("mails are built");
        Ok(())
    });
});
