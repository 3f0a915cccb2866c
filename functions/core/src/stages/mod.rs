//! The four stages. Each reads one object (or, for fetch, one trigger) and
//! writes objects under the next prefix; keys derive from the source, never
//! from the clock, so a replay overwrites instead of duplicating.
//!
//! ```text
//! raw/<c>/<file>            --decrypt-->  plain/<c>/<file without .pgp>
//! plain/<c>/<file>          --convert-->  mail/<c>/<day>/<item>.eml + .json
//! mail/<c>/<day>/<item>.json --import-->  mailboxes + reports/<c>/<day>/items/<item>.json
//! ```

pub mod convert;
pub mod decrypt;
pub mod fetch;
pub mod import;
mod pipe;
mod quarantine;

use std::sync::Arc;

use crate::config::ConnectorConfig;
use crate::ports::ObjectStore;

pub use quarantine::{quarantine, quarantine_conversation, QUARANTINED_AT};

/// What every stage needs: where objects live and how the connectors are
/// set up.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn ObjectStore>,
    /// The connector this context serves first (the settings' first).
    pub config: ConnectorConfig,
    /// Every connector of the archive: an object belongs to the one its key
    /// names (`raw/<connector>/...`).
    pub connectors: Arc<Vec<ConnectorConfig>>,
}

impl Context {
    /// A context for every connector of the settings, serving the first.
    pub fn new(store: Arc<dyn ObjectStore>, settings: &crate::config::Settings) -> Self {
        let connectors = settings.connectors.clone();
        Self {
            store,
            config: connectors.first().cloned().unwrap_or_default(),
            connectors: Arc::new(connectors),
        }
    }

    /// A context for one connector (and XIP beside it).
    pub fn single(store: Arc<dyn ObjectStore>, config: ConnectorConfig) -> Self {
        Self::new(store, &crate::config::Settings::single(config))
    }

    /// The settings of the connector an object key belongs to (this
    /// context's own when the key names none it knows).
    pub fn for_key(&self, key: &str) -> ConnectorConfig {
        keys::connector_of(key)
            .and_then(|name| self.connector(name))
            .unwrap_or(&self.config)
            .clone()
    }

    pub fn connector(&self, name: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.name == name)
    }

    /// The same store, serving another connector.
    pub fn serving(&self, config: &ConnectorConfig) -> Context {
        Context {
            store: self.store.clone(),
            config: config.clone(),
            connectors: self.connectors.clone(),
        }
    }
}

/// Which stage consumes an object, judged by its key (as S3 notification
/// prefix/suffix filters do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decrypt,
    Convert,
    Import,
}

impl Stage {
    pub fn for_key(key: &str) -> Option<Stage> {
        if key.starts_with("raw/") {
            Some(Stage::Decrypt)
        } else if key.starts_with("plain/") {
            Some(Stage::Convert)
        } else if key.starts_with("mail/") && key.ends_with(".json") {
            Some(Stage::Import)
        } else {
            None
        }
    }
}

/// Object key layout, in one place.
pub mod keys {
    pub fn raw(connector: &str, file_name: &str) -> String {
        format!("raw/{connector}/{file_name}")
    }

    /// Where a fetched file lands: XIP files (`.xip`, optionally followed by
    /// `.pgp`/`.gpg`/`.asc`) under the XIP connector, the rest under ICE.
    pub fn raw_for_file(config: &crate::config::ConnectorConfig, file_name: &str) -> String {
        let lower = file_name.to_ascii_lowercase();
        let inner = ["", ".pgp", ".gpg", ".asc"].iter().find_map(|ext| {
            lower
                .strip_suffix(ext)
                .filter(|rest| rest.ends_with(".xip"))
        });
        let connector = if inner.is_some() {
            &config.xip.name
        } else {
            &config.name
        };
        raw(connector, file_name)
    }

    /// Where a later, different version of a file already fetched under
    /// `raw_key` lands (`raw/ice/x.pgp` -> `raw/ice/<version>/x.pgp`): raw
    /// objects are evidence and never replaced, and the file keeps its name
    /// so that its day and payload type are still read from it.
    pub fn raw_version(raw_key: &str, version: &str) -> String {
        match raw_key.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/{version}/{name}"),
            None => format!("{version}/{raw_key}"),
        }
    }

    /// A part of a file split in several (`x.xml1`, `x.xml2`, ...): the
    /// name they share (`x.xml`) and the part's number.
    pub fn split_part(key: &str) -> Option<(&str, u32)> {
        let digits = key.len() - key.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (base, number) = key.split_at(digits);
        let number: u32 = number.parse().ok().filter(|n| *n >= 1)?;
        base.to_ascii_lowercase()
            .ends_with(".xml")
            .then_some((base, number))
    }

    /// `raw/ice/x.xml.pgp` -> `plain/ice/x.xml`.
    pub fn plain_for_raw(raw_key: &str) -> String {
        let rest = raw_key.strip_prefix("raw/").unwrap_or(raw_key);
        let lower = rest.to_ascii_lowercase();
        let stem = [".pgp", ".gpg", ".asc"]
            .iter()
            .find(|ext| lower.ends_with(*ext))
            .map(|ext| &rest[..rest.len() - ext.len()])
            .unwrap_or(rest);
        format!("plain/{stem}")
    }

    pub fn mail(connector: &str, day: &str, item_id: &str) -> String {
        format!("mail/{connector}/{day}/{item_id}.eml")
    }

    pub fn sidecar(connector: &str, day: &str, item_id: &str) -> String {
        format!("mail/{connector}/{day}/{item_id}.json")
    }

    /// A file taken out of a mail that was over the mail server's size
    /// limit, named by its digest (the same file of a replay lands on the
    /// same key, so the store is never asked to overwrite).
    pub fn kept_attachment(
        connector: &str,
        day: &str,
        item_id: &str,
        sha256: &str,
        file_name: &str,
    ) -> String {
        format!("attachments/{connector}/{day}/{item_id}/{sha256}/{file_name}")
    }

    pub fn checkpoint(connector: &str) -> String {
        format!("state/{connector}/checkpoint.json")
    }

    /// The connector a stage object belongs to (`raw/ice/...` -> `ice`).
    pub fn connector_of(key: &str) -> Option<&str> {
        key.split('/').nth(1)
    }
}

/// Metadata names used for lineage on every object.
pub mod lineage {
    pub const SOURCE_KEY: &str = "source-key";
    pub const SOURCE_SHA256: &str = "source-sha256";
    pub const RAW_KEY: &str = "raw-key";
    pub const RAW_SHA256: &str = "raw-sha256";
    pub const SIGNATURE: &str = "signature";
    pub const STAGE: &str = "stage";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_to_their_stage() {
        assert_eq!(Stage::for_key("raw/ice/a.pgp"), Some(Stage::Decrypt));
        assert_eq!(Stage::for_key("plain/ice/a.xml"), Some(Stage::Convert));
        assert_eq!(
            Stage::for_key("mail/ice/2026-11-20/x.json"),
            Some(Stage::Import)
        );
        assert_eq!(Stage::for_key("mail/ice/2026-11-20/x.eml"), None);
        assert_eq!(
            keys::plain_for_raw("raw/ice/ACME_20261120.xml.PGP"),
            "plain/ice/ACME_20261120.xml"
        );
        assert_eq!(keys::plain_for_raw("raw/ice/x.zip"), "plain/ice/x.zip");
        let regenerated = keys::raw_version("raw/ice/A_2026-11-20.xml.pgp", "v1");
        assert_eq!(regenerated, "raw/ice/v1/A_2026-11-20.xml.pgp");
        assert_eq!(
            keys::plain_for_raw(&regenerated),
            "plain/ice/v1/A_2026-11-20.xml"
        );
        assert_eq!(keys::connector_of(&regenerated), Some("ice"));
        assert_eq!(
            keys::split_part("plain/ice/f886973.ib19.261124.xml12"),
            Some(("plain/ice/f886973.ib19.261124.xml", 12))
        );
        assert_eq!(keys::split_part("plain/ice/x.xml"), None);
        assert_eq!(keys::split_part("plain/ice/x.xml0"), None);
        assert_eq!(keys::split_part("plain/ice/ACME_20261120"), None);
        let config = crate::config::ConnectorConfig::ice();
        assert_eq!(
            keys::raw_for_file(&config, "V_2026.XIP.pgp"),
            "raw/xip/V_2026.XIP.pgp"
        );
        assert_eq!(keys::raw_for_file(&config, "V.xip"), "raw/xip/V.xip");
        assert_eq!(
            keys::raw_for_file(&config, "A.xml.pgp"),
            "raw/ice/A.xml.pgp"
        );
    }
}
