//! Secrets in a local JSON file (mode 0600): the embedded stand-in for AWS
//! Secrets Manager. One object per connector, one string per field:
//! `{"ice": {"firm_code": "...", "pgp_private_key": "...", ...}}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ports::{ConnectorSecret, SecretStore, SecretValue};

type FileContent = BTreeMap<String, BTreeMap<String, SecretValue>>;

#[derive(Debug, Clone)]
pub struct SecretsFile {
    path: PathBuf,
}

impl SecretsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<FileContent> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileContent::new()),
            Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
        };
        refuse_if_readable_by_others(&self.path)?;
        // serde_json's message names line and column only, never the content.
        serde_json::from_slice(&bytes).map_err(|e| Error::Secret {
            secret: self.path.display().to_string(),
            problem: format!("not a JSON object of connectors: {e}"),
        })
    }

    fn write_all(&self, content: &FileContent) -> Result<()> {
        let context = || format!("writing {}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(context(), e))?;
        }
        let json = serde_json::to_vec_pretty(content).map_err(Error::internal)?;
        let tmp = self.path.with_extension("tmp");
        write_private(&tmp, &json).map_err(|e| Error::io(context(), e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(context(), e))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A secrets file others may read is refused: it holds the firm's private
/// keys and passwords.
#[cfg(unix)]
fn refuse_if_readable_by_others(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Secret {
            secret: path.display().to_string(),
            problem: format!(
                "mode {:o} lets group or others read the firm's keys; run: chmod 600 {}",
                mode & 0o777,
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_readable_by_others(_: &Path) -> Result<()> {
    Ok(())
}

#[async_trait]
impl SecretStore for SecretsFile {
    async fn load(&self, connector: &str) -> Result<ConnectorSecret> {
        let mut all = self.read_all()?;
        let fields = all.remove(connector).ok_or_else(|| Error::Secret {
            secret: format!("{}#{connector}", self.path.display()),
            problem: "no such secret".into(),
        })?;
        Ok(ConnectorSecret {
            name: format!("{}#{connector}", self.path.display()),
            fields,
        })
    }

    async fn update(&self, connector: &str, fields: BTreeMap<String, SecretValue>) -> Result<()> {
        let mut all = self.read_all()?;
        all.entry(connector.to_string()).or_default().extend(fields);
        self.write_all(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn update_keeps_other_fields_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretsFile::new(dir.path().join("secrets.json"));
        let field = |k: &str, v: &str| BTreeMap::from([(k.to_string(), SecretValue::new(v))]);
        store
            .update("ice", field("firm_code", "ACME"))
            .await
            .unwrap();
        store
            .update("ice", field("pgp_passphrase", "hunter2"))
            .await
            .unwrap();
        let secret = store.load("ice").await.unwrap();
        assert_eq!(secret.require("firm_code").unwrap().expose(), "ACME");
        let err = secret.require("pgp_private_key").unwrap_err().to_string();
        assert!(
            err.contains("pgp_private_key") && err.contains("#ice"),
            "{err}"
        );
        assert!(!format!("{secret:?}").contains("hunter2"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(store.load("xip").await.is_err());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_secrets_file_others_may_read_is_refused_by_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, r#"{"ice": {"pgp_passphrase": "hunter2"}}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SecretsFile::new(&path);
        let err = store.load("ice").await.unwrap_err().to_string();
        assert!(
            err.contains("secrets.json") && err.contains("644") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(store.load("ice").await.is_ok());
    }
}
