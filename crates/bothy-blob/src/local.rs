//! A blob store in a local directory (default `$DATA/blobs`).
//!
//! Objects are files at `<root>/<key>`. Writes go to `<root>/.tmp/<random>` first and are
//! renamed into place after an fsync, so a reader (or a daemon restarted after `kill -9`) sees
//! either the whole object or none. Keys never start a segment with a dot, so `.tmp` cannot
//! collide with an object.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::{BlobError, IoContext, Result};
use crate::store::{BlobKey, BlobStore, ByteStream, ObjectMeta};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    async fn temp_file(&self) -> Result<(PathBuf, tokio::fs::File)> {
        let dir = self.root.join(".tmp");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| unavailable(&dir, e))?;
        let path = dir.join(format!("{:016x}", rand::random::<u64>()));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| unavailable(&path, e))?;
        Ok((path, file))
    }

    /// fsyncs the temp file and renames it to the key's path.
    async fn commit(&self, temp: &Path, file: tokio::fs::File, key: &BlobKey) -> Result<()> {
        let result = async {
            file.sync_all().await.map_err(|e| unavailable(temp, e))?;
            drop(file);
            let dest = self.path(key);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| unavailable(parent, e))?;
            }
            tokio::fs::rename(temp, &dest)
                .await
                .map_err(|e| unavailable(&dest, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(temp).await;
        }
        result
    }
}

fn unavailable(path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Unavailable(format!("{}: {e}", path.display()))
}

#[async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put_bytes(&self, key: &BlobKey, data: Bytes) -> Result<()> {
        let (temp, mut file) = self.temp_file().await?;
        if let Err(e) = file.write_all(&data).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(unavailable(&temp, e));
        }
        self.commit(&temp, file, key).await
    }

    async fn put_stream(&self, key: &BlobKey, mut stream: ByteStream) -> Result<u64> {
        let (temp, mut file) = self.temp_file().await?;
        let mut n = 0u64;
        let copied: Result<()> = async {
            while let Some(part) = stream.next().await {
                let part = part?;
                n += part.len() as u64;
                file.write_all(&part)
                    .await
                    .map_err(|e| unavailable(&temp, e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        self.commit(&temp, file, key).await?;
        Ok(n)
    }

    async fn get(&self, key: &BlobKey) -> Result<ByteStream> {
        let path = self.path(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key.to_string()))
            }
            Err(e) => return Err(unavailable(&path, e)),
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(move |r| r.map_err(|e| BlobError::Unavailable(format!("read blob: {e}"))));
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<ObjectMeta>> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc_enotdir()) => Ok(None),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.trim_matches('/');
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            BlobKey::new(prefix)?;
            self.root.join(prefix)
        };
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(libc_enotdir()) => continue,
                    Err(e) => return Err(unavailable(&dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| unavailable(&dir, e))?;
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    let ft = entry.file_type().map_err(|e| unavailable(&dir, e))?;
                    let path = entry.path();
                    if ft.is_dir() {
                        stack.push(path);
                    } else if ft.is_file() {
                        let rel = path.strip_prefix(&root).unwrap_or(&path);
                        let Ok(key) = BlobKey::new(rel.to_string_lossy().into_owned()) else {
                            continue;
                        };
                        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        out.push(ObjectMeta { key, size });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Unavailable(format!("list task: {e}")))?
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    /// Copies through a temp file, so the object is whole or absent.
    async fn put_file(&self, key: &BlobKey, path: &Path) -> Result<u64> {
        let (temp, file) = self.temp_file().await?;
        drop(file);
        let n = match tokio::fs::copy(path, &temp).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(BlobError::io(format!("copy {}", path.display()), e));
            }
        };
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&temp)
            .await
            .ctx(|| format!("open {}", temp.display()))?;
        self.commit(&temp, file, key).await?;
        Ok(n)
    }
}

fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("blobs"));
        let k = BlobKey::new("chunks/aa").unwrap();
        assert_eq!(store.head(&k).await.unwrap(), None);
        assert!(matches!(store.get(&k).await, Err(BlobError::NotFound(_))));
        store
            .put_bytes(&k, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(store.head(&k).await.unwrap().unwrap().size, 5);
        assert_eq!(&store.get_bytes(&k).await.unwrap()[..], b"hello");
        let k2 = BlobKey::new("chunks/sub/bb").unwrap();
        store
            .put_bytes(&k2, Bytes::from_static(b"x"))
            .await
            .unwrap();
        store
            .put_bytes(&BlobKey::new("other").unwrap(), Bytes::new())
            .await
            .unwrap();
        let mut listed: Vec<_> = store
            .list("chunks")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, ["chunks/aa", "chunks/sub/bb"]);
        assert_eq!(store.list("").await.unwrap().len(), 3);
        assert!(store.list("nothing").await.unwrap().is_empty());
        store.delete(&k).await.unwrap();
        store.delete(&k).await.unwrap();
        assert!(!store.exists(&k).await.unwrap());
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(store.root().join(".tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn failed_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let k = BlobKey::new("x").unwrap();
        let stream = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(BlobError::Unavailable("source broke".into())),
        ]);
        assert!(store.put_stream(&k, Box::pin(stream)).await.is_err());
        assert!(!store.exists(&k).await.unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }
}
