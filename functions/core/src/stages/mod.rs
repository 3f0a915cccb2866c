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
use crate::layout;
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
        layout::connector_of(key)
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
        } else if key.starts_with("plain/") || layout::is_hand_off(key) {
            Some(Stage::Convert)
        } else if key.starts_with("mail/") && key.ends_with(".json") {
            Some(Stage::Import)
        } else {
            None
        }
    }
}

tokio::task_local! {
    /// When the work of this invocation should be handed on (see
    /// [`with_hand_off_by`]).
    static HAND_OFF_BY: std::time::Instant;
}

/// Runs `work` with a time by which a long stage hands the rest of its work
/// on (a conversion writes where it stopped, and a new invocation carries
/// on from there) rather than being cut off by its deadline. `None`: no such
/// time (a local run).
pub async fn with_hand_off_by<F: std::future::Future>(
    by: Option<std::time::Instant>,
    work: F,
) -> F::Output {
    match by {
        Some(by) => HAND_OFF_BY.scope(by, work).await,
        None => work.await,
    }
}

/// The time set by [`with_hand_off_by`] for the task asking, if any.
pub fn hand_off_by() -> Option<std::time::Instant> {
    HAND_OFF_BY.try_with(|by| *by).ok()
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
            layout::plain_for_raw("raw/ice/ACME_20261120.xml.PGP"),
            "plain/ice/ACME_20261120.xml"
        );
        assert_eq!(layout::plain_for_raw("raw/ice/x.zip"), "plain/ice/x.zip");
        let regenerated = layout::raw_version("raw/ice/A_2026-11-20.xml.pgp", "v1");
        assert_eq!(regenerated, "raw/ice/v1/A_2026-11-20.xml.pgp");
        assert_eq!(
            layout::plain_for_raw(&regenerated),
            "plain/ice/v1/A_2026-11-20.xml"
        );
        assert_eq!(layout::connector_of(&regenerated), Some("ice"));
        assert_eq!(
            layout::split_part("plain/ice/f886973.ib19.261124.xml12"),
            Some(("plain/ice/f886973.ib19.261124.xml", 12))
        );
        assert_eq!(layout::split_part("plain/ice/x.xml"), None);
        assert_eq!(layout::split_part("plain/ice/x.xml0"), None);
        assert_eq!(layout::split_part("plain/ice/ACME_20261120"), None);
        let config = crate::config::ConnectorConfig::ice();
        assert_eq!(
            layout::raw_for_file(&config, "V_2026.XIP.pgp"),
            "raw/xip/V_2026.XIP.pgp"
        );
        assert_eq!(layout::raw_for_file(&config, "V.xip"), "raw/xip/V.xip");
        assert_eq!(
            layout::raw_for_file(&config, "A.xml.pgp"),
            "raw/ice/A.xml.pgp"
        );
    }
}
