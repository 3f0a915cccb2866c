//! The fetch stage against a real OpenSSH sshd (internal-sftp) that each test
//! starts on a free loopback port and stops by PID: authentication, host key
//! pinning, checkpoint and backfill, faults mid-transfer, and the whole
//! pipeline from the SFTP site to a mailbox.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use chat_archive_core::adapters::sftp::{validate_connection, Step, SSH_KEY_PASSPHRASE};
use chat_archive_core::adapters::{LocalStore, SecretsFile, SftpConfig};
use chat_archive_core::config::{ConnectorConfig, Settings};
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::{LocalLayout, Pipeline, Silent};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{ByteStream, ObjectInfo, ObjectStore, SecretValue};
use chat_archive_core::stages::fetch::{self, Checkpoint, FetchOutcome};
use chat_archive_core::stages::Context;
use chat_archive_core::{Error, Result};
use chrono::NaiveDate;
use integration_tests::faults::HookStore;
use integration_tests::fixtures::SAMPLE;
use integration_tests::local::Firm;
use integration_tests::sshd::{self, Sshd, BOTH_USER, KEY_USER, PASSWORD_USER};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

/// Noon UTC of a day in November 2026.
fn nov(day: u32) -> SystemTime {
    let date = NaiveDate::from_ymd_opt(2026, 11, day).expect("date");
    let at = date.and_hms_opt(12, 0, 0).expect("time").and_utc();
    SystemTime::UNIX_EPOCH + Duration::from_secs(at.timestamp() as u64)
}

/// Deterministic bytes that differ per file (so a mix-up changes the digest).
fn content(seed: u8, len: usize) -> Vec<u8> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// SHA-256 of a file by coreutils, a digest we did not compute ourselves.
fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// The site as the tests configure it: pinned key, no settle pause, quick retries.
fn site_config(server: &Sshd) -> SftpConfig {
    SftpConfig {
        host: "127.0.0.1".into(),
        port: server.port,
        directory: server.export_dir.display().to_string(),
        host_keys: vec![server.host_key()],
        connect_timeout_secs: 20,
        request_timeout_secs: 20,
        settle_secs: 0,
        attempts: 3,
        backoff_ms: 20,
        backoff_max_ms: 100,
        ..Default::default()
    }
}

/// A local data directory whose config.toml points at the site and whose
/// secrets file holds the given fields.
struct Local {
    _dir: tempfile::TempDir,
    layout: LocalLayout,
}

impl Local {
    fn new(config: SftpConfig, secret: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sftp-local")
            .tempdir()
            .expect("temp dir");
        let layout = LocalLayout::new(dir.path().join("data"));
        let local = Self { _dir: dir, layout };
        local.configure(config, secret);
        local
    }

    fn configure(&self, config: SftpConfig, secret: &[(&str, &str)]) {
        std::fs::create_dir_all(&self.layout.data_dir).expect("data dir");
        let mut connector = ConnectorConfig::ice();
        connector.firm_domains = vec!["acme.example".into()];
        connector.sftp = Some(config);
        std::fs::write(
            self.layout.settings(),
            Settings::single(connector).to_toml(),
        )
        .expect("config.toml");
        let fields: BTreeMap<String, SecretValue> = secret
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
            .collect();
        let _ = std::fs::remove_file(self.layout.secrets());
        integration_tests::local::write_secrets_file(
            &self.layout.secrets(),
            &serde_json::to_vec(&BTreeMap::from([("ice", fields)])).expect("json"),
        );
    }

    fn pipeline(&self) -> Pipeline {
        Pipeline::local(&self.layout).expect("pipeline")
    }

    fn store(&self) -> LocalStore {
        LocalStore::new(self.layout.store())
    }

    async fn fetch(&self, request: &FetchRequest) -> Result<FetchOutcome> {
        let pipeline = self.pipeline();
        fetch::run(&pipeline.ctx, pipeline.source()?.as_ref(), request).await
    }

    async fn raw_keys(&self) -> Vec<String> {
        self.store().list("raw/").await.expect("list raw/")
    }

    async fn checkpoint(&self) -> Checkpoint {
        let store = self.store();
        match store.head("state/ice/checkpoint.json").await.expect("head") {
            Some(_) => serde_json::from_slice(
                &store
                    .get_bytes("state/ice/checkpoint.json")
                    .await
                    .expect("get"),
            )
            .expect("checkpoint json"),
            None => Checkpoint::default(),
        }
    }

    /// No object body anywhere in the store but committed ones (no temp files).
    fn no_partial_files(&self) -> bool {
        let tmp = self.layout.store().join(".tmp");
        std::fs::read_dir(&tmp)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    }
}

fn key_login(server: &Sshd) -> Vec<(&'static str, String)> {
    vec![
        (fields::FIRM_CODE, KEY_USER.to_string()),
        (fields::SSH_PRIVATE_KEY, server.client_key()),
    ]
}

fn as_refs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// An error message must not contain any secret the test handed over.
fn assert_no_secret(message: &str, server: &Sshd) {
    assert!(
        !message.contains(sshd::PASSWORD),
        "password leaked: {message}"
    );
    assert!(
        !message.contains(sshd::KEY_PASSPHRASE),
        "passphrase leaked: {message}"
    );
    for key in [server.client_key(), server.encrypted_client_key()] {
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
        {
            assert!(!message.contains(line), "private key leaked: {message}");
        }
    }
}

async fn assert_fetched_exactly(local: &Local, server: &Sshd, names: &[&str]) {
    let mut expected: Vec<String> = names.iter().map(|n| format!("raw/ice/{n}")).collect();
    expected.sort();
    assert_eq!(local.raw_keys().await, expected);
    let store = local.store();
    for name in names {
        let key = format!("raw/ice/{name}");
        let on_server = server.export_dir.join(name);
        let info = store.head(&key).await.expect("head").expect("object");
        assert_eq!(info.sha256, sha256sum(&on_server), "{key}: digest");
        assert_eq!(
            sha256sum(&store.path_of(&key).expect("path")),
            sha256sum(&on_server),
            "{key}: body"
        );
        assert_eq!(
            info.size,
            std::fs::metadata(&on_server).expect("stat").len()
        );
    }
}

#[tokio::test]
async fn key_auth_fetches_every_file_with_digest_and_lineage() {
    let server = Sshd::start();
    server.put_file("ACME_20261119.xml.pgp", &content(1, 300_000), nov(19));
    server.put_file("ACME_20261120.xml.pgp", &content(2, 1_234_567), nov(20));
    // Not export files: a directory and an upload in progress.
    std::fs::create_dir(server.export_dir.join("archive")).expect("subdir");
    server.put_file(".ACME_20261121.xml.pgp.part", b"partial", nov(21));

    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));
    let outcome = local.fetch(&FetchRequest::default()).await.expect("fetch");
    assert_eq!(
        outcome.fetched,
        vec![
            "raw/ice/ACME_20261119.xml.pgp",
            "raw/ice/ACME_20261120.xml.pgp"
        ]
    );
    assert_fetched_exactly(
        &local,
        &server,
        &["ACME_20261119.xml.pgp", "ACME_20261120.xml.pgp"],
    )
    .await;

    let info = local
        .store()
        .head("raw/ice/ACME_20261120.xml.pgp")
        .await
        .unwrap()
        .unwrap();
    let source_key = format!(
        "sftp://127.0.0.1:{}{}/ACME_20261120.xml.pgp",
        server.port,
        server.export_dir.display()
    );
    assert_eq!(info.metadata["source-key"], source_key);
    assert_eq!(info.metadata["source-size"], "1234567");
    assert_eq!(info.metadata["source-mtime"], "2026-11-20T12:00:00+00:00");
    let checkpoint = local.checkpoint().await;
    assert_eq!(checkpoint.fetched.len(), 2);
    assert!(
        server
            .log()
            .contains(&format!("Accepted publickey for {KEY_USER}")),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn password_auth_fetches_the_files() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(3, 70_000), nov(20));
    let local = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, PASSWORD_USER),
            (fields::SFTP_PASSWORD, sshd::PASSWORD),
        ],
    );
    let outcome = local.fetch(&FetchRequest::default()).await.expect("fetch");
    assert_eq!(outcome.fetched, vec!["raw/ice/ACME_20261120.xml.pgp"]);
    assert_fetched_exactly(&local, &server, &["ACME_20261120.xml.pgp"]).await;
    assert!(
        server
            .log()
            .contains(&format!("Accepted password for {PASSWORD_USER}")),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn an_encrypted_key_and_a_password_together_satisfy_publickey_then_password() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(4, 10_000), nov(20));
    let key = server.encrypted_client_key();

    // The key alone is only half of what this account needs.
    let key_only = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, BOTH_USER),
            (fields::SSH_PRIVATE_KEY, &key),
            (SSH_KEY_PASSPHRASE, sshd::KEY_PASSPHRASE),
        ],
    );
    let err = key_only
        .fetch(&FetchRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the key was accepted but the server wants another method"),
        "{err}"
    );
    assert_no_secret(&err, &server);

    // Without the passphrase the key can not even be read.
    let no_passphrase = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, BOTH_USER),
            (fields::SSH_PRIVATE_KEY, &key),
        ],
    );
    let err = no_passphrase
        .fetch(&FetchRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is encrypted") && err.contains(SSH_KEY_PASSPHRASE),
        "{err}"
    );
    assert_no_secret(&err, &server);

    let both = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, BOTH_USER),
            (fields::SSH_PRIVATE_KEY, &key),
            (SSH_KEY_PASSPHRASE, sshd::KEY_PASSPHRASE),
            (fields::SFTP_PASSWORD, sshd::PASSWORD),
        ],
    );
    let outcome = both.fetch(&FetchRequest::default()).await.expect("fetch");
    assert_eq!(outcome.fetched.len(), 1);
    assert_fetched_exactly(&both, &server, &["ACME_20261120.xml.pgp"]).await;
    let log = server.log();
    assert!(
        log.contains(&format!("Partial publickey for {BOTH_USER}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Accepted password for {BOTH_USER}")),
        "{log}"
    );
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused_before_any_credential_is_sent() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(5, 1000), nov(20));
    let mut config = site_config(&server);
    config.host_keys = vec![server.other_host_key()];
    let local = Local::new(
        config,
        &[
            (fields::FIRM_CODE, PASSWORD_USER),
            (fields::SFTP_PASSWORD, sshd::PASSWORD),
        ],
    );

    let err = local.fetch(&FetchRequest::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Source {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("HOST KEY MISMATCH"), "{message}");
    assert!(
        message.contains(&server.host_fingerprint()),
        "the server's fingerprint is shown: {message}"
    );
    assert_no_secret(&message, &server);
    assert!(local.raw_keys().await.is_empty());
    // The server never saw a login attempt: nothing was sent.
    let log = server.log();
    assert!(
        !log.contains("password for") && !log.contains("publickey for"),
        "{log}"
    );
}

#[tokio::test]
async fn a_missing_pin_is_a_hard_error_never_trust_on_first_use() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(6, 1000), nov(20));
    let mut config = site_config(&server);
    config.host_keys.clear();
    let local = Local::new(config, &as_refs(&key_login(&server)));
    let message = local
        .fetch(&FetchRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("no host key is pinned"), "{message}");
    assert!(message.contains(&server.host_fingerprint()), "{message}");
    assert!(local.raw_keys().await.is_empty());
    assert!(!server.log().contains("publickey for"), "{}", server.log());

    // The pin may also come from the secret, as a `ssh-keyscan` line.
    let keyscan_line = format!("[127.0.0.1]:{} {}", server.port, server.host_key());
    let mut secret = key_login(&server);
    secret.push((fields::SSH_HOST_KEY, keyscan_line));
    let mut config = site_config(&server);
    config.host_keys.clear();
    local.configure(config, &as_refs(&secret));
    assert_eq!(
        local
            .fetch(&FetchRequest::default())
            .await
            .expect("fetch")
            .fetched
            .len(),
        1
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_once_with_a_clear_message() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(7, 1000), nov(20));
    let wrong = "Wrong-pw-but-still-secret-99";
    let local = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, PASSWORD_USER),
            (fields::SFTP_PASSWORD, wrong),
        ],
    );
    let err = local.fetch(&FetchRequest::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Source {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("login as \"{PASSWORD_USER}\" rejected")),
        "{message}"
    );
    assert!(message.contains("tried password"), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert_no_secret(&message, &server);
    // A refusal is not retried: retrying a bad password can lock the account.
    assert_eq!(
        server.log().matches("Failed password for").count(),
        1,
        "{}",
        server.log()
    );
    assert!(local.raw_keys().await.is_empty());
}

#[tokio::test]
async fn an_unknown_user_is_refused_with_a_clear_message() {
    let server = Sshd::start();
    let local = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, "nosuchfirm"),
            (fields::SFTP_PASSWORD, sshd::PASSWORD),
            (fields::SSH_PRIVATE_KEY, &server.client_key()),
        ],
    );
    let message = local
        .fetch(&FetchRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("login as \"nosuchfirm\" rejected"),
        "{message}"
    );
    assert!(
        message.contains("tried publickey then password"),
        "{message}"
    );
    assert_no_secret(&message, &server);
}

#[tokio::test]
async fn the_checkpoint_fetches_each_file_once_and_only_new_ones() {
    let server = Sshd::start();
    server.put_file("ACME_20261118.xml.pgp", &content(8, 5000), nov(18));
    server.put_file("ACME_20261119.xml.pgp", &content(9, 5000), nov(19));
    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));

    let first = local
        .fetch(&FetchRequest::default())
        .await
        .expect("first run");
    assert_eq!(first.fetched.len(), 2);
    let second = local
        .fetch(&FetchRequest::default())
        .await
        .expect("second run");
    assert!(second.fetched.is_empty(), "{second:?}");
    assert_eq!(second.already_fetched, 2);

    // Keep an eye on the objects: a second fetch would rewrite them.
    let before = std::fs::metadata(
        local
            .store()
            .path_of("raw/ice/ACME_20261118.xml.pgp")
            .unwrap(),
    )
    .and_then(|m| m.modified())
    .unwrap();
    server.put_file("ACME_20261120.xml.pgp", &content(10, 5000), nov(20));
    let third = local
        .fetch(&FetchRequest::default())
        .await
        .expect("third run");
    assert_eq!(third.fetched, vec!["raw/ice/ACME_20261120.xml.pgp"]);
    assert_eq!(third.already_fetched, 2);
    let after = std::fs::metadata(
        local
            .store()
            .path_of("raw/ice/ACME_20261118.xml.pgp")
            .unwrap(),
    )
    .and_then(|m| m.modified())
    .unwrap();
    assert_eq!(before, after, "an old file was written again");
    assert_fetched_exactly(
        &local,
        &server,
        &[
            "ACME_20261118.xml.pgp",
            "ACME_20261119.xml.pgp",
            "ACME_20261120.xml.pgp",
        ],
    )
    .await;
    assert_eq!(local.checkpoint().await.fetched.len(), 3);
}

#[tokio::test]
async fn a_backfill_relands_exactly_the_files_in_range_and_a_refetch_exactly_the_named_ones() {
    let server = Sshd::start();
    for day in 17..=21 {
        server.put_file(
            &format!("ACME_202611{day}.xml.pgp"),
            &content(day as u8, 4096),
            nov(day),
        );
    }
    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));
    assert_eq!(
        local
            .fetch(&FetchRequest::default())
            .await
            .expect("daily run")
            .fetched
            .len(),
        5
    );
    let checkpoint = local.checkpoint().await;

    // Lose every raw object, then backfill 18-20 November.
    let store = local.store();
    for key in local.raw_keys().await {
        store.delete(&key).await.expect("delete");
    }
    let range = FetchRequest {
        since: NaiveDate::from_ymd_opt(2026, 11, 18),
        until: NaiveDate::from_ymd_opt(2026, 11, 20),
        files: Vec::new(),
    };
    let backfill = local.fetch(&range).await.expect("backfill");
    assert_eq!(
        backfill.fetched,
        vec![
            "raw/ice/ACME_20261118.xml.pgp",
            "raw/ice/ACME_20261119.xml.pgp",
            "raw/ice/ACME_20261120.xml.pgp"
        ]
    );
    assert_fetched_exactly(
        &local,
        &server,
        &[
            "ACME_20261118.xml.pgp",
            "ACME_20261119.xml.pgp",
            "ACME_20261120.xml.pgp",
        ],
    )
    .await;

    // Idempotent: the same backfill again lands the same objects.
    let digests = |infos: Vec<Option<ObjectInfo>>| {
        infos
            .into_iter()
            .map(|i| i.map(|i| i.sha256))
            .collect::<Vec<_>>()
    };
    let mut before = Vec::new();
    for key in local.raw_keys().await {
        before.push(store.head(&key).await.unwrap());
    }
    assert_eq!(
        local
            .fetch(&range)
            .await
            .expect("backfill again")
            .fetched
            .len(),
        3
    );
    let mut after = Vec::new();
    for key in local.raw_keys().await {
        after.push(store.head(&key).await.unwrap());
    }
    assert_eq!(digests(before), digests(after));

    // Re-fetch of a named file: that one only.
    let named = FetchRequest {
        files: vec!["ACME_20261121.xml.pgp".into()],
        ..Default::default()
    };
    assert_eq!(
        local.fetch(&named).await.expect("refetch").fetched,
        vec!["raw/ice/ACME_20261121.xml.pgp"]
    );
    assert_eq!(local.raw_keys().await.len(), 4);
    // The checkpoint is the same set of files: the daily run fetches nothing.
    assert_eq!(local.checkpoint().await, checkpoint);
    assert!(local
        .fetch(&FetchRequest::default())
        .await
        .expect("daily")
        .fetched
        .is_empty());

    // A named file that is not on the site is an error, and nothing is fetched.
    let missing = FetchRequest {
        files: vec!["ACME_20261231.xml.pgp".into()],
        ..Default::default()
    };
    let err = local.fetch(&missing).await.unwrap_err().to_string();
    assert!(
        err.contains("ACME_20261231.xml.pgp") && err.contains("not on the site"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Faults: a store wrapper holds the first raw transfer after `pass` bytes
// until the test releases it, so that the server can be stopped at a known
// point mid-transfer (no timing involved).

struct Gate {
    inner: ByteStream,
    passed: u64,
    limit: u64,
    reached: Option<oneshot::Sender<()>>,
    release: Option<oneshot::Receiver<()>>,
}

impl AsyncRead for Gate {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(release) = this.release.as_mut() {
            if this.passed >= this.limit {
                if let Some(reached) = this.reached.take() {
                    let _ = reached.send(());
                }
                let _ = std::task::ready!(std::future::Future::poll(Pin::new(release), cx));
                this.release = None;
            } else {
                let room = usize::try_from(this.limit - this.passed)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                let mut chunk = vec![0u8; room];
                let mut part = ReadBuf::new(&mut chunk);
                std::task::ready!(this.inner.as_mut().poll_read(cx, &mut part))?;
                this.passed += part.filled().len() as u64;
                buf.put_slice(part.filled());
                return Poll::Ready(Ok(()));
            }
        }
        this.inner.as_mut().poll_read(cx, buf)
    }
}

/// Starts a fetch whose first raw transfer stops after `pass` bytes; returns
/// the running fetch, a signal that the transfer reached the gate, and the
/// release.
#[allow(clippy::type_complexity)]
fn gated_fetch(
    local: &Local,
    pass: u64,
) -> (
    tokio::task::JoinHandle<Result<FetchOutcome>>,
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
) {
    let (reached_tx, reached_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let pipeline = local.pipeline();
    let gate = Mutex::new(Some((reached_tx, release_rx)));
    let store =
        HookStore::new(Arc::new(local.store()), |_| {}).wrapping_bodies(move |key, body| {
            let first_raw = match key.starts_with("raw/") {
                true => gate.lock().expect("gate lock").take(),
                false => None,
            };
            match first_raw {
                Some((reached, release)) => Box::pin(Gate {
                    inner: body,
                    passed: 0,
                    limit: pass,
                    reached: Some(reached),
                    release: Some(release),
                }),
                None => body,
            }
        });
    let ctx = Context {
        store: Arc::new(store),
        config: pipeline.ctx.config.clone(),
        connectors: pipeline.ctx.connectors.clone(),
    };
    let source = pipeline.source().expect("a source").clone();
    let task =
        tokio::spawn(
            async move { fetch::run(&ctx, source.as_ref(), &FetchRequest::default()).await },
        );
    (task, reached_rx, release_tx)
}

const BIG: usize = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_transfer_leaves_nothing_partial_and_the_next_run_completes() {
    let mut server = Sshd::start();
    let path = server.put_file("ACME_20261120.xml.pgp", &content(11, BIG), nov(20));
    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));

    let (task, reached, release) = gated_fetch(&local, 8 * 1024 * 1024);
    reached.await.expect("the transfer reached 8 MiB");
    // Mid-transfer: the connection is open and 8 MiB of 64 have been read.
    server.stop();
    let _ = release.send(());
    let err = task.await.expect("task").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Source {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        local.raw_keys().await.is_empty(),
        "a partial object is visible under raw/"
    );
    assert!(local.no_partial_files(), "a temporary file was left behind");
    assert!(
        local.checkpoint().await.fetched.is_empty(),
        "the checkpoint moved without a commit"
    );

    server.restart();
    let outcome = local
        .fetch(&FetchRequest::default())
        .await
        .expect("next run");
    assert_eq!(outcome.fetched, vec!["raw/ice/ACME_20261120.xml.pgp"]);
    let info = local
        .store()
        .head("raw/ice/ACME_20261120.xml.pgp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.sha256, sha256sum(&path));
    assert_eq!(info.size, BIG as u64);
    assert_eq!(local.checkpoint().await.fetched.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_transfer_is_retried_within_the_run() {
    let server = Sshd::start();
    let path = server.put_file("ACME_20261120.xml.pgp", &content(12, BIG), nov(20));
    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));

    let (task, reached, release) = gated_fetch(&local, 8 * 1024 * 1024);
    reached.await.expect("the transfer reached 8 MiB");
    // The connection dies (its server processes are killed); the listener
    // stays up, so the retry can reconnect.
    assert!(server.kill_sessions() > 0, "no session process to kill");
    let _ = release.send(());
    let outcome = task
        .await
        .expect("task")
        .expect("the run completes after a retry");
    assert_eq!(outcome.fetched, vec!["raw/ice/ACME_20261120.xml.pgp"]);
    assert!(outcome.retries >= 1, "{outcome:?}");
    let info = local
        .store()
        .head("raw/ice/ACME_20261120.xml.pgp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.sha256, sha256sum(&path));
    assert!(local.no_partial_files());
    assert_eq!(
        server
            .log()
            .matches(&format!("Accepted publickey for {KEY_USER}"))
            .count(),
        2,
        "{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn validate_connection_gives_a_verdict_and_the_fingerprint_on_a_mismatch() {
    let server = Sshd::start();
    server.put_file("ACME_20261120.xml.pgp", &content(13, 2048), nov(20));
    let local = Local::new(site_config(&server), &as_refs(&key_login(&server)));
    let secrets = SecretsFile::new(local.layout.secrets());

    let check = validate_connection(&site_config(&server), &secrets, "ice").await;
    let report = check.to_string();
    assert!(check.passed(), "{report}");
    assert_eq!(check.files.len(), 1);
    assert!(report.contains("Verdict: OK"), "{report}");
    assert!(report.contains(&server.host_fingerprint()), "{report}");
    assert!(
        report.contains("1 file(s)") && report.contains("ACME_20261120.xml.pgp"),
        "{report}"
    );

    let mut wrong = site_config(&server);
    wrong.host_keys = vec![server.other_host_key()];
    let check = validate_connection(&wrong, &secrets, "ice").await;
    let report = check.to_string();
    assert!(!check.passed());
    assert_eq!(
        check.failed_step().map(|s| s.step),
        Some(Step::HostKey),
        "{report}"
    );
    assert!(report.contains("Verdict: FAILED at host key"), "{report}");
    assert!(report.contains(&server.host_fingerprint()), "{report}");
    assert!(
        report.contains(&server.host_key()[..60]),
        "the key line to pin once confirmed: {report}"
    );
    assert_no_secret(&report, &server);

    let bad_login = Local::new(
        site_config(&server),
        &[
            (fields::FIRM_CODE, KEY_USER),
            (fields::SFTP_PASSWORD, "nope"),
        ],
    );
    let check = validate_connection(
        &site_config(&server),
        &SecretsFile::new(bad_login.layout.secrets()),
        "ice",
    )
    .await;
    assert_eq!(
        check.failed_step().map(|s| s.step),
        Some(Step::Login),
        "{check}"
    );
    assert!(!check.to_string().contains("nope"));
}

#[tokio::test]
async fn the_local_pipeline_fetches_from_the_site_through_to_the_mailbox() {
    let server = Sshd::start();
    let firm = Firm::new(
        &["jdoe@acme.example", "asmith@acme.example"],
        SignaturePolicy::Required,
    );
    let exported = firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let on_site = server.export_dir.join("ACME_2026-11-20.xml.pgp");
    std::fs::copy(&exported, &on_site).expect("onto the site");
    std::fs::remove_file(&exported).expect("out of the drop directory");
    server.set_mtime(&on_site, nov(20));

    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    config.sftp = Some(site_config(&server));
    firm.write_config(config);
    let secrets = SecretsFile::new(firm.layout.secrets());
    chat_archive_core::ports::SecretStore::update(
        &secrets,
        "ice",
        BTreeMap::from([
            (fields::FIRM_CODE.to_string(), SecretValue::new(KEY_USER)),
            (
                fields::SSH_PRIVATE_KEY.to_string(),
                SecretValue::new(server.client_key()),
            ),
        ]),
    )
    .await
    .expect("secrets");

    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run");
    assert_eq!(summary.fetched, vec!["raw/ice/ACME_2026-11-20.xml.pgp"]);
    assert!(summary.quarantined.is_empty(), "{:?}", summary.quarantined);
    assert_eq!(firm.folder("jdoe@acme.example", "ICE Chat").len(), 3);
    // The next daily run finds nothing new on the site.
    let again = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("run");
    assert!(again.fetched.is_empty());
}
