//! The functions as Lambda runs them, against a real local S3 + Secrets
//! Manager (moto, started here on a free loopback port, stopped by PID).
//!
//! The S3 events come from the server itself: the bucket notifies SQS queues
//! with the same prefix filters as `infra/template.yaml`, and each function is
//! invoked with exactly the events the previous one's writes produced
//! (URL-encoded keys included).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use chat_archive_core::adapters::s3::{S3Settings, S3Store, SHA256_KEY};
use chat_archive_core::aws::{self, AwsSettings, Lambda};
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::function::{Function, Response};
use chat_archive_core::ports::{ByteStream, Metadata, ObjectStore};
use chat_archive_core::status::DayStatus;
use integration_tests::fixtures::SAMPLE;
use integration_tests::hostile::sha256_hex;
use integration_tests::lambda_chain::{create_bucket, firm_secret, take_events};
use integration_tests::local::{Firm, FIRM_PASSPHRASE};
use integration_tests::moto::{self, Moto};
use integration_tests::process::wait_for_port;
use serde_json::{json, Value};

/// The bucket of the sample events in `events/`.
const BUCKET: &str = "chat-archive-123456789012";
const SECRET: &str = "chat-archive/ice";
/// A file name S3 must URL-encode in its events: a space, a plus, non-ASCII.
const EXPORT: &str = "ACME_2026-11-20 Zürich+desk.xml.pgp";
const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const QUEUES: [&str; 3] = ["raw-events", "plain-events", "mail-events"];

/// Every version and delete marker in the bucket: (key, version id, ETag).
fn versions(moto: &Moto) -> Vec<(String, String, String)> {
    let out = moto.boto(
        r#"
rows = []
for page in s3.get_paginator("list_object_versions").paginate(Bucket=arg):
    for v in page.get("Versions", []):
        rows.append([v["Key"], v["VersionId"], v["ETag"]])
    for d in page.get("DeleteMarkers", []):
        rows.append([d["Key"], d["VersionId"], "delete-marker"])
out(sorted(rows))
"#,
        json!(BUCKET),
    );
    serde_json::from_value(out).expect("version rows")
}

fn put_secret(moto: &Moto, fields: &Value) {
    moto.boto(
        r#"sm.create_secret(Name=arg["name"], SecretString=json.dumps(arg["fields"]))"#,
        json!({"name": SECRET, "fields": fields}),
    );
}

/// The function settings as the template sets them, pointed at moto, with
/// the smallest part size S3 takes (so that multipart uploads happen).
fn settings(moto: &Moto, firm: &Firm, kms_key: &str) -> AwsSettings {
    let mut settings = integration_tests::lambda_chain::settings(moto.sdk_options(), firm, kms_key);
    settings.part_size = 5 << 20;
    settings
}

async fn lambda(moto: &Moto, firm: &Firm, kms_key: &str) -> Lambda {
    let settings = settings(moto, firm, kms_key);
    let sdk = aws::sdk_config(&settings.sdk).await;
    Lambda::new(&settings, &sdk).expect("functions")
}

fn event_file(name: &str) -> Value {
    let path = moto::repo_root().join("events").join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("event file")).expect("event JSON")
}

/// Sets a file's modification time to midday of a day (the backfill picks
/// files by it).
fn set_mtime(path: &Path, day: &str) {
    let status = Command::new("touch")
        .args(["-d", &format!("{day} 12:00:00 UTC")])
        .arg(path)
        .status()
        .expect("touch");
    assert!(status.success());
}

struct Chain {
    moto: Moto,
    firm: Firm,
    kms_key: String,
    lambda: Lambda,
    /// Every S3 event delivered, per stage.
    events: BTreeMap<&'static str, Vec<Value>>,
}

impl Chain {
    async fn new() -> Self {
        let moto = Moto::start();
        let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
        let kms_key = create_bucket(&moto);
        put_secret(&moto, &firm_secret(&firm));
        let export = firm.drop_export(EXPORT, SAMPLE.as_bytes(), true);
        set_mtime(&export, "2026-11-20");
        let lambda = lambda(&moto, &firm, &kms_key).await;
        Self {
            moto,
            firm,
            kms_key,
            lambda,
            events: BTreeMap::new(),
        }
    }

    async fn invoke(&self, function: Function, event: Value) -> Response {
        match self.lambda.handle(function, event).await {
            Ok(response) => response,
            Err(e) => panic!("{function:?} failed: {e}\nmoto log:\n{}", self.moto.log()),
        }
    }

    /// Delivers the events waiting in a stage's queue to its function.
    async fn deliver(&mut self, queue: &'static str, function: Function) -> Vec<Response> {
        let mut responses = Vec::new();
        for event in take_events(&self.moto, queue) {
            responses.push(self.invoke(function, event.clone()).await);
            self.events.entry(queue).or_default().push(event);
        }
        responses
    }

    /// fetch on the daily schedule, then every stage on the events S3 sent.
    async fn run(&mut self) -> (Response, Vec<Response>, Vec<Response>, Vec<Response>) {
        let fetched = self
            .invoke(Function::Fetch, event_file("schedule.json"))
            .await;
        let decrypted = self.deliver("raw-events", Function::Decrypt).await;
        let converted = self.deliver("plain-events", Function::Convert).await;
        let imported = self.deliver("mail-events", Function::Import).await;
        (fetched, decrypted, converted, imported)
    }

    async fn rebuild_status(&self) -> Response {
        self.invoke(Function::Import, event_file("rebuild-status.json"))
            .await
    }

    async fn day_status(&self, day: &str) -> DayStatus {
        let key = format!("reports/ice/{day}/status.json");
        let bytes = self
            .lambda
            .pipeline
            .ctx
            .store
            .get_bytes(&key)
            .await
            .expect("status.json");
        serde_json::from_slice(&bytes).expect("status JSON")
    }

    fn head(&self, key: &str) -> Value {
        self.moto.boto(
            r#"
h = s3.head_object(Bucket=arg["bucket"], Key=arg["key"])
out({"meta": h.get("Metadata", {}), "sse": h.get("ServerSideEncryption"), "kms": h.get("SSEKMSKeyId")})
"#,
            json!({"bucket": BUCKET, "key": key}),
        )
    }
}

#[tokio::test]
async fn the_chain_runs_as_on_lambda_from_an_encrypted_export_to_the_mailboxes() {
    let mut chain = Chain::new().await;
    let (fetched, decrypted, converted, imported) = chain.run().await;

    let raw_key = format!("raw/ice/{EXPORT}");
    assert_eq!(fetched.written, vec![raw_key.clone()]);
    // S3 URL-encodes keys in its events (space as +); the stage decoded them.
    let raw_event = &chain.events["raw-events"];
    assert_eq!(raw_event.len(), 1, "one event per object written");
    let wire_key = raw_event[0]["Records"][0]["s3"]["object"]["key"]
        .as_str()
        .unwrap();
    assert!(
        wire_key.ends_with("ACME_2026-11-20+Z%C3%BCrich%2Bdesk.xml.pgp"),
        "{wire_key}"
    );

    let plain_key = "plain/ice/ACME_2026-11-20 Zürich+desk.xml".to_string();
    assert_eq!(decrypted.len(), 1);
    assert_eq!(decrypted[0].written, vec![plain_key.clone()]);
    assert!(decrypted[0].quarantined.is_empty(), "{:?}", decrypted[0]);
    assert_eq!(converted.len(), 1);
    assert_eq!(
        converted[0].written.len(),
        3,
        "three conversations: three sidecars"
    );
    // Only the sidecars start imports (suffix filter .json): one event each.
    assert_eq!(imported.len(), 3);
    assert!(
        imported
            .iter()
            .all(|r| r.imported.len() == 1 && r.imported[0].ends_with("Imported")),
        "{imported:?}"
    );

    assert_eq!(chain.firm.folder(JDOE, "ICE Chat").len(), 3);
    assert_eq!(chain.firm.folder(ASMITH, "ICE Chat").len(), 2);
    assert_eq!(
        chain.firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()]
    );

    // Lineage: the plain object names its raw object (non-ASCII kept through
    // S3's ASCII-only metadata) and that object's SHA-256.
    let store = chain.lambda.pipeline.ctx.store.clone();
    let raw = store.head(&raw_key).await.unwrap().expect("raw object");
    let plain = store.head(&plain_key).await.unwrap().expect("plain object");
    assert_eq!(plain.metadata["raw-key"], raw_key);
    assert_eq!(plain.metadata["raw-sha256"], raw.sha256);
    let encrypted = std::fs::read(chain.firm.layout.drop_dir().join(EXPORT)).unwrap();
    assert_eq!(
        raw.sha256,
        sha256_hex(&encrypted),
        "SHA-256 recorded while streaming"
    );
    assert_eq!(raw.size, encrypted.len() as u64);
    // What another client sees: ASCII metadata, SSE-KMS with the stack's key.
    let seen = chain.head(&plain_key);
    assert_eq!(
        seen["meta"]["raw-key"],
        "raw/ice/ACME_2026-11-20%20Z%C3%BCrich+desk.xml.pgp"
    );
    assert_eq!(seen["sse"], "aws:kms");
    assert_eq!(seen["kms"], chain.kms_key.as_str());

    // The status schedule folds the records of the days touched.
    let rebuilt = chain.rebuild_status().await;
    assert_eq!(
        rebuilt.written,
        vec!["reports/ice/2026-11-20/status.json".to_string()]
    );
    // The days after the export's, with no file of their own, are alerts,
    // and the metrics line counts them for the template's alarm.
    let counts = chat_archive_core::metrics::counts(Function::Import, &Ok(rebuilt));
    assert!(counts["AlertNoFileForDay"] >= 1, "{counts:?}");
    assert_eq!(counts["AlertKeyExpiring"], 0, "{counts:?}");
    assert_eq!(counts["AlertQuarantineWaiting"], 0, "{counts:?}");
    let status = chain.day_status("2026-11-20").await;
    assert_eq!(
        (
            status.available_from_source,
            status.available_after_fanout,
            status.imported,
            status.failed
        ),
        (3, 5, 3, 0)
    );
    assert!(status.counts_add_up());
    assert_eq!(
        chain.rebuild_status().await.written,
        Vec::<String>::new(),
        "nothing new to fold"
    );

    // A manual request with a typo is refused, not run as a daily fetch.
    let err = chain
        .lambda
        .handle(Function::Fetch, json!({"sinse": "2026-11-01"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sinse"), "{err}");
    // An event of another bucket is refused.
    let mut foreign = chain.events["raw-events"][0].clone();
    foreign["Records"][0]["s3"]["bucket"]["name"] = json!("someone-else");
    let err = chain
        .lambda
        .handle(Function::Decrypt, foreign)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("someone-else"), "{err}");
}

#[tokio::test]
async fn replaying_every_event_changes_nothing() {
    let mut chain = Chain::new().await;
    chain.run().await;
    chain.rebuild_status().await;
    let before = versions(&chain.moto);
    let mail_before = (
        chain.firm.folder(JDOE, "ICE Chat"),
        chain.firm.folder(ASMITH, "ICE Chat"),
    );
    assert_eq!((mail_before.0.len(), mail_before.1.len()), (3, 2));

    // Every trigger of fetch again: the schedule, a backfill over the day, a
    // re-fetch of the file by name.
    let schedule = chain
        .invoke(Function::Fetch, event_file("schedule.json"))
        .await;
    assert!(schedule.written.is_empty(), "nothing new: {schedule:?}");
    let backfill = chain
        .invoke(Function::Fetch, event_file("backfill.json"))
        .await;
    assert_eq!(
        backfill.written,
        vec![format!("raw/ice/{EXPORT}")],
        "re-fetched"
    );
    let refetch = chain
        .invoke(Function::Fetch, json!({"files": [EXPORT]}))
        .await;
    assert_eq!(refetch.written.len(), 1, "re-fetched");
    // Every S3 event delivered a second time, as S3 may do.
    for (queue, function) in [
        ("raw-events", Function::Decrypt),
        ("plain-events", Function::Convert),
        ("mail-events", Function::Import),
    ] {
        for event in chain.events[queue].clone() {
            chain.invoke(function, event).await;
        }
    }
    chain.rebuild_status().await;

    // Nothing was written: no new object or version, so S3 sent no event.
    let after = versions(&chain.moto);
    assert_eq!(after, before, "a replay must not add any object or version");
    for queue in QUEUES {
        assert!(
            take_events(&chain.moto, queue).is_empty(),
            "{queue} got events"
        );
    }
    let mail_after = (
        chain.firm.folder(JDOE, "ICE Chat"),
        chain.firm.folder(ASMITH, "ICE Chat"),
    );
    assert_eq!(mail_after, mail_before, "no duplicate mail");
    let status = chain.day_status("2026-11-20").await;
    assert_eq!(
        (status.imported, status.skipped_duplicates, status.failed),
        (3, 0, 0)
    );
}

/// A body that fails once its bytes are read (a broken transfer, a bad
/// signature found at the end).
struct FailingAfter {
    data: std::io::Cursor<Vec<u8>>,
}

impl tokio::io::AsyncRead for FailingAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut chunk = vec![0u8; buf.remaining().min(64 * 1024)];
        let n = self.data.read(&mut chunk)?;
        if n == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("connection reset")));
        }
        buf.put_slice(&chunk[..n]);
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_a_broken_stream_commits_nothing() {
    let moto = Moto::start();
    let kms_key = create_bucket(&moto);
    let sdk = aws::sdk_config(&moto.sdk_options()).await;
    let client = aws::s3_client(&sdk, true);
    let mut settings = S3Settings::new(BUCKET);
    settings.kms_key_id = Some(kms_key.clone());
    settings.part_size = 5 * 1024 * 1024;
    settings.parts_in_flight = 2;
    let store = S3Store::new(client, settings);

    // 3 full parts and a short last one; bytes that do not repeat.
    let size = 3 * 5 * 1024 * 1024 + 12_345;
    let body: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key = "raw/ice/big export.xml.pgp";
    let metadata = Metadata::from([(
        "source-key".to_string(),
        "sftp:big export.xml.pgp".to_string(),
    )]);
    let info = store
        .put(
            key,
            Box::pin(std::io::Cursor::new(body.clone())) as ByteStream,
            &metadata,
        )
        .await
        .expect("multipart put");
    let expected_sha = sha256_hex(&body);
    assert_eq!(
        (info.size, info.sha256.as_str()),
        (size as u64, expected_sha.as_str())
    );

    let seen = moto.boto(
        r#"
h = s3.head_object(Bucket=arg["bucket"], Key=arg["key"])
tags = s3.get_object_tagging(Bucket=arg["bucket"], Key=arg["key"])["TagSet"]
out({"etag": h["ETag"], "sse": h.get("ServerSideEncryption"), "tags": {t["Key"]: t["Value"] for t in tags},
     "uploads": s3.list_multipart_uploads(Bucket=arg["bucket"]).get("Uploads", [])})
"#,
        json!({"bucket": BUCKET, "key": key}),
    );
    assert!(
        seen["etag"].as_str().unwrap().ends_with("-4\""),
        "4 parts: {seen}"
    );
    assert_eq!(seen["sse"], "aws:kms");
    assert_eq!(
        seen["tags"][SHA256_KEY],
        expected_sha.as_str(),
        "SHA-256 kept as a tag"
    );
    assert!(seen["uploads"].as_array().unwrap().is_empty());

    // Read back: streamed, whole, with digest and metadata.
    let (mut stream, got) = store.get(key).await.expect("get");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .unwrap();
    assert!(back == body, "the object reads back as written");
    assert_eq!(
        (got.sha256.as_str(), &got.metadata),
        (expected_sha.as_str(), &metadata)
    );

    // The same body again: nothing committed, no new version.
    let commits = store.commits();
    store
        .put(
            key,
            Box::pin(std::io::Cursor::new(body.clone())) as ByteStream,
            &metadata,
        )
        .await
        .expect("rewrite");
    assert_eq!(store.commits(), commits, "unchanged object: upload aborted");

    // A stream that breaks after two parts: the upload is aborted, the old
    // object stays, no upload is left behind.
    let broken = FailingAfter {
        data: std::io::Cursor::new(body[..11 * 1024 * 1024].to_vec()),
    };
    let err = store
        .put(key, Box::pin(broken), &Metadata::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    // And a small one that breaks before its only part is sent.
    let small = FailingAfter {
        data: std::io::Cursor::new(vec![7u8; 1000]),
    };
    assert!(store
        .put("raw/ice/small.pgp", Box::pin(small), &Metadata::new())
        .await
        .is_err());
    assert!(store.head("raw/ice/small.pgp").await.unwrap().is_none());

    let seen = moto.boto(
        r#"
versions = s3.list_object_versions(Bucket=arg["bucket"]).get("Versions", [])
out({"versions": len(versions), "uploads": s3.list_multipart_uploads(Bucket=arg["bucket"]).get("Uploads", [])})
"#,
        json!({"bucket": BUCKET, "key": key}),
    );
    assert_eq!(
        seen["versions"], 1,
        "only the first upload committed: {seen}"
    );
    assert!(
        seen["uploads"].as_array().unwrap().is_empty(),
        "aborted: {seen}"
    );
    assert_eq!(
        store.head(key).await.unwrap().expect("still there").sha256,
        expected_sha
    );

    // An object uploaded by hand (no recorded digest): computed on read.
    moto.boto(
        r#"s3.put_object(Bucket=arg["bucket"], Key="raw/ice/by-hand.pgp", Body=b"dropped by an operator")"#,
        json!({"bucket": BUCKET}),
    );
    let by_hand = store
        .head("raw/ice/by-hand.pgp")
        .await
        .unwrap()
        .expect("object");
    assert_eq!(by_hand.sha256, sha256_hex(b"dropped by an operator"));
}

#[tokio::test]
async fn a_missing_secret_or_field_is_named_and_no_value_shown() {
    let moto = Moto::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let kms_key = create_bucket(&moto);
    let lambda = lambda(&moto, &firm, &kms_key).await;
    let raw_key = "raw/ice/ACME_2026-11-20.xml.pgp";
    let export = firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let store = lambda.pipeline.ctx.store.clone();
    store
        .put_bytes(raw_key, std::fs::read(export).unwrap(), &Metadata::new())
        .await
        .unwrap();
    let event = take_events(&moto, "raw-events").remove(0);

    // No secret at all.
    let err = lambda
        .handle(Function::Decrypt, event.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(SECRET) && err.contains("no such secret"),
        "{err}"
    );

    // A secret without the private key: the field is named, no value shown.
    let mut fields = firm_secret(&firm);
    fields.as_object_mut().unwrap().remove("pgp_private_key");
    put_secret(&moto, &fields);
    let err = lambda
        .handle(Function::Decrypt, event.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(SECRET) && err.contains("pgp_private_key"),
        "{err}"
    );
    assert!(
        !err.contains(FIRM_PASSPHRASE) && !err.contains("BEGIN PGP"),
        "{err}"
    );

    // A field that is not a string: named, its value not shown.
    moto.boto(
        r#"sm.put_secret_value(SecretId=arg["name"], SecretString=json.dumps({"firm_code": "ACME", "pgp_passphrase": 31337}))"#,
        json!({"name": SECRET}),
    );
    let fresh = self::lambda(&moto, &firm, &kms_key).await;
    let err = fresh
        .handle(Function::Decrypt, event.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(SECRET) && err.contains("pgp_passphrase") && !err.contains("31337"),
        "{err}"
    );

    // Nothing was decrypted or quarantined: a broken set-up is retried, not
    // blamed on the file.
    assert!(store.list("plain/").await.unwrap().is_empty());
    assert!(store.list("quarantine/").await.unwrap().is_empty());
}

/// A process started here, killed by its PID when dropped.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo lambda watch` serving the Lambda runtime API only
/// (`--only-lambda-apis`: the functions are this crate's binaries, so
/// nothing is compiled), on a free port.
struct Emulator {
    port: u16,
    _process: Started,
    _log: tempfile::NamedTempFile,
}

/// A function process as Lambda starts it, and its log.
struct FunctionProcess {
    process: Started,
    log: tempfile::NamedTempFile,
}

fn cargo_lambda() -> std::path::PathBuf {
    moto::venv().join("bin/cargo-lambda")
}

impl Emulator {
    fn start() -> Self {
        let port = integration_tests::free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let process = Started(
            Command::new(cargo_lambda())
                .args([
                    "lambda",
                    "watch",
                    "--only-lambda-apis",
                    "--invoke-address",
                    "127.0.0.1",
                ])
                .args(["--invoke-port", &port.to_string()])
                .current_dir(moto::repo_root())
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .expect("cargo lambda watch starts"),
        );
        assert!(wait_for_port(port), "cargo lambda watch did not listen");
        Self {
            port,
            _process: process,
            _log: log,
        }
    }

    /// The decrypt function with the environment the template gives it,
    /// pointed at moto (`extra` added).
    fn decrypt_function(
        &self,
        moto: &Moto,
        kms_key: &str,
        extra: &[(&str, &str)],
    ) -> FunctionProcess {
        let log = tempfile::NamedTempFile::new().unwrap();
        let process = Started(
            Command::new(env!("CARGO_BIN_EXE_decrypt-function"))
                .env_clear()
                .env(
                    "AWS_LAMBDA_RUNTIME_API",
                    format!("http://127.0.0.1:{}/.rt/decrypt", self.port),
                )
                .env("AWS_LAMBDA_FUNCTION_NAME", "decrypt")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
                .envs(moto.env())
                .env("BUCKET", BUCKET)
                .env("SECRET_ID", SECRET)
                .env("KMS_KEY_ID", kms_key)
                .env("FIRM_DOMAINS", "acme.example")
                .env("SIGNATURE_POLICY", "required")
                .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
                .envs(extra.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .expect("the function starts"),
        );
        FunctionProcess { process, log }
    }

    /// `cargo lambda invoke decrypt --data-file EVENT`, not yet run.
    fn invoke_decrypt(&self, event: &Path) -> Command {
        let mut command = Command::new(cargo_lambda());
        command
            .args([
                "lambda",
                "invoke",
                "decrypt",
                "--invoke-address",
                "127.0.0.1",
            ])
            .args(["--invoke-port", &self.port.to_string(), "--data-file"])
            .arg(event)
            .current_dir(moto::repo_root());
        command
    }
}

/// The decrypt function under the Lambda runtime API of `cargo lambda watch`
/// (`--only-lambda-apis`: the emulator runs, the function is the binary this
/// crate builds from `functions/decrypt/src/main.rs`, so nothing is compiled
/// here), invoked with `cargo lambda invoke --data-file events/...`.
#[tokio::test]
async fn a_stage_answers_through_the_lambda_runtime_api() {
    let moto = Moto::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let kms_key = create_bucket(&moto);
    put_secret(&moto, &firm_secret(&firm));
    // The object the sample event names.
    let export = firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let lambda = lambda(&moto, &firm, &kms_key).await;
    let store = lambda.pipeline.ctx.store.clone();
    store
        .put_bytes(
            "raw/ice/ACME_2026-11-20.xml.pgp",
            std::fs::read(export).unwrap(),
            &Metadata::new(),
        )
        .await
        .unwrap();

    let emulator = Emulator::start();
    let function = emulator.decrypt_function(&moto, &kms_key, &[]);
    let output = emulator
        .invoke_decrypt(&moto::repo_root().join("events/s3-put-raw.json"))
        .output()
        .expect("cargo lambda invoke runs");
    let function_log = &function.log;
    let logs = std::fs::read_to_string(function_log.path()).unwrap_or_default();
    assert!(
        output.status.success(),
        "invoke failed: {}{}\nfunction log:\n{logs}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let response: Value = serde_json::from_slice(&output.stdout).expect("a JSON response");
    assert_eq!(
        response["written"],
        json!(["plain/ice/ACME_2026-11-20.xml"]),
        "{response}"
    );
    assert_eq!(response["quarantined"], json!([]));
    assert_eq!(response["days"], json!(["2026-11-20"]));
    let plain = store
        .get_bytes("plain/ice/ACME_2026-11-20.xml")
        .await
        .unwrap();
    assert!(plain == SAMPLE.as_bytes(), "decrypted to the export");
    // JSON log lines, and never a secret.
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The audit line of the outcome, with its fixed fields; and the
    // invocation's request id on every line it logged.
    let audit: Vec<&Value> = lines.iter().filter(|l| l["target"] == "audit").collect();
    assert_eq!(audit.len(), 1, "{logs}");
    let fields = &audit[0]["fields"];
    assert_eq!(
        (
            &fields["connector"],
            &fields["stage"],
            &fields["key"],
            &fields["outcome"]
        ),
        (
            &json!("ice"),
            &json!("decrypt"),
            &json!("raw/ice/ACME_2026-11-20.xml.pgp"),
            &json!("decrypted")
        ),
        "{logs}"
    );
    let request_ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l.get("fields").is_some())
        .map(|l| l["span"]["request_id"].as_str().unwrap_or_default())
        .collect();
    assert!(
        request_ids.len() == 1 && !request_ids.contains(""),
        "every line names the one invocation: {request_ids:?}\n{logs}"
    );
    assert!(
        !logs.contains(FIRM_PASSPHRASE) && !logs.contains("PRIVATE KEY"),
        "{logs}"
    );
    // The invocation's counts as one embedded-metric-format line, in the
    // namespace and dimension the template's alarms watch.
    let metrics: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(metrics.len(), 1, "{logs}");
    let line = metrics[0];
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(
        directive["Namespace"],
        chat_archive_core::metrics::NAMESPACE
    );
    assert_eq!(line["Connector"], "ice");
    assert_eq!(line["Function"], "decrypt");
    assert_eq!(line["ObjectsWritten"], 1, "{line}");
    assert_eq!(line["Quarantined"], 0, "{line}");
    assert_eq!(line["InvocationErrors"], 0, "{line}");
}

/// Every alarm on the functions' own metrics watches a metric they emit,
/// with the dimension they emit it under; and each alert kind has an alarm.
#[test]
fn the_templates_metric_alarms_watch_what_the_functions_emit() {
    let template = std::fs::read_to_string(moto::repo_root().join("infra/template.yaml")).unwrap();
    let emitted = chat_archive_core::metrics::names();
    let mut watched = Vec::new();
    for alarm in template.split("Type: AWS::CloudWatch::Alarm").skip(1) {
        let field = |name: &str| {
            alarm
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        if field("Namespace:") != chat_archive_core::metrics::NAMESPACE {
            continue;
        }
        let metric = field("MetricName:");
        assert!(
            emitted.contains(&metric.as_str()),
            "{metric} is never emitted"
        );
        assert!(
            field("Dimensions:").contains("Name: Connector, Value: !Ref ConnectorName"),
            "{metric}: alarm on the Connector dimension"
        );
        watched.push(metric);
    }
    for kind in [
        chat_archive_core::alerts::AlertKind::NoFileForDay,
        chat_archive_core::alerts::AlertKind::UnfetchedOnSource,
        chat_archive_core::alerts::AlertKind::KeyExpiring,
        chat_archive_core::alerts::AlertKind::QuarantineWaiting,
    ] {
        let metric = chat_archive_core::metrics::alert_metric(kind);
        assert!(watched.iter().any(|m| m == metric), "no alarm on {metric}");
    }
    for metric in ["Quarantined", "ImportFailures"] {
        assert!(watched.iter().any(|m| m == metric), "no alarm on {metric}");
    }
}

/// The settings the template gives every function, as CloudFormation would
/// substitute them (template read by cfn-lint's own YAML decoder), load
/// into the connectors they name: with and without Bloomberg.
#[test]
fn the_templates_settings_load_as_one_section_per_connector() {
    let script = r#"
import json, re, sys
from cfnlint.decode import cfn_yaml
template = cfn_yaml.loads(open(sys.argv[1]).read())
variables = template["Globals"]["Function"]["Environment"]["Variables"]
text, names = variables["CHAT_ARCHIVE_SETTINGS"]["Fn::Sub"]
params = {"ConnectorName": "ice", "BloombergSftpHost": "sftp.bloomberg.example",
          "BloombergSftpDirectory": "outgoing", "BloombergSignaturePolicy": "required"}
def sub(s, values):
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], s)
out = {}
for bloomberg in (True, False):
    inner = names["Bloomberg"]["Fn::If"][1 if bloomberg else 2]
    block = sub(inner["Fn::Sub"], params) if bloomberg else inner
    out["with" if bloomberg else "without"] = sub(text, dict(params, Bloomberg=block))
print(json.dumps(out))
"#;
    let output = Command::new(moto::venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(moto::repo_root().join("infra/template.yaml"))
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{output:?}");
    let settings: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let load = |which: &str| {
        chat_archive_core::config::Settings::parse(settings[which].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{which}: {e}\n{}", settings[which]))
    };
    let with = load("with");
    let names: Vec<&str> = with.connectors.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ice", "bloomberg", "xip"]);
    let bloomberg = with.connector("bloomberg").unwrap();
    assert_eq!(bloomberg.folder, "Bloomberg");
    assert_eq!(
        bloomberg.sftp.as_ref().unwrap().host,
        "sftp.bloomberg.example"
    );
    assert_eq!(with.connector("xip").unwrap().secret_name(), "ice");
    let without = load("without");
    let names: Vec<&str> = without.connectors.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ice", "xip"]);
}

/// The RSMF export as a manual event to the import function: files under
/// `exports/` in the bucket, read back with boto3 and each valid.
#[tokio::test]
async fn an_rsmf_export_event_writes_valid_files_under_exports() {
    let mut chain = Chain::new().await;
    chain.run().await;
    let response = chain
        .invoke(Function::Import, event_file("export-rsmf.json"))
        .await;
    let prefix = "exports/ice/2026-11-20_2026-11-20/";
    assert_eq!(response.written.len(), 4, "{:?}", response.written);
    assert!(response.written.iter().all(|k| k.starts_with(prefix)));
    assert!(response.written.contains(&format!("{prefix}export.csv")));
    let files = chain.moto.boto(
        r#"
import base64
listed = s3.list_objects_v2(Bucket=arg["bucket"], Prefix=arg["prefix"])["Contents"]
out({o["Key"]: base64.b64encode(s3.get_object(Bucket=arg["bucket"], Key=o["Key"])["Body"].read()).decode()
     for o in listed if o["Key"].endswith(".rsmf")})
"#,
        json!({"bucket": BUCKET, "prefix": prefix}),
    );
    let files = files.as_object().expect("a map");
    assert_eq!(files.len(), 3, "{:?}", files.keys());
    for (key, body) in files {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body.as_str().unwrap())
            .unwrap();
        assert_eq!(
            chat_archive_core::rsmf::validate::validate(&raw),
            Vec::<String>::new(),
            "{key}"
        );
    }
    // A request of the wrong shape is refused by name.
    let err = chain
        .lambda
        .handle(
            Function::Import,
            json!({"export_rsmf": {"dya": "2026-11-20"}}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dya"), "{err}");
}

/// Least privilege, read off the template by cfn-lint's own YAML decoder
/// (`tests/readers/template_policies.py`): each function's role writes only
/// under the prefixes its stage writes, no wildcard action, only decrypt,
/// fetch and import read the secret, and the bucket refuses public access
/// and plain HTTP.
#[test]
fn each_functions_role_names_only_what_its_stage_needs() {
    let output = Command::new(moto::venv().join("bin/python"))
        .arg(moto::repo_root().join("tests/readers/template_policies.py"))
        .arg(moto::repo_root().join("infra/template.yaml"))
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{output:?}");
    let read: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let writes = |role: &str| -> Vec<String> {
        read["roles"][role]
            .as_array()
            .unwrap_or_else(|| panic!("no role {role}"))
            .iter()
            .filter(|s| {
                s["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == "s3:PutObject" || a == "s3:DeleteObject")
            })
            .flat_map(|s| s["resources"].as_array().unwrap().clone())
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    // `{c}` stands for any one connector's name.
    let under = |path: &str, prefix: &str| match prefix.split_once("{c}") {
        None => path.starts_with(prefix),
        Some((head, tail)) => path.strip_prefix(head).is_some_and(|rest| {
            rest.split_once('/')
                .is_some_and(|(_, after)| format!("/{after}").starts_with(tail))
        }),
    };
    let only_under = |role: &str, allowed: &[&str]| {
        for key in writes(role) {
            let path = key.strip_prefix("BUCKET/").unwrap_or(&key);
            assert!(
                allowed.iter().any(|prefix| under(path, prefix)),
                "{role} may write {path}, outside {allowed:?}"
            );
        }
    };
    only_under("FetchRole", &["raw/", "state/{c}/checkpoint.json"]);
    only_under(
        "DecryptRole",
        &[
            "plain/",
            "quarantine/raw/",
            "reports/",
            "state/{c}/status-dirty/",
        ],
    );
    only_under(
        "ConvertRole",
        &[
            "mail/",
            "quarantine/plain/",
            "reports/",
            "state/{c}/status-dirty/",
            "state/{c}/events/",
            "state/{c}/attachments-wait/",
            "work/",
        ],
    );
    only_under(
        "ImportRole",
        &[
            "reports/",
            "state/{c}/status-dirty/",
            "exports/",
            "attachments/",
        ],
    );
    // Only fetch writes what arrives; only convert writes the event ledger.
    let writes_under = |role: &str, prefix: &str| {
        writes(role)
            .iter()
            .any(|k| k.starts_with(&format!("BUCKET/{prefix}")))
    };
    assert!(writes_under("FetchRole", "raw/"));
    for role in ["DecryptRole", "ConvertRole", "ImportRole"] {
        assert!(!writes_under(role, "raw/"), "{role}");
    }
    assert!(writes("ConvertRole")
        .iter()
        .any(|k| k.ends_with("/events/*")));
    for role in ["FetchRole", "DecryptRole", "ImportRole"] {
        assert!(
            !writes(role).iter().any(|k| k.ends_with("/events/*")),
            "{role}"
        );
    }
    for (role, statements) in read["roles"].as_object().unwrap() {
        for statement in statements.as_array().unwrap() {
            for action in statement["actions"].as_array().unwrap() {
                let action = action.as_str().unwrap();
                assert!(!action.contains('*'), "{role}: wildcard action {action}");
            }
            for resource in statement["resources"].as_array().unwrap() {
                assert_ne!(resource, "*", "{role}: every resource");
            }
        }
        let reads_secret = statements
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["actions"].to_string().contains("secretsmanager:"));
        let expected = matches!(role.as_str(), "FetchRole" | "DecryptRole" | "ImportRole");
        assert_eq!(reads_secret, expected, "{role} and the secret");
    }
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(read["public_access_block"][setting], true, "{setting}");
    }
    assert_eq!(read["denies_plain_http"], true);
}

/// SIGTERM to the decrypt function's process while it streams a large
/// file into S3 (a multipart upload under way): the process says which
/// invocation it cut short and exits; no plaintext object appears, half or
/// whole; the event's retry, in a new process, writes the whole plaintext
/// as one object version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_decrypt_leaves_nothing_half_written_and_the_retry_completes() {
    use integration_tests::faults::{corpus, signal, CorpusShape};

    let moto = Moto::start();
    let firm = Firm::new(&[JDOE], SignaturePolicy::Required);
    let kms_key = create_bucket(&moto);
    put_secret(&moto, &firm_secret(&firm));
    // One export with a 24 MB file transfer: a plaintext of several 5 MiB
    // parts, long enough in flight to be interrupted.
    let export = corpus(CorpusShape {
        files: 1,
        conversations_per_file: 3,
        messages_per_conversation: 2,
        attachment_bytes: 24_000_000,
    })
    .remove(0);
    let encrypted = firm.drop_export(&export.name, export.xml.as_bytes(), true);
    let raw_key = format!("raw/ice/{}", export.name);
    let plain_key = format!("plain/ice/{}", export.name.trim_end_matches(".pgp"));
    let lambda = lambda(&moto, &firm, &kms_key).await;
    let store = lambda.pipeline.ctx.store.clone();
    store
        .put_bytes(
            &raw_key,
            std::fs::read(encrypted).unwrap(),
            &Metadata::new(),
        )
        .await
        .unwrap();
    let event = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        event.path(),
        serde_json::to_vec(&chat_archive_core::events::s3_put_event(BUCKET, &[raw_key])).unwrap(),
    )
    .unwrap();
    let s3 = aws::s3_client(&aws::sdk_config(&moto.sdk_options()).await, true);

    let emulator = Emulator::start();
    let small_parts = [("S3_PART_SIZE_MIB", "5"), ("S3_PARTS_IN_FLIGHT", "1")];
    let mut first = emulator.decrypt_function(&moto, &kms_key, &small_parts);
    let _invocation = Started(
        emulator
            .invoke_decrypt(event.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo lambda invoke starts"),
    );
    let mut caught = false;
    for _ in 0..3000 {
        let uploads = s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        if uploads
            .uploads()
            .iter()
            .any(|u| u.key() == Some(plain_key.as_str()))
        {
            caught = true;
            break;
        }
        assert!(
            store.head(&plain_key).await.unwrap().is_none(),
            "the decrypt finished before it could be interrupted: make the file larger"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        caught,
        "no upload of {plain_key} was seen under way; function log:\n{}",
        std::fs::read_to_string(first.log.path()).unwrap_or_default()
    );
    signal(first.process.0.id(), "TERM");
    let status = first.process.0.wait().expect("the function exits");
    assert_eq!(status.code(), Some(143), "exit status after SIGTERM");
    eprintln!(
        "{}",
        std::fs::read_to_string(first.log.path()).unwrap_or_default()
    );

    let logs = std::fs::read_to_string(first.log.path()).unwrap_or_default();
    let stopped: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SIGTERM during an invocation"))
        })
        .collect();
    assert_eq!(
        stopped.len(),
        1,
        "one line says what was cut short:\n{logs}"
    );
    assert!(
        stopped[0]["fields"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{logs}"
    );
    assert!(
        store.head(&plain_key).await.unwrap().is_none(),
        "a plaintext object appeared from the interrupted invocation"
    );

    // The retry, in a new process (a new container).
    let _second = emulator.decrypt_function(&moto, &kms_key, &small_parts);
    let output = emulator
        .invoke_decrypt(event.path())
        .output()
        .expect("cargo lambda invoke runs");
    assert!(
        output.status.success(),
        "the retry failed: {}\nfunction log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(_second.log.path()).unwrap_or_default()
    );
    let response: Value = serde_json::from_slice(&output.stdout).expect("a JSON response");
    assert_eq!(response["written"], json!([plain_key]), "{response}");
    let plain = store.get_bytes(&plain_key).await.unwrap();
    assert!(plain == export.xml.as_bytes(), "the whole plaintext");
    // Each version of the plaintext is all of it: a redelivery racing the
    // retry may add an identical one, never a partial one.
    let versions = s3
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(&plain_key)
        .send()
        .await
        .unwrap();
    assert!(!versions.versions().is_empty());
    for version in versions.versions() {
        let body = s3
            .get_object()
            .bucket(BUCKET)
            .key(&plain_key)
            .version_id(version.version_id().unwrap_or_default())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(
            body == export.xml.as_bytes(),
            "a version is not the whole plaintext"
        );
    }
}
