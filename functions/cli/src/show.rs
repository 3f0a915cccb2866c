//! Human-readable output: run summaries and the status log.

use anyhow::Context as _;
use chat_archive_core::config::ConnectorKind;
use chat_archive_core::pipeline::{count_states, LocalLayout, Pipeline, RunSummary};
use chat_archive_core::status::{self, DayStatus};

pub fn summary(layout: &LocalLayout, summary: &RunSummary) {
    let (imported, partial, duplicates, failed, pending) = count_states(&summary.days);
    println!("Run finished.");
    println!("  files fetched       {}", summary.fetched.len());
    println!("  files processed     {}", summary.processed_files.len());
    println!("  mails converted     {}", summary.mails);
    println!("  items imported      {imported}");
    println!("  partially imported  {partial}");
    println!("  skipped duplicates  {duplicates}");
    println!("  failed              {failed}");
    if pending > 0 {
        println!("  still pending       {pending}");
    }
    for (key, error) in &summary.quarantined {
        println!("  QUARANTINED {key}: {error}");
    }
    for (key, reason) in &summary.waiting {
        println!("  WAITING {key}: {reason}");
    }
    for day in &summary.days {
        print_day(day);
    }
    println!("Mailboxes: {}", layout.mailboxes().display());
    println!("Status log: {}", layout.store().join("reports").display());
}

/// The run's summary as one JSON object: files, mails, quarantine (key and
/// reason), each day's status record and the alerts of a strict run.
pub fn summary_json(
    summary: &RunSummary,
    alerts: &[chat_archive_core::alerts::Alert],
) -> anyhow::Result<()> {
    let quarantined: Vec<_> = summary
        .quarantined
        .iter()
        .map(|(key, error)| serde_json::json!({ "key": key, "error": error.to_string() }))
        .collect();
    let report = serde_json::json!({
        "fetched": summary.fetched,
        "processed_files": summary.processed_files,
        "mails": summary.mails,
        "quarantined": quarantined,
        "waiting": summary
            .waiting
            .iter()
            .map(|(key, reason)| serde_json::json!({ "key": key, "reason": reason }))
            .collect::<Vec<_>>(),
        "days": summary.days,
        "alerts": alerts,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn print_day(day: &DayStatus) {
    println!();
    println!("Status log {} {}", day.connector, day.day);
    println!(
        "  available from source {} | after fan-out {} | imported {} | partial {} | duplicates {} | failed {} | pending {}",
        day.available_from_source,
        day.available_after_fanout,
        day.imported,
        day.partially_imported,
        day.skipped_duplicates,
        day.failed,
        day.pending
    );
    let e = &day.events;
    println!(
        "  events received {} | delivered {} | already delivered {} | quarantined {}",
        e.received, e.delivered, e.already_delivered, e.quarantined
    );
    for source in &day.sources {
        println!(
            "  from {}: {} item(s), {} event(s) ({} new, {} already delivered, {} quarantined)",
            source.key,
            source.items,
            source.events.received,
            source.events.delivered,
            source.events.already_delivered,
            source.events.quarantined
        );
    }
    for note in &day.notes {
        println!("  {note}");
    }
    for row in day.failures.iter().take(FAILURES_SHOWN) {
        println!(
            "  FAILED item {} user {} mailbox {}: {}",
            row.item_id,
            or_dash(&row.source_user),
            or_dash(&row.target_mailbox),
            row.reason
        );
    }
    more_in_the_log(day, day.failures.len(), FAILURES_SHOWN, "failure rows");
    for row in day.unmapped_participants.iter().take(UNMAPPED_SHOWN) {
        println!(
            "  unmapped participant {} in item {}: {}",
            row.source_user, row.item_id, row.reason
        );
    }
    more_in_the_log(
        day,
        day.unmapped_participants.len(),
        UNMAPPED_SHOWN,
        "unmapped participants",
    );
    if !day.counts_add_up() {
        println!("  WARNING: the counts do not add up; report this as a bug");
    }
}

/// Rows of a day shown on the terminal; every row is in the day's
/// `status.csv` (a day of a million short chats with outside counterparties
/// has a million unmapped participants).
const FAILURES_SHOWN: usize = 100;
const UNMAPPED_SHOWN: usize = 20;

fn more_in_the_log(day: &DayStatus, rows: usize, shown: usize, what: &str) {
    if rows > shown {
        println!(
            "  ... and {} more {what}: every row is in {}status.csv",
            rows - shown,
            chat_archive_core::layout::report_day_prefix(&day.connector, &day.day)
        );
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

pub async fn status(layout: &LocalLayout, day: Option<&str>, json: bool) -> anyhow::Result<()> {
    let pipeline = Pipeline::local(layout)?;
    let store = pipeline.ctx.store.as_ref();
    let mut shown = 0;
    for config in pipeline.ctx.connectors.iter() {
        let connector = &config.name;
        // ICE and Bloomberg deliver a file every day, so a day asked for by
        // name always gets their log ("No items ingested" when nothing
        // came); XIP files are occasional and only days that had one are
        // shown.
        let days = match day {
            Some(day) if config.kind != ConnectorKind::Xip => vec![day.to_string()],
            Some(day) => status::days(store, connector)
                .await?
                .into_iter()
                .filter(|d| d == day)
                .collect(),
            None => status::days(store, connector).await?,
        };
        for day in days {
            let status = status::rebuild_day(store, connector, &day)
                .await
                .with_context(|| format!("reading the {connector} status log of {day}"))?;
            shown += 1;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_day(&status);
            }
        }
    }
    if shown == 0 {
        println!("No status log yet in {}", layout.store().display());
    }
    Ok(())
}

/// Writes the status page of every connector (see `status_page`).
pub async fn status_page(layout: &LocalLayout, file: &std::path::Path) -> anyhow::Result<()> {
    let pipeline = Pipeline::local(layout)?;
    let reports = std::path::absolute(layout.store().join("reports"))
        .unwrap_or_else(|_| layout.store().join("reports"));
    let (html, _) = pipeline
        .status_page(&reports.to_string_lossy(), true)
        .await?;
    std::fs::write(file, html).with_context(|| format!("writing {}", file.display()))?;
    println!("Status page: {}", file.display());
    Ok(())
}
