//! Secrets in AWS Secrets Manager (feature `aws`): one secret per connector,
//! a JSON object of string fields (`firm_code`, `sftp_password`,
//! `ssh_private_key`, `ssh_host_key`, `pgp_private_key`, `pgp_passphrase`,
//! `signer_public_key`, `mailbox_password`, ... see
//! [`crate::ports::secrets::fields`]).
//!
//! Errors name the secret and the field, never a value: the secret string is
//! parsed without serde's messages (which may quote what they could not
//! read), and Secrets Manager's own errors carry no secret material.
//!
//! A loaded secret is kept for a short while (default five minutes) so that
//! a warm Lambda does not call Secrets Manager on every event; a rotation is
//! seen within that delay.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::Client;

use crate::error::{Error, Result};
use crate::ports::{ConnectorSecret, SecretStore, SecretValue};

/// Default name of a connector's secret when none is configured.
pub fn default_secret_id(connector: &str) -> String {
    format!("chat-archive/{connector}")
}

pub struct SecretsManagerStore {
    client: Client,
    /// Connector -> secret name or ARN.
    ids: HashMap<String, String>,
    /// KMS key for secrets this store creates (`update` of a missing secret).
    kms_key_id: Option<String>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, ConnectorSecret)>>,
}

impl SecretsManagerStore {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ids: HashMap::new(),
            kms_key_id: None,
            ttl: Duration::from_secs(300),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Uses this secret (name or ARN) for the connector instead of
    /// `chat-archive/<connector>`.
    pub fn with_secret(mut self, connector: &str, secret_id: impl Into<String>) -> Self {
        self.ids.insert(connector.to_string(), secret_id.into());
        self
    }

    pub fn with_kms_key(mut self, kms_key_id: Option<String>) -> Self {
        self.kms_key_id = kms_key_id;
        self
    }

    /// How long a loaded secret is reused (zero: never).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn secret_id(&self, connector: &str) -> String {
        self.ids
            .get(connector)
            .cloned()
            .unwrap_or_else(|| default_secret_id(connector))
    }

    fn cached(&self, connector: &str) -> Option<ConnectorSecret> {
        let cache = self.cache.lock().ok()?;
        let (at, secret) = cache.get(connector)?;
        (at.elapsed() < self.ttl).then(|| secret.clone())
    }

    fn remember(&self, connector: &str, secret: &ConnectorSecret) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(connector.to_string(), (Instant::now(), secret.clone()));
        }
    }

    fn forget(&self, connector: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(connector);
        }
    }

    /// The secret's fields, or `None` when there is no such secret.
    async fn fetch(&self, secret_id: &str) -> Result<Option<BTreeMap<String, SecretValue>>> {
        let output = match self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => {
                return Err(Error::Secret {
                    secret: secret_id.to_string(),
                    problem: format!("Secrets Manager GetSecretValue: {}", describe(&e)),
                })
            }
        };
        let Some(text) = output.secret_string() else {
            return Err(Error::Secret {
                secret: secret_id.to_string(),
                problem: "the secret holds binary data; store a JSON object of string fields"
                    .into(),
            });
        };
        parse_fields(secret_id, text).map(Some)
    }
}

fn error_code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

/// Secrets Manager's error code and message (they never contain the value).
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(error).to_string(),
    }
}

/// The fields of a secret string: a JSON object whose values are strings.
/// Problems are reported by position and field name only.
pub fn parse_fields(secret_id: &str, text: &str) -> Result<BTreeMap<String, SecretValue>> {
    let problem = |problem: String| Error::Secret {
        secret: secret_id.to_string(),
        problem,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        problem(format!(
            "not a JSON object of string fields ({:?} problem at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(problem("not a JSON object of string fields".into()));
    };
    object
        .into_iter()
        .map(|(field, value)| match value {
            serde_json::Value::String(s) => Ok((field, SecretValue::new(s))),
            other => Err(problem(format!(
                "field {field:?} must be a string, not {}",
                json_type(&other)
            ))),
        })
        .collect()
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn load(&self, connector: &str) -> Result<ConnectorSecret> {
        if let Some(secret) = self.cached(connector) {
            return Ok(secret);
        }
        let secret_id = self.secret_id(connector);
        let fields = self.fetch(&secret_id).await?.ok_or_else(|| Error::Secret {
            secret: secret_id.clone(),
            problem: "no such secret in Secrets Manager (create it: see docs/aws.md)".into(),
        })?;
        tracing::debug!(secret = %secret_id, fields = fields.len(), "secret loaded");
        let secret = ConnectorSecret {
            name: secret_id,
            fields,
        };
        self.remember(connector, &secret);
        Ok(secret)
    }

    async fn update(&self, connector: &str, fields: BTreeMap<String, SecretValue>) -> Result<()> {
        let secret_id = self.secret_id(connector);
        self.forget(connector);
        let existing = self.fetch(&secret_id).await?;
        let created = existing.is_none();
        let mut all = existing.unwrap_or_default();
        all.extend(fields);
        let plain: BTreeMap<&str, &str> =
            all.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        let text = serde_json::to_string(&plain).map_err(|e| Error::Secret {
            secret: secret_id.clone(),
            problem: format!("could not serialise the fields: {:?}", e.classify()),
        })?;
        let failed = |op: &str, detail: String| Error::Secret {
            secret: secret_id.clone(),
            problem: format!("Secrets Manager {op}: {detail}"),
        };
        if created {
            self.client
                .create_secret()
                .name(&secret_id)
                .description(format!("chat-archive connector {connector}"))
                .set_kms_key_id(self.kms_key_id.clone())
                .secret_string(text)
                .send()
                .await
                .map_err(|e| failed("CreateSecret", describe(&e)))?;
        } else {
            self.client
                .put_secret_value()
                .secret_id(&secret_id)
                .secret_string(text)
                .send()
                .await
                .map_err(|e| failed("PutSecretValue", describe(&e)))?;
        }
        tracing::info!(secret = %secret_id, created, "secret updated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_secret_strings_are_reported_without_their_content() {
        let err = parse_fields(
            "chat-archive/ice",
            r#"{"pgp_passphrase": "hunter2", "x": 42}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("chat-archive/ice") && err.contains("\"x\""),
            "{err}"
        );
        assert!(!err.contains("42") && !err.contains("hunter2"), "{err}");

        let err = parse_fields("s", r#"{"pgp_passphrase": "hunter2"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_fields("s", "hunter2").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_fields("s", r#"["hunter2"]"#).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");

        let fields = parse_fields("s", r#"{"firm_code": "ACME"}"#).unwrap();
        assert_eq!(fields["firm_code"].expose(), "ACME");
    }
}
