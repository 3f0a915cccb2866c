//! `chat-archive`: the operator's command line.

mod admin;
mod demo;
mod doctor;
mod progress;
mod rsmf;
mod sftp;
mod show;
mod xip;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chat_archive_core::events::FetchRequest;
use chat_archive_core::function::{self, Function};
use chat_archive_core::keygen;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};

/// Archive ICE Chat exports into mailboxes: fetch, decrypt and verify,
/// convert to mail, map users, import, and keep a status log.
#[derive(Parser)]
#[command(name = "chat-archive", version, propagate_version = true)]
struct Cli {
    /// Data directory of the embedded defaults: store/, secrets.json,
    /// mailboxes/, drop/ and config.toml live here.
    #[arg(
        long,
        global = true,
        env = "CHAT_ARCHIVE_DATA",
        default_value = "archive-data"
    )]
    data_dir: PathBuf,

    /// Log level (error, warn, info, debug) or a tracing filter.
    #[arg(
        long,
        global = true,
        env = "CHAT_ARCHIVE_LOG",
        default_value = "warn,pgp=error"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up a demo firm (keys, mailboxes, a signed and encrypted sample
    /// export in drop/) and run the whole pipeline on it.
    Demo,
    /// Run the whole pipeline once: new files from drop/ through decrypt,
    /// convert and import, then the status log.
    Run(RunArgs),
    /// Key pairs for the ICE set-up.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The custom user mapping (ImId -> mailbox): template, set, show.
    #[command(subcommand)]
    Mapping(admin::MappingCommand),
    /// Maildir mailboxes of the embedded defaults: add, list.
    #[command(subcommand)]
    Mailbox(admin::MailboxCommand),
    /// The connector's secret (keys, passwords): set a field, list fields.
    #[command(subcommand)]
    Secret(admin::SecretCommand),
    /// Show the status log of a day (default: every day on record).
    Status(StatusArgs),
    /// Re-invoke one stage by hand with an event file (see events/).
    Invoke(InvokeArgs),
    /// Print the effective settings (embedded defaults merged with config.toml).
    Config,
    /// Check the ICE SFTP site: connect, verify the pinned host key, log in,
    /// list the export directory, and print a verdict.
    ValidateConnection {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// XIP files: build and sign one, or verify one.
    #[command(subcommand)]
    Xip(xip::XipCommand),
    /// Check everything a run needs (settings, secret fields, keys, the
    /// SFTP site, the store, the mapping's mailboxes): a line and a verdict each.
    Doctor {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The event ledger (which chat events each folder already holds).
    #[command(subcommand)]
    State(StateCommand),
    /// Files for legal review tools (RSMF 2.0), from what the store holds.
    #[command(subcommand)]
    Export(rsmf::ExportCommand),
    /// RSMF files: check them as a review platform's validator would.
    #[command(subcommand)]
    Rsmf(rsmf::RsmfCommand),
}

#[derive(Subcommand)]
enum StateCommand {
    /// Rebuild the event ledger from the mails in the store, for an archive
    /// made before the ledger existed (see docs/exactly-once.md). Safe to
    /// run again: mails already recorded are left alone.
    Rebuild {
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Backfill: re-fetch the files modified on or after this day.
    #[arg(long)]
    since: Option<NaiveDate>,
    /// Backfill: re-fetch the files modified on or before this day.
    #[arg(long)]
    until: Option<NaiveDate>,
    /// Re-fetch this file by name (repeatable).
    #[arg(long = "file")]
    files: Vec<String>,
    /// Fail (non-zero exit) when any alert holds: a day without a file, a
    /// file left on the source, a key about to expire, old quarantine.
    #[arg(long)]
    strict: bool,
    /// Print the summary as JSON (progress stays on standard error).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate the SSH key pair (SFTP login) and the OpenPGP key pair (ICE
    /// encrypts exports to it); private halves go to the secrets store, public
    /// halves are printed and saved to --out.
    Generate {
        /// The firm code ICE assigned (the SFTP user name).
        #[arg(long)]
        firm_code: String,
        /// User id of the OpenPGP key, e.g. "ACME chat archive <archive@acme.example>".
        #[arg(long)]
        user_id: String,
        /// File holding the key passphrase (default: a random one, kept in the secrets store).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Where to save the public halves.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Replace keys already in the secrets store.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The day (YYYY-MM-DD) to show.
    #[arg(long)]
    day: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the status page (one self-contained HTML file) here instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["day", "json"])]
    html: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InvokeArgs {
    /// Which function to invoke.
    #[arg(value_enum)]
    function: FunctionName,
    /// The event (JSON), e.g. events/s3-put-raw.json.
    event: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FunctionName {
    Fetch,
    Decrypt,
    Convert,
    Import,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run_cli().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line naming file, place and reason (the whole chain of
            // causes); the backtrace only when asked for (RUST_BACKTRACE=1).
            eprintln!("error: {error:#}");
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("{}", error.backtrace());
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal, and never when NO_COLOR is set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let layout = LocalLayout::new(&cli.data_dir);
    match cli.command {
        Command::Demo => demo::run(&layout).await,
        Command::Run(args) => run(&layout, args).await,
        Command::Keys(KeysCommand::Generate {
            firm_code,
            user_id,
            passphrase_file,
            out,
            force,
        }) => generate_keys(&layout, &firm_code, &user_id, passphrase_file, &out, force).await,
        Command::Mapping(command) => admin::mapping(&layout, command).await,
        Command::Mailbox(command) => admin::mailbox(&layout, command).await,
        Command::Secret(command) => admin::secret(&layout, command).await,
        Command::Status(StatusArgs {
            html: Some(file), ..
        }) => show::status_page(&layout, &file).await,
        Command::Status(args) => show::status(&layout, args.day.as_deref(), args.json).await,
        Command::Invoke(args) => invoke(&layout, args).await,
        Command::ValidateConnection { json } => sftp::validate(&layout, json).await,
        Command::Xip(command) => xip::run(command),
        Command::Doctor { json } => doctor::run(&layout, json).await,
        Command::Export(command) => rsmf::run_export(&layout, command).await,
        Command::Rsmf(command) => rsmf::run_validate(command),
        Command::State(StateCommand::Rebuild { json }) => {
            let pipeline = Pipeline::local(&layout)?;
            for connector in &pipeline.connector_names() {
                let rebuilt =
                    chat_archive_core::ledger::rebuild(pipeline.ctx.store.as_ref(), connector)
                        .await
                        .with_context(|| format!("rebuilding the {connector} event ledger"))?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(
                            &serde_json::json!({ "connector": connector, "rebuilt": rebuilt })
                        )?
                    );
                    continue;
                }
                println!(
                    "{connector}: {} mail(s) recorded, {} already recorded, {} conversation-day ledger(s) in all",
                    rebuilt.parts, rebuilt.already_recorded, rebuilt.ledgers
                );
                for skipped in &rebuilt.skipped {
                    println!("  not recorded: {skipped}");
                }
            }
            Ok(())
        }
        Command::Config => {
            let settings = chat_archive_core::config::Settings::load(&layout.settings())?;
            print!("{}", settings.to_toml());
            Ok(())
        }
    }
}

async fn run(layout: &LocalLayout, args: RunArgs) -> anyhow::Result<()> {
    let pipeline = Pipeline::local(layout)?;
    std::fs::create_dir_all(layout.drop_dir())
        .with_context(|| format!("creating {}", layout.drop_dir().display()))?;
    let request = FetchRequest {
        since: args.since,
        until: args.until,
        files: args.files,
    };
    let bar = progress::Bar::new();
    let summary = pipeline.run(&request, &bar).await;
    bar.finish();
    // In strict mode the alerts are looked at even when the run failed: a
    // failing run is when they matter most.
    let alerts = match args.strict {
        true => {
            let now = chrono::Utc::now();
            let alerts = pipeline.alerts(now, true).await?;
            for alert in &alerts {
                eprintln!("ALERT {}", alert.message);
            }
            alerts
        }
        false => Vec::new(),
    };
    let summary = summary?;
    match args.json {
        true => show::summary_json(&summary, &alerts)?,
        false => show::summary(layout, &summary),
    }
    if !summary.quarantined.is_empty() {
        bail!(
            "{} quarantined (whole files or single conversations); see the status log",
            summary.quarantined.len()
        );
    }
    if !alerts.is_empty() {
        bail!("{} alert(s) (--strict)", alerts.len());
    }
    Ok(())
}

async fn generate_keys(
    layout: &LocalLayout,
    firm_code: &str,
    user_id: &str,
    passphrase_file: Option<PathBuf>,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::local(layout)?;
    let connector = pipeline.ctx.config.secret_name().to_string();
    if let Ok(existing) = pipeline.secrets.load(&connector).await {
        if existing.get("pgp_private_key").is_some() && !force {
            bail!("the secrets store already holds keys for {connector:?}; pass --force to replace them");
        }
    }
    let passphrase = match passphrase_file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => keygen::random_passphrase(),
    };
    eprintln!("Generating keys for {firm_code} ...");
    let generated = keygen::generate_connector_keys(firm_code, user_id, &passphrase)?;
    pipeline
        .secrets
        .update(&connector, generated.secret_fields.clone())
        .await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pgp_path = out.join(format!("{firm_code}-pgp-public.asc"));
    let ssh_path = out.join(format!("{firm_code}-ssh.pub"));
    std::fs::write(&pgp_path, generated.pgp.public_armored()?)
        .with_context(|| format!("writing {}", pgp_path.display()))?;
    std::fs::write(&ssh_path, format!("{}\n", generated.ssh.public_openssh))
        .with_context(|| format!("writing {}", ssh_path.display()))?;
    println!("Private keys and passphrase stored in the secrets store ({connector}).");
    println!("Give ICE these public keys:");
    println!(
        "  OpenPGP  {}  fingerprint {}",
        pgp_path.display(),
        generated.pgp.fingerprint()
    );
    println!(
        "  SSH      {}  {}",
        ssh_path.display(),
        generated.ssh.fingerprint
    );
    println!();
    println!("{}", generated.ssh.public_openssh);
    print!("{}", generated.pgp.public_armored()?);
    Ok(())
}

async fn invoke(layout: &LocalLayout, args: InvokeArgs) -> anyhow::Result<()> {
    let function = match args.function {
        FunctionName::Fetch => Function::Fetch,
        FunctionName::Decrypt => Function::Decrypt,
        FunctionName::Convert => Function::Convert,
        FunctionName::Import => Function::Import,
    };
    let event =
        std::fs::read(&args.event).with_context(|| format!("reading {}", args.event.display()))?;
    let pipeline = Pipeline::local(layout)?;
    let response = function::invoke(&pipeline, function, &event).await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
