//! Running on AWS Lambda (feature `aws`): settings from the environment, the
//! SDK clients built once per process, the pipeline on S3 and Secrets
//! Manager, and the handler body every function binary calls.
//!
//! Init stays small: building the clients reads the environment only (the
//! region from `AWS_REGION`; credentials are resolved on the first request),
//! the secret is read on the first event that needs it, and the SFTP and IMAP
//! connections open on first use.
//!
//! Environment (set by `infra/template.yaml`):
//!
//! | variable | meaning |
//! |---|---|
//! | `BUCKET` | the archive bucket (required) |
//! | `SECRET_ID` | name or ARN of the connector's secret (default `chat-archive/<connector>`) |
//! | `KMS_KEY_ID` | SSE-KMS key for every write (default: the bucket's default encryption) |
//! | `CHAT_ARCHIVE_SETTINGS` | the settings file's TOML (`[ice]`, `[ice.sftp]`, `[ice.imap]`), optional |
//! | `FIRM_DOMAINS` | comma-separated; overrides `firm_domains` |
//! | `SIGNATURE_POLICY`, `GRANULARITY`, `MAIL_FOLDER` | override those settings |
//! | `SFTP_HOST`, `SFTP_PORT`, `SFTP_DIRECTORY` | the ICE SFTP site (`[ice.sftp]`) |
//! | `IMAP_HOST`, `IMAP_PORT`, `IMAP_ADMIN_USER` | the mail server, master-user login (`[ice.imap]`) |
//! | `DROP_DIR` | files from a local directory instead of SFTP (tests, EFS) |
//! | `MAILDIR_ROOT` | mail into a Maildir tree instead of IMAP (tests, EFS) |
//! | `AWS_ENDPOINT_URL` | one endpoint for S3 and Secrets Manager (moto, MinIO); path-style S3 |
//! | `S3_FORCE_PATH_STYLE` | `true` for path-style S3 addressing |
//! | `S3_PART_SIZE_MIB`, `S3_PARTS_IN_FLIGHT` | multipart upload tuning (default 8 MiB, 2) |
//! | `SDK_CONNECT_TIMEOUT_SECS`, `SDK_ATTEMPT_TIMEOUT_SECS`, `SDK_OPERATION_TIMEOUT_SECS` | S3 and Secrets Manager call limits (default 5, 60, 180 s; see [`SdkTimeouts`]) |
//! | `DEADLINE_MARGIN_SECS` | an invocation stops this long before its Lambda deadline (default 10 s) |

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::{BatchItemFailure, SqsEvent, SqsMessage};
use aws_sdk_s3::config::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use serde::{Deserialize, Serialize};

use crate::adapters::s3::{S3Settings, S3Store};
use crate::adapters::secrets_manager::SecretsManagerStore;
use crate::adapters::{DropDirectory, ImapSink, MaildirSink, SftpSource};
use crate::config::{ConnectorConfig, ConnectorKind, Settings};
use crate::error::{Error, Result};
use crate::events::object_keys;
use crate::function::{self, Function, Response};
use crate::pipeline::{ConnectorSource, Pipeline};
use crate::ports::{
    ByteStream, Delivery, DeliveryOutcome, MailboxSink, Metadata, RemoteFile, SecretStore, Source,
};
use crate::stages::Context;
use crate::status::{self, DayStatus};

mod clients;
mod handler;
mod runtime;
mod settings;

pub use clients::{bucket_store, s3_client, sdk_config, secret_store};
pub use handler::{
    mark_for_status, rebuild_status, ImportEvent, Lambda, RsmfExportRequest, StatusRequest,
};
pub use runtime::{init_logging, serve};
pub use settings::{AwsSettings, SdkOptions, SdkTimeouts};

use clients::*;

#[cfg(test)]
mod tests {
    use super::runtime::{diagnostic, time_left};
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<AwsSettings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AwsSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn call_limits_come_from_the_environment_and_nonsense_is_refused_by_name() {
        let defaults = settings(&[("BUCKET", "archive")]).unwrap().sdk.timeouts;
        assert_eq!(defaults, SdkTimeouts::default());
        let set = settings(&[
            ("BUCKET", "archive"),
            ("SDK_CONNECT_TIMEOUT_SECS", "2"),
            ("SDK_ATTEMPT_TIMEOUT_SECS", "7"),
            ("SDK_OPERATION_TIMEOUT_SECS", "20"),
        ])
        .unwrap()
        .sdk
        .timeouts;
        assert_eq!(
            (set.connect, set.attempt, set.operation),
            (
                Duration::from_secs(2),
                Duration::from_secs(7),
                Duration::from_secs(20)
            )
        );
        for bad in ["0", "soon", "-3"] {
            let err = settings(&[("BUCKET", "archive"), ("SDK_ATTEMPT_TIMEOUT_SECS", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("SDK_ATTEMPT_TIMEOUT_SECS"), "{err}");
        }
    }

    #[test]
    fn an_invocation_stops_a_margin_before_its_deadline_or_a_tenth_of_a_short_one() {
        let now = std::time::SystemTime::now();
        let margin = Duration::from_secs(10);
        let left = time_left(now + Duration::from_secs(900), margin).unwrap();
        assert!(left <= Duration::from_secs(890) && left > Duration::from_secs(885));
        let short = time_left(now + Duration::from_secs(3), margin).unwrap();
        assert!(short <= Duration::from_millis(2700) && short > Duration::from_millis(2500));
        assert_eq!(time_left(now - Duration::from_secs(3), margin), None);
    }

    #[test]
    fn a_lambda_failure_names_its_kind_and_whether_a_retry_helps() {
        let store = diagnostic(Error::store("mail/ice/x.eml", "connection reset"));
        assert_eq!(store.error_type, "Store.Retryable");
        assert!(store.error_message.contains("mail/ice/x.eml"));
        let input = diagnostic(Error::Input(crate::error::InputError::new(
            "a.xml",
            crate::error::Place::Row(3),
            "bad",
        )));
        assert_eq!(input.error_type, "BadInput.Permanent");
        let timeout = diagnostic(Error::Timeout {
            operation: "convert invocation".into(),
            after: Duration::from_secs(890),
        });
        assert_eq!(timeout.error_type, "Timeout.Retryable");
        assert!(timeout.error_message.contains("890 s"));
    }

    #[test]
    fn a_mistyped_setting_is_refused_by_the_name_of_its_variable() {
        for (name, value) in [
            ("SIGNATURE_POLICY", "mandatory"),
            ("GRANULARITY", "weekly"),
            ("SFTP_PORT", "22x"),
            ("IMAP_PORT", "99999"),
        ] {
            let err = settings(&[("BUCKET", "archive"), (name, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
        let s = settings(&[("BUCKET", "archive"), ("GRANULARITY", "message")]).unwrap();
        assert_eq!(
            s.settings.connectors[0].granularity,
            crate::config::Granularity::Message
        );
    }

    #[test]
    fn settings_come_from_the_environment() {
        let s = settings(&[
            ("BUCKET", "archive"),
            ("FIRM_DOMAINS", "acme.example, acme-bank.example"),
            ("SIGNATURE_POLICY", "required"),
            ("SFTP_HOST", "sftp.ice.example"),
            ("SFTP_PORT", "2222"),
            ("IMAP_HOST", "imap.acme.example"),
            ("IMAP_ADMIN_USER", "archiver"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("S3_PART_SIZE_MIB", "16"),
        ])
        .unwrap();
        assert_eq!(s.bucket, "archive");
        assert_eq!(
            s.settings.firm.domains,
            vec!["acme.example", "acme-bank.example"]
        );
        assert_eq!(
            s.settings.connectors[0].signature_policy,
            crate::crypto::SignaturePolicy::Required
        );
        let sftp = s.settings.connectors[0].sftp.as_ref().unwrap();
        assert_eq!((sftp.host.as_str(), sftp.port), ("sftp.ice.example", 2222));
        assert_eq!(
            s.settings.connectors[0].imap.as_ref().unwrap().host,
            "imap.acme.example"
        );
        assert!(s.sdk.force_path_style);
        assert_eq!(s.part_size, 16 << 20);
        assert!(s.secret_id.is_none());
    }

    #[test]
    fn every_connector_and_its_secret_come_from_the_environment() {
        let s = settings(&[
            ("BUCKET", "archive"),
            ("FIRM_DOMAINS", "acme.example"),
            ("SECRET_ID", "arn:ice"),
            ("SECRET_IDS", "bloomberg=arn:bbg"),
            (
                "CHAT_ARCHIVE_SETTINGS",
                "[connectors.ice]\n[connectors.bloomberg]\n[connectors.bloomberg.sftp]\nhost = \"b.example\"\n",
            ),
            ("MAIL_FOLDER", "Chats"),
        ])
        .unwrap();
        let names: Vec<&str> = s
            .settings
            .connectors
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["ice", "bloomberg"]);
        assert_eq!(
            s.settings.connectors[0].folder, "Chats",
            "overrides: the first"
        );
        assert_eq!(s.settings.connectors[1].folder, "Bloomberg");
        assert!(s
            .settings
            .connectors
            .iter()
            .all(|c| c.firm_domains == ["acme.example"]));
        assert_eq!(
            s.secret_ids,
            [("bloomberg".to_string(), "arn:bbg".to_string())]
        );
        assert!(settings(&[("BUCKET", "b"), ("SECRET_IDS", "bloomberg")])
            .unwrap_err()
            .to_string()
            .contains("SECRET_IDS"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = settings(&[]).unwrap_err().to_string();
        assert!(err.contains("BUCKET"), "{err}");
        let err = settings(&[("BUCKET", "b"), ("SIGNATURE_POLICY", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = settings(&[("BUCKET", "b"), ("SFTP_PORT", "twenty-two")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SFTP_PORT"), "{err}");
        let err = settings(&[
            ("BUCKET", "b"),
            ("CHAT_ARCHIVE_SETTINGS", "[ice]\nfolderr = 1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("CHAT_ARCHIVE_SETTINGS"), "{err}");
    }
}
