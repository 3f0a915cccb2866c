//! `chat-archive xip pack | verify`: produce and check XIP files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chat_archive_core::crypto;
use chat_archive_core::formats::xip::{self, Limits, Trust};

#[derive(clap::Subcommand)]
pub enum XipCommand {
    /// Build (and sign) a XIP file from a folder holding items/<id>/item.json
    /// and attachments.
    Pack {
        /// The folder of items.
        folder: PathBuf,
        /// The XIP file to write.
        out: PathBuf,
        /// Armored OpenPGP secret key to sign the manifest with (unsigned without).
        #[arg(long)]
        signer_key: Option<PathBuf>,
        /// File holding the signer key's passphrase (none by default).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Verify a XIP file (signature, structure, every digest) and print a verdict.
    Verify {
        file: PathBuf,
        /// Armored OpenPGP public key(s) allowed to sign (repeatable).
        #[arg(long = "signer", required_unless_present = "allow_unsigned")]
        signers: Vec<PathBuf>,
        /// Accept an unsigned manifest.
        #[arg(long)]
        allow_unsigned: bool,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: XipCommand) -> anyhow::Result<()> {
    match command {
        XipCommand::Pack {
            folder,
            out,
            signer_key,
            passphrase_file,
        } => pack(
            &folder,
            &out,
            signer_key.as_deref(),
            passphrase_file.as_deref(),
        ),
        XipCommand::Verify {
            file,
            signers,
            allow_unsigned,
            json,
        } => verify(&file, &signers, allow_unsigned, json),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn pack(
    folder: &Path,
    out: &Path,
    signer_key: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let producer = format!("chat-archive {}", env!("CARGO_PKG_VERSION"));
    let manifest = match signer_key {
        Some(path) => {
            let key = crypto::parse_secret_key(&read(path)?, &path.display().to_string())?;
            let passphrase = match passphrase_file {
                Some(p) => read(p)?.trim_end_matches(['\r', '\n']).to_string(),
                None => String::new(),
            };
            let password = passphrase.as_str().into();
            xip::pack(
                folder,
                file,
                &producer,
                Some(xip::pgp_signer(&key, &password)),
            )?
        }
        None => xip::pack(
            folder,
            file,
            &producer,
            None::<fn(&[u8]) -> chat_archive_core::Result<Vec<u8>>>,
        )?,
    };
    println!(
        "Wrote {} ({} entries{})",
        out.display(),
        manifest.entries.len(),
        if signer_key.is_some() {
            ", signed"
        } else {
            ", UNSIGNED"
        }
    );
    Ok(())
}

fn verify(
    file: &Path,
    signers: &[PathBuf],
    allow_unsigned: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for path in signers {
        keys.extend(crypto::parse_public_keys(
            &read(path)?,
            &path.display().to_string(),
        )?);
    }
    let trust = Trust {
        signers: &keys,
        allow_unsigned,
    };
    match xip::verify(
        file,
        &file.display().to_string(),
        &trust,
        &Limits::default(),
    ) {
        Ok(verified) => {
            let items = verified
                .manifest
                .entries
                .iter()
                .filter(|e| e.path.ends_with("/item.json"))
                .count();
            if json {
                let report = serde_json::json!({
                    "file": file.display().to_string(), "valid": true,
                    "entries": verified.manifest.entries.len(), "items": items,
                    "signer": verified.signer,
                });
                println!("{report}");
                return Ok(());
            }
            println!(
                "VALID: {} entries, {items} items, signed by {}",
                verified.manifest.entries.len(),
                verified
                    .signer
                    .as_deref()
                    .unwrap_or("nobody (unsigned allowed)")
            );
            Ok(())
        }
        Err(error) => {
            match json {
                true => println!(
                    "{}",
                    serde_json::json!({
                        "file": file.display().to_string(), "valid": false,
                        "error": error.to_string(),
                    })
                ),
                false => println!("INVALID: {error}"),
            }
            anyhow::bail!("verification failed")
        }
    }
}
