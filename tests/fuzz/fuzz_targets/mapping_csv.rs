//! Arbitrary bytes as the operator's `ImId,Mailbox` mapping CSV
//! (`MappingTable::from_csv`, which must never panic: bad rows are reported
//! and skipped).
//!
//! Invariants checked beyond "no panic":
//! - every problem names this file and a row between 1 and the number of
//!   lines of the input (LF, CR LF and a lone CR each end a line);
//! - loading is deterministic (same rows, same problems);
//! - every ImId of a good row maps to a plausible, lower-case address.
#![no_main]

use chat_archive_core::error::Place;
use chat_archive_core::mail::is_plausible_address;
use chat_archive_core::mapping::MappingTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let table = MappingTable::from_csv(data, "fuzz.csv");
    // Lines as an editor (and the csv reader) count them: LF, CR LF or a
    // lone CR ends one.
    let lines = 1 + data
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && data.get(i + 1) != Some(&b'\n')))
        .count() as u64;
    for problem in &table.problems {
        assert_eq!(problem.file, "fuzz.csv");
        match problem.place {
            Place::Row(row) => assert!((1..=lines).contains(&row), "row {row} of {lines}"),
            ref other => panic!("unexpected place {other:?}"),
        }
    }
    let again = MappingTable::from_csv(data, "fuzz.csv");
    assert_eq!(again.len(), table.len());
    assert_eq!(again.problems, table.problems);

    // The ImIds of good rows: the first field of every line is a candidate.
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let candidate = line.split(',').next().unwrap_or_default();
        if let Some((mailbox, row)) = table.mailbox_for(candidate) {
            assert!(is_plausible_address(mailbox), "{mailbox:?}");
            assert_eq!(mailbox, mailbox.to_lowercase());
            assert!((1..=lines).contains(&row), "row {row} of {lines}");
        }
    }
});
