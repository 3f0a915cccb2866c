//! Human-readable output: run summaries and the status log.

use anyhow::Context as _;
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
    for day in &summary.days {
        print_day(day);
    }
    println!("Mailboxes: {}", layout.mailboxes().display());
    println!("Status log: {}", layout.store().join("reports").display());
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
    for note in &day.notes {
        println!("  {note}");
    }
    for row in &day.failures {
        println!(
            "  FAILED item {} user {} mailbox {}: {}",
            row.item_id,
            or_dash(&row.source_user),
            or_dash(&row.target_mailbox),
            row.reason
        );
    }
    for row in &day.unmapped_participants {
        println!(
            "  unmapped participant {} in item {}: {}",
            row.source_user, row.item_id, row.reason
        );
    }
    if !day.counts_add_up() {
        println!("  WARNING: the counts do not add up; report this as a bug");
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
    let connector = &pipeline.ctx.config.name;
    let days = match day {
        Some(day) => vec![day.to_string()],
        None => status::days(store, connector).await?,
    };
    if days.is_empty() {
        println!("No status log yet in {}", layout.store().display());
    }
    for day in days {
        let status = status::rebuild_day(store, connector, &day)
            .await
            .with_context(|| format!("reading the status log of {day}"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_day(&status);
        }
    }
    Ok(())
}
