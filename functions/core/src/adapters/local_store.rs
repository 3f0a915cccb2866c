//! Object store on a local directory: the embedded stand-in for S3.
//!
//! `ROOT/KEY` holds the body, `ROOT/.meta/KEY.json` its size, digest and
//! metadata. Writes go to `ROOT/.tmp/` first and are renamed into place, so a
//! reader never sees half an object. An object placed by hand (no metadata)
//! gets its metadata computed on first read.
//!
//! Like a versioned S3 bucket, the store keeps what an evidence object
//! (`raw/`, `plain/`, `mail/`, `quarantine/`) held before a write with
//! other content, under `ROOT/.versions/KEY/<sha256>`. Conditional writes
//! ([`ObjectStore::put_if`]) take an advisory file lock under `ROOT/.locks/`,
//! so they are atomic across processes sharing the directory.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::ports::{ByteStream, Metadata, ObjectInfo, ObjectStore};

const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";
const VERSIONS_DIR: &str = ".versions";
const LOCKS_DIR: &str = ".locks";
const RESERVED: [&str; 4] = [META_DIR, TMP_DIR, VERSIONS_DIR, LOCKS_DIR];
/// Prefixes whose earlier contents are kept when overwritten.
const EVIDENCE: [&str; 4] = ["raw/", "plain/", "mail/", "quarantine/"];
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    size: u64,
    sha256: String,
    metadata: Metadata,
    /// The body file this metadata was written for (its inode: a rename
    /// keeps it). A body renamed in after its metadata is committed as one
    /// step only in the eyes of a reader that checks this: a writer killed
    /// between the two renames leaves an old body under new metadata, which
    /// the reader sees and repairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_id: Option<u64>,
}

/// The identity of a body file (its inode), where the platform has one.
fn body_id(meta: &std::fs::Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds an object's body (for operators and tests).
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.json"))
    }

    /// Runs a piece of the store's synchronous file work on the blocking
    /// pool: one hop per operation, however many files it touches (a hop
    /// per file call made a day of short chats mostly thread wake-ups).
    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        work: impl FnOnce(&LocalStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Error::store(key, e))?
    }

    fn read_meta(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let body = self.path_of(key)?;
        let on_disk = match std::fs::metadata(&body) {
            Ok(on_disk) => on_disk,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::store(key, e)),
        };
        let meta = match std::fs::read(self.meta_path(key)) {
            Ok(meta) => {
                let meta: StoredMeta = serde_json::from_slice(&meta)
                    .map_err(|e| Error::store(key, format!("metadata corrupt: {e}")))?;
                match meta.body_id.is_some() && meta.body_id != body_id(&on_disk) {
                    false => meta,
                    true => {
                        tracing::warn!(
                            key,
                            "metadata written for a body that never landed (a writer stopped \
                             between the two): described again from the body in place"
                        );
                        self.describe_placed_by_hand(key, &body)?
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.describe_placed_by_hand(key, &body)?
            }
            Err(e) => return Err(Error::store(key, format!("metadata unreadable: {e}"))),
        };
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            sha256: meta.sha256,
            metadata: meta.metadata,
        }))
    }

    /// Metadata for a body that was put there by hand (a mapping CSV copied
    /// into `config/`, say): size and digest computed and recorded now.
    fn describe_placed_by_hand(&self, key: &str, body: &Path) -> Result<StoredMeta> {
        let mut file = std::fs::File::open(body).map_err(|e| Error::store(key, e))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(|e| Error::store(key, e))?;
        let meta = StoredMeta {
            size,
            sha256: hex::encode(hasher.finalize()),
            metadata: Metadata::new(),
            body_id: file.metadata().ok().and_then(|m| body_id(&m)),
        };
        self.write_meta(key, &meta)?;
        tracing::info!(key, size, "object placed by hand: metadata computed");
        Ok(meta)
    }

    fn write_meta(&self, key: &str, meta: &StoredMeta) -> Result<()> {
        let meta_path = self.meta_path(key);
        if let Some(dir) = meta_path.parent() {
            create_dir_all(dir)?;
        }
        let tmp_dir = self.root.join(TMP_DIR);
        create_dir_all(&tmp_dir)?;
        let meta_tmp = tmp_dir.join(format!("{}.meta", hex::encode(rand::random::<[u8; 8]>())));
        let json = serde_json::to_vec(meta).map_err(|e| Error::store(key, e))?;
        let written =
            std::fs::write(&meta_tmp, json).and_then(|()| std::fs::rename(&meta_tmp, &meta_path));
        if written.is_err() {
            let _ = std::fs::remove_file(&meta_tmp);
        }
        written.map_err(|e| Error::store(key, format!("writing metadata: {e}")))
    }

    /// Moves the current body and metadata of an evidence object aside
    /// before it is replaced by different content.
    fn keep_version(&self, key: &str, new_sha256: &str) -> Result<()> {
        if !EVIDENCE.iter().any(|p| key.starts_with(p)) {
            return Ok(());
        }
        let Some(old) = self.read_meta(key)? else {
            return Ok(());
        };
        if old.sha256 == new_sha256 {
            return Ok(());
        }
        let dir = self.root.join(VERSIONS_DIR).join(key);
        create_dir_all(&dir)?;
        let kept = dir.join(&old.sha256);
        std::fs::rename(self.path_of(key)?, &kept).map_err(|e| Error::store(key, e))?;
        let _ = std::fs::rename(self.meta_path(key), kept.with_extension("json"));
        tracing::warn!(key, old_sha256 = %old.sha256, new_sha256, "evidence object replaced: earlier version kept");
        Ok(())
    }

    /// An exclusive lock on `key` across processes, held while the file
    /// lives. Keys share 256 lock files (by their digest's first byte): the
    /// locks are held for one small write, and a million ledgers must not
    /// leave a million lock files behind.
    fn lock(&self, key: &str) -> Result<std::fs::File> {
        let dir = self.root.join(LOCKS_DIR);
        create_dir_all(&dir)?;
        let path = dir.join(hex::encode(&Sha256::digest(key.as_bytes())[..1]));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| Error::store(key, format!("locking: {e}")))?;
        Ok(file)
    }

    /// Puts a written body (`tmp`) and its metadata in place. The metadata
    /// goes first and names the body's inode, so a stop between the two
    /// renames leaves a pair the reader detects (and repairs). On failure
    /// the body is removed from `.tmp/`, so that it does not hold the space
    /// the retry needs (out of space before the body's rename: the body was
    /// never in sight).
    fn commit(&self, key: &str, tmp: &Path, meta: &StoredMeta) -> Result<()> {
        let committed = (|| {
            let target = self.path_of(key)?;
            if let Some(dir) = target.parent() {
                create_dir_all(dir)?;
            }
            self.keep_version(key, &meta.sha256)?;
            self.write_meta(key, meta)?;
            std::fs::rename(tmp, target).map_err(|e| Error::store(key, e))
        })();
        if committed.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        committed
    }

    fn temp_path(&self) -> Result<PathBuf> {
        let tmp_dir = self.root.join(TMP_DIR);
        create_dir_all(&tmp_dir)?;
        Ok(tmp_dir.join(format!(
            "{}.{}",
            hex::encode(rand::random::<[u8; 8]>()),
            std::process::id()
        )))
    }

    /// Writes a body held in memory, synced, and commits it.
    fn put_bytes_now(&self, key: &str, bytes: &[u8], metadata: &Metadata) -> Result<ObjectInfo> {
        check_key(key)?;
        let tmp = self.temp_path()?;
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            file.metadata()
        })();
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::store(key, format!("write aborted: {e}")));
            }
        };
        let meta = StoredMeta {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            metadata: metadata.clone(),
            body_id: body_id(&written),
        };
        self.commit(key, &tmp, &meta)?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            sha256: meta.sha256,
            metadata: meta.metadata,
        })
    }

    /// The body and the version a conditional write names (its digest, so
    /// the two always agree even when another writer renames a new body in
    /// between).
    fn get_versioned_now(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        match std::fs::read(self.path_of(key)?) {
            Ok(bytes) => {
                let version = hex::encode(Sha256::digest(&bytes));
                Ok(Some((bytes, version)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::store(key, e)),
        }
    }
}

async fn copy_hashing(body: &mut ByteStream, path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
        size += n as u64;
    }
    // tokio's File writes in the background and `sync_all` does not report
    // a failed write (ENOSPC shows up on the next write or flush): without
    // this flush a full disk leaves an empty body under a full digest.
    file.flush().await?;
    file.sync_all().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

fn create_dir_all(dir: &Path) -> Result<()> {
    // Most writes go into a directory that is there already: one stat
    // instead of a mkdir per path component.
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Keys are relative paths of plain segments: no traversal out of the root.
fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || RESERVED.contains(&s));
    if bad {
        return Err(Error::store(key, "invalid object key"));
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get(&self, key: &str) -> Result<(ByteStream, ObjectInfo)> {
        let owned = key.to_string();
        let (file, info) = self
            .blocking(key, move |store| {
                let info = store
                    .read_meta(&owned)?
                    .ok_or_else(|| Error::store(&owned, "no such object"))?;
                let file = std::fs::File::open(store.path_of(&owned)?)
                    .map_err(|e| Error::store(&owned, e))?;
                Ok((file, info))
            })
            .await?;
        Ok((Box::pin(tokio::fs::File::from_std(file)), info))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let owned = key.to_string();
        self.blocking(key, move |store| store.read_meta(&owned))
            .await
    }

    async fn put(
        &self,
        key: &str,
        mut body: ByteStream,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        check_key(key)?;
        let tmp = self.temp_path()?;
        let result = copy_hashing(&mut body, &tmp).await;
        let (size, sha256) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(Error::store(key, format!("write aborted: {e}")));
            }
        };
        let (owned, metadata) = (key.to_string(), metadata.clone());
        self.blocking(key, move |store| {
            let written = std::fs::metadata(&tmp).map_err(|e| Error::store(&owned, e))?;
            let meta = StoredMeta {
                size,
                sha256,
                metadata,
                body_id: body_id(&written),
            };
            store.commit(&owned, &tmp, &meta)?;
            Ok(ObjectInfo {
                key: owned,
                size: meta.size,
                sha256: meta.sha256,
                metadata: meta.metadata,
            })
        })
        .await
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        let (owned, metadata) = (key.to_string(), metadata.clone());
        self.blocking(key, move |store| {
            store.put_bytes_now(&owned, &bytes, &metadata)
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let owned = key.to_string();
        self.blocking(key, move |store| {
            store
                .read_meta(&owned)?
                .ok_or_else(|| Error::store(&owned, "no such object"))?;
            std::fs::read(store.path_of(&owned)?).map_err(|e| Error::store(&owned, e))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let owned = prefix.to_string();
        self.blocking(prefix, move |store| list_sync(&store.root, &owned))
            .await
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        self.blocking(prefix, move |_| {
            let mut names: Vec<String> = super::dir_entries(&dir)?
                .iter()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| !RESERVED.contains(&name.as_str()))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let owned = key.to_string();
        self.blocking(key, move |store| store.get_versioned_now(&owned))
            .await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
        expected: Option<&str>,
    ) -> Result<bool> {
        let (owned, metadata) = (key.to_string(), metadata.clone());
        let expected = expected.map(str::to_string);
        self.blocking(key, move |store| {
            let _held = store.lock(&owned)?;
            let current = store.get_versioned_now(&owned)?.map(|(_, version)| version);
            if current != expected {
                return Ok(false);
            }
            store.put_bytes_now(&owned, &bytes, &metadata)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        for path in [self.path_of(key)?, self.meta_path(key)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::store(key, e)),
            }
        }
        Ok(())
    }
}

fn list_sync(root: &Path, prefix: &str) -> Result<Vec<String>> {
    // Walk only the directory the prefix points into, not the whole store.
    let start_rel = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
    let start = root.join(start_rel);
    let mut keys = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        for entry in super::dir_entries(&dir)? {
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel.to_string_lossy().replace('\\', "/");
            if RESERVED.iter().any(|r| key.starts_with(r)) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }
    keys.sort();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names directly under a prefix, as the listing of every key below
    /// would give them, without the store's own directories.
    #[tokio::test]
    async fn children_are_the_next_segments_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        for key in [
            "reports/ice/2026-11-20/items/a.json",
            "reports/ice/2026-11-20/status.json",
            "reports/ice/2026-11-21/items/b.json",
            "reports/ice/mapping/problems.json",
            "reports/xip/2026-11-20/status.json",
        ] {
            store
                .put_bytes(key, b"{}".to_vec(), &Metadata::new())
                .await
                .unwrap();
        }
        let children = store.list_children("reports/ice/").await.unwrap();
        assert_eq!(children, ["2026-11-20", "2026-11-21", "mapping"]);
        let everything: Vec<String> = store.list("reports/ice/").await.unwrap();
        let mut derived: Vec<&str> = everything
            .iter()
            .filter_map(|k| k.strip_prefix("reports/ice/")?.split('/').next())
            .collect();
        derived.dedup();
        assert_eq!(children, derived);
        assert_eq!(
            store.list_children("reports/none/").await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            store.list_children("").await.unwrap(),
            ["reports"],
            "not .meta and the like"
        );
    }

    /// A writer stopped between its metadata and its body leaves new
    /// metadata over the old body: the reader sees it and describes the body
    /// that is there, never the one that did not land.
    #[cfg(unix)]
    #[tokio::test]
    async fn metadata_of_a_body_that_never_landed_is_repaired_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let old = store
            .put_bytes(
                "config/ice/mapping.csv",
                b"old body".to_vec(),
                &Metadata::new(),
            )
            .await
            .unwrap();
        // The new version's metadata, as the interrupted put had renamed it
        // into place (made by a put elsewhere, then moved over).
        store
            .put_bytes(
                "config/ice/other.csv",
                b"the new, longer body".to_vec(),
                &Metadata::new(),
            )
            .await
            .unwrap();
        std::fs::rename(
            store.meta_path("config/ice/other.csv"),
            store.meta_path("config/ice/mapping.csv"),
        )
        .unwrap();
        let seen = store.head("config/ice/mapping.csv").await.unwrap().unwrap();
        assert_eq!(
            (seen.size, seen.sha256.as_str()),
            (old.size, old.sha256.as_str())
        );
        assert_eq!(
            store.get_bytes("config/ice/mapping.csv").await.unwrap(),
            b"old body"
        );
        // Repaired once: the metadata now names this body.
        let again = store.head("config/ice/mapping.csv").await.unwrap().unwrap();
        assert_eq!(again.sha256, old.sha256);
    }

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut meta = Metadata::new();
        meta.insert("source-key".into(), "raw/ice/a.pgp".into());
        let info = store
            .put_bytes("plain/ice/a.xml", b"hello".to_vec(), &meta)
            .await
            .unwrap();
        assert_eq!(info.size, 5);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(b"hello")));
        assert_eq!(store.get_bytes("plain/ice/a.xml").await.unwrap(), b"hello");
        let head = store.head("plain/ice/a.xml").await.unwrap().unwrap();
        assert_eq!(head.metadata, meta);
        assert_eq!(store.list("plain/").await.unwrap(), vec!["plain/ice/a.xml"]);
        assert!(store.list("raw/").await.unwrap().is_empty());
        store.delete("plain/ice/a.xml").await.unwrap();
        assert!(store.head("plain/ice/a.xml").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn conditional_writes_lose_no_update_between_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path()));
        let key = "state/ice/events/2026-11-20/x.json";
        assert!(store
            .put_if(key, b"0".to_vec(), &Metadata::new(), None)
            .await
            .unwrap());
        assert!(!store
            .put_if(key, b"0".to_vec(), &Metadata::new(), None)
            .await
            .unwrap());
        let (_, version) = store.get_versioned(key).await.unwrap().unwrap();
        assert!(!store
            .put_if(key, b"1".to_vec(), &Metadata::new(), Some("stale"))
            .await
            .unwrap());
        assert_eq!(store.get_bytes(key).await.unwrap(), b"0");
        assert!(store
            .put_if(key, b"0".to_vec(), &Metadata::new(), Some(&version))
            .await
            .unwrap());
        // Sixteen writers each add one, re-reading whenever they lose.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let (bytes, version) = store.get_versioned(key).await.unwrap().unwrap();
                    let n: u32 = String::from_utf8(bytes).unwrap().parse().unwrap();
                    let next = (n + 1).to_string().into_bytes();
                    if store
                        .put_if(key, next, &Metadata::new(), Some(&version))
                        .await
                        .unwrap()
                    {
                        return;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.get_bytes(key).await.unwrap(), b"16");
    }

    #[tokio::test]
    async fn evidence_keeps_its_earlier_version_and_hand_placed_objects_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let meta = Metadata::new();
        let first = store
            .put_bytes("raw/ice/a.pgp", b"one".to_vec(), &meta)
            .await
            .unwrap();
        store
            .put_bytes("raw/ice/a.pgp", b"two".to_vec(), &meta)
            .await
            .unwrap();
        let kept = dir
            .path()
            .join(".versions/raw/ice/a.pgp")
            .join(&first.sha256);
        assert_eq!(std::fs::read(kept).unwrap(), b"one");
        assert_eq!(store.list("").await.unwrap(), vec!["raw/ice/a.pgp"]);
        // Reports are rebuilt in place: no versions kept.
        store
            .put_bytes("reports/ice/s.json", b"1".to_vec(), &meta)
            .await
            .unwrap();
        store
            .put_bytes("reports/ice/s.json", b"2".to_vec(), &meta)
            .await
            .unwrap();
        assert!(!dir.path().join(".versions/reports").exists());
        // A mapping CSV copied in by hand, with no metadata.
        std::fs::create_dir_all(dir.path().join("config/ice")).unwrap();
        std::fs::write(dir.path().join("config/ice/mapping.csv"), b"ImId,Mailbox\n").unwrap();
        let info = store.head("config/ice/mapping.csv").await.unwrap().unwrap();
        assert_eq!(info.size, 13);
        assert_eq!(
            store.get_bytes("config/ice/mapping.csv").await.unwrap(),
            b"ImId,Mailbox\n"
        );
    }

    #[tokio::test]
    async fn a_failing_body_commits_nothing() {
        struct Failing;
        impl tokio::io::AsyncRead for Failing {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("signature bad")))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let err = store
            .put("plain/x", Box::pin(Failing), &Metadata::new())
            .await;
        assert!(err.is_err());
        assert!(store.head("plain/x").await.unwrap().is_none());
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[test]
    fn traversal_keys_are_refused() {
        for key in ["../etc/passwd", "/abs", "a//b", "a/../b", ".meta/x", ""] {
            assert!(check_key(key).is_err(), "{key}");
        }
        assert!(check_key("raw/ice/2026-11-20 export.xml.pgp").is_ok());
    }
}
