//! `chat-archive demo`: a firm called ACME on embedded defaults, with the
//! bundled sample export signed by a stand-in for ICE and encrypted to the
//! firm's freshly generated key, then the whole pipeline.

use std::collections::BTreeSet;

use anyhow::Context as _;
use chat_archive_core::adapters::MaildirSink;
use chat_archive_core::config::{ConnectorConfig, Settings};
use chat_archive_core::crypto::{self, SignaturePolicy};
use chat_archive_core::events::FetchRequest;
use chat_archive_core::formats::ice::IceReader;
use chat_archive_core::keygen;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::SecretValue;

const SAMPLE: &str = include_str!("../../../examples/ice/sample-export.xml");
const SAMPLE_NAME: &str = "ACME_2026-11-20.xml.pgp";
const FIRM_DOMAIN: &str = "acme.example";

pub async fn run(layout: &LocalLayout) -> anyhow::Result<()> {
    println!("Demo data directory: {}", layout.data_dir.display());
    write_settings(layout)?;
    let pipeline = Pipeline::local(layout)?;
    let recipient = ensure_keys(&pipeline).await?;
    create_mailboxes(layout, &pipeline.ctx.config)?;
    drop_sample(layout, &pipeline, &recipient).await?;

    let bar = crate::progress::Bar::new();
    let summary = pipeline.run(&FetchRequest::default(), &bar).await;
    bar.finish();
    let summary = summary?;
    crate::show::summary(layout, &summary);
    print_mailboxes(layout)?;
    Ok(())
}

fn write_settings(layout: &LocalLayout) -> anyhow::Result<()> {
    if layout.settings().exists() {
        return Ok(());
    }
    let mut ice = ConnectorConfig::ice();
    ice.firm_domains = vec![FIRM_DOMAIN.into()];
    ice.signature_policy = SignaturePolicy::Required;
    let settings = Settings::single(ice);
    std::fs::create_dir_all(&layout.data_dir)?;
    std::fs::write(layout.settings(), settings.to_toml()).context("writing config.toml")?;
    println!(
        "Wrote {} (firm domain {FIRM_DOMAIN}, signatures required)",
        layout.settings().display()
    );
    Ok(())
}

/// The firm's key pair (made once) and a stand-in ICE signing key.
async fn ensure_keys(pipeline: &Pipeline) -> anyhow::Result<pgp::composed::SignedPublicKey> {
    let connector = pipeline.ctx.config.secret_name();
    let existing = pipeline.secrets.load(connector).await.ok();
    if let Some(public) = existing
        .as_ref()
        .and_then(|s| s.get(fields::PGP_PUBLIC_KEY))
    {
        return Ok(crypto::parse_public_key(
            public.expose(),
            "the stored public key",
        )?);
    }
    println!("Generating the firm's SSH and OpenPGP keys (stored in secrets.json) ...");
    let generated = keygen::generate_connector_keys(
        "ACME",
        "ACME chat archive <archive@acme.example>",
        &keygen::random_passphrase(),
    )?;
    let signer = keygen::generate_pgp("ICE Chat demo signer <signer@ice.example>", "")?;
    let mut secret_fields = generated.secret_fields;
    secret_fields.insert(
        fields::SIGNER_PUBLIC_KEY.into(),
        SecretValue::new(signer.public_armored()?),
    );
    secret_fields.insert(
        "demo_signer_private_key".into(),
        SecretValue::new(signer.secret_armored()?),
    );
    pipeline.secrets.update(connector, secret_fields).await?;
    Ok(generated.pgp.public)
}

/// Mailboxes for every firm participant of the sample.
fn create_mailboxes(
    layout: &LocalLayout,
    config: &chat_archive_core::config::ConnectorConfig,
) -> anyhow::Result<()> {
    let sink = MaildirSink::new(layout.mailboxes());
    let mut addresses = BTreeSet::new();
    for conversation in IceReader::new(SAMPLE.as_bytes(), "sample-export.xml") {
        for participant in conversation?.participants {
            if let Some(email) = participant.email.filter(|e| config.in_firm_domains(e)) {
                addresses.insert(email.to_lowercase());
            }
        }
    }
    for address in addresses {
        sink.create_mailbox(&address)?;
    }
    Ok(())
}

async fn drop_sample(
    layout: &LocalLayout,
    pipeline: &Pipeline,
    recipient: &pgp::composed::SignedPublicKey,
) -> anyhow::Result<()> {
    let target = layout.drop_dir().join(SAMPLE_NAME);
    if target.exists() {
        println!("Sample export already in {}", target.display());
        return Ok(());
    }
    let secret = pipeline
        .secrets
        .load(pipeline.ctx.config.secret_name())
        .await?;
    let signer = crypto::parse_secret_key(
        secret.require("demo_signer_private_key")?.expose(),
        "the demo signer key",
    )?;
    std::fs::create_dir_all(layout.drop_dir())?;
    let mut out = Vec::new();
    let password = pgp::types::Password::empty();
    crypto::encrypt_and_sign(
        SAMPLE.as_bytes(),
        "ACME_2026-11-20.xml",
        recipient,
        Some((&signer, password)),
        &mut out,
    )?;
    std::fs::write(&target, out).with_context(|| format!("writing {}", target.display()))?;
    println!(
        "Dropped the signed, encrypted sample export: {}",
        target.display()
    );
    Ok(())
}

fn print_mailboxes(layout: &LocalLayout) -> anyhow::Result<()> {
    println!();
    println!("Where the mail landed:");
    let mut mailboxes: Vec<_> = std::fs::read_dir(layout.mailboxes())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    mailboxes.sort();
    for mailbox in mailboxes {
        let folder = mailbox.join("Maildir").join(".ICE Chat").join("cur");
        let count = std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0);
        println!("  {count:>3} mail(s) in {}", folder.display());
    }
    Ok(())
}
