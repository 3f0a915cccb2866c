//! The event shapes that start each stage: S3 object notifications (one per
//! object written under a stage's input prefix) and the fetch trigger.
//!
//! The local runner builds the very same S3 event JSON that AWS delivers and
//! the stages read keys back through [`object_keys`], so local and Lambda
//! runs share one code path.

use aws_lambda_events::s3::S3Event;
use chrono::NaiveDate;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What S3 leaves unescaped in notification keys (space becomes `+`).
const S3_KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'/')
    .remove(b'*')
    .remove(b' ');

/// Encodes a key as S3 does in event notifications.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, S3_KEY_ESCAPE)
        .to_string()
        .replace(' ', "+")
}

/// Decodes a key from an S3 notification (`+` is a space, `%2B` a plus).
pub fn decode_key(encoded: &str) -> Result<String> {
    percent_decode_str(&encoded.replace('+', " "))
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|e| Error::Event(format!("S3 event key {encoded:?} is not UTF-8: {e}")))
}

/// An `ObjectCreated:Put` notification for each key, as S3 sends it.
pub fn s3_put_event(bucket: &str, keys: &[String]) -> S3Event {
    let records: Vec<serde_json::Value> = keys
        .iter()
        .map(|key| {
            serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "1970-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "local",
                    "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                    "object": {"key": encode_key(key), "size": 0}
                }
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap_or_default()
}

/// The decoded object keys of an S3 event, in order.
pub fn object_keys(event: &S3Event) -> Result<Vec<String>> {
    event
        .records
        .iter()
        .map(|record| {
            let key = record
                .s3
                .object
                .key
                .as_deref()
                .ok_or_else(|| Error::Event("S3 event record without an object key".into()))?;
            decode_key(key)
        })
        .collect()
}

/// What starts the fetch stage: the daily schedule (an empty object or an
/// EventBridge event, both mean "everything new") or a manual event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Backfill: re-fetch files whose modification day is in this range.
    #[serde(default)]
    pub since: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    /// Re-fetch these files by name.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Reads an S3 event, also a minimal one: S3 itself always sends every field,
/// but a stand-in (moto, MinIO) or an event written by hand to re-run a stage
/// may leave out the parts no stage reads (`userIdentity`,
/// `requestParameters`, `eventTime`).
/// The same reading for every caller: the Lambda handler and the local
/// event files (`chat-archive invoke`, the function binaries).
pub fn parse_s3_event(mut event: serde_json::Value) -> Result<S3Event> {
    if let Some(records) = event
        .get_mut("Records")
        .and_then(serde_json::Value::as_array_mut)
    {
        for record in records
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            for (field, default) in [
                ("userIdentity", serde_json::json!({})),
                ("requestParameters", serde_json::json!({})),
                ("eventTime", serde_json::json!("1970-01-01T00:00:00Z")),
            ] {
                record.entry(field).or_insert(default);
            }
        }
    }
    serde_json::from_value(event).map_err(|e| Error::Event(format!("not an S3 event: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_hand_written_event_reads_and_a_wrong_one_is_a_bad_event() {
        let minimal = serde_json::json!({"Records": [{
            "eventSource": "aws:s3",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "raw/ice/x.xml.pgp"}}
        }]});
        let event = parse_s3_event(minimal).unwrap();
        assert_eq!(object_keys(&event).unwrap(), vec!["raw/ice/x.xml.pgp"]);
        let err = parse_s3_event(serde_json::json!({"Records": 3})).unwrap_err();
        assert_eq!(err.kind(), "BadEvent", "{err}");
    }

    #[test]
    fn keys_survive_the_s3_event_round_trip() {
        let keys = vec![
            "raw/ice/ACME 2026-11-20.xml.pgp".to_string(),
            "mail/ice/2026-11-20/a+b%c.json".to_string(),
            "plain/ice/Zoë.xml".to_string(),
        ];
        let event = s3_put_event("bucket", &keys);
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains("ACME+2026-11-20.xml.pgp"), "{json}");
        let back: S3Event = serde_json::from_str(&json).unwrap();
        assert_eq!(object_keys(&back).unwrap(), keys);
    }

    #[test]
    fn decodes_what_aws_sends() {
        assert_eq!(
            decode_key("raw/ice/my+file%2B1.pgp").unwrap(),
            "raw/ice/my file+1.pgp"
        );
    }
}
