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

/// What the archive makes of each conversation-day for the mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// A mail with the transcript (text and HTML), files and the original.
    #[default]
    Mail,
    /// The RSMF 2.0 file itself (valid RFC 5322), as review platforms read
    /// it: at most 10,000 events each.
    Rsmf,
    /// The mail, with the RSMF file attached to it.
    Both,
}

impl Output {
    /// The most events one mail may carry.
    pub fn max_events(self) -> usize {
        match self {
            Output::Mail => usize::MAX,
            Output::Rsmf | Output::Both => crate::rsmf::MAX_EVENTS,
        }
    }
}

/// What a connector reads: it decides the default names and how its files
/// are read (the dialect of a chat export is detected from the file itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorKind {
    /// ICE Chat exports (our schema or FileDump), from ICE's SFTP site.
    #[default]
    Ice,
    /// Instant Bloomberg dumps, from Bloomberg's SFTP site: `.sig` beside
    /// each file, attachments in a separate archive.
    Bloomberg,
    /// XIP signed containers, recognised by name wherever they arrive.
    Xip,
}

impl ConnectorKind {
    pub fn label(self) -> &'static str {
        match self {
            ConnectorKind::Ice => "ice",
            ConnectorKind::Bloomberg => "bloomberg",
            ConnectorKind::Xip => "xip",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ice" => Some(ConnectorKind::Ice),
            "bloomberg" => Some(ConnectorKind::Bloomberg),
            "xip" => Some(ConnectorKind::Xip),
            _ => None,
        }
    }
}

/// One connector, resolved: its own section with the firm-wide settings
/// (domains, mail server) filled in. What every stage reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Short name: prefixes object keys, names the status log.
    #[serde(skip)]
    pub name: String,
    pub kind: ConnectorKind,
    /// Human name of the source, put in `X-Chat-Source`.
    pub source_label: String,
    /// Mailbox folder the mail is imported into.
    pub folder: String,
    pub granularity: Granularity,
    /// Mail, RSMF, or both (docs/rsmf.md).
    pub output: Output,
    pub signature_policy: SignaturePolicy,
    /// Map participants by the addresses the export gives when the CSV does not.
    pub auto_mapping: bool,
    /// Object key of the `ImId,Mailbox` CSV in the store (optional object).
    pub mapping_csv: String,
    /// The connector's secret in the secret store (keys, SFTP login); empty:
    /// the connector's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// IMAP flags set on imported mail.
    pub flags: Vec<String>,
    /// Disclaimer text added to every transcript (empty: none).
    pub disclaimer: String,
    /// The connector's SFTP site; without it files come from the local drop
    /// directory (`drop/` for the first connector, `drop/<name>/` for others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sftp: Option<crate::adapters::sftp::SftpConfig>,
    /// When to warn before data is lost.
    pub alerts: crate::alerts::AlertSettings,
    /// How long a mail waits for its attachments (Bloomberg's separate
    /// archive) before it goes out with "attachment missing".
    pub attachment_wait_hours: i64,
    /// XIP only: accept files whose manifest is not signed. Off by default:
    /// the signature is what makes a XIP file trustworthy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
    /// XIP only: limits on what a container may hold.
    pub limits: crate::formats::xip::Limits,
    /// Firm-wide (`[firm] domains`): only mailboxes in these domains ever
    /// receive mail, since counterparties of other firms are in many chats
    /// and must never get copies.
    #[serde(skip)]
    pub firm_domains: Vec<String>,
    /// Firm-wide (`[firm.imap]`): the mail server; without it mail goes to
    /// the local Maildir tree.
    #[serde(skip)]
    pub imap: Option<crate::adapters::imap::ImapConfig>,
    /// Where XIP files that arrive through this connector's source go.
    #[serde(skip)]
    pub xip: XipRoute,
}

/// The firm's XIP connector, as the other connectors route to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XipRoute {
    pub name: String,
}

impl Default for XipRoute {
    fn default() -> Self {
        Self { name: "xip".into() }
    }
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self::ice()
    }
}

impl ConnectorConfig {
    /// What one mail of a conversation-day may carry: RSMF's event cap, and
    /// half the mail server's configured size limit as transcript (the rest
    /// is headers, the participants, the original XML's share and the growth
    /// of transfer encoding). The server's own APPENDLIMIT is not known here;
    /// mails over it keep their attachments in the archive at import.
    pub fn part_cap(&self) -> crate::ledger::PartCap {
        let limit = self.imap.as_ref().and_then(|imap| imap.configured_limit());
        crate::ledger::PartCap {
            events: self.output.max_events(),
            bytes: limit.map_or(u64::MAX, |l| l / 2),
        }
    }

    /// The defaults of a connector of this kind and name.
    pub fn of_kind(kind: ConnectorKind, name: &str) -> Self {
        let (source_label, folder) = match kind {
            ConnectorKind::Ice => ("ICE Chat", "ICE Chat"),
            ConnectorKind::Bloomberg => ("Bloomberg", "Bloomberg"),
            ConnectorKind::Xip => ("XIP", "Inbox/XIP"),
        };
        Self {
            name: name.into(),
            kind,
            source_label: source_label.into(),
            folder: folder.into(),
            granularity: Granularity::ConversationDay,
            output: Output::Mail,
            signature_policy: SignaturePolicy::Optional,
            auto_mapping: true,
            mapping_csv: crate::layout::mapping_csv(name),
            secret: String::new(),
            flags: vec!["\\Seen".into()],
            disclaimer: String::new(),
            sftp: None,
            alerts: crate::alerts::AlertSettings::default(),
            attachment_wait_hours: 24,
            allow_unsigned: false,
            limits: crate::formats::xip::Limits::default(),
            firm_domains: Vec::new(),
            imap: None,
            xip: XipRoute::default(),
        }
    }

    pub fn ice() -> Self {
        Self::of_kind(ConnectorKind::Ice, "ice")
    }

    pub fn bloomberg() -> Self {
        Self::of_kind(ConnectorKind::Bloomberg, "bloomberg")
    }

    pub fn xip() -> Self {
        Self::of_kind(ConnectorKind::Xip, "xip")
    }

    /// The name of the connector's secret in the secret store.
    pub fn secret_name(&self) -> &str {
        if self.secret.is_empty() {
            &self.name
        } else {
            &self.secret
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
                "connector {:?}: the firm's domains are empty; list them ([firm] domains) so that \
                 no copy can reach another firm's mailbox",
                self.name
            )));
        }
        Ok(())
    }
}

/// What holds for the whole firm, whatever the connector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirmSettings {
    /// The firm's mail domains.
    pub domains: Vec<String>,
    /// The mail server (IMAP); without it, the local Maildir tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<crate::adapters::imap::ImapConfig>,
    /// The secret holding the mail server's credential (`mailbox_password`,
    /// `mailbox_oauth_token`); empty: the first connector's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mail_secret: String,
}

/// The settings file: `[firm]` once, then `[connectors.NAME]` per connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub firm: FirmSettings,
    /// In file order: the first connector takes the drop directory itself.
    pub connectors: Vec<ConnectorConfig>,
}

impl Default for Settings {
    /// ICE, with XIP files routed to their own connector.
    fn default() -> Self {
        Self {
            firm: FirmSettings::default(),
            connectors: vec![ConnectorConfig::ice(), ConnectorConfig::xip()],
        }
    }
}

/// The file as written: sections are read over their kind's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    #[serde(default)]
    firm: FirmSettings,
    #[serde(default)]
    connectors: toml::Table,
}

impl Settings {
    /// Reads a TOML settings file; a missing file means embedded defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses the settings; the old form (one `[ice]` table, XIP under
    /// `[ice.xip]`) still loads, with a warning that names the new one.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        if table.contains_key("ice") {
            tracing::warn!(
                "the settings use the old [ice] section; `chat-archive config` prints them in \
                 the new form ([firm] and [connectors.NAME])"
            );
            return legacy::parse(table);
        }
        let file: SettingsFile = table
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        let mut connectors = Vec::new();
        // toml keeps the file's order (preserve_order).
        for (name, section) in file.connectors {
            let toml::Value::Table(section) = section else {
                return Err(format!("connectors.{name}: not a table"));
            };
            connectors.push(read_section(&name, section)?);
        }
        if connectors.is_empty() {
            return Err("no connector: add a [connectors.ice] (or bloomberg, xip) section".into());
        }
        Ok(Self::resolved(file.firm, connectors))
    }

    /// One connector (and XIP beside it), with the firm's domains and mail
    /// server taken from it: how tests and the demo set up a firm.
    pub fn single(connector: ConnectorConfig) -> Self {
        let firm = FirmSettings {
            domains: connector.firm_domains.clone(),
            imap: connector.imap.clone(),
            mail_secret: String::new(),
        };
        let xip = ConnectorConfig {
            secret: connector.secret_name().to_string(),
            ..ConnectorConfig::xip()
        };
        Self::resolved(firm, vec![connector, xip])
    }

    /// The firm's settings over these connectors (their firm-wide fields
    /// filled in).
    pub fn with_firm(firm: FirmSettings, connectors: Vec<ConnectorConfig>) -> Self {
        Self::resolved(firm, connectors)
    }

    fn resolved(firm: FirmSettings, mut connectors: Vec<ConnectorConfig>) -> Self {
        let xip = connectors
            .iter()
            .find(|c| c.kind == ConnectorKind::Xip)
            .map(|c| XipRoute {
                name: c.name.clone(),
            })
            .unwrap_or_default();
        for connector in &mut connectors {
            connector.firm_domains = firm.domains.clone();
            connector.imap = firm.imap.clone();
            connector.xip = xip.clone();
        }
        Self { firm, connectors }
    }

    pub fn connector(&self, name: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.name == name)
    }

    /// The secret holding the mail server's credential.
    pub fn mail_secret(&self) -> &str {
        match (self.firm.mail_secret.as_str(), self.connectors.first()) {
            ("", Some(first)) => first.secret_name(),
            (name, _) => name,
        }
    }

    /// The settings in the new form, as `chat-archive config` prints them.
    pub fn to_toml(&self) -> String {
        let mut connectors = toml::Table::new();
        for connector in &self.connectors {
            if let Ok(value) = toml::Value::try_from(connector) {
                connectors.insert(connector.name.clone(), value);
            }
        }
        let mut file = toml::Table::new();
        if let Ok(firm) = toml::Value::try_from(&self.firm) {
            file.insert("firm".into(), firm);
        }
        file.insert("connectors".into(), toml::Value::Table(connectors));
        toml::to_string_pretty(&file).unwrap_or_default()
    }
}

/// A `[connectors.NAME]` section over its kind's defaults (the kind is
/// `kind`, else the name when it is one).
fn read_section(
    name: &str,
    mut section: toml::Table,
) -> std::result::Result<ConnectorConfig, String> {
    let plain = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain {
        return Err(format!(
            "connectors.{name}: a connector's name is lower-case letters, digits and '-' (it \
             prefixes object keys)"
        ));
    }
    let kind = match section.get("kind") {
        Some(value) => value
            .clone()
            .try_into::<ConnectorKind>()
            .map_err(|_| format!("connectors.{name}.kind: {value} is not ice, bloomberg or xip"))?,
        None => ConnectorKind::from_name(name).ok_or_else(|| {
            format!("connectors.{name}: say which kind it is (kind = \"ice\", \"bloomberg\" or \"xip\")")
        })?,
    };
    section.insert(
        "kind".into(),
        toml::Value::try_from(kind).map_err(|e| e.to_string())?,
    );
    let mut merged =
        toml::Value::try_from(ConnectorConfig::of_kind(kind, name)).map_err(|e| e.to_string())?;
    merge(&mut merged, toml::Value::Table(section));
    let mut config: ConnectorConfig = merged
        .try_into()
        .map_err(|e: toml::de::Error| format!("connectors.{name}: {e}"))?;
    config.name = name.to_string();
    Ok(config)
}

/// Overlays `over` onto `base`, table by table.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_table() && value.is_table() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The old form: `[ice]` with the firm's settings inside, XIP under
/// `[ice.xip]`.
mod legacy {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct OldXip {
        name: Option<String>,
        source_label: Option<String>,
        folder: Option<String>,
        allow_unsigned: bool,
        limits: Option<crate::formats::xip::Limits>,
    }

    pub(super) fn parse(mut table: toml::Table) -> std::result::Result<Settings, String> {
        let Some(toml::Value::Table(mut ice)) = table.remove("ice") else {
            return Err("ice: not a table".into());
        };
        if let Some(other) = table.keys().next() {
            return Err(format!(
                "unknown section [{other}] beside the old [ice] section"
            ));
        }
        let name = match ice.remove("name") {
            Some(toml::Value::String(name)) => name,
            Some(other) => return Err(format!("ice.name: {other} is not a string")),
            None => "ice".into(),
        };
        let domains = match ice.remove("firm_domains") {
            Some(value) => value
                .try_into()
                .map_err(|e: toml::de::Error| format!("ice.firm_domains: {e}"))?,
            None => Vec::new(),
        };
        let imap = match ice.remove("imap") {
            Some(value) => Some(
                value
                    .try_into()
                    .map_err(|e: toml::de::Error| format!("ice.imap: {e}"))?,
            ),
            None => None,
        };
        let old_xip: OldXip = match ice.remove("xip") {
            Some(value) => value
                .try_into()
                .map_err(|e: toml::de::Error| format!("ice.xip: {e}"))?,
            None => OldXip::default(),
        };
        let mut ice_config =
            read_section("ice", ice).map_err(|e| e.replace("connectors.ice", "ice"))?;
        ice_config.name = name.clone();
        if ice_config.mapping_csv == "config/ice/mapping.csv" {
            ice_config.mapping_csv = crate::layout::mapping_csv(&name);
        }
        let xip_name = old_xip.name.unwrap_or_else(|| "xip".into());
        let mut xip = ConnectorConfig::of_kind(ConnectorKind::Xip, &xip_name);
        xip.secret = ice_config.secret_name().to_string();
        xip.source_label = old_xip.source_label.unwrap_or(xip.source_label);
        xip.folder = old_xip.folder.unwrap_or(xip.folder);
        xip.allow_unsigned = old_xip.allow_unsigned;
        xip.limits = old_xip.limits.unwrap_or_default();
        // As before: XIP shares ICE's policy, mapping rules and disclaimer.
        xip.signature_policy = ice_config.signature_policy;
        xip.auto_mapping = ice_config.auto_mapping;
        xip.flags = ice_config.flags.clone();
        xip.disclaimer = ice_config.disclaimer.clone();
        xip.alerts = ice_config.alerts.clone();
        let firm = FirmSettings {
            domains,
            imap,
            mail_secret: String::new(),
        };
        Ok(Settings::resolved(firm, vec![ice_config, xip]))
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
        let mut ice = ConnectorConfig::ice();
        ice.firm_domains = vec!["acme.example".into()];
        let settings = Settings::single(ice);
        let text = settings.to_toml();
        assert_eq!(Settings::parse(&text).unwrap(), settings, "{text}");
        let err = Settings::parse("[connectors.ice]\nfolderr = 'x'\n").unwrap_err();
        assert!(
            err.contains("connectors.ice") && err.contains("folderr"),
            "{err}"
        );
        let err = Settings::parse("[connectors.emea]\nfolder = 'x'\n").unwrap_err();
        assert!(err.contains("kind"), "{err}");
        let err = Settings::parse("[firm]\ndomains = ['a.example']\n").unwrap_err();
        assert!(err.contains("no connector"), "{err}");
    }

    #[test]
    fn connectors_of_one_kind_twice_each_with_its_own_defaults_and_the_firms_domains() {
        let settings = Settings::parse(
            r#"
[firm]
domains = ["acme.example"]

[connectors.ice-us]
kind = "ice"
[connectors.ice-us.sftp]
host = "sftp.ice.example"

[connectors.ice-uk]
kind = "ice"
folder = "ICE Chat UK"

[connectors.bloomberg]
signature_policy = "required"

[connectors.xip]
"#,
        )
        .unwrap();
        let names: Vec<&str> = settings
            .connectors
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["ice-us", "ice-uk", "bloomberg", "xip"],
            "file order"
        );
        let us = settings.connector("ice-us").unwrap();
        assert_eq!(us.folder, "ICE Chat");
        assert_eq!(us.mapping_csv, "config/ice-us/mapping.csv");
        assert_eq!(us.sftp.as_ref().unwrap().host, "sftp.ice.example");
        assert_eq!(settings.connector("ice-uk").unwrap().folder, "ICE Chat UK");
        let bloomberg = settings.connector("bloomberg").unwrap();
        assert_eq!(
            (bloomberg.kind, bloomberg.folder.as_str()),
            (ConnectorKind::Bloomberg, "Bloomberg")
        );
        assert_eq!(bloomberg.signature_policy, SignaturePolicy::Required);
        assert!(settings
            .connectors
            .iter()
            .all(|c| c.firm_domains == ["acme.example"] && c.xip.name == "xip"));
        assert_eq!(settings.mail_secret(), "ice-us");
    }

    #[test]
    fn the_old_ice_section_still_loads_as_ice_and_xip() {
        let settings = Settings::parse(
            r#"
[ice]
firm_domains = ["acme.example"]
folder = "Chats"
signature_policy = "required"
[ice.xip]
folder = "Inbox/Vendor"
allow_unsigned = true
"#,
        )
        .unwrap();
        let ice = settings.connector("ice").unwrap();
        assert_eq!(ice.folder, "Chats");
        assert_eq!(ice.firm_domains, ["acme.example"]);
        let xip = settings.connector("xip").unwrap();
        assert_eq!(xip.folder, "Inbox/Vendor");
        assert!(xip.allow_unsigned);
        assert_eq!(xip.secret_name(), "ice", "XIP keeps using ICE's secret");
        assert_eq!(xip.signature_policy, SignaturePolicy::Required);
        // What `chat-archive config` prints loads back the same.
        assert_eq!(Settings::parse(&settings.to_toml()).unwrap(), settings);
        assert!(Settings::parse("[ice]\nfolderr = 'x'\n").is_err());
    }
}
