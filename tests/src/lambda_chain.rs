//! The four functions as Lambda runs them, chained by the S3 events of a
//! real moto server: a versioned bucket whose notifications go to one SQS
//! queue per stage (the prefix and suffix filters of `infra/template.yaml`),
//! the connector's secret in Secrets Manager, mail into a Maildir tree.
//! The functions may reach moto through another endpoint (a
//! [`crate::faults::Relay`]) while boto3 always talks to moto itself.

use std::collections::BTreeMap;

use chat_archive_core::aws::{self, AwsSettings, Lambda, SdkOptions};
use serde_json::{json, Value};

use crate::local::{Firm, FIRM_PASSPHRASE, FIRM_UID, SIGNER_UID};
use crate::moto::Moto;

pub const BUCKET: &str = "chat-archive-123456789012";
pub const SECRET: &str = "chat-archive/ice";
pub const RAW_EVENTS: &str = "raw-events";
pub const PLAIN_EVENTS: &str = "plain-events";
pub const MAIL_EVENTS: &str = "mail-events";
pub const QUEUES: [&str; 3] = [RAW_EVENTS, PLAIN_EVENTS, MAIL_EVENTS];

/// The bucket (versioned, notifying a queue per stage), a KMS key and the
/// firm's secret. Returns the KMS key ARN.
pub fn set_up(moto: &Moto, firm: &Firm) -> String {
    let kms_key = create_bucket(moto);
    moto.boto(
        r#"sm.create_secret(Name=arg["name"], SecretString=json.dumps(arg["fields"]))"#,
        json!({"name": SECRET, "fields": firm_secret(firm)}),
    );
    kms_key
}

/// The bucket (versioned), a KMS key, and one queue per stage notified as
/// the template's Lambda notifications are filtered (emptied, so that only
/// the test's own writes appear). Returns the KMS key ARN.
pub fn create_bucket(moto: &Moto) -> String {
    let out = moto.boto(
        r#"
s3.create_bucket(Bucket=arg["bucket"])
s3.put_bucket_versioning(Bucket=arg["bucket"], VersioningConfiguration={"Status": "Enabled"})
key = kms.create_key(Description="chat archive")["KeyMetadata"]["Arn"]
arns = {}
for q in arg["queues"]:
    url = sqs.create_queue(QueueName=q)["QueueUrl"]
    arns[q] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
def rule(queue, prefix, suffix=None):
    rules = [{"Name": "prefix", "Value": prefix}] + ([{"Name": "suffix", "Value": suffix}] if suffix else [])
    return {"QueueArn": arns[queue], "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
s3.put_bucket_notification_configuration(Bucket=arg["bucket"], NotificationConfiguration={"QueueConfigurations": [
    rule("raw-events", "raw/"), rule("plain-events", "plain/"), rule("plain-events", "work/", ".json"),
    rule("mail-events", "mail/", ".json")]})
for q in arg["queues"]:
    sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName=q)["QueueUrl"])
out(key)
"#,
        json!({"bucket": BUCKET, "queues": QUEUES}),
    );
    out.as_str().expect("KMS key ARN").to_string()
}

pub fn firm_secret(firm: &Firm) -> Value {
    json!({
        "firm_code": "ACME",
        "pgp_private_key": firm.gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE),
        "pgp_passphrase": FIRM_PASSPHRASE,
        "signer_public_key": firm.gpg.export_public(SIGNER_UID),
    })
}

/// The S3 events waiting in a stage's queue (taken off it), in order.
pub fn take_events(moto: &Moto, queue: &str) -> Vec<Value> {
    let out = moto.boto(
        r#"
url = sqs.get_queue_url(QueueName=arg)["QueueUrl"]
events = []
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    if not got:
        break
    for m in got:
        body = json.loads(m["Body"])
        if body.get("Event") != "s3:TestEvent":
            events.append(body)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
out(events)
"#,
        json!(queue),
    );
    out.as_array().cloned().unwrap_or_default()
}

/// The messages waiting in a queue (taken off it) as Lambda's SQS event
/// source hands them to a function: one record per message, its body the
/// S3 notification as moto queued it.
pub fn take_queued(moto: &Moto, queue: &str) -> Vec<Value> {
    let out = moto.boto(
        r#"
url = sqs.get_queue_url(QueueName=arg)["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
records = []
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]).get("Messages", [])
    if not got:
        break
    for m in got:
        records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"})
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
out(records)
"#,
        json!(queue),
    );
    out.as_array().cloned().unwrap_or_default()
}

/// SQS records in batches of at most `size`, as the event source invokes.
pub fn sqs_batches(records: &[Value], size: usize) -> Vec<Value> {
    records
        .chunks(size.max(1))
        .map(|chunk| json!({ "Records": chunk }))
        .collect()
}

/// The object key an S3 event names (as sent: URL-encoded).
pub fn event_key(event: &Value) -> String {
    event["Records"][0]["s3"]["object"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One version of an object as moto keeps it, with the SHA-256 of its body
/// and the digest our store recorded for it (metadata or tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    pub etag: String,
    pub body_sha256: String,
    pub recorded_sha256: Option<String>,
}

/// Every object version in the bucket (delete markers as versions with an
/// empty digest), sorted by key.
pub fn versions(moto: &Moto) -> Vec<Version> {
    let out = moto.boto(
        r#"
import hashlib
rows = []
for page in s3.get_paginator("list_object_versions").paginate(Bucket=arg):
    for v in page.get("Versions", []):
        got = s3.get_object(Bucket=arg, Key=v["Key"], VersionId=v["VersionId"])
        body = got["Body"].read()
        recorded = got.get("Metadata", {}).get("object-sha256")
        if recorded is None:
            tags = s3.get_object_tagging(Bucket=arg, Key=v["Key"], VersionId=v["VersionId"])["TagSet"]
            recorded = {t["Key"]: t["Value"] for t in tags}.get("object-sha256")
        rows.append({"key": v["Key"], "version_id": v["VersionId"], "etag": v["ETag"],
                     "body_sha256": hashlib.sha256(body).hexdigest(), "recorded_sha256": recorded})
    for d in page.get("DeleteMarkers", []):
        rows.append({"key": d["Key"], "version_id": d["VersionId"], "etag": "delete-marker",
                     "body_sha256": "", "recorded_sha256": None})
rows.sort(key=lambda r: (r["key"], r["version_id"]))
out(rows)
"#,
        json!(BUCKET),
    );
    out.as_array()
        .expect("version rows")
        .iter()
        .map(|row| {
            let text = |name: &str| row[name].as_str().unwrap_or_default().to_string();
            Version {
                key: text("key"),
                version_id: text("version_id"),
                etag: text("etag"),
                body_sha256: text("body_sha256"),
                recorded_sha256: row["recorded_sha256"].as_str().map(str::to_string),
            }
        })
        .collect()
}

/// Versions per key.
pub fn by_key(versions: &[Version]) -> BTreeMap<String, Vec<Version>> {
    let mut out: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for v in versions {
        out.entry(v.key.clone()).or_default().push(v.clone());
    }
    out
}

/// No object version anywhere is partial: each body has the digest our
/// store recorded for it (pipeline objects record one on every write).
pub fn assert_versions_whole(versions: &[Version], context: &str) {
    for v in versions.iter().filter(|v| v.etag != "delete-marker") {
        let pipeline_object = ["raw/", "plain/", "mail/", "reports/", "state/"]
            .iter()
            .any(|p| v.key.starts_with(p));
        if let (true, Some(recorded)) = (pipeline_object, &v.recorded_sha256) {
            assert_eq!(
                &v.body_sha256, recorded,
                "{context}: {} version {}: body differs from its recorded digest",
                v.key, v.version_id
            );
        }
    }
}

/// The function settings as the template sets them (mail into the firm's
/// Maildir tree, files from its drop directory), reaching S3 and Secrets
/// Manager through `sdk`.
pub fn settings(sdk: SdkOptions, firm: &Firm, kms_key: &str) -> AwsSettings {
    let vars = BTreeMap::from([
        ("BUCKET", BUCKET.to_string()),
        ("SECRET_ID", SECRET.to_string()),
        ("KMS_KEY_ID", kms_key.to_string()),
        ("FIRM_DOMAINS", "acme.example".to_string()),
        ("SIGNATURE_POLICY", "required".to_string()),
        ("DROP_DIR", firm.layout.drop_dir().display().to_string()),
        (
            "MAILDIR_ROOT",
            firm.layout.mailboxes().display().to_string(),
        ),
    ]);
    let mut settings = AwsSettings::from_lookup(|k| vars.get(k).cloned()).expect("settings");
    settings.sdk = sdk;
    settings
}

/// One function process (a Lambda container): its own clients and sink.
pub async fn lambda(sdk: SdkOptions, firm: &Firm, kms_key: &str) -> Lambda {
    let settings = settings(sdk, firm, kms_key);
    let config = aws::sdk_config(&settings.sdk).await;
    Lambda::new(&settings, &config).expect("functions")
}

/// How the functions reach moto through another endpoint (a relay).
pub fn sdk_via(moto: &Moto, endpoint: String) -> SdkOptions {
    SdkOptions {
        endpoint_url: Some(endpoint),
        ..moto.sdk_options()
    }
}

pub fn schedule_event() -> Value {
    json!({
        "version": "0",
        "id": "fault-test",
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": "2026-11-21T06:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {}
    })
}

pub fn rebuild_status_event() -> Value {
    json!({"rebuild_status": true})
}
