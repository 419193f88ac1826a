//! The [`BlobStore`] trait: a flat namespace of immutable objects under slash-separated keys.

use std::fmt;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::error::{BlobError, IoContext, Result};

/// A stream of an object's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A validated object key: slash-separated segments of `[A-Za-z0-9._-]`, none empty or
/// starting with a dot, at most 512 bytes. Keys never reach outside the store's root (local directory or
/// bucket prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty() || key.len() > 512 {
            return Err(BlobError::Invalid(format!("invalid blob key {key:?}")));
        }
        for seg in key.split('/') {
            let ok = !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(BlobError::Invalid(format!("invalid blob key {key:?}")));
            }
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `head` and `list` say about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: BlobKey,
    pub size: u64,
}

/// An object store: local directory or S3-compatible server. Objects are written whole (a
/// reader never sees a half-written object) and are not modified in place.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Where the store is, for messages and records (never holds a secret).
    fn describe(&self) -> String;

    /// Stores `data` under `key`, replacing any object there.
    async fn put_bytes(&self, key: &BlobKey, data: Bytes) -> Result<()>;

    /// Stores the stream's bytes under `key` (large objects go up in parts; the object appears
    /// only when complete). Returns the number of bytes stored.
    async fn put_stream(&self, key: &BlobKey, stream: ByteStream) -> Result<u64>;

    /// Streams the object's bytes. `NotFound` when it does not exist.
    async fn get(&self, key: &BlobKey) -> Result<ByteStream>;

    /// Size of the object, or `None` when it does not exist.
    async fn head(&self, key: &BlobKey) -> Result<Option<ObjectMeta>>;

    /// Every object whose key lies under the directory `prefix` (`"chunks"` lists
    /// `chunks/...`), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<()>;

    /// True when the object exists.
    async fn exists(&self, key: &BlobKey) -> Result<bool> {
        Ok(self.head(key).await?.is_some())
    }

    /// Uploads a local file.
    async fn put_file(&self, key: &BlobKey, path: &Path) -> Result<u64> {
        let file = tokio::fs::File::open(path)
            .await
            .ctx(|| format!("open {}", path.display()))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(|r| r.map_err(|e| BlobError::io("read file to upload", e)));
        self.put_stream(key, Box::pin(stream)).await
    }

    /// Reads a whole object into memory (for small objects: manifests, indexes, chunks).
    async fn get_bytes(&self, key: &BlobKey) -> Result<Bytes> {
        let mut stream = self.get(key).await?;
        let mut buf = Vec::new();
        while let Some(part) = stream.next().await {
            buf.extend_from_slice(&part?);
        }
        Ok(Bytes::from(buf))
    }

    /// Downloads an object into a local file (created or truncated). Returns its size.
    async fn get_to_file(&self, key: &BlobKey, path: &Path) -> Result<u64> {
        let mut stream = self.get(key).await?;
        let mut file = tokio::fs::File::create(path)
            .await
            .ctx(|| format!("create {}", path.display()))?;
        let mut n = 0u64;
        while let Some(part) = stream.next().await {
            let part = part?;
            n += part.len() as u64;
            file.write_all(&part)
                .await
                .ctx(|| format!("write {}", path.display()))?;
        }
        file.sync_all()
            .await
            .ctx(|| format!("sync {}", path.display()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(BlobKey::new("chunks/abc123").is_ok());
        assert!(BlobKey::new("manifests/sha256-ab.json").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "./a", "a b", "a\\b", "ä", ".tmp/x", "a/.b",
        ] {
            assert!(BlobKey::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BlobKey::new("a".repeat(513)).is_err());
    }
}
