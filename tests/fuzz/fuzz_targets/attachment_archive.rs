//! Arbitrary bytes as a Bloomberg attachment archive (`.tar.gz`) and as the
//! dump that names its members (`attachments::extract`,
//! `attachments::wanted_file_ids`): both come from outside and must never
//! panic or write outside their directory.
//!
//! Invariants checked beyond "no panic":
//! - only wanted ids are extracted, each to a file directly inside the
//!   temporary directory (a member's path is never used on disk);
//! - the id scan of a dump returns only non-empty, trimmed ids.
#![no_main]

use std::collections::BTreeSet;

use chat_archive_core::formats::attachments;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (dump, archive) = data.split_at(split);
    let Ok(ids) = attachments::wanted_file_ids(dump) else {
        return;
    };
    for id in &ids {
        assert!(!id.is_empty() && id.trim() == id, "{id:?}");
    }
    let mut wanted: BTreeSet<String> = ids;
    wanted.extend(["ATT-1".to_string(), "a".to_string()]);
    let dir = tempfile::tempdir().expect("temp dir");
    if let Ok(found) = attachments::extract(archive, &wanted, dir.path()) {
        for (id, path) in &found {
            assert!(wanted.contains(id), "{id} was not wanted");
            assert_eq!(path.parent(), Some(dir.path()), "{path:?}");
        }
    }
});
