//! `chat-archive export rsmf` and `chat-archive rsmf validate`: RSMF 2.0
//! files for review platforms, and the check they must pass.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chat_archive_core::rsmf::export::{export, ExportRequest, LOAD_FILE};
use chat_archive_core::rsmf::validate::validate;
use chrono::NaiveDate;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ExportCommand {
    /// One RSMF per conversation-day from what the store holds (every event
    /// once, however many files it came in), and a load file `export.csv`.
    Rsmf {
        /// One day (YYYY-MM-DD).
        #[arg(long, conflicts_with_all = ["since", "until"], required_unless_present = "since")]
        day: Option<NaiveDate>,
        /// From this day...
        #[arg(long, requires = "until")]
        since: Option<NaiveDate>,
        /// ...to this one (inclusive).
        #[arg(long, requires = "since")]
        until: Option<NaiveDate>,
        /// Only conversations this address took part in; it is named the custodian.
        #[arg(long)]
        custodian: Option<String>,
        /// Only this conversation (its id).
        #[arg(long)]
        conversation: Option<String>,
        #[arg(long, default_value = "ice")]
        connector: String,
        /// Where the files go.
        #[arg(long)]
        out: PathBuf,
        /// Print the load file's rows as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum RsmfCommand {
    /// Check RSMF files: the manifest against the 2.0.0 schema's rules, and
    /// the cross-checks a review platform makes (references, files, headers).
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub async fn run_export(layout: &LocalLayout, command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::Rsmf {
        day,
        since,
        until,
        custodian,
        conversation,
        connector,
        out,
        json,
    } = command;
    let (since, until) = match (day, since, until) {
        (Some(day), _, _) => (day, day),
        (None, Some(since), Some(until)) if since <= until => (since, until),
        (None, Some(since), Some(until)) => bail!("--since {since} is after --until {until}"),
        _ => bail!("give --day D, or --since D --until D"),
    };
    let pipeline = Pipeline::local(layout)?;
    let ctx = pipeline.connector(&connector)?;
    let request = ExportRequest {
        since,
        until,
        custodian,
        conversation,
        out: out.clone(),
    };
    let written = export(ctx.store.as_ref(), &ctx.config, &request)
        .await
        .with_context(|| format!("exporting {connector} {since}..{until}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&written)?);
        return Ok(());
    }
    for row in &written {
        println!(
            "{}  {} {} part {}: {} event(s), {} attachment(s)",
            row.file, row.day, row.conversation, row.part, row.events, row.attachments
        );
    }
    println!(
        "{} RSMF file(s) in {}; load file {}",
        written.len(),
        out.display(),
        out.join(LOAD_FILE).display()
    );
    Ok(())
}

pub fn run_validate(command: RsmfCommand) -> anyhow::Result<()> {
    let RsmfCommand::Validate { files } = command;
    let mut invalid = 0;
    for file in &files {
        let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let problems = validate(&raw);
        if problems.is_empty() {
            println!("VALID   {}", file.display());
            continue;
        }
        invalid += 1;
        println!("INVALID {}", file.display());
        for problem in problems {
            println!("  {problem}");
        }
    }
    if invalid > 0 {
        bail!("{invalid} of {} file(s) invalid", files.len());
    }
    Ok(())
}
