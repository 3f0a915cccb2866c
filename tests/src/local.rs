//! A firm on the embedded defaults in a temporary data directory, with its
//! PGP key made by GnuPG and an ICE signer key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chat_archive_core::adapters::MaildirSink;
use chat_archive_core::config::{ConnectorConfig, Settings};
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::pipeline::{LocalLayout, Pipeline};
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::SecretValue;

use crate::gpg::Gpg;

pub const FIRM_UID: &str = "ACME archive <archive@acme.example>";
pub const FIRM_PASSPHRASE: &str = "correct horse battery staple";
pub const SIGNER_UID: &str = "ICE signer <signer@ice.example>";

/// Writes a secrets file as an operator would make it: readable by its
/// owner only (the archive refuses any other).
pub fn write_secrets_file(path: &Path, json: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, json).expect("secrets file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

pub struct Firm {
    pub dir: tempfile::TempDir,
    pub layout: LocalLayout,
    pub gpg: Gpg,
}

impl Firm {
    /// A firm with domain `acme.example`, the given mailboxes, keys from GnuPG.
    pub fn new(mailboxes: &[&str], policy: SignaturePolicy) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("firm")
            .tempdir()
            .expect("temp dir");
        let layout = LocalLayout::new(dir.path().join("data"));
        let gpg = Gpg::new();
        gpg.generate_recipient(FIRM_UID, FIRM_PASSPHRASE);
        gpg.generate_signer(SIGNER_UID);
        let firm = Self { dir, layout, gpg };
        let mut config = ConnectorConfig::ice();
        config.firm_domains = vec!["acme.example".into()];
        config.signature_policy = policy;
        firm.write_config(config);
        let secrets = BTreeMap::from([
            (fields::FIRM_CODE.to_string(), SecretValue::new("ACME")),
            (
                fields::PGP_PRIVATE_KEY.to_string(),
                SecretValue::new(firm.gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE)),
            ),
            (
                fields::PGP_PASSPHRASE.to_string(),
                SecretValue::new(FIRM_PASSPHRASE),
            ),
            (
                fields::SIGNER_PUBLIC_KEY.to_string(),
                SecretValue::new(firm.gpg.export_public(SIGNER_UID)),
            ),
        ]);
        std::fs::create_dir_all(&firm.layout.data_dir).expect("data dir");
        write_secrets_file(
            &firm.layout.secrets(),
            &serde_json::to_vec(&BTreeMap::from([("ice", secrets)])).expect("json"),
        );
        let sink = MaildirSink::new(firm.layout.mailboxes());
        for mailbox in mailboxes {
            sink.create_mailbox(mailbox).expect("mailbox");
        }
        std::fs::create_dir_all(firm.layout.drop_dir()).expect("drop dir");
        firm
    }

    pub fn write_config(&self, config: ConnectorConfig) {
        std::fs::create_dir_all(&self.layout.data_dir).expect("data dir");
        std::fs::write(self.layout.settings(), Settings::single(config).to_toml())
            .expect("config.toml");
    }

    /// Runs the operator's command (`bin`: the `chat-archive` binary, which
    /// only a test target can name) on this firm's data directory.
    pub fn run_cli(&self, bin: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(&self.layout.data_dir)
            .args(args)
            .output()
            .expect("chat-archive runs")
    }

    /// [`Firm::run_cli`], which must succeed; its standard output.
    pub fn run_cli_ok(&self, bin: &str, args: &[&str]) -> String {
        let output = self.run_cli(bin, args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("utf-8")
    }

    pub fn pipeline(&self) -> Pipeline {
        Pipeline::local(&self.layout).expect("pipeline")
    }

    /// Encrypts (and signs, when `signed`) an export into the drop directory.
    pub fn drop_export(&self, name: &str, xml: &[u8], signed: bool) -> PathBuf {
        let plain = self.dir.path().join(format!("{name}.plain"));
        std::fs::write(&plain, xml).expect("plain export");
        let target = self.layout.drop_dir().join(name);
        self.gpg.encrypt(
            &plain,
            &target,
            FIRM_UID,
            signed.then_some(SIGNER_UID),
            name.ends_with(".asc"),
        );
        target
    }

    /// The messages (raw bytes) in a mailbox folder.
    pub fn folder(&self, mailbox: &str, folder: &str) -> Vec<Vec<u8>> {
        let sink = MaildirSink::new(self.layout.mailboxes());
        let dir = sink.folder_dir(mailbox, folder).expect("folder");
        read_messages(&dir)
    }

    /// Every mailbox directory that holds any message at all.
    pub fn mailboxes_with_mail(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.layout.mailboxes()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| count_files(&e.path()) > 0)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }
}

fn read_messages(folder: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        out.extend(paths.iter().map(|p| std::fs::read(p).expect("message")));
    }
    out
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path)
            } else if path
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "cur" || n == "new")
            {
                1
            } else {
                0
            }
        })
        .sum()
}
