//! The seeded soak ([`integration_tests::soak`]) as CI runs it: a few days
//! of exports through kills, outages and doubled events, on a fixed seed,
//! then every invariant read back by an independent reader. A longer or
//! other soak: `scripts/soak.sh SEED DAYS [GRANULARITY]` (the same test,
//! with `SOAK_SEED`, `SOAK_DAYS` and `SOAK_GRANULARITY` set).

use std::path::PathBuf;

use integration_tests::soak::{soak, SoakConfig};

/// The fixed seed and length of the CI run: six days on which every kind
/// of fault strikes, with a bad conversation and files sent again.
const SEED: u64 = 4;
const DAYS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_soak_of_days_of_exports_through_faults_keeps_every_event_once() {
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_chat-archive-cli"));
    let config = SoakConfig::from_env(SEED, DAYS, Some(cli));
    let figures = soak(config.clone()).await;
    // The run exercised what it is for: not a soak of nothing.
    assert!(
        figures.distinct_messages > 0 && figures.mails_in_mailboxes > 0,
        "{}: {figures:?}",
        config.replay()
    );
    if (config.seed, config.days, config.granularity) == (SEED, DAYS, Default::default()) {
        assert_eq!(
            figures.faults_injected.len(),
            4,
            "the CI seed no longer strikes with every kind of fault: {figures:?}"
        );
        assert!(figures.bad_conversations > 0 && figures.events_redelivered > 0);
    }
}
