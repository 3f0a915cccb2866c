//! Fault injection: a real component is stopped, hung or killed in the
//! middle of a run; afterwards, once the fault is gone and the work is
//! retried, the invariant must hold: every conversation is in each of its
//! mailboxes exactly once (whole), every other one is reported failed with
//! a reason, nothing is quarantined or partial, and the status counts add up
//! ([`assert_each_conversation_once`]).
//!
//! Faults that other tests cover already and that are not repeated here:
//! the SFTP server stopped or its connection killed mid-transfer at the
//! fetch stage (`sftp_fetch.rs`: nothing partial under `raw/`, the
//! checkpoint does not move, the next run fetches the whole file), Dovecot
//! stopped or restarted mid-import (`imap_import.rs`), two IMAP sinks
//! appending to one mailbox at once (`imap_import.rs`), and every S3 event
//! delivered a second time, one after the other (`aws_chain.rs`: no new
//! object version, no new event, no duplicate mail).
//!
//! Here: the SFTP server stopped mid-transfer during a whole local run of
//! two days (the status-log invariant end to end, both days processed by
//! the next run whichever was fetched before the stop);
//! S3 stopped between two stages, in the middle of convert's writes and in
//! the middle of an import; S3 hanging until the function times out; every
//! S3 event of the chain delivered to two function instances at once; the
//! local pipeline process killed with SIGKILL at a random point and run
//! again, for several seeds.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use std::collections::BTreeMap;
use std::time::Duration;

use chat_archive_core::adapters::imap::ImapConfig;
use chat_archive_core::adapters::{LocalStore, SftpConfig};
use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::Silent;
use chat_archive_core::ports::ObjectStore;
use chat_archive_core::status::{ItemRecord, TargetState};
use chat_archive_core::Error;
use integration_tests::dovecot::{self, Dovecot};
use integration_tests::faults::{
    assert_each_conversation_once, assert_local_invariant, assert_store_objects_whole, at_nth_call,
    copy_tree, corpus, folder_mails, ice_folder, seeds, work_done, Call, CliRun, CorpusShape,
    ExportFile, HookStore, Relay, Rng, MAILBOXES,
};
use integration_tests::local::Firm;
use integration_tests::sshd::Sshd;

// ---------------------------------------------------------------------------
// The local pipeline process killed at a random point.

/// Seed n kills the run in the n-th fifth of its work (seeds above 5 wrap),
/// at a point drawn from the seed within that fifth: together the seeds
/// span fetch to import; each one is reproducible with `FAULT_SEEDS=n`.
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// The operator's `chat-archive` binary, built from `functions/cli` as a
/// binary of this crate (see tests/Cargo.toml).
fn chat_archive_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chat-archive-cli"))
}

fn start_run(dir: &Path, log: &str) -> CliRun {
    integration_tests::faults::start_run(chat_archive_bin(), dir, log)
}

/// Runs `chat-archive run` on a data directory to the end.
fn run_to_completion(dir: &Path, context: &str) {
    let mut run = start_run(dir, "rerun.log");
    let status = run.0.wait().expect("wait");
    assert!(
        status.success(),
        "{context}: chat-archive run failed ({status}):\n{}",
        std::fs::read_to_string(dir.join("rerun.log")).unwrap_or_default()
    );
}

fn run_killed_at(dir: &Path, kill_at: usize) -> Result<usize, ExitStatus> {
    integration_tests::faults::run_killed_at(chat_archive_bin(), dir, kill_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_run_killed_at_a_random_point_then_run_again_imports_each_conversation_once() {
    let files = corpus(CorpusShape {
        files: 4,
        conversations_per_file: 50,
        messages_per_conversation: 6,
        attachment_bytes: 0,
    });
    let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
    for file in &files {
        firm.drop_export(&file.name, file.xml.as_bytes(), true);
    }
    let runs = tempfile::Builder::new()
        .prefix("killed-runs")
        .tempdir()
        .expect("temp dir");

    // Every run starts from a copy of the same firm (keys, mailboxes, the
    // encrypted exports in drop/). An uninterrupted run first: the
    // invariant holds, and what it writes measures a whole run's work.
    let reference = runs.path().join("reference");
    copy_tree(&firm.layout.data_dir, &reference);
    let bin = chat_archive_bin();
    let started = std::time::Instant::now();
    run_to_completion(&reference, "uninterrupted run");
    eprintln!(
        "{}: an uninterrupted run took {:?}",
        bin.display(),
        started.elapsed()
    );
    assert_local_invariant(&reference, &files, "uninterrupted run").await;
    let total = work_done(&reference);

    for seed in seeds(&SEEDS) {
        let mut rng = Rng::new(seed);
        // From the first raw object to 90 % of the run (the end must still
        // be ahead when the kill comes).
        let (lo, hi) = (1, total * 9 / 10);
        let fifth = (hi - lo) / 5;
        let stratum = ((seed + 4) % 5) as usize;
        let kill_at = lo + stratum * fifth + rng.range(0, fifth as u64) as usize;
        let dir = runs.path().join(format!("seed-{seed}"));
        copy_tree(&firm.layout.data_dir, &dir);

        let done = match run_killed_at(&dir, kill_at) {
            Ok(done) => done,
            Err(status) => panic!(
                "seed {seed}: the run ended ({status}) before its kill point {kill_at} of {total}:\n{}",
                std::fs::read_to_string(dir.join("killed.log")).unwrap_or_default()
            ),
        };
        let context = format!(
            "seed {seed} (killed with SIGKILL after {done} of {total} writes; FAULT_SEEDS={seed} reruns it)"
        );
        eprintln!("{context}");
        let started = std::time::Instant::now();
        run_to_completion(&dir, &context);
        eprintln!(
            "seed {seed}: the run after the kill took {:?}",
            started.elapsed()
        );
        assert_local_invariant(&dir, &files, &context).await;
    }
}

// ---------------------------------------------------------------------------
// The SFTP server stopped mid-transfer during a whole local run.

fn site_config(server: &Sshd) -> SftpConfig {
    SftpConfig {
        attempts: 3,
        backoff_ms: 20,
        backoff_max_ms: 100,
        ..server.site_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sftp_server_stopped_mid_transfer_then_the_next_run_imports_each_conversation_once() {
    // Two days on the site; the second file is large (an incompressible
    // file transfer), so that it is still streaming when the server stops.
    let files = corpus(CorpusShape {
        files: 2,
        conversations_per_file: 12,
        messages_per_conversation: 4,
        attachment_bytes: 1_500_000,
    });
    let server = Sshd::start();
    let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
    let mut sizes = Vec::new();
    for file in &files {
        let encrypted = firm.drop_export(&file.name, file.xml.as_bytes(), true);
        let on_site = server.export_dir.join(&file.name);
        std::fs::copy(&encrypted, &on_site).expect("onto the site");
        std::fs::remove_file(&encrypted).expect("out of the drop directory");
        server.set_mtime(&on_site, std::time::SystemTime::now());
        sizes.push(std::fs::metadata(&on_site).expect("stat").len());
    }
    let big = format!("raw/ice/{}", files[1].name);
    const STOP_AT: u64 = 256 * 1024;
    assert!(
        sizes[1] > 4 * STOP_AT,
        "the second file is too small: {sizes:?}"
    );

    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    config.sftp = Some(site_config(&server));
    firm.write_config(config);
    server.grant_key_login(&firm).await;

    // The server stops (its sessions killed, then the listener) once
    // 256 KiB of the big file have streamed into the store.
    let server = Arc::new(Mutex::new(server));
    let mut pipeline = firm.pipeline();
    let stopper = server.clone();
    let watched = big.clone();
    pipeline.ctx.store = Arc::new(HookStore::new(
        pipeline.ctx.store.clone(),
        at_nth_call(
            1,
            move |call| matches!(call, Call::Streamed(key, n) if *key == watched && *n >= STOP_AT),
            move || stopper.lock().expect("sshd lock").stop(),
        ),
    ));
    let err = pipeline
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect_err("the run cannot finish without its SFTP server");
    assert!(
        matches!(
            err,
            Error::Source {
                retryable: true,
                ..
            }
        ),
        "a stopped server is a retryable source error: {err:?}"
    );
    let store = LocalStore::new(firm.layout.store());
    let raw = store.list("raw/").await.expect("list raw/");
    assert!(
        !raw.contains(&big),
        "the interrupted transfer became an object: {raw:?}"
    );
    assert!(
        firm.mailboxes_with_mail().is_empty(),
        "mail was imported by a run whose fetch failed"
    );

    server.lock().expect("sshd lock").restart();
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("the next run completes");
    assert!(
        summary.fetched.contains(&big),
        "the interrupted file is fetched by the next run: {:?}",
        summary.fetched
    );
    assert_eq!(
        summary.processed_files.len(),
        2,
        "both days are processed: {:?}",
        summary.processed_files
    );
    let context = "SFTP server stopped mid-transfer, then the next run";
    assert_each_conversation_once(&store, &firm.layout.mailboxes(), &files, context).await;
    assert_store_objects_whole(&store, context).await;
    let big_object = store.head(&big).await.expect("head").expect("fetched");
    assert_eq!(big_object.size, sizes[1], "{context}: the whole file");
}

// ---------------------------------------------------------------------------
// A mail server that accepts and then stops answering, mid-import.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_stops_answering_mid_import_fails_the_run_in_time_then_each_mail_lands_once(
) {
    let files = corpus(CorpusShape {
        files: 2,
        conversations_per_file: 10,
        messages_per_conversation: 3,
        attachment_bytes: 0,
    });
    let server = Dovecot::start(&MAILBOXES);
    // The sink reaches Dovecot (TLS) through the relay, which holds every
    // byte once the import of the second file begins: the connection stays
    // open and nothing answers, as a wedged server behaves.
    let relay = Arc::new(Relay::start(server.imaps_port));
    let firm = dovecot::firm_importing_to(
        ImapConfig {
            port: Some(relay.port),
            timeout_secs: 2,
            ..server.imap_config()
        },
        |_| {},
    )
    .await;
    for file in &files {
        firm.drop_export(&file.name, file.xml.as_bytes(), true);
    }

    let mut pipeline = firm.pipeline();
    let holder = relay.clone();
    let second_file_sidecar = files[0].conversations.len() + 1;
    pipeline.ctx.store = Arc::new(HookStore::new(
        pipeline.ctx.store.clone(),
        at_nth_call(
            second_file_sidecar,
            |call| matches!(call, Call::Get(key) if key.starts_with("mail/") && key.ends_with(".json")),
            move || holder.hold(),
        ),
    ));
    // Only a guard against a hang: the limit under test is the sink's own.
    let outcome = tokio::time::timeout(
        Duration::from_secs(180),
        pipeline.run(&FetchRequest::default(), &Silent),
    )
    .await
    .expect("the sink's timeout ended the run");
    let err = outcome.expect_err("the run finished while the mail server did not answer");
    assert!(err.retryable(), "a hung server is worth a retry: {err:?}");
    let message = err.to_string();
    assert!(
        message.contains("did not answer in time") || message.contains("timed out"),
        "the error says the server did not answer: {message}"
    );
    let root = server
        .maildir(MAILBOXES[0])
        .parent()
        .and_then(Path::parent)
        .expect("mail root")
        .to_path_buf();
    let delivered: usize = MAILBOXES
        .iter()
        .map(|m| folder_mails(&ice_folder(&root, m)).len())
        .sum();
    assert!(delivered > 0, "the first file was imported before the hang");
    let store = LocalStore::new(firm.layout.store());
    let failed = failed_targets(&store).await;
    assert!(
        failed.is_empty(),
        "a hang was recorded as a refusal: {failed:?}"
    );

    relay.release();
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("the run after the server answers again");
    let context = "mail server hung mid-import, then the next run";
    assert_each_conversation_once(&store, &root, &files, context).await;
}

/// Mailbox targets recorded as failed, with their reasons.
async fn failed_targets(store: &LocalStore) -> Vec<String> {
    let mut failed = Vec::new();
    for key in store.list("reports/ice/").await.expect("list") {
        if !key.contains("/items/") {
            continue;
        }
        let record: ItemRecord =
            serde_json::from_slice(&store.get_bytes(&key).await.expect("record")).expect("json");
        failed.extend(
            record
                .targets
                .iter()
                .filter(|t| t.state == TargetState::Failed)
                .map(|t| format!("{}: {:?}", t.mailbox, t.reason)),
        );
    }
    failed
}

// ---------------------------------------------------------------------------
// S3 (moto) stopped, hung, and events delivered twice at once: the
// functions as Lambda runs them.

#[cfg(feature = "aws")]
mod s3 {

    use std::time::Duration;

    use chat_archive_core::aws::{Lambda, SdkOptions, SdkTimeouts};
    use chat_archive_core::function::{Function, Response};
    use integration_tests::faults::{signal, Resume};
    use integration_tests::lambda_chain::{
        self as chain, assert_versions_whole, by_key, event_key, take_events, versions,
        MAIL_EVENTS, PLAIN_EVENTS, RAW_EVENTS,
    };
    use integration_tests::moto::Moto;
    use serde_json::Value;

    use super::*;

    const SHAPE: CorpusShape = CorpusShape {
        files: 1,
        conversations_per_file: 12,
        messages_per_conversation: 3,
        attachment_bytes: 0,
    };

    /// A firm, its export in the drop directory, moto with the bucket,
    /// queues and secret, and a relay through which the functions reach
    /// moto.
    ///
    /// Why a relay: moto keeps its state in memory only, so stopping its
    /// process would lose the bucket, which S3 never does (and re-seeding
    /// it by hand would test the re-seeding). Stopping the relay is what a
    /// client sees of a stopped server (the port refuses connections, open
    /// connections are cut), while the objects stay as S3 would keep them.
    /// boto3, the test's own view, talks to moto directly.
    struct S3Chain {
        moto: Moto,
        relay: Arc<Mutex<Relay>>,
        firm: Firm,
        kms_key: String,
        files: Vec<ExportFile>,
    }

    impl S3Chain {
        fn new() -> Self {
            let files = corpus(SHAPE);
            let moto = Moto::start();
            let firm = Firm::new(&MAILBOXES, SignaturePolicy::Required);
            for file in &files {
                firm.drop_export(&file.name, file.xml.as_bytes(), true);
            }
            let kms_key = chain::set_up(&moto, &firm);
            let relay = Arc::new(Mutex::new(Relay::start(moto.port)));
            Self {
                moto,
                relay,
                firm,
                kms_key,
                files,
            }
        }

        /// A function process (its own clients, as a Lambda container).
        async fn lambda(&self) -> Lambda {
            let endpoint = self.relay.lock().expect("relay lock").endpoint();
            chain::lambda(
                chain::sdk_via(&self.moto, endpoint),
                &self.firm,
                &self.kms_key,
            )
            .await
        }

        /// A function process whose store calls `hook` before every operation.
        async fn lambda_with_hook(
            &self,
            hook: impl Fn(Call<'_>) + Send + Sync + 'static,
        ) -> Lambda {
            self.lambda_with_limits_and_hook(SdkTimeouts::default(), hook)
                .await
        }

        /// The same, its S3 and Secrets Manager calls under `timeouts`.
        async fn lambda_with_limits_and_hook(
            &self,
            timeouts: SdkTimeouts,
            hook: impl Fn(Call<'_>) + Send + Sync + 'static,
        ) -> Lambda {
            let endpoint = self.relay.lock().expect("relay lock").endpoint();
            let sdk = SdkOptions {
                timeouts,
                ..chain::sdk_via(&self.moto, endpoint)
            };
            let mut lambda = chain::lambda(sdk, &self.firm, &self.kms_key).await;
            lambda.pipeline.ctx.store =
                Arc::new(HookStore::new(lambda.pipeline.ctx.store.clone(), hook));
            lambda
        }

        fn stop_s3(&self) -> impl Fn() + Send + Sync + 'static {
            let relay = self.relay.clone();
            move || relay.lock().expect("relay lock").stop()
        }

        fn resume_s3(&self) {
            self.relay.lock().expect("relay lock").resume();
        }

        async fn invoke(&self, lambda: &Lambda, function: Function, event: Value) -> Response {
            match lambda.handle(function, event).await {
                Ok(response) => response,
                Err(e) => panic!("{function:?} failed: {e}\nmoto log:\n{}", self.moto.log()),
            }
        }

        /// The daily fetch, then every raw event to decrypt. Returns the
        /// plain event(s).
        async fn fetch_and_decrypt(&self, lambda: &Lambda) -> Vec<Value> {
            let fetched = self
                .invoke(lambda, Function::Fetch, chain::schedule_event())
                .await;
            assert_eq!(fetched.written.len(), self.files.len(), "{fetched:?}");
            for event in take_events(&self.moto, RAW_EVENTS) {
                self.invoke(lambda, Function::Decrypt, event).await;
            }
            let plain = take_events(&self.moto, PLAIN_EVENTS);
            assert_eq!(plain.len(), self.files.len());
            plain
        }

        fn conversations(&self) -> usize {
            self.files.iter().map(|f| f.conversations.len()).sum()
        }

        /// Rebuilds the status log, then checks the invariant and that no
        /// object version is partial.
        async fn assert_invariant(&self, lambda: &Lambda, context: &str) -> Vec<chain::Version> {
            self.invoke(lambda, Function::Import, chain::rebuild_status_event())
                .await;
            assert_each_conversation_once(
                lambda.pipeline.ctx.store.as_ref(),
                &self.firm.layout.mailboxes(),
                &self.files,
                context,
            )
            .await;
            let all = versions(&self.moto);
            assert_versions_whole(&all, context);
            all
        }
    }

    fn store_error(err: &Error) -> (&str, &str) {
        match err {
            Error::Store { key, reason } => (key.as_str(), reason.as_str()),
            other => panic!("expected an object store error, got {other:?}"),
        }
    }

    /// Every `mail/` key has exactly one version: nothing was written twice.
    fn assert_one_version_per_mail_object(all: &[chain::Version], context: &str) {
        let keys = by_key(all);
        let doubled: Vec<_> = keys
            .iter()
            .filter(|(k, v)| k.starts_with("mail/") && v.len() != 1)
            .map(|(k, v)| (k, v.len()))
            .collect();
        assert!(
            doubled.is_empty(),
            "{context}: versions per key: {doubled:?}"
        );
    }

    /// The stage objects (`raw/`, `plain/`, `mail/`) may have more than one
    /// version only when every version is the same bytes (status records
    /// and state change by design). Returns the keys with several versions.
    fn assert_pipeline_versions_identical(all: &[chain::Version], context: &str) -> Vec<String> {
        let mut doubled = Vec::new();
        for (key, vs) in by_key(all) {
            if !["raw/", "plain/", "mail/"]
                .iter()
                .any(|p| key.starts_with(p))
            {
                continue;
            }
            let bodies: BTreeSet<&str> = vs.iter().map(|v| v.body_sha256.as_str()).collect();
            assert_eq!(bodies.len(), 1, "{context}: {key} has different versions");
            if vs.len() > 1 {
                doubled.push(key);
            }
        }
        doubled
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_stopped_between_decrypt_and_convert_fails_the_stage_clearly_and_a_redelivery_completes(
    ) {
        let chain = S3Chain::new();
        let lambda = chain.lambda().await;
        let plain_events = chain.fetch_and_decrypt(&lambda).await;
        let plain_key = format!("plain/ice/{}", chain.files[0].name.trim_end_matches(".pgp"));
        let before = versions(&chain.moto);

        // S3 goes away after decrypt wrote plain/, before convert runs.
        chain.stop_s3()();
        let err = lambda
            .handle(Function::Convert, plain_events[0].clone())
            .await
            .expect_err("convert cannot run without S3");
        let (key, reason) = store_error(&err);
        assert_eq!(key, plain_key, "the error names the object: {err}");
        assert!(
            reason.contains("S3 GetObject") && reason.to_lowercase().contains("refused"),
            "the error says what failed and why: {err}"
        );
        // Nothing was written or quarantined, no import was started: the
        // failed event is retried by Lambda (or taken from the dead-letter
        // queue) as it is.
        assert_eq!(
            versions(&chain.moto),
            before,
            "S3 changed while it was down"
        );
        assert!(take_events(&chain.moto, MAIL_EVENTS).is_empty());

        chain.resume_s3();
        let converted = chain
            .invoke(&lambda, Function::Convert, plain_events[0].clone())
            .await;
        assert_eq!(converted.written.len(), chain.conversations());
        let mail_events = take_events(&chain.moto, MAIL_EVENTS);
        assert_eq!(
            mail_events.len(),
            chain.conversations(),
            "one event per sidecar"
        );
        for event in mail_events {
            chain.invoke(&lambda, Function::Import, event).await;
        }
        let all = chain
            .assert_invariant(&lambda, "S3 stopped between decrypt and convert")
            .await;
        assert_one_version_per_mail_object(&all, "S3 stopped between decrypt and convert");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_stopped_in_the_middle_of_convert_and_of_an_import_then_redelivered_events_import_each_mail_once(
    ) {
        let chain = S3Chain::new();
        let lambda = chain.lambda().await;
        let plain_event = chain.fetch_and_decrypt(&lambda).await.remove(0);

        // Convert: S3 stops as the 4th mail is about to be written (puts
        // under mail/ go .eml, .json, .eml, ...: the 7th is the 4th .eml;
        // mails are written several at a time, so others are under way).
        let faulty = chain
            .lambda_with_hook(at_nth_call(
                7,
                |call| matches!(call, Call::Put(key) if key.starts_with("mail/")),
                chain.stop_s3(),
            ))
            .await;
        let err = faulty
            .handle(Function::Convert, plain_event.clone())
            .await
            .expect_err("convert cannot finish without S3");
        let (key, reason) = store_error(&err);
        assert!(
            ["mail/ice/", "reports/ice/", "state/ice/"]
                .iter()
                .any(|p| key.starts_with(p)),
            "the error names the object it could not write: {err}"
        );
        assert!(reason.contains("S3"), "{err}");
        // What was written before is whole; every sidecar has its mail
        // (the sidecar goes last) and started exactly one import; not every
        // mail was written.
        let early_versions = versions(&chain.moto);
        assert_versions_whole(&early_versions, "after the stop mid-convert");
        let written: BTreeSet<String> = by_key(&early_versions)
            .into_keys()
            .filter(|k| k.starts_with("mail/"))
            .collect();
        let sidecars: Vec<&String> = written.iter().filter(|k| k.ends_with(".json")).collect();
        for sidecar in &sidecars {
            let mail = sidecar.replace(".json", ".eml");
            assert!(written.contains(&mail), "{sidecar} without its mail {mail}");
        }
        assert!(
            sidecars.len() < chain.conversations(),
            "not every mail was written before S3 stopped: {written:?}"
        );
        let mut events = take_events(&chain.moto, MAIL_EVENTS);
        assert_eq!(events.len(), sidecars.len(), "one import event per sidecar");

        // The event is delivered again (Lambda's retry) once S3 is back.
        chain.resume_s3();
        let converted = chain.invoke(&lambda, Function::Convert, plain_event).await;
        assert_eq!(converted.written.len(), chain.conversations());
        events.extend(take_events(&chain.moto, MAIL_EVENTS));
        let sidecars: BTreeSet<String> = events.iter().map(event_key).collect();
        assert_eq!(
            (events.len(), sidecars.len()),
            (chain.conversations(), chain.conversations()),
            "one import event per mail, the ones written before the stop not again"
        );

        // Import: S3 stops right after the first mail was delivered into its
        // mailbox, as the stage reads the item's status record.
        let faulty = chain
            .lambda_with_hook(at_nth_call(
                1,
                |call| matches!(call, Call::Get(key) if key.contains("/items/")),
                chain.stop_s3(),
            ))
            .await;
        let err = faulty
            .handle(Function::Import, events[0].clone())
            .await
            .expect_err("the import cannot record its outcome without S3");
        let (key, _) = store_error(&err);
        assert!(key.starts_with("reports/ice/"), "{err}");
        let delivered: usize = MAILBOXES
            .iter()
            .map(|m| {
                integration_tests::faults::folder_mails(&integration_tests::faults::ice_folder(
                    &chain.firm.layout.mailboxes(),
                    m,
                ))
                .len()
            })
            .sum();
        assert!(
            delivered > 0,
            "the first mail was delivered before S3 stopped"
        );

        // Every event, the failed one again first, once S3 is back.
        chain.resume_s3();
        for event in events {
            chain.invoke(&lambda, Function::Import, event).await;
        }
        let context = "S3 stopped mid-convert and mid-import";
        let all = chain.assert_invariant(&lambda, context).await;
        assert_one_version_per_mail_object(&all, context);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_hanging_mid_convert_fails_the_call_at_its_limit_then_a_redelivery_completes() {
        let chain = S3Chain::new();
        let lambda = chain.lambda().await;
        let plain_event = chain.fetch_and_decrypt(&lambda).await.remove(0);

        // moto is stopped with SIGSTOP as convert begins writing the 4th
        // mail: connections are still accepted by the kernel, nothing
        // answers. The function's own call limit (2 s per attempt here)
        // ends the call with a retryable store error naming the object,
        // long before a Lambda timeout would.
        let pid = chain.moto.pid().expect("moto PID");
        let _resume_even_on_failure = Resume(pid);
        let short = SdkTimeouts {
            connect: Duration::from_secs(2),
            attempt: Duration::from_secs(2),
            operation: Duration::from_secs(6),
        };
        let faulty = chain
            .lambda_with_limits_and_hook(
                short,
                at_nth_call(
                    7,
                    |call| matches!(call, Call::Put(key) if key.starts_with("mail/")),
                    move || signal(pid, "STOP"),
                ),
            )
            .await;
        // Only a guard against a hang: the limit under test is the SDK's.
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            faulty.handle(Function::Convert, plain_event.clone()),
        )
        .await
        .expect("the call limit ended the hung call");
        let err = outcome.expect_err("convert succeeded while S3 did not answer");
        assert!(err.retryable(), "{err}");
        let (key, reason) = store_error(&err);
        assert!(key.starts_with("mail/ice/"), "{err}");
        assert!(
            reason.to_lowercase().contains("timeout")
                || reason.to_lowercase().contains("timed out"),
            "{err}"
        );
        drop(faulty);
        signal(pid, "CONT");

        let converted = chain.invoke(&lambda, Function::Convert, plain_event).await;
        assert_eq!(converted.written.len(), chain.conversations());
        let events = take_events(&chain.moto, MAIL_EVENTS);
        let sidecars: BTreeSet<String> = events.iter().map(event_key).collect();
        // A sidecar write abandoned while S3 hung can be committed when it
        // wakes, beside the retry's: a second notification of the same
        // object, as S3's at-least-once events can bring anyway.
        assert_eq!(
            sidecars.len(),
            chain.conversations(),
            "an import event per mail"
        );
        assert!(events.len() >= sidecars.len());
        for event in events {
            chain.invoke(&lambda, Function::Import, event).await;
        }
        let context = "S3 hung mid-convert";
        let all = chain.assert_invariant(&lambda, context).await;
        // The abandoned write may have been committed by the server after
        // the function gave up, beside the retry's own: the same object.
        assert_pipeline_versions_identical(&all, context);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_delivered_to_two_function_instances_at_once_imports_each_mail_once() {
        let chain = S3Chain::new();
        // Two containers of every function: their own clients, caches and sinks.
        let a = Arc::new(chain.lambda().await);
        let b = Arc::new(chain.lambda().await);
        let fetched = chain
            .invoke(&a, Function::Fetch, chain::schedule_event())
            .await;
        assert_eq!(fetched.written.len(), 1);

        let mut invocations: BTreeMap<&str, usize> = BTreeMap::new();
        // Whatever events the two-at-once invocations produce are delivered
        // the same way, until the chain is quiet.
        for round in 0..4 {
            let mut quiet = true;
            for (queue, function) in [
                (RAW_EVENTS, Function::Decrypt),
                (PLAIN_EVENTS, Function::Convert),
                (MAIL_EVENTS, Function::Import),
            ] {
                let events = take_events(&chain.moto, queue);
                quiet &= events.is_empty();
                let mut tasks = tokio::task::JoinSet::new();
                for event in events {
                    for lambda in [&a, &b] {
                        let (lambda, event) = (lambda.clone(), event.clone());
                        tasks.spawn(async move {
                            let key = event_key(&event);
                            (key, lambda.handle(function, event).await)
                        });
                        *invocations.entry(queue).or_default() += 1;
                    }
                }
                while let Some(joined) = tasks.join_next().await {
                    let (key, result) = joined.expect("invocation task");
                    if let Err(e) = result {
                        panic!("round {round}: {function:?} of {key} failed: {e}");
                    }
                }
            }
            if quiet {
                break;
            }
        }
        assert!(
            take_events(&chain.moto, MAIL_EVENTS).is_empty(),
            "the chain did not settle"
        );
        eprintln!("invocations per queue: {invocations:?}");

        let context = "every event delivered twice at once";
        let all = chain.assert_invariant(&a, context).await;
        // Two writers of the same object may both commit it (the store
        // looks, then writes; it sends no conditional write), which adds a
        // version and an event, but only ever of the same bytes.
        let doubled = assert_pipeline_versions_identical(&all, context);
        eprintln!("stage objects committed more than once by concurrent writers: {doubled:?}");
    }
}
