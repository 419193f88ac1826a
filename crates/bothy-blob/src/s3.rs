//! A blob store on any S3-compatible server (AWS S3, MinIO, Ceph RGW, moto, s3s …), through
//! the `object_store` crate (SigV4 signing, multipart uploads, retries).
//!
//! Objects larger than [`MULTIPART_THRESHOLD`] go up as multipart uploads of
//! [`PART_SIZE`]-byte parts, a few in flight at once; the object appears only when the upload
//! completes, and a failed upload is aborted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};

use crate::error::{BlobError, Result};
use crate::store::{BlobKey, BlobStore, ByteStream, ObjectMeta};

/// Streams up to this size are buffered and sent with one PUT.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 4;

/// Where an S3-compatible store is and how to sign for it.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing slash), may be empty.
    pub prefix: String,
    /// `http(s)://host:port` of the server; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    pub path_style: bool,
}

impl std::fmt::Debug for S3Config {
    // Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct S3Store {
    config: S3Config,
    inner: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for S3Store {
    // The inner client's Debug would print the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    pub fn new(config: S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(BlobError::Invalid("S3 store needs a bucket".into()));
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(endpoint) = &config.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &config.session_token {
                    b = b.with_token(token);
                }
            }
            (None, None) => b = b.with_skip_signature(true),
            _ => {
                return Err(BlobError::Invalid(
                    "S3 store needs both an access key id and a secret access key".into(),
                ))
            }
        }
        let inner = b
            .build()
            .map_err(|e| BlobError::Invalid(format!("S3 store: {e}")))?;
        Ok(Self {
            config,
            inner: Arc::new(inner),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    fn path(&self, key: &BlobKey) -> ObjPath {
        if self.config.prefix.is_empty() {
            ObjPath::from(key.as_str())
        } else {
            ObjPath::from(format!("{}/{}", self.config.prefix, key.as_str()))
        }
    }

    fn key_of(&self, path: &ObjPath) -> Option<BlobKey> {
        let s = path.as_ref();
        let rel = if self.config.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(&self.config.prefix)?.strip_prefix('/')?
        };
        BlobKey::new(rel).ok()
    }

    /// Sends a stream as a multipart upload whose first part is `head`.
    async fn put_multipart(
        &self,
        path: &ObjPath,
        head: Vec<u8>,
        mut stream: ByteStream,
    ) -> Result<u64> {
        let upload = self
            .inner
            .put_multipart(path)
            .await
            .map_err(map_write_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut n = head.len() as u64;
        writer.write(&head);
        drop(head);
        let result: Result<()> = async {
            while let Some(part) = stream.next().await {
                let part = part?;
                n += part.len() as u64;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(map_write_err)?;
                writer.put(part);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(map_write_err)?;
                Ok(n)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// Maps an `object_store` error: missing objects are `NotFound`, the rest means the store is
/// unreachable or refused (credentials, bucket, server errors).
fn map_err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
        other => BlobError::Unavailable(other.to_string()),
    }
}

/// For writes and listings a "not found" can only be the bucket.
fn map_write_err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { source, .. } => {
            BlobError::Unavailable(format!("bucket not found: {source}"))
        }
        other => map_err(other),
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn describe(&self) -> String {
        let mut s = format!("s3://{}", self.config.bucket);
        if !self.config.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.config.prefix);
        }
        if let Some(e) = &self.config.endpoint {
            s.push_str("?endpoint=");
            s.push_str(e);
        }
        s
    }

    async fn put_bytes(&self, key: &BlobKey, data: Bytes) -> Result<()> {
        if data.len() > MULTIPART_THRESHOLD {
            let stream = futures_util::stream::iter(
                data.chunks(PART_SIZE)
                    .map(|c| Ok(data.slice_ref(c)))
                    .collect::<Vec<_>>(),
            );
            self.put_multipart(&self.path(key), Vec::new(), Box::pin(stream))
                .await?;
            return Ok(());
        }
        self.inner
            .put(&self.path(key), PutPayload::from(data))
            .await
            .map_err(map_write_err)?;
        Ok(())
    }

    async fn put_stream(&self, key: &BlobKey, mut stream: ByteStream) -> Result<u64> {
        // Buffer up to the threshold: small objects take one PUT, larger ones go multipart.
        let mut head = Vec::new();
        while head.len() <= MULTIPART_THRESHOLD {
            match stream.next().await {
                Some(part) => head.extend_from_slice(&part?),
                None => {
                    let n = head.len() as u64;
                    self.put_bytes(key, Bytes::from(head)).await?;
                    return Ok(n);
                }
            }
        }
        self.put_multipart(&self.path(key), head, stream).await
    }

    async fn get(&self, key: &BlobKey) -> Result<ByteStream> {
        let result = self.inner.get(&self.path(key)).await.map_err(map_err)?;
        Ok(Box::pin(result.into_stream().map(|r| r.map_err(map_err))))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<ObjectMeta>> {
        match self.inner.head(&self.path(key)).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: m.size,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            BlobKey::new(prefix)?;
        }
        let full = match (self.config.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ObjPath::from(prefix)),
            (false, true) => Some(ObjPath::from(self.config.prefix.as_str())),
            (false, false) => Some(ObjPath::from(format!("{}/{prefix}", self.config.prefix))),
        };
        let mut stream = self.inner.list(full.as_ref());
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m.map_err(map_write_err)?;
            if let Some(key) = self.key_of(&m.location) {
                out.push(ObjectMeta { key, size: m.size });
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}
