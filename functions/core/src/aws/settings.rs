//! What the functions are told by their environment: the archive's
//! settings, the secrets' ids, how to reach AWS and within what limits.

use super::*;

/// What the functions need to know, read from the environment.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub bucket: String,
    /// The first connector's secret: name or ARN; `None`:
    /// `chat-archive/<connector>`.
    pub secret_id: Option<String>,
    /// The other connectors' secrets (`SECRET_IDS`: `name=ID,...`).
    pub secret_ids: Vec<(String, String)>,
    pub kms_key_id: Option<String>,
    /// The firm and its connectors (`CHAT_ARCHIVE_SETTINGS`, then the
    /// single-value overrides).
    pub settings: Settings,
    /// Files from this directory when no SFTP site is configured.
    pub drop_dir: Option<PathBuf>,
    /// Mail into this Maildir tree when no IMAP server is configured.
    pub maildir_root: Option<PathBuf>,
    pub sdk: SdkOptions,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

/// How to reach AWS (or a stand-in such as moto).
#[derive(Debug, Clone, Default)]
pub struct SdkOptions {
    /// One endpoint for every service (implies path-style S3).
    pub endpoint_url: Option<String>,
    /// `None`: the default chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Fixed access key and secret key (a local test server); `None`: the
    /// default credential chain (the Lambda role).
    pub static_credentials: Option<(String, String)>,
    pub force_path_style: bool,
    pub timeouts: SdkTimeouts,
}

/// Limits on every S3 and Secrets Manager call, so a service that accepts
/// the connection and then stops answering fails the call (a retryable
/// store error) instead of holding the function until Lambda kills it.
/// The defaults fit inside the shortest function timeout of the template
/// (5 minutes) with room for the retry; a body that stalls mid-stream is
/// caught by the SDK's stalled-stream protection, which is on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    pub connect: Duration,
    /// One HTTP attempt (an 8 MiB part at 150 KB/s still fits).
    pub attempt: Duration,
    /// The whole call, its retries included.
    pub operation: Duration,
}

impl Default for SdkTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(60),
            operation: Duration::from_secs(180),
        }
    }
}

impl SdkTimeouts {
    pub(super) fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let defaults = Self::default();
        let secs = |name: &str, default: Duration| -> Result<Duration> {
            get(name).map_or(Ok(default), |v| match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                _ => Err(Error::Config(format!(
                    "{name}: not a positive number of seconds: {v:?}"
                ))),
            })
        };
        Ok(Self {
            connect: secs("SDK_CONNECT_TIMEOUT_SECS", defaults.connect)?,
            attempt: secs("SDK_ATTEMPT_TIMEOUT_SECS", defaults.attempt)?,
            operation: secs("SDK_OPERATION_TIMEOUT_SECS", defaults.operation)?,
        })
    }

    pub(super) fn config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation.max(self.attempt))
            .build()
    }
}

impl SdkOptions {
    /// The default chain (credentials, region), and one endpoint for every
    /// service when `AWS_ENDPOINT_URL` names a stand-in: what the operator's
    /// commands use against a deployed archive.
    pub fn from_env() -> Result<Self> {
        let endpoint_url = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            force_path_style: endpoint_url.is_some(),
            endpoint_url,
            // A mistyped limit is refused, as on Lambda: a silent default
            // would hide the typo until a call hangs for minutes.
            timeouts: SdkTimeouts::from_lookup(&lookup)?,
            ..Self::default()
        })
    }
}

impl AwsSettings {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from any variable lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let bucket = get("BUCKET").ok_or_else(|| {
            Error::Config("BUCKET is not set: the name of the archive bucket".into())
        })?;
        let settings = archive_settings(&get)?;
        let secret_ids = match get("SECRET_IDS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(name, id)| (name.trim().to_string(), id.trim().to_string()))
                        .ok_or_else(|| {
                            Error::Config(format!("SECRET_IDS: {pair:?} is not NAME=SECRET_ID"))
                        })
                })
                .collect::<Result<_>>()?,
        };
        let endpoint_url = get("AWS_ENDPOINT_URL");
        let force_path_style = endpoint_url.is_some()
            || get("S3_FORCE_PATH_STYLE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let number = |name: &str, default: usize| -> Result<usize> {
            get(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::Config(format!("{name}: not a number: {v:?}")))
            })
        };
        Ok(Self {
            bucket,
            secret_id: get("SECRET_ID"),
            secret_ids,
            kms_key_id: get("KMS_KEY_ID"),
            settings,
            drop_dir: get("DROP_DIR").map(PathBuf::from),
            maildir_root: get("MAILDIR_ROOT").map(PathBuf::from),
            sdk: SdkOptions {
                endpoint_url,
                region: None,
                static_credentials: None,
                force_path_style,
                timeouts: SdkTimeouts::from_lookup(&get)?,
            },
            part_size: number("S3_PART_SIZE_MIB", 8)?.saturating_mul(1024 * 1024),
            parts_in_flight: number("S3_PARTS_IN_FLIGHT", 2)?,
        })
    }
}

/// The firm's settings: `CHAT_ARCHIVE_SETTINGS` (TOML of the settings file)
/// or the embedded defaults, then the single-value overrides: `FIRM_DOMAINS`
/// and `IMAP_*` for the firm, the others for the first connector.
pub(super) fn archive_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let base = match get("CHAT_ARCHIVE_SETTINGS") {
        Some(text) => Settings::parse(&text)
            .map_err(|e| Error::Config(format!("CHAT_ARCHIVE_SETTINGS: {e}")))?,
        None => Settings::default(),
    };
    let mut firm = base.firm;
    let mut connectors = base.connectors;
    if connectors.is_empty() {
        connectors.push(ConnectorConfig::default());
    }
    let first = &mut connectors[0];
    if let Some(domains) = get("FIRM_DOMAINS") {
        firm.domains = domains
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
    }
    if let Some(v) = get("SIGNATURE_POLICY") {
        first.signature_policy = setting("SIGNATURE_POLICY", &v)?;
    }
    if let Some(v) = get("GRANULARITY") {
        first.granularity = setting("GRANULARITY", &v)?;
    }
    if let Some(v) = get("MAIL_FOLDER") {
        first.folder = v.trim().to_string();
    }
    fn sftp(first: &mut ConnectorConfig) -> &mut crate::adapters::SftpConfig {
        first.sftp.get_or_insert_with(Default::default)
    }
    if let Some(host) = get("SFTP_HOST") {
        sftp(first).host = host.trim().to_string();
    }
    if let Some(v) = get("SFTP_PORT") {
        sftp(first).port = port("SFTP_PORT", &v)?;
    }
    if let Some(v) = get("SFTP_DIRECTORY") {
        sftp(first).directory = v;
    }
    fn imap(firm: &mut crate::config::FirmSettings) -> &mut crate::adapters::imap::ImapConfig {
        firm.imap.get_or_insert_with(Default::default)
    }
    if let Some(host) = get("IMAP_HOST") {
        imap(&mut firm).host = host.trim().to_string();
    }
    if let Some(v) = get("IMAP_PORT") {
        imap(&mut firm).port = Some(port("IMAP_PORT", &v)?);
    }
    if let Some(user) = get("IMAP_ADMIN_USER") {
        imap(&mut firm).auth = crate::adapters::imap::ImapAuth::master_user(user.trim());
    }
    Ok(Settings::with_firm(firm, connectors))
}

/// A setting's value from the environment, read as the settings file reads
/// it (`required`, `conversation-day`, ...).
pub(super) fn setting<T: serde::de::DeserializeOwned>(name: &str, value: &str) -> Result<T> {
    use serde::de::value::{Error as ValueError, StrDeserializer};
    T::deserialize(StrDeserializer::<ValueError>::new(value.trim()))
        .map_err(|e| Error::Config(format!("{name}: {e}")))
}

pub(super) fn port(name: &str, value: &str) -> Result<u16> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{name}: not a port number: {value:?}")))
}
