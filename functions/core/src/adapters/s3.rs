//! Object store on Amazon S3 (feature `aws`).
//!
//! - **Streaming**: `get` hands out the response body as it arrives; `put`
//!   reads its body one part at a time and never holds the whole object.
//! - **Multipart**: a body longer than one part goes up as a multipart upload
//!   (a few parts in flight); a body that ends with an I/O error aborts the
//!   upload, so nothing is committed (the port's contract).
//! - **Integrity**: every request carries the SHA-256 of what it sends
//!   (`x-amz-checksum-sha256`), which S3 checks on arrival.
//! - **SSE-KMS**: with a key configured, every write asks for `aws:kms` with
//!   that key and an S3 Bucket Key (the bucket's default encryption applies
//!   otherwise).
//! - **Lineage metadata**: user metadata values are percent-encoded where S3
//!   could not carry them (non-ASCII, control characters, `%` and spaces) and
//!   decoded on read, so what a stage writes is what the next one reads.
//! - **SHA-256 of the object**: known only once the body has streamed. A
//!   single-part object carries it in its metadata (`object-sha256`), set in
//!   the very request that writes it. For a multipart object it is recorded
//!   as the object tag `object-sha256` of the new version right after
//!   `CompleteMultipartUpload`: tagging adds no object version and sends no
//!   `ObjectCreated` event, where `CopyObject` with new metadata would copy
//!   every byte again, add a version and start the next stage twice. A reader
//!   that finds neither (it came before the tag, or the object was uploaded by
//!   hand) computes the digest from the body and records the tag itself.
//! - **Idempotent writes**: a write whose body, size and metadata equal the
//!   current object's commits nothing (a multipart upload is aborted), so a
//!   replayed stage adds no version and starts no further S3 event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, Tag, Tagging,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::ports::{ByteStream, Metadata, ObjectInfo, ObjectStore};

/// Metadata key and tag key that hold the object's SHA-256 (hex).
pub const SHA256_KEY: &str = "object-sha256";

/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;
/// Part size doubles every this many parts, so an object of unknown length
/// can grow far beyond `part_size * 10_000` (S3's limit is 5 TiB).
const PARTS_PER_SIZE_STEP: i32 = 1_000;

/// What may not appear as such in an S3 metadata value.
const METADATA_ESCAPE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// How the store writes.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// SSE-KMS key (id, ARN or alias) for every write; `None` leaves
    /// encryption to the bucket's default.
    pub kms_key_id: Option<String>,
    /// Bytes per part of a multipart upload (at least [`MIN_PART_SIZE`]); a
    /// body up to this size goes up in one `PutObject`.
    pub part_size: usize,
    /// Parts uploading at once; memory held is about
    /// `part_size * (parts_in_flight + 1)`.
    pub parts_in_flight: usize,
}

impl S3Settings {
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            kms_key_id: None,
            part_size: 8 * 1024 * 1024,
            parts_in_flight: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    settings: S3Settings,
    /// Writes and deletes that changed the bucket (unchanged writes excluded).
    commits: Arc<AtomicU64>,
}

impl S3Store {
    pub fn new(client: Client, mut settings: S3Settings) -> Self {
        settings.part_size = settings.part_size.max(MIN_PART_SIZE);
        settings.parts_in_flight = settings.parts_in_flight.max(1);
        Self {
            client,
            settings,
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many writes and deletes changed the bucket so far (a write of an
    /// unchanged object does not count): tells whether a stage changed
    /// anything.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn part_len(&self, part_number: i32) -> usize {
        let step = ((part_number - 1) / PARTS_PER_SIZE_STEP).clamp(0, 9) as u32;
        self.settings.part_size.saturating_mul(1 << step)
    }

    /// The object's SHA-256 from its metadata or tag; computed from the body
    /// (and recorded as a tag) when neither has it.
    async fn resolve_sha256(
        &self,
        key: &str,
        version_id: Option<&str>,
        metadata: &mut Metadata,
    ) -> Result<String> {
        if let Some(sha) = metadata.remove(SHA256_KEY) {
            return Ok(sha);
        }
        let tags = self
            .client
            .get_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await
            .map_err(|e| s3_error(key, "GetObjectTagging", e))?;
        if let Some(tag) = tags.tag_set().iter().find(|t| t.key() == SHA256_KEY) {
            return Ok(tag.value().to_string());
        }
        tracing::warn!(
            key,
            "object has no recorded SHA-256 (written by hand, or its tag is not there yet): computing it"
        );
        let output = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await
            .map_err(|e| s3_error(key, "GetObject", e))?;
        let mut body = output.body.into_async_read();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| Error::store(key, format!("reading to compute its SHA-256: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let sha = hex::encode(hasher.finalize());
        if let Err(e) = self.tag_sha256(key, version_id, &sha).await {
            // Reading roles may not tag: the digest is still right, only not kept.
            tracing::debug!(key, error = %e, "could not record the SHA-256 tag");
        }
        Ok(sha)
    }

    async fn tag_sha256(&self, key: &str, version_id: Option<&str>, sha: &str) -> Result<()> {
        let tag = Tag::builder()
            .key(SHA256_KEY)
            .value(sha)
            .build()
            .map_err(|e| Error::store(key, e))?;
        let tagging = Tagging::builder()
            .tag_set(tag)
            .build()
            .map_err(|e| Error::store(key, e))?;
        self.client
            .put_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| s3_error(key, "PutObjectTagging", e))?;
        Ok(())
    }

    /// Whether the current object already is exactly this (so writing it
    /// again would change nothing but add a version and an event).
    async fn unchanged(
        &self,
        key: &str,
        size: u64,
        sha256: &str,
        metadata: &Metadata,
    ) -> Result<Option<ObjectInfo>> {
        Ok(self.head(key).await?.filter(|info| {
            info.size == size && info.sha256 == sha256 && &info.metadata == metadata
        }))
    }

    async fn put_single(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha256: String,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        let size = bytes.len() as u64;
        if let Some(info) = self.unchanged(key, size, &sha256, metadata).await? {
            tracing::debug!(key, "object unchanged: nothing written");
            return Ok(info);
        }
        self.put_object(key, bytes, &sha256, metadata)?
            .send()
            .await
            .map_err(|e| s3_error(key, "PutObject", e))?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            sha256,
            metadata: metadata.clone(),
        })
    }

    /// A PutObject request with the digest, checksum and encryption every
    /// single-part write carries.
    fn put_object(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha256: &str,
        metadata: &Metadata,
    ) -> Result<aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder> {
        let mut s3_metadata = encode_metadata(key, metadata)?;
        s3_metadata.insert(SHA256_KEY.to_string(), sha256.to_string());
        let request = self
            .client
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .set_metadata(Some(s3_metadata))
            .checksum_sha256(base64_of_hex(sha256))
            .content_length(bytes.len() as i64)
            .body(S3Body::from(bytes));
        Ok(match &self.settings.kms_key_id {
            Some(kms) => request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms)
                .bucket_key_enabled(true),
            None => request,
        })
    }

    /// A multipart upload that starts with `first` (a full part) and goes on
    /// with the rest of `body`. Aborted on any failure, or when the result
    /// would equal the current object.
    async fn put_multipart(
        &self,
        key: &str,
        first: Vec<u8>,
        body: ByteStream,
        hasher: Sha256,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        let request = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .set_metadata(Some(encode_metadata(key, metadata)?))
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        let request = match &self.settings.kms_key_id {
            Some(kms) => request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms)
                .bucket_key_enabled(true),
            None => request,
        };
        let created = request
            .send()
            .await
            .map_err(|e| s3_error(key, "CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::store(key, "CreateMultipartUpload returned no upload id"))?
            .to_string();
        let result = self
            .upload_parts(key, &upload_id, first, body, hasher, metadata)
            .await;
        match result {
            Ok(Some(info)) => Ok(info),
            Ok(None) => {
                tracing::debug!(key, "object unchanged: multipart upload aborted");
                self.abort(key, &upload_id).await;
                self.head(key)
                    .await?
                    .ok_or_else(|| Error::store(key, "vanished while being rewritten"))
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            // The bucket's lifecycle rule removes incomplete uploads after a day.
            tracing::warn!(key, error = %DisplayErrorContext(&e), "could not abort the multipart upload");
        }
    }

    /// Uploads every part and completes the upload; `None` when the object
    /// turned out unchanged (the caller aborts).
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        mut body: ByteStream,
        mut hasher: Sha256,
        metadata: &Metadata,
    ) -> Result<Option<ObjectInfo>> {
        let mut in_flight: JoinSet<Result<CompletedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut size = first.len() as u64;
        let mut part_number = 1;
        let mut chunk = first;
        loop {
            while in_flight.len() >= self.settings.parts_in_flight {
                parts.push(join_part(key, &mut in_flight).await?);
            }
            in_flight.spawn(upload_part(
                self.client.clone(),
                self.bucket().to_string(),
                key.to_string(),
                upload_id.to_string(),
                part_number,
                chunk,
            ));
            part_number += 1;
            let next = read_part(&mut body, self.part_len(part_number))
                .await
                .map_err(|e| Error::store(key, format!("write aborted: {e}")))?;
            if next.is_empty() {
                break;
            }
            if part_number > MAX_PARTS {
                return Err(Error::store(key, "object too large for a multipart upload"));
            }
            hasher.update(&next);
            size += next.len() as u64;
            chunk = next;
        }
        while !in_flight.is_empty() {
            parts.push(join_part(key, &mut in_flight).await?);
        }
        parts.sort_by_key(|p| p.part_number());
        let sha256 = hex::encode(hasher.finalize());
        if self
            .unchanged(key, size, &sha256, metadata)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(key, "CompleteMultipartUpload", e))?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.tag_sha256(key, completed.version_id(), &sha256)
            .await?;
        tracing::debug!(
            key,
            size,
            parts = part_number - 1,
            "multipart upload complete"
        );
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size,
            sha256,
            metadata: metadata.clone(),
        }))
    }
}

async fn join_part(key: &str, set: &mut JoinSet<Result<CompletedPart>>) -> Result<CompletedPart> {
    match set.join_next().await {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(Error::store(key, format!("part upload task failed: {e}"))),
        None => Err(Error::store(key, "no part upload in flight")),
    }
}

async fn upload_part(
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    part_number: i32,
    bytes: Vec<u8>,
) -> Result<CompletedPart> {
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
    let len = bytes.len() as i64;
    let output = client
        .upload_part()
        .bucket(bucket)
        .key(&key)
        .upload_id(upload_id)
        .part_number(part_number)
        .checksum_sha256(&checksum)
        .content_length(len)
        .body(S3Body::from(bytes))
        .send()
        .await
        .map_err(|e| s3_error(&key, "UploadPart", e))?;
    Ok(CompletedPart::builder()
        .part_number(part_number)
        .set_e_tag(output.e_tag().map(str::to_string))
        .checksum_sha256(output.checksum_sha256().unwrap_or(&checksum))
        .build())
}

/// Reads up to `len` bytes (less only at the end of the body).
async fn read_part(body: &mut ByteStream, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    body.take(len as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn base64_of_hex(sha_hex: &str) -> String {
    let bytes = hex::decode(sha_hex).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn s3_error<E, R>(key: &str, operation: &str, error: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(&error).to_string(),
    };
    Error::store(key, format!("S3 {operation}: {detail}"))
}

fn is_not_found<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(e) => {
            e.raw().status().as_u16() == 404
                || matches!(e.err().code(), Some("NoSuchKey" | "NotFound"))
        }
        _ => false,
    }
}

/// Metadata for S3: keys lower-case, values percent-encoded where needed.
fn encode_metadata(key: &str, metadata: &Metadata) -> Result<HashMap<String, String>> {
    metadata
        .iter()
        .map(|(name, value)| {
            let ok = !name.is_empty()
                && name != SHA256_KEY
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(Error::store(
                    key,
                    format!("metadata name {name:?} is reserved or not lower-case ASCII"),
                ));
            }
            Ok((name.clone(), encode_metadata_value(value)))
        })
        .collect()
}

pub fn encode_metadata_value(value: &str) -> String {
    utf8_percent_encode(value, METADATA_ESCAPE).to_string()
}

pub fn decode_metadata_value(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

fn decode_metadata(metadata: Option<&HashMap<String, String>>) -> Metadata {
    metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = if k == SHA256_KEY {
                v.clone()
            } else {
                decode_metadata_value(v)
            };
            (k.to_ascii_lowercase(), value)
        })
        .collect()
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> Result<(ByteStream, ObjectInfo)> {
        let output = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    Error::store(key, "no such object")
                } else {
                    s3_error(key, "GetObject", e)
                }
            })?;
        let mut metadata = decode_metadata(output.metadata());
        let sha256 = self
            .resolve_sha256(key, output.version_id(), &mut metadata)
            .await?;
        let info = ObjectInfo {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            sha256,
            metadata,
        };
        Ok((Box::pin(output.body.into_async_read()), info))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let output = match self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(s3_error(key, "HeadObject", e)),
        };
        let mut metadata = decode_metadata(output.metadata());
        let sha256 = self
            .resolve_sha256(key, output.version_id(), &mut metadata)
            .await?;
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            sha256,
            metadata,
        }))
    }

    async fn put(
        &self,
        key: &str,
        mut body: ByteStream,
        metadata: &Metadata,
    ) -> Result<ObjectInfo> {
        let first = read_part(&mut body, self.part_len(1))
            .await
            .map_err(|e| Error::store(key, format!("write aborted: {e}")))?;
        let mut hasher = Sha256::new();
        hasher.update(&first);
        if first.len() < self.part_len(1) {
            let sha256 = hex::encode(hasher.finalize());
            return self.put_single(key, first, sha256, metadata).await;
        }
        self.put_multipart(key, first, body, hasher, metadata).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error(prefix, "ListObjectsV2", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error(prefix, "ListObjectsV2", e))?;
            let under = page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix())
                .chain(page.contents().iter().filter_map(|o| o.key()));
            names.extend(under.filter_map(|key| {
                let name = key.strip_prefix(prefix)?.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            }));
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let output = match self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(s3_error(key, "GetObject", e)),
        };
        let etag = output
            .e_tag()
            .ok_or_else(|| Error::store(key, "GetObject returned no ETag"))?
            .to_string();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| Error::store(key, format!("reading: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(Some((bytes, etag)))
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
        expected: Option<&str>,
    ) -> Result<bool> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let request = self.put_object(key, bytes, &sha256, metadata)?;
        let request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(_) => {
                self.commits.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            }
            // 412: the object is no longer at `expected`; 409: a concurrent
            // conditional write to the same key is in flight.
            Err(SdkError::ServiceError(e)) if matches!(e.raw().status().as_u16(), 409 | 412) => {
                Ok(false)
            }
            Err(e) => Err(s3_error(key, "PutObject (conditional)", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(key, "DeleteObject", e))?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_survive_encoding_and_are_ascii() {
        for value in [
            "raw/ice/ACME 2026-11-20.xml.pgp",
            "sftp://sftp.ice.example:22/export:Zürich 100%.pgp",
            "  leading and trailing  ",
            "tab\there\nnewline",
            "李雷",
            "a+b%2Bc",
        ] {
            let encoded = encode_metadata_value(value);
            assert!(
                encoded.bytes().all(|b| (0x21..0x7f).contains(&b)),
                "{encoded}"
            );
            assert_eq!(decode_metadata_value(&encoded), value);
        }
        assert_eq!(
            encode_metadata_value("sftp://h:22/x_1.pgp"),
            "sftp://h:22/x_1.pgp"
        );
    }

    #[test]
    fn metadata_names_must_be_lower_case_and_not_reserved() {
        let mut meta = Metadata::new();
        meta.insert("source-key".into(), "x".into());
        assert!(encode_metadata("k", &meta).is_ok());
        meta.insert("Source".into(), "x".into());
        assert!(encode_metadata("k", &meta).is_err());
        let reserved = Metadata::from([(SHA256_KEY.to_string(), "x".to_string())]);
        assert!(encode_metadata("k", &reserved).is_err());
    }

    #[test]
    fn parts_grow_so_unknown_lengths_fit() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .build();
        let store = S3Store::new(Client::from_conf(config), S3Settings::new("b"));
        assert_eq!(store.part_len(1), 8 << 20);
        assert_eq!(store.part_len(1000), 8 << 20);
        assert_eq!(store.part_len(1001), 16 << 20);
        let total: u64 = (1..=MAX_PARTS).map(|n| store.part_len(n) as u64).sum();
        assert!(total > 5 << 40, "10,000 parts hold S3's 5 TiB maximum");
    }
}
