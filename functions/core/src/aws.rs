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
    fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
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

    fn config(&self) -> TimeoutConfig {
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
    pub fn from_env() -> Self {
        let endpoint_url = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            force_path_style: endpoint_url.is_some(),
            endpoint_url,
            // A mistyped limit falls back to the defaults here: the
            // operator's commands print their own errors for the rest.
            timeouts: SdkTimeouts::from_lookup(&lookup).unwrap_or_default(),
            ..Self::default()
        }
    }
}

/// The archive bucket as an object store, for the operator's commands.
pub async fn bucket_store(bucket: &str, options: &SdkOptions) -> S3Store {
    let sdk = sdk_config(options).await;
    S3Store::new(
        s3_client(&sdk, options.force_path_style),
        S3Settings::new(bucket),
    )
}

/// A Secrets Manager secret as a connector's secret store, for the
/// operator's commands.
pub async fn secret_store(
    connector: &str,
    secret_id: &str,
    options: &SdkOptions,
) -> SecretsManagerStore {
    let sdk = sdk_config(options).await;
    SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&sdk))
        .with_secret(connector, secret_id)
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
fn archive_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
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
fn setting<T: serde::de::DeserializeOwned>(name: &str, value: &str) -> Result<T> {
    use serde::de::value::{Error as ValueError, StrDeserializer};
    T::deserialize(StrDeserializer::<ValueError>::new(value.trim()))
        .map_err(|e| Error::Config(format!("{name}: {e}")))
}

fn port(name: &str, value: &str) -> Result<u16> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{name}: not a port number: {value:?}")))
}

/// The SDK configuration: HTTPS by rustls with ring, the default credential
/// chain unless fixed credentials are given. Reads no network.
pub async fn sdk_config(options: &SdkOptions) -> SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .timeout_config(options.timeouts.config());
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((access_key, secret_key)) = &options.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "chat-archive-static",
        ));
    }
    loader.load().await
}

impl Pipeline {
    /// The pipeline on AWS: S3 for objects, Secrets Manager for the secret,
    /// the SFTP site (or `drop_dir`) as source, the mail server (or
    /// `maildir_root`) as sink. Opens no connection.
    pub fn aws(settings: &AwsSettings, sdk: &SdkConfig) -> Result<Self> {
        Ok(build(settings, sdk)?.0)
    }
}

/// An S3 client on the SDK configuration (path-style addressing for
/// stand-ins such as moto or MinIO).
pub fn s3_client(sdk: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn build(settings: &AwsSettings, sdk: &SdkConfig) -> Result<(Pipeline, Arc<S3Store>)> {
    let archive = &settings.settings;
    let mut s3 = S3Settings::new(&settings.bucket);
    s3.kms_key_id = settings.kms_key_id.clone();
    s3.part_size = settings.part_size;
    s3.parts_in_flight = settings.parts_in_flight;
    let store = Arc::new(S3Store::new(
        s3_client(sdk, settings.sdk.force_path_style),
        s3,
    ));
    let mut secrets = SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(sdk))
        .with_kms_key(settings.kms_key_id.clone());
    if let (Some(id), Some(first)) = (&settings.secret_id, archive.connectors.first()) {
        secrets = secrets.with_secret(first.secret_name(), id);
    }
    for (name, id) in &settings.secret_ids {
        secrets = secrets.with_secret(name, id);
    }
    let secrets: Arc<dyn SecretStore> = Arc::new(secrets);
    let mut sources = Vec::new();
    for (index, connector) in archive.connectors.iter().enumerate() {
        let source: Arc<dyn Source> = match (&connector.sftp, &settings.drop_dir) {
            (Some(sftp), _) => Arc::new(SftpSource::new(
                sftp.clone(),
                connector.secret_name(),
                secrets.clone(),
            )),
            (None, _) if connector.kind == ConnectorKind::Xip => continue,
            (None, Some(dir)) if index == 0 => Arc::new(DropDirectory::new(dir)),
            (None, Some(dir)) => Arc::new(DropDirectory::new(dir.join(&connector.name))),
            (None, None) => Arc::new(Unconfigured),
        };
        sources.push(ConnectorSource {
            connector: connector.clone(),
            source,
        });
    }
    let sink: Arc<dyn MailboxSink> = match (&archive.firm.imap, &settings.maildir_root) {
        (Some(imap), _) => Arc::new(ImapSink::new(
            imap.clone(),
            secrets.clone(),
            archive.mail_secret(),
        )?),
        (None, Some(root)) => Arc::new(MaildirSink::new(root)),
        (None, None) => Arc::new(Unconfigured),
    };
    let pipeline = Pipeline {
        ctx: Context::new(store.clone(), archive),
        secrets,
        sink,
        sources,
        bucket: settings.bucket.clone(),
    };
    Ok((pipeline, store))
}

/// JSON log lines on stdout (Lambda's JSON log format reads them as they
/// are). Level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},pgp=warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pgp=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        // The invocation's span (request id, function) on every line.
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .try_init();
}

/// The `main` of every function binary. Under a Lambda runtime API: JSON
/// logs, the clients built once, then each event to [`Lambda::handle`].
/// Elsewhere (no `AWS_LAMBDA_RUNTIME_API`): one run on the embedded defaults
/// with an event file ([`crate::function::main`]).
pub async fn serve(function: Function) -> std::result::Result<(), lambda_runtime::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Ok(crate::function::main(function).await?);
    }
    init_logging();
    let lambda = Arc::new(Lambda::from_env().await?);
    let margin = deadline_margin()?;
    let in_flight: InFlight = Arc::default();
    tokio::spawn(stop_on_sigterm(function, in_flight.clone()));
    let handler = move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
        let span = tracing::info_span!(
            "invocation",
            request_id = %event.context.request_id,
            function = function.name()
        );
        let invocation = invocation(lambda.clone(), function, event, margin, in_flight.clone());
        tracing::Instrument::instrument(invocation, span)
    };
    lambda_runtime::run(lambda_runtime::service_fn(handler)).await
}

/// One invocation: the event handled within the time it has, the failure
/// logged by kind, the metrics line written.
async fn invocation(
    lambda: Arc<Lambda>,
    function: Function,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
    margin: Duration,
    in_flight: InFlight,
) -> std::result::Result<Response, lambda_runtime::Diagnostic> {
    let _marked = InFlightMark::new(&in_flight, &event.context.request_id);
    let left = time_left(event.context.deadline(), margin);
    tracing::info!(budget_ms = left.map(|l| l.as_millis() as u64), "invocation");
    let work = lambda.handle(function, event.payload);
    let response = match left {
        None => work.await,
        Some(left) => tokio::time::timeout(left, work).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                operation: format!("{} invocation", function.name()),
                after: left,
            })
        }),
    };
    if let Err(e) = &response {
        tracing::error!(kind = e.kind(), retryable = e.retryable(), error = %e, "failed");
    }
    crate::metrics::emit(function, &lambda.pipeline.ctx.config.name, &response);
    response.map_err(diagnostic)
}

/// The request id of the invocation being handled, if any.
type InFlight = Arc<std::sync::Mutex<Option<String>>>;

/// Marks an invocation in flight for as long as it lives.
struct InFlightMark(InFlight);

impl InFlightMark {
    fn new(in_flight: &InFlight, request_id: &str) -> Self {
        if let Ok(mut current) = in_flight.lock() {
            *current = Some(request_id.to_string());
        }
        Self(in_flight.clone())
    }
}

impl Drop for InFlightMark {
    fn drop(&mut self) {
        if let Ok(mut current) = self.0.lock() {
            *current = None;
        }
    }
}

/// On SIGTERM (the runtime shutting down, a container stopped), one log
/// line naming the invocation cut short, then exit at once. Stopping
/// mid-write is safe: an object is committed whole or not at all (an
/// unfinished multipart upload is invisible and the bucket's lifecycle
/// rule aborts it), and the event's retry redoes only what is missing.
async fn stop_on_sigterm(function: Function, in_flight: InFlight) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM");
        return;
    };
    sigterm.recv().await;
    let request_id = in_flight.lock().ok().and_then(|current| current.clone());
    match request_id {
        Some(request_id) => tracing::warn!(
            function = function.name(),
            request_id,
            "SIGTERM during an invocation: stopping now; what it wrote is whole, and its event's retry completes it"
        ),
        None => tracing::info!(function = function.name(), "SIGTERM between invocations: stopping"),
    }
    // 128 + SIGTERM, as a shell reports a process ended by it.
    std::process::exit(143);
}

/// How long before its Lambda deadline an invocation stops on its own
/// (`DEADLINE_MARGIN_SECS`, default 10 s, at most a tenth of the time
/// left): time to log, emit the metrics
/// and answer with an error that names the cause, where being killed at
/// the deadline would leave only "Task timed out". Whatever the stopped
/// work wrote stays whole, and the retry carries on from it.
fn deadline_margin() -> Result<Duration> {
    match std::env::var("DEADLINE_MARGIN_SECS") {
        Err(_) => Ok(Duration::from_secs(10)),
        Ok(v) => v
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| Error::Config(format!("DEADLINE_MARGIN_SECS: not a number: {v:?}"))),
    }
}

/// The time an invocation may run: until `margin` before its deadline, or
/// a tenth of the time left when that is less (a function given a few
/// seconds keeps most of them). `None` for a deadline already past when
/// the invocation starts, which Lambda never hands out but local
/// emulators do (they send the invoke time): then only the calls' own
/// limits hold.
fn time_left(deadline: std::time::SystemTime, margin: Duration) -> Option<Duration> {
    let left = deadline.duration_since(std::time::SystemTime::now()).ok()?;
    Some(left.saturating_sub(margin.min(left / 10)))
}

/// A failure as Lambda records it: `errorType` names the kind and whether a
/// retry can help (`Store.Retryable`, `BadInput.Permanent`), so a
/// dead-letter queue reads without opening the logs.
fn diagnostic(error: Error) -> lambda_runtime::Diagnostic {
    let verdict = if error.retryable() {
        "Retryable"
    } else {
        "Permanent"
    };
    lambda_runtime::Diagnostic {
        error_type: format!("{}.{verdict}", error.kind()),
        error_message: error.to_string(),
    }
}

/// A request to the import function to fold status records into
/// `status.json` / `status.csv`: of every day touched since the last
/// rebuild, or of the days named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Names the request; `false` does nothing.
    pub rebuild_status: bool,
    /// These days (`YYYY-MM-DD` or `undated`) instead of the marked ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

/// `{"export_rsmf": {...}}`, a manual event to the import function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportEvent {
    export_rsmf: RsmfExportRequest,
}

/// What to export as RSMF: one day, or a range; optionally one custodian,
/// one conversation, one connector (default: the first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RsmfExportRequest {
    #[serde(default)]
    pub day: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub since: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub until: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub custodian: Option<String>,
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub connector: Option<String>,
}

/// What the import function is started by.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImportEvent {
    /// `{"rebuild_status": true}` (the status schedule).
    Status(StatusRequest),
    S3(S3Event),
}

/// One function process: the pipeline and the SDK clients, built once, and
/// the handler of each kind of event.
pub struct Lambda {
    pub pipeline: Pipeline,
    store: Arc<S3Store>,
}

impl Lambda {
    pub fn new(settings: &AwsSettings, sdk: &SdkConfig) -> Result<Self> {
        let (pipeline, store) = build(settings, sdk)?;
        Ok(Self { pipeline, store })
    }

    /// The Lambda set-up: settings from the environment, the clients built
    /// (no network).
    pub async fn from_env() -> Result<Self> {
        let settings = AwsSettings::from_env()?;
        for connector in &settings.settings.connectors {
            connector.check()?;
        }
        let sdk = sdk_config(&settings.sdk).await;
        Self::new(&settings, &sdk)
    }

    /// The handler of every function, for its event as JSON (what the
    /// binaries and the tests call): S3 events are read tolerantly
    /// ([`parse_s3_event`]), manual fetch requests strictly.
    pub async fn handle(&self, function: Function, event: serde_json::Value) -> Result<Response> {
        match function {
            Function::Fetch => self.fetch(&event).await,
            Function::Import if event.get("rebuild_status").is_some() => {
                let request = serde_json::from_value(event)
                    .map_err(|e| Error::Event(format!("status request: {e}")))?;
                self.import(ImportEvent::Status(request)).await
            }
            Function::Import if event.get("export_rsmf").is_some() => {
                let request: ExportEvent = serde_json::from_value(event)
                    .map_err(|e| Error::Event(format!("export request: {e}")))?;
                self.export_rsmf(request.export_rsmf).await
            }
            Function::Import => self.import(ImportEvent::S3(parse_s3_event(event)?)).await,
            Function::Decrypt | Function::Convert => {
                self.s3(function, &parse_s3_event(event)?).await
            }
        }
    }

    /// fetch: a schedule event means "everything new"; a manual request is
    /// read strictly (a mistyped backfill fails, it never runs as a plain
    /// daily fetch).
    pub async fn fetch(&self, event: &serde_json::Value) -> Result<Response> {
        let bytes = serde_json::to_vec(event).map_err(Error::internal)?;
        let request = function::parse_fetch_request(&bytes)?;
        tracing::info!(?request, "fetch");
        let mut response = function::invoke_fetch(&self.pipeline, &request).await?;
        // Only fetch reaches the sources: files left there are its alert.
        for source in &self.pipeline.sources {
            let ctx = self.pipeline.ctx.serving(&source.connector);
            let left = crate::alerts::unfetched(&ctx, source.source.as_ref(), chrono::Utc::now());
            response.alerts.extend(left.await?);
        }
        response.alerts_checked = vec![crate::alerts::AlertKind::UnfetchedOnSource];
        Ok(response)
    }

    /// decrypt, convert, import: the stage for every object of the event.
    /// Events of another bucket are refused. When the stage changed anything,
    /// the days whose status it touched are marked for the next rebuild (a
    /// replay that changes nothing writes nothing at all).
    pub async fn s3(&self, function: Function, event: &S3Event) -> Result<Response> {
        let pipeline = &self.pipeline;
        for record in &event.records {
            let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
            if bucket != pipeline.bucket {
                return Err(Error::Event(format!(
                    "event for bucket {bucket:?}; this function serves {:?}",
                    pipeline.bucket
                )));
            }
        }
        let keys = object_keys(event)?;
        tracing::info!(?function, ?keys, "S3 event");
        let before = self.store.commits();
        let result = function::invoke_s3(pipeline, function, event).await;
        if self.store.commits() != before {
            // On failure the days come from the keys: the retry may find
            // nothing left to write, so the mark cannot wait for it.
            let mut days: BTreeSet<String> = keys.iter().filter_map(|k| day_of_key(k)).collect();
            if let Ok(response) = &result {
                days.extend(response.days.iter().cloned());
            }
            let connector = pipeline
                .ctx
                .for_key(keys.first().map_or("", String::as_str))
                .name;
            if let Err(e) = mark_for_status(pipeline, &connector, &days).await {
                tracing::error!(error = %e, ?days, "could not mark days for the status rebuild");
                if result.is_ok() {
                    return Err(e);
                }
            }
        }
        result
    }

    /// RSMF files for legal review, from the store into `exports/`
    /// ([`crate::rsmf::export`]): the manual event
    /// `{"export_rsmf": {"day": "2026-11-20"}}` to the import function.
    pub async fn export_rsmf(&self, request: RsmfExportRequest) -> Result<Response> {
        let (since, until) = match (request.day, request.since, request.until) {
            (Some(day), None, None) => (day, day),
            (None, Some(since), Some(until)) if since <= until => (since, until),
            _ => {
                return Err(Error::Event(
                    "export request: give day, or since and until (since <= until)".into(),
                ))
            }
        };
        let ctx = match &request.connector {
            Some(name) => self.pipeline.connector(name)?,
            None => self.pipeline.ctx.clone(),
        };
        let dir =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let export = crate::rsmf::export::ExportRequest {
            since,
            until,
            custodian: request.custodian.clone(),
            conversation: request.conversation.clone(),
            out: dir.path().to_path_buf(),
        };
        let written = crate::rsmf::export::export(ctx.store.as_ref(), &ctx.config, &export).await?;
        let mut prefix =
            crate::layout::export_prefix(&ctx.config.name, &since.to_string(), &until.to_string());
        if let Some(custodian) = &request.custodian {
            prefix.push('_');
            prefix.push_str(&custodian.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '@' && c != '.',
                "_",
            ));
        }
        let mut response = Response::default();
        let names = written
            .iter()
            .map(|w| w.file.clone())
            .chain([crate::rsmf::export::LOAD_FILE.to_string()]);
        for name in names {
            let path = dir.path().join(&name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let key = format!("{prefix}/{name}");
            ctx.store.put_bytes(&key, bytes, &Metadata::new()).await?;
            response.written.push(key);
        }
        tracing::info!(connector = %ctx.config.name, files = written.len(), %prefix, "RSMF export");
        Ok(response)
    }

    pub async fn import(&self, event: ImportEvent) -> Result<Response> {
        match event {
            ImportEvent::S3(event) => self.s3(Function::Import, &event).await,
            ImportEvent::Status(request) if !request.rebuild_status => Ok(Response::default()),
            ImportEvent::Status(request) => {
                let (days, alerts) = rebuild_status(&self.pipeline, &request.days).await?;
                Ok(Response {
                    alerts,
                    alerts_checked: vec![
                        crate::alerts::AlertKind::NoFileForDay,
                        crate::alerts::AlertKind::KeyExpiring,
                        crate::alerts::AlertKind::QuarantineWaiting,
                    ],
                    written: days
                        .iter()
                        .map(|d| {
                            format!(
                                "{}status.json",
                                crate::layout::report_day_prefix(&d.connector, &d.day)
                            )
                        })
                        .collect(),
                    days: days.into_iter().map(|d| d.day).collect(),
                    ..Default::default()
                })
            }
        }
    }
}

/// Reads an S3 event, also a minimal one: S3 itself always sends every field,
/// but a stand-in (moto, MinIO) or an event written by hand to re-run a stage
/// may leave out the parts no stage reads (`userIdentity`,
/// `requestParameters`, `eventTime`).
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

/// The day a stage's input object belongs to, as the stages file it.
fn day_of_key(key: &str) -> Option<String> {
    if key.starts_with("mail/") {
        return key.split('/').nth(2).map(str::to_string);
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    Some(status::day_label(status::day_from_file_name(name)))
}

fn dirty_prefix(connector: &str) -> String {
    crate::layout::status_dirty_prefix(connector)
}

/// Marks a connector's days for the next status rebuild (one empty object
/// per day).
pub async fn mark_for_status(
    pipeline: &Pipeline,
    connector: &str,
    days: &BTreeSet<String>,
) -> Result<()> {
    let prefix = dirty_prefix(connector);
    for day in days {
        pipeline
            .ctx
            .store
            .put_bytes(&format!("{prefix}{day}"), Vec::new(), &Metadata::new())
            .await?;
    }
    Ok(())
}

/// Rebuilds the status log of the days named (of each connector with
/// records that day), or of every marked day. A mark is removed before its
/// day's records are read, so a record written meanwhile marks the day again
/// and the next run folds it in. Then the status page, and the alerts it
/// shows.
pub async fn rebuild_status(
    pipeline: &Pipeline,
    days: &[String],
) -> Result<(Vec<DayStatus>, Vec<crate::alerts::Alert>)> {
    let store = pipeline.ctx.store.as_ref();
    for day in days {
        let plain = !day.is_empty()
            && day
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return Err(Error::Event(format!("status request: not a day: {day:?}")));
        }
    }
    let mut rebuilt = Vec::new();
    for connector in pipeline.connector_names() {
        let prefix = dirty_prefix(&connector);
        let mut chosen = Vec::new();
        if days.is_empty() {
            for key in store.list(&prefix).await? {
                if let Some(day) = key.strip_prefix(&prefix) {
                    store.delete(&key).await?;
                    chosen.push(day.to_string());
                }
            }
        } else {
            for day in days {
                let records = crate::layout::report_day_prefix(&connector, day);
                if !store.list(&records).await?.is_empty() {
                    chosen.push(day.clone());
                }
            }
        }
        for day in &chosen {
            let status = status::rebuild_day(store, &connector, day).await?;
            tracing::info!(
                connector,
                day,
                imported = status.imported,
                failed = status.failed,
                counts_add_up = status.counts_add_up(),
                "status log rebuilt"
            );
            rebuilt.push(status);
        }
    }
    let alerts = write_status_page(pipeline).await?;
    Ok((rebuilt, alerts))
}

/// The status page beside the logs (`reports/index.html`), linking to them;
/// returns the alerts it shows.
async fn write_status_page(pipeline: &Pipeline) -> Result<Vec<crate::alerts::Alert>> {
    // The import function does not reach the SFTP site: the fetch function
    // reports files left there.
    let (html, alerts) = pipeline.status_page(".", false).await?;
    pipeline
        .ctx
        .store
        .put_bytes(
            STATUS_PAGE,
            html.into_bytes(),
            &crate::ports::Metadata::new(),
        )
        .await?;
    Ok(alerts)
}

/// Where the status schedule keeps the status page.
pub const STATUS_PAGE: &str = "reports/index.html";

/// Stands in for a source or sink this function was not given: says what to
/// configure when it is used.
struct Unconfigured;

#[async_trait]
impl Source for Unconfigured {
    fn describe(&self) -> String {
        "no source configured".into()
    }
    async fn list(&self) -> Result<Vec<RemoteFile>> {
        Err(Error::Config(
            "no source configured: set SFTP_HOST (or [ice.sftp] in CHAT_ARCHIVE_SETTINGS), or DROP_DIR"
                .into(),
        ))
    }
    async fn open(&self, file: &RemoteFile) -> Result<ByteStream> {
        Err(Error::Config(format!(
            "no source configured to open {:?}",
            file.name
        )))
    }
}

#[async_trait]
impl MailboxSink for Unconfigured {
    async fn is_valid_mailbox(&self, _mailbox: &str) -> Result<bool> {
        Err(Error::Config(
            "no mailbox sink configured: set IMAP_HOST (or [ice.imap] in CHAT_ARCHIVE_SETTINGS), or MAILDIR_ROOT"
                .into(),
        ))
    }
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome> {
        self.is_valid_mailbox(delivery.mailbox).await?;
        Ok(DeliveryOutcome::Refused(
            "no mailbox sink configured".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
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
