//! The SDK clients and the pipeline built on them, once per process
//! (no network at init).

use super::*;

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

pub(super) fn build(settings: &AwsSettings, sdk: &SdkConfig) -> Result<(Pipeline, Arc<S3Store>)> {
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

/// Stands in for a source or sink this function was not given: says what to
/// configure when it is used.
pub(super) struct Unconfigured;

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
