//! `chat-archive doctor`: every check an operator would make by hand before
//! trusting a run, one line and a verdict each, and an exit status for
//! scripts. Secret values are never shown, only field names.

use chat_archive_core::adapters::sftp::validate_connection;
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
    ok: bool,
    detail: String,
}

#[derive(Default, Serialize)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: impl Into<String>, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Check {
            check: check.into(),
            ok,
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
            let verdict = if check.ok { "ok  " } else { "FAIL" };
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

    let secret = pipeline.secrets.load(&config.name).await;
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
    report.add(
        "keys",
        decrypt::keys_from_secret(&secret, config.signature_policy)
            .map(|_| "the firm's private key and the signer key parse".to_string())
            .map_err(|e| e.to_string()),
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
                    validate_connection(sftp, pipeline.secrets.as_ref(), &config.name).await;
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
    report.add(
        "schedule",
        Ok(
            "on one machine: run `chat-archive run` from cron or a systemd timer; on AWS the \
            daily EventBridge schedule starts fetch"
                .into(),
        ),
    );
    report
}
