//! `chat-archive doctor`: every check an operator would make by hand before
//! trusting a run, one line and a verdict each, and an exit status for
//! scripts. Secret values are never shown, only field names.

use chat_archive_core::adapters::sftp::validate_connection;
use chat_archive_core::alerts;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::mapping::MappingTable;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::Metadata;
use chat_archive_core::stages::decrypt;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    /// False only for a failure: a warning still lets the run go.
    ok: bool,
    /// Works today, needs an operator soon (a key about to expire).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    warning: bool,
    detail: String,
}

/// What a check found.
enum Finding {
    Ok(String),
    Warn(String),
    Fail(String),
}

#[derive(Default, Serialize)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: impl Into<String>, result: Result<String, String>) {
        self.add_finding(
            check,
            match result {
                Ok(detail) => Finding::Ok(detail),
                Err(detail) => Finding::Fail(detail),
            },
        );
    }

    fn add_finding(&mut self, check: impl Into<String>, finding: Finding) {
        let (ok, warning, detail) = match finding {
            Finding::Ok(detail) => (true, false, detail),
            Finding::Warn(detail) => (true, true, detail),
            Finding::Fail(detail) => (false, false, detail),
        };
        self.checks.push(Check {
            check: check.into(),
            ok,
            warning,
            detail,
        });
    }
}

pub async fn run(layout: &LocalLayout, json: bool) -> anyhow::Result<()> {
    let report = examine(layout).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for check in &report.checks {
            let verdict = match (check.ok, check.warning) {
                (false, _) => "FAIL",
                (true, true) => "warn",
                (true, false) => "ok  ",
            };
            println!("{verdict} {:<28} {}", check.check, check.detail);
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

async fn examine(layout: &LocalLayout) -> Report {
    let mut report = Report::default();
    let pipeline = match Pipeline::local(layout) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            report.add("settings", Err(e.to_string()));
            return report;
        }
    };
    let config = &pipeline.ctx.config;
    report.add(
        "settings",
        config
            .check()
            .map(|()| {
                format!(
                    "{} (firm domains {:?})",
                    layout.settings().display(),
                    config.firm_domains
                )
            })
            .map_err(|e| e.to_string()),
    );

    let secret = pipeline.secrets.load(config.secret_name()).await;
    let secret = match secret {
        Ok(secret) => secret,
        Err(e) => {
            report.add("secret", Err(e.to_string()));
            return report;
        }
    };
    let mut wanted = vec![fields::PGP_PRIVATE_KEY, fields::PGP_PASSPHRASE];
    if config.signature_policy == SignaturePolicy::Required {
        wanted.push(fields::SIGNER_PUBLIC_KEY);
    }
    if config.sftp.is_some() {
        wanted.push(fields::FIRM_CODE);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|f| secret.get(f).is_none())
        .collect();
    report.add(
        "secret fields",
        match missing.is_empty() {
            true => Ok(format!("{} present", wanted.join(", "))),
            false => Err(format!(
                "missing: {} (set with: chat-archive secret set FIELD --file F)",
                missing.join(", ")
            )),
        },
    );
    let now = chrono::Utc::now();
    report.add_finding(
        "keys",
        match decrypt::keys_from_secret(&secret, config.signature_policy) {
            Err(e) => Finding::Fail(e.to_string()),
            Ok(_) => key_expiry(&secret, now, config.alerts.key_warning_days),
        },
    );

    report.add(
        "SFTP site",
        match &config.sftp {
            None => Ok(format!(
                "none configured: files come from {}",
                layout.drop_dir().display()
            )),
            Some(sftp) => {
                let check =
                    validate_connection(sftp, pipeline.secrets.as_ref(), config.secret_name())
                        .await;
                match check.failed_step() {
                    None => Ok(format!(
                        "{}:{} answers with the pinned host key",
                        sftp.host, sftp.port
                    )),
                    Some(step) => Err(format!(
                        "{}: {}",
                        step.step.label(),
                        check.to_string().trim()
                    )),
                }
            }
        },
    );

    let store = pipeline.ctx.store.as_ref();
    let probe = "state/doctor/probe";
    let writable = async {
        store
            .put_bytes(probe, b"probe".to_vec(), &Metadata::new())
            .await?;
        store.delete(probe).await
    };
    report.add(
        "store",
        writable
            .await
            .map(|()| format!("{} is writable", layout.store().display()))
            .map_err(|e| e.to_string()),
    );

    let mapping = match store.head(&config.mapping_csv).await {
        Ok(Some(_)) => match store.get_bytes(&config.mapping_csv).await {
            Ok(bytes) => Some(MappingTable::from_csv(&bytes, &config.mapping_csv)),
            Err(e) => {
                report.add("mapping CSV", Err(e.to_string()));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            report.add("mapping CSV", Err(e.to_string()));
            None
        }
    };
    let sink = pipeline.sink.as_ref();
    match mapping {
        None => {
            if config.imap.is_some() {
                report.add(
                    "mail server",
                    Ok("not checked: no mapping CSV names a mailbox to log in to".into()),
                );
            }
            report.add(
                "mailboxes",
                Ok("no mapping CSV: automatic mapping only".into()),
            );
        }
        Some(table) => {
            let mut missing = Vec::new();
            let mut refused = None;
            let mailboxes: std::collections::BTreeSet<&str> = table.rows().into_values().collect();
            for mailbox in &mailboxes {
                match sink.is_valid_mailbox(mailbox).await {
                    Ok(true) => {}
                    Ok(false) => missing.push(mailbox.to_string()),
                    Err(e) => {
                        missing.push(format!("{mailbox} ({e})"));
                        refused.get_or_insert(e.to_string());
                    }
                }
            }
            if let Some(imap) = &config.imap {
                let server = format!(
                    "{}:{}",
                    imap.host,
                    imap.port.map_or("default".into(), |p| p.to_string())
                );
                report.add(
                    "mail server",
                    match refused {
                        None => Ok(format!("{server} accepts the admin credential")),
                        Some(reason) => Err(format!("{server}: {reason}")),
                    },
                );
            }
            report.add(
                "mailboxes",
                match missing.is_empty() {
                    true => Ok(format!(
                        "all {} mailbox(es) of the mapping CSV exist",
                        mailboxes.len()
                    )),
                    false => Err(format!(
                        "not valid for the mail sink: {}",
                        missing.join(", ")
                    )),
                },
            );
            if !table.problems.is_empty() {
                report.add(
                    "mapping CSV",
                    Err(format!(
                        "{} row(s) skipped; first: {}",
                        table.problems.len(),
                        table.problems[0]
                    )),
                );
            }
        }
    }
    report.add_finding("schedule", last_run(layout, &config.name, now));
    report
}

/// The keys parse; each one's expiry: a failure once expired, a warning
/// within the alert's warning period.
fn key_expiry(
    secret: &chat_archive_core::ports::ConnectorSecret,
    now: chrono::DateTime<chrono::Utc>,
    warning_days: i64,
) -> Finding {
    let mut expired = Vec::new();
    let mut soon = Vec::new();
    let mut fine = Vec::new();
    for (key, expires) in alerts::key_expiries(secret) {
        match expires {
            None => fine.push(format!("{key} never expires")),
            Some(at) if at <= now => expired.push(format!("{key} expired {}", at.date_naive())),
            Some(at) if at - now < chrono::Duration::days(warning_days) => {
                soon.push(format!("{key} expires {}", at.date_naive()))
            }
            Some(at) => fine.push(format!("{key} expires {}", at.date_naive())),
        }
    }
    let renew = "renew it and give the vendor the new public key";
    if !expired.is_empty() {
        return Finding::Fail(format!("{}: {renew}", expired.join("; ")));
    }
    if !soon.is_empty() {
        return Finding::Warn(format!("{}: {renew}", soon.join("; ")));
    }
    Finding::Ok(format!("parse; {}", fine.join(", ")))
}

/// On one machine nothing schedules the runs but cron or a timer: when the
/// last fetch was tells whether one does.
fn last_run(layout: &LocalLayout, connector: &str, now: chrono::DateTime<chrono::Utc>) -> Finding {
    let advice = "run `chat-archive run --strict` daily from cron or a systemd timer (on AWS \
                  the EventBridge schedule starts fetch)";
    let checkpoint = layout
        .store()
        .join(chat_archive_core::layout::checkpoint(connector));
    let Ok(modified) = std::fs::metadata(&checkpoint).and_then(|m| m.modified()) else {
        return Finding::Ok(format!("no run on record yet: {advice}"));
    };
    let at = chrono::DateTime::<chrono::Utc>::from(modified);
    let ago = now - at;
    let when = format!("last run {}", at.format("%Y-%m-%d %H:%M UTC"));
    if ago > chrono::Duration::hours(26) {
        return Finding::Warn(format!(
            "{when}, {} h ago: is the schedule running? {advice}",
            ago.num_hours()
        ));
    }
    Finding::Ok(format!("{when}; next due within a day ({advice})"))
}
