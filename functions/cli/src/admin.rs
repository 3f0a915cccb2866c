//! The operator's set-up commands: the mapping CSV, Maildir mailboxes and
//! the secret's fields, each by command instead of by editing files. The
//! mapping and the secret live in the data directory (embedded defaults) or,
//! given `--bucket` / `--secret-id`, on AWS (credentials and region from the
//! default chain, `AWS_ENDPOINT_URL` for a stand-in).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use std::sync::Arc;

use chat_archive_core::adapters::MaildirSink;
use chat_archive_core::aws::{self, SdkOptions};
use chat_archive_core::mail::is_plausible_address;
use chat_archive_core::mapping::MappingTable;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{Metadata, ObjectStore, SecretStore, SecretValue};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum MappingCommand {
    /// Print the mapping CSV template.
    Template,
    /// Check a mapping CSV (every problem by row number and reason), store it
    /// for the connector and show what changed against the one in use.
    /// Fails only when no row is usable.
    Set {
        file: PathBuf,
        /// `ice` (default) or `xip`.
        #[arg(long, default_value = "ice")]
        connector: String,
        /// Store it in this S3 bucket (the deployed archive's) instead of
        /// the data directory.
        #[arg(long)]
        bucket: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the mapping in use (one row per ImId) and its digest.
    Show {
        #[arg(long, default_value = "ice")]
        connector: String,
        /// Read it from this S3 bucket instead of the data directory.
        #[arg(long)]
        bucket: Option<String>,
        /// Print JSON instead of CSV.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// Provision Maildir mailboxes (a mailbox is valid for the Maildir sink
    /// once its directory exists). Only addresses inside the firm's domains.
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// The provisioned mailboxes with their mail count per folder.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set one field of the connector's secret from a file or standard input
    /// (the value is never printed).
    Set {
        field: String,
        #[arg(long, conflicts_with = "stdin", required_unless_present = "stdin")]
        file: Option<PathBuf>,
        #[arg(long)]
        stdin: bool,
        #[arg(long, default_value = "ice")]
        connector: String,
        /// Write to this Secrets Manager secret (name or ARN) instead of
        /// the data directory's secrets.json.
        #[arg(long)]
        secret_id: Option<String>,
    },
    /// The field names the connector's secret holds (never their values).
    List {
        #[arg(long, default_value = "ice")]
        connector: String,
        /// Read this Secrets Manager secret instead of secrets.json.
        #[arg(long)]
        secret_id: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Every field a connector secret may hold.
const KNOWN_FIELDS: [&str; 16] = [
    fields::FIRM_CODE,
    fields::SFTP_PASSWORD,
    fields::SSH_PRIVATE_KEY,
    fields::SSH_PUBLIC_KEY,
    fields::SSH_HOST_KEY,
    fields::PGP_PRIVATE_KEY,
    fields::PGP_PASSPHRASE,
    fields::PGP_PREVIOUS_PRIVATE_KEY,
    fields::PGP_PREVIOUS_PASSPHRASE,
    fields::PGP_PUBLIC_KEY,
    fields::SIGNER_PUBLIC_KEY,
    fields::XIP_SIGNER_PUBLIC_KEY,
    fields::MAILBOX_PASSWORD,
    fields::MAILBOX_OAUTH_TOKEN,
    fields::OAUTH_CLIENT_SECRET,
    fields::OAUTH_PRIVATE_KEY,
];

/// The store key of a connector's mapping CSV.
fn mapping_key(pipeline: &Pipeline, connector: &str) -> anyhow::Result<String> {
    Ok(pipeline.connector(connector)?.config.mapping_csv)
}

/// The store the mapping lives in: the bucket when given, else the data
/// directory's; and the mapping's key in it.
async fn mapping_store(
    layout: &LocalLayout,
    connector: &str,
    bucket: Option<&str>,
) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
    let pipeline = Pipeline::local(layout)?;
    let key = mapping_key(&pipeline, connector)?;
    let store: Arc<dyn ObjectStore> = match bucket {
        Some(bucket) => Arc::new(aws::bucket_store(bucket, &SdkOptions::from_env()?).await),
        None => pipeline.ctx.store.clone(),
    };
    Ok((store, key))
}

/// The secret store (the Secrets Manager secret when given, else the data
/// directory's secrets.json) and the name the connector's secret has in it
/// (XIP shares ICE's in the old settings form).
async fn secret_store(
    layout: &LocalLayout,
    connector: &str,
    secret_id: Option<&str>,
) -> anyhow::Result<(Arc<dyn SecretStore>, String)> {
    let pipeline = Pipeline::local(layout)?;
    let name = pipeline
        .ctx
        .connector(connector)
        .map_or(connector, |c| c.secret_name())
        .to_string();
    let store: Arc<dyn SecretStore> = match secret_id {
        Some(id) => Arc::new(aws::secret_store(&name, id, &SdkOptions::from_env()?).await),
        None => pipeline.secrets,
    };
    Ok((store, name))
}

pub async fn mapping(layout: &LocalLayout, command: MappingCommand) -> anyhow::Result<()> {
    match command {
        MappingCommand::Template => {
            print!("{}", chat_archive_core::mapping::csv_template());
            Ok(())
        }
        MappingCommand::Set {
            file,
            connector,
            bucket,
            json,
        } => {
            let (store, key) = mapping_store(layout, &connector, bucket.as_deref()).await?;
            set_mapping(store.as_ref(), &key, &file, json).await
        }
        MappingCommand::Show {
            connector,
            bucket,
            json,
        } => {
            let (store, key) = mapping_store(layout, &connector, bucket.as_deref()).await?;
            show_mapping(store.as_ref(), &key, &connector, json).await
        }
    }
}

async fn set_mapping(
    store: &dyn ObjectStore,
    key: &str,
    file: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let new = MappingTable::from_csv(&bytes, &name);
    if new.is_empty() {
        for problem in &new.problems {
            eprintln!("{problem}");
        }
        bail!("{name}: no usable row; the mapping in use is unchanged");
    }
    let current = match store.head(key).await? {
        Some(_) => MappingTable::from_csv(&store.get_bytes(key).await?, key),
        None => MappingTable::default(),
    };
    let diff = current.diff(&new);
    let mut metadata = Metadata::new();
    metadata.insert("stage".into(), "mapping-set".into());
    let info = store.put_bytes(key, bytes, &metadata).await?;
    let problems: Vec<String> = new.problems.iter().map(ToString::to_string).collect();
    if json {
        let report = serde_json::json!({
            "key": key, "sha256": info.sha256, "rows": new.len(),
            "problems": problems, "changes": diff,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for problem in &problems {
        println!("skipped: {problem}");
    }
    println!(
        "stored {key} (sha256 {}): {} row(s); {} added, {} removed, {} changed",
        info.sha256,
        new.len(),
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len()
    );
    for (im_id, mailbox) in &diff.added {
        println!("  + {im_id} -> {mailbox}");
    }
    for (im_id, mailbox) in &diff.removed {
        println!("  - {im_id} -> {mailbox}");
    }
    for (im_id, before, after) in &diff.changed {
        println!("  ~ {im_id}: {before} -> {after}");
    }
    Ok(())
}

async fn show_mapping(
    store: &dyn ObjectStore,
    key: &str,
    connector: &str,
    json: bool,
) -> anyhow::Result<()> {
    let Some(info) = store.head(key).await? else {
        if json {
            println!("{}", serde_json::json!({ "key": key, "rows": [] }));
        } else {
            println!("# no mapping CSV for {connector}: automatic mapping only");
        }
        return Ok(());
    };
    let table = MappingTable::from_csv(&store.get_bytes(key).await?, key);
    if json {
        let rows: Vec<_> = table
            .rows()
            .iter()
            .map(|(im_id, mailbox)| serde_json::json!({ "im_id": im_id, "mailbox": mailbox }))
            .collect();
        let problems: Vec<String> = table.problems.iter().map(ToString::to_string).collect();
        let report = serde_json::json!({
            "key": key, "sha256": info.sha256, "rows": rows, "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("# {key} sha256 {}", info.sha256);
    println!("ImId,Mailbox");
    for (im_id, mailbox) in table.rows() {
        println!("{im_id},{mailbox}");
    }
    for problem in &table.problems {
        println!("# skipped: {problem}");
    }
    Ok(())
}

pub async fn mailbox(layout: &LocalLayout, command: MailboxCommand) -> anyhow::Result<()> {
    let sink = MaildirSink::new(layout.mailboxes());
    match command {
        MailboxCommand::Add { addresses } => {
            let pipeline = Pipeline::local(layout)?;
            let config = &pipeline.ctx.config;
            for address in &addresses {
                let address = address.trim().to_lowercase();
                let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                if !is_plausible_address(&address) {
                    bail!("{address:?} is not a mailbox address");
                }
                if !config
                    .firm_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
                {
                    bail!(
                        "{address}: {domain} is not one of the firm's domains {:?} (config.toml \
                         firm_domains); such a mailbox would never receive mail",
                        config.firm_domains
                    );
                }
                let dir = sink.create_mailbox(&address)?;
                println!("{address}: {}", dir.display());
            }
            Ok(())
        }
        MailboxCommand::List { json } => {
            let root = layout.mailboxes();
            let mut mailboxes: Vec<_> = std::fs::read_dir(&root)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            mailboxes.sort();
            let listed: Vec<(String, Vec<(String, usize)>)> = mailboxes
                .iter()
                .map(|mailbox| {
                    let name = mailbox.file_name().unwrap_or_default();
                    (
                        name.to_string_lossy().into_owned(),
                        folder_counts(&mailbox.join("Maildir")),
                    )
                })
                .collect();
            if json {
                let report: Vec<_> = listed
                    .iter()
                    .map(|(mailbox, folders)| {
                        let folders: serde_json::Map<String, serde_json::Value> = folders
                            .iter()
                            .map(|(folder, count)| (folder.clone(), (*count).into()))
                            .collect();
                        serde_json::json!({ "mailbox": mailbox, "folders": folders })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            if listed.is_empty() {
                println!(
                    "no mailbox under {} (add one: chat-archive mailbox add ADDRESS)",
                    root.display()
                );
            }
            for (mailbox, folders) in listed {
                println!("{mailbox}");
                for (folder, count) in folders {
                    println!("  {folder:<20} {count} mail(s)");
                }
            }
            Ok(())
        }
    }
}

/// Each Maildir++ folder (`INBOX`, `.ICE Chat` as `ICE Chat`, `.Inbox.XIP`
/// as `Inbox/XIP`) with its message count.
fn folder_counts(maildir: &Path) -> Vec<(String, usize)> {
    let count = |dir: &Path| {
        ["cur", "new"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
            .map(|entries| entries.count())
            .sum::<usize>()
    };
    let mut out = vec![("INBOX".to_string(), count(maildir))];
    let mut folders: Vec<_> = std::fs::read_dir(maildir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    folders.sort();
    for dir in folders {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(folder) = name.strip_prefix('.').filter(|_| dir.is_dir()) {
            out.push((folder.replace('.', "/"), count(&dir)));
        }
    }
    out
}

pub async fn secret(layout: &LocalLayout, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set {
            field,
            file,
            stdin,
            connector,
            secret_id,
        } => {
            if !KNOWN_FIELDS.contains(&field.as_str()) {
                bail!(
                    "unknown secret field {field:?}; the fields are: {}",
                    KNOWN_FIELDS.join(", ")
                );
            }
            let mut value = String::new();
            match (&file, stdin) {
                (Some(path), _) => {
                    value = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                (None, true) => {
                    std::io::stdin()
                        .read_to_string(&mut value)
                        .context("reading standard input")?;
                }
                (None, false) => bail!("give the value with --file FILE or --stdin"),
            }
            // A passphrase or password typed with a trailing newline must
            // not keep it; keys keep their inner line breaks.
            let value = value.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                bail!("the value for {field} is empty: nothing changed");
            }
            let update = [(field.clone(), SecretValue::new(value))]
                .into_iter()
                .collect();
            let (secrets, name) = secret_store(layout, &connector, secret_id.as_deref()).await?;
            secrets.update(&name, update).await?;
            println!("{connector}: {field} set");
            Ok(())
        }
        SecretCommand::List {
            connector,
            secret_id,
            json,
        } => {
            let (secrets, name) = secret_store(layout, &connector, secret_id.as_deref()).await?;
            let secret = secrets.load(&name).await?;
            if json {
                // Names only: a value never leaves the store by this command.
                let set: Vec<&String> = secret.fields.keys().collect();
                let missing: Vec<&str> = KNOWN_FIELDS
                    .into_iter()
                    .filter(|f| secret.get(f).is_none())
                    .collect();
                let report =
                    serde_json::json!({ "secret": secret.name, "set": set, "missing": missing });
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            for field in KNOWN_FIELDS {
                let state = if secret.get(field).is_some() {
                    "set"
                } else {
                    "-"
                };
                println!("{field:<24} {state}");
            }
            for field in secret
                .fields
                .keys()
                .filter(|f| !KNOWN_FIELDS.contains(&f.as_str()))
            {
                println!("{field:<24} set (not a field this version reads)");
            }
            Ok(())
        }
    }
}
