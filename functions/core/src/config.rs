//! Connector settings. Every field has an embedded default so the pipeline runs
//! on one machine with no configuration file at all; a TOML file overrides.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::crypto::SignaturePolicy;
use crate::error::{Error, Result};

/// How many mails one conversation becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// One mail per conversation per UTC day (default).
    #[default]
    ConversationDay,
    /// One mail per chat message (join/leave and disclaimers ride along with
    /// the message that follows them).
    Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Short name: prefixes object keys, names the secret and the status log.
    pub name: String,
    /// Human name of the source, put in `X-Chat-Source`.
    pub source_label: String,
    /// Mailbox folder the mail is imported into.
    pub folder: String,
    pub granularity: Granularity,
    pub signature_policy: SignaturePolicy,
    /// Map participants by their SenderEmail/RecipientEmail when the CSV does not.
    pub auto_mapping: bool,
    /// Object key of the `ImId,Mailbox` CSV in the store (optional object).
    pub mapping_csv: String,
    /// Only mailboxes in these domains ever receive mail: counterparties of
    /// other firms are in many chats and must never get copies.
    pub firm_domains: Vec<String>,
    /// IMAP flags set on imported mail.
    pub flags: Vec<String>,
    /// Disclaimer text added to every transcript (empty: none).
    pub disclaimer: String,
    /// The ICE SFTP site (`[ice.sftp]`); without it files come from the
    /// local drop directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sftp: Option<crate::adapters::sftp::SftpConfig>,
    /// The mail server (`[ice.imap]`); without it mail goes to the local
    /// Maildir tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<crate::adapters::imap::ImapConfig>,
    /// XIP files (`[ice.xip]`): archived under the same firm settings
    /// (domains, mapping), into their own folder and status log.
    pub xip: XipConfig,
    /// When to warn before data is lost (`[ice.alerts]`).
    pub alerts: crate::alerts::AlertSettings,
}

/// What is particular to XIP files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XipConfig {
    /// Connector name of XIP objects and of their status log.
    pub name: String,
    pub source_label: String,
    pub folder: String,
    /// Accept files whose manifest is not signed. Off by default: the
    /// signature is what makes a XIP file trustworthy.
    pub allow_unsigned: bool,
    pub limits: crate::formats::xip::Limits,
}

impl Default for XipConfig {
    fn default() -> Self {
        Self {
            name: "xip".into(),
            source_label: "XIP".into(),
            folder: "Inbox/XIP".into(),
            allow_unsigned: false,
            limits: crate::formats::xip::Limits::default(),
        }
    }
}

impl ConnectorConfig {
    /// The settings for XIP objects: the firm's, with XIP's name, label and
    /// folder. One mail per item.
    pub fn for_xip(&self) -> ConnectorConfig {
        ConnectorConfig {
            name: self.xip.name.clone(),
            source_label: self.xip.source_label.clone(),
            folder: self.xip.folder.clone(),
            granularity: Granularity::ConversationDay,
            mapping_csv: format!("config/{}/mapping.csv", self.xip.name),
            ..self.clone()
        }
    }

    /// The settings for an object key: XIP's for `*/xip/...`, else these.
    pub fn for_key(&self, key: &str) -> ConnectorConfig {
        match key.split('/').nth(1) {
            Some(connector) if connector == self.xip.name => self.for_xip(),
            _ => self.clone(),
        }
    }
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self::ice()
    }
}

impl ConnectorConfig {
    pub fn ice() -> Self {
        Self {
            name: "ice".into(),
            source_label: "ICE Chat".into(),
            folder: "ICE Chat".into(),
            granularity: Granularity::ConversationDay,
            signature_policy: SignaturePolicy::Optional,
            auto_mapping: true,
            mapping_csv: "config/ice/mapping.csv".into(),
            firm_domains: Vec::new(),
            flags: vec!["\\Seen".into()],
            disclaimer: String::new(),
            sftp: None,
            imap: None,
            xip: XipConfig::default(),
            alerts: crate::alerts::AlertSettings::default(),
        }
    }

    /// Whether an address is inside the firm's domains (case-insensitive).
    pub fn in_firm_domains(&self, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        self.firm_domains
            .iter()
            .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain))
    }

    pub fn check(&self) -> Result<()> {
        if self.firm_domains.is_empty() {
            return Err(Error::Config(format!(
                "connector {:?}: firm_domains is empty; list the firm's mail domains so that no \
                 copy can reach another firm's mailbox",
                self.name
            )));
        }
        Ok(())
    }
}

/// The settings file: `[ice]` table today, more connectors later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub ice: ConnectorConfig,
}

impl Settings {
    /// Reads a TOML settings file; a missing file means embedded defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_case_insensitively_and_only_whole_domains() {
        let mut config = ConnectorConfig::ice();
        config.firm_domains = vec!["acme.example".into()];
        assert!(config.in_firm_domains("Jane@ACME.example"));
        assert!(!config.in_firm_domains("jane@notacme.example"));
        assert!(!config.in_firm_domains("jane@acme.example.evil"));
        assert!(!config.in_firm_domains("no-at-sign"));
    }

    #[test]
    fn settings_round_trip_and_reject_unknown_keys() {
        let settings = Settings::default();
        let text = settings.to_toml();
        assert_eq!(toml::from_str::<Settings>(&text).unwrap(), settings);
        assert!(toml::from_str::<Settings>("[ice]\nfolderr = 'x'\n").is_err());
    }
}
