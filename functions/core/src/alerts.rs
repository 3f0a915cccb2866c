//! Alerts before data is lost. ICE and Bloomberg delete files from their
//! SFTP sites after a few weeks, and a key that expires stops delivery, so
//! the archive warns while there is still time:
//! - no file arrived for a day by the configured hour;
//! - a file on the source is older than the configured age and still not
//!   fetched;
//! - the firm's OpenPGP key or the signer's key expires within the warning
//!   period (or has expired);
//! - quarantine holds something older than the configured age.
//!
//! The same check feeds the status page, the log, `chat-archive run
//! --strict` and, on AWS, the function's metrics.

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ConnectorKind;
use crate::crypto;
use crate::error::Result;
use crate::ports::secrets::fields;
use crate::ports::{SecretStore, Source};
use crate::stages::{Context, QUARANTINED_AT};
use crate::status;

/// `[ice.alerts]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// The UTC hour by which a day's file is expected (the day before
    /// counts as missing from this hour on).
    pub file_expected_by_hour: u32,
    /// A file on the source not fetched this many hours after it appeared.
    pub unfetched_after_hours: i64,
    /// Warn this many days before a key expires.
    pub key_warning_days: i64,
    /// Anything in quarantine for longer than this many hours.
    pub quarantine_after_hours: i64,
    /// How many days back a missing file is looked for.
    pub lookback_days: i64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            file_expected_by_hour: 12,
            unfetched_after_hours: 48,
            key_warning_days: 30,
            quarantine_after_hours: 24,
            lookback_days: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    NoFileForDay,
    UnfetchedOnSource,
    KeyExpiring,
    QuarantineWaiting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub message: String,
}

impl Alert {
    fn new(kind: AlertKind, message: String) -> Self {
        tracing::warn!(alert = ?kind, %message, "alert");
        Self { kind, message }
    }
}

/// When each key of the secret that parses expires (`None`: never): the
/// firm's OpenPGP key and the signer's key.
pub fn key_expiries(
    secret: &crate::ports::ConnectorSecret,
) -> Vec<(&'static str, Option<DateTime<Utc>>)> {
    let mut expiries = Vec::new();
    if let Some(text) = secret.get(fields::PGP_PRIVATE_KEY) {
        if let Ok(key) = crypto::parse_secret_key(text.expose(), "the firm's OpenPGP key") {
            expiries.push((
                "the firm's OpenPGP key",
                crypto::secret_key_expires_at(&key),
            ));
        }
    }
    if let Some(text) = secret.get(fields::SIGNER_PUBLIC_KEY) {
        if let Ok(key) = crypto::parse_public_key(text.expose(), "the signer's key") {
            expiries.push(("the signer's key", crypto::public_key_expires_at(&key)));
        }
    }
    expiries
}

/// Every alert that holds at `now`. `source` is listed when given (a
/// source that cannot be listed is an alert of its own kind: unfetched).
pub async fn check(
    ctx: &Context,
    secrets: &dyn SecretStore,
    source: Option<&dyn Source>,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>> {
    let settings = &ctx.config.alerts;
    // XIP containers come when a vendor sends one, not daily.
    let mut alerts = match ctx.config.kind {
        ConnectorKind::Xip => Vec::new(),
        _ => missing_days(ctx, now).await?,
    };
    if let Some(source) = source {
        alerts.extend(unfetched(ctx, source, now).await?);
    }
    // A secret shared by several connectors is looked at once, for the first.
    let first_with_secret = ctx
        .connectors
        .iter()
        .find(|c| c.secret_name() == ctx.config.secret_name())
        .is_none_or(|c| c.name == ctx.config.name);
    if first_with_secret {
        alerts.extend(expiring_keys(ctx, secrets, now, settings.key_warning_days).await);
    }
    alerts.extend(waiting_in_quarantine(ctx, now).await?);
    Ok(alerts)
}

/// Days, since the first day on record (at most `lookback_days` back), for
/// which no source file brought anything, once their file is overdue.
async fn missing_days(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<Alert>> {
    let settings = &ctx.config.alerts;
    let store = ctx.store.as_ref();
    let connector = &ctx.config.name;
    let days = status::days(store, connector).await?;
    let Some(first) = days
        .iter()
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .min()
    else {
        return Ok(Vec::new());
    };
    // Yesterday's file is due by the expected hour of today.
    let mut last_due = now.date_naive() - Duration::days(1);
    if now.hour() < settings.file_expected_by_hour {
        last_due -= Duration::days(1);
    }
    let first = first.max(now.date_naive() - Duration::days(settings.lookback_days));
    let mut alerts = Vec::new();
    let mut day = first;
    while day <= last_due {
        let prefix = format!(
            "{}sources/",
            crate::layout::report_day_prefix(connector, &day.to_string())
        );
        if store.list(&prefix).await?.is_empty() {
            alerts.push(Alert::new(
                AlertKind::NoFileForDay,
                format!(
                    "{connector}: no file arrived for {day} (expected by {:02}:00 UTC the day after)",
                    settings.file_expected_by_hour
                ),
            ));
        }
        day += Duration::days(1);
    }
    Ok(alerts)
}

/// Files on the source, old enough to be deleted there soon, that the
/// checkpoint does not hold.
pub async fn unfetched(
    ctx: &Context,
    source: &dyn Source,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>> {
    let limit = now - Duration::hours(ctx.config.alerts.unfetched_after_hours);
    let fetched = crate::stages::fetch::fetched_files(ctx).await?;
    let listing = match source.list().await {
        Ok(listing) => listing,
        Err(e) => {
            return Ok(vec![Alert::new(
                AlertKind::UnfetchedOnSource,
                format!("{}: cannot list the source: {e}", source.describe()),
            )])
        }
    };
    Ok(listing
        .into_iter()
        .filter(|file| file.modified < limit && !fetched.contains(file))
        .map(|file| {
            Alert::new(
                AlertKind::UnfetchedOnSource,
                format!(
                    "{}/{}: on the source since {} and still not fetched; the vendor deletes old files",
                    source.describe(),
                    file.name,
                    file.modified.format("%Y-%m-%d %H:%M UTC")
                ),
            )
        })
        .collect())
}

async fn expiring_keys(
    ctx: &Context,
    secrets: &dyn SecretStore,
    now: DateTime<Utc>,
    warning_days: i64,
) -> Vec<Alert> {
    let Ok(secret) = secrets.load(ctx.config.secret_name()).await else {
        return Vec::new();
    };
    let expiries = key_expiries(&secret);
    expiries
        .into_iter()
        .filter_map(|(what, expires)| {
            let expires = expires?;
            let verb = if expires <= now { "expired" } else { "expires" };
            (expires - now < Duration::days(warning_days)).then(|| {
                Alert::new(
                    AlertKind::KeyExpiring,
                    format!(
                        "{}: {what} {verb} {} (renew it and give the vendor the new public key)",
                        ctx.config.name,
                        expires.format("%Y-%m-%d")
                    ),
                )
            })
        })
        .collect()
}

async fn waiting_in_quarantine(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<Alert>> {
    let limit = now - Duration::hours(ctx.config.alerts.quarantine_after_hours);
    let store = ctx.store.as_ref();
    let mut alerts = Vec::new();
    let connector = &ctx.config.name;
    for stage in ["raw", "plain"] {
        for key in store
            .list(&crate::layout::quarantine_prefix(stage, connector))
            .await?
        {
            if key.ends_with(".reason.json") {
                continue;
            }
            let Some(info) = store.head(&key).await? else {
                continue;
            };
            let since = info
                .metadata
                .get(QUARANTINED_AT)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if since.is_some_and(|since| since <= limit) {
                alerts.push(Alert::new(
                    AlertKind::QuarantineWaiting,
                    format!(
                        "{key}: in quarantine since {}; see its .reason.json",
                        since
                            .map(|s| s.format("%Y-%m-%d %H:%M UTC").to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(alerts)
}
