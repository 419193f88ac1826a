//! Moving layer archives to and from a store as content-addressed chunks.
//!
//! Push: each chunk goes to `chunks/<sha256>` unless the store already has an object of that
//! name and size, then `layers/<sha256>.json` (the chunk list) is written last. A layer whose
//! index exists is complete and skipped whole; an interrupted push, re-run, uploads only the
//! chunks that are missing. Pull: every chunk is checked against its digest and size as it
//! arrives, and the reassembled archive against the layer's digest, before the file is handed
//! back; a missing or damaged piece is a [`BlobError::Corrupt`].

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::archive::Packed;
use crate::digest::{ChunkRef, Digest, Hasher};
use crate::error::{BlobError, IoContext, Result};
use crate::store::{BlobKey, BlobStore};

/// Format tag of layer indexes.
pub const LAYER_FORMAT: &str = "bothy.layer/v1";
/// Chunks moved at once.
const CONCURRENCY: usize = 4;

/// `layers/<sha256>.json`: the chunks of one archive, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub format: String,
    pub digest: Digest,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// Transfer progress, reported after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes handled so far (sent, received or found already present).
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
    /// Of `done`, bytes that did not move because the store already had them.
    pub skipped: u64,
}

/// Called with progress; must be cheap (it runs on the transfer's task).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStats {
    pub uploaded_bytes: u64,
    pub skipped_bytes: u64,
    pub chunks_uploaded: u64,
    pub chunks_skipped: u64,
    /// The layer's index was already there: nothing was even checked chunk by chunk.
    pub layer_skipped: bool,
}

impl PushStats {
    pub fn add(&mut self, o: &PushStats) {
        self.uploaded_bytes += o.uploaded_bytes;
        self.skipped_bytes += o.skipped_bytes;
        self.chunks_uploaded += o.chunks_uploaded;
        self.chunks_skipped += o.chunks_skipped;
    }
}

pub fn chunk_key(d: &Digest) -> BlobKey {
    BlobKey::new(format!("chunks/{}", d.hex())).expect("hex digests are valid keys")
}

pub fn layer_key(d: &Digest) -> BlobKey {
    BlobKey::new(format!("layers/{}.json", d.hex())).expect("hex digests are valid keys")
}

/// True when the store holds a complete copy of the layer (its index was written).
pub async fn layer_complete(store: &dyn BlobStore, digest: &Digest) -> Result<bool> {
    store.exists(&layer_key(digest)).await
}

/// Uploads the archive file `archive` (described by `packed`) in chunks, skipping what the
/// store has.
pub async fn push_archive(
    store: &dyn BlobStore,
    archive: &Path,
    packed: &Packed,
    progress: Option<&ProgressFn>,
) -> Result<PushStats> {
    let report = |p: Progress| {
        if let Some(f) = progress {
            f(p)
        }
    };
    if layer_complete(store, &packed.digest).await? {
        report(Progress {
            done: packed.size,
            total: packed.size,
            skipped: packed.size,
        });
        return Ok(PushStats {
            skipped_bytes: packed.size,
            chunks_skipped: packed.chunks.len() as u64,
            layer_skipped: true,
            ..Default::default()
        });
    }
    let file =
        Arc::new(std::fs::File::open(archive).ctx(|| format!("open {}", archive.display()))?);
    let done = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let uploaded_chunks = AtomicU64::new(0);
    let mut offsets = Vec::with_capacity(packed.chunks.len());
    let mut off = 0u64;
    for c in &packed.chunks {
        offsets.push(off);
        off += c.size;
    }
    if off != packed.size {
        return Err(BlobError::Invalid(
            "chunk sizes do not add up to the archive size".into(),
        ));
    }
    // Owned items: closures over borrowed items make the future's Send bound unprovable.
    let items: Vec<(ChunkRef, u64)> = packed.chunks.iter().cloned().zip(offsets).collect();
    futures_util::stream::iter(items)
        .map(|(chunk, offset): (ChunkRef, u64)| {
            let file = file.clone();
            let (done, skipped, uploaded_chunks) = (&done, &skipped, &uploaded_chunks);
            let report = &report;
            async move {
                let key = chunk_key(&chunk.digest);
                let present = store
                    .head(&key)
                    .await?
                    .is_some_and(|m| m.size == chunk.size);
                if present {
                    skipped.fetch_add(chunk.size, Ordering::Relaxed);
                } else {
                    let size = chunk.size;
                    let data = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; size as usize];
                        file.read_exact_at(&mut buf, offset).map(|_| buf)
                    })
                    .await
                    .map_err(|e| BlobError::Unavailable(format!("read task: {e}")))?
                    .ctx(|| "read archive chunk".to_string())?;
                    // The file must still be what was packed.
                    if Digest::of(&data) != chunk.digest {
                        return Err(BlobError::corrupt(
                            "archive file changed since it was packed",
                        ));
                    }
                    store.put_bytes(&key, Bytes::from(data)).await?;
                    uploaded_chunks.fetch_add(1, Ordering::Relaxed);
                }
                let d = done.fetch_add(chunk.size, Ordering::Relaxed) + chunk.size;
                report(Progress {
                    done: d,
                    total: packed.size,
                    skipped: skipped.load(Ordering::Relaxed),
                });
                Ok::<_, BlobError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let index = LayerIndex {
        format: LAYER_FORMAT.to_string(),
        digest: packed.digest,
        size: packed.size,
        chunks: packed.chunks.clone(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|e| BlobError::Invalid(e.to_string()))?;
    store
        .put_bytes(&layer_key(&packed.digest), Bytes::from(bytes))
        .await?;
    let skipped_bytes = skipped.load(Ordering::Relaxed);
    let chunks_uploaded = uploaded_chunks.load(Ordering::Relaxed);
    Ok(PushStats {
        uploaded_bytes: packed.size - skipped_bytes,
        skipped_bytes,
        chunks_uploaded,
        chunks_skipped: packed.chunks.len() as u64 - chunks_uploaded,
        layer_skipped: false,
    })
}

/// Fetches and checks a layer's index.
pub async fn get_layer_index(store: &dyn BlobStore, digest: &Digest) -> Result<LayerIndex> {
    let bytes = match store.get_bytes(&layer_key(digest)).await {
        Err(BlobError::NotFound(_)) => {
            return Err(BlobError::Corrupt(format!(
                "layer {digest} is not complete in {}",
                store.describe()
            )))
        }
        other => other?,
    };
    let index: LayerIndex = serde_json::from_slice(&bytes)
        .map_err(|e| BlobError::Corrupt(format!("layer index {digest}: {e}")))?;
    let sum: u64 = index.chunks.iter().map(|c| c.size).sum();
    if index.format != LAYER_FORMAT || index.digest != *digest || sum != index.size {
        return Err(BlobError::Corrupt(format!(
            "layer index {digest} is inconsistent"
        )));
    }
    Ok(index)
}

/// Downloads a layer archive into the file `out` (created or truncated), verifying every chunk
/// and the whole. On error the file is removed.
pub async fn pull_archive(
    store: &dyn BlobStore,
    digest: &Digest,
    out: &Path,
    progress: Option<&ProgressFn>,
) -> Result<LayerIndex> {
    let index = get_layer_index(store, digest).await?;
    let result = pull_chunks(store, &index, out, progress).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result.map(|()| index)
}

async fn pull_chunks(
    store: &dyn BlobStore,
    index: &LayerIndex,
    out: &Path,
    progress: Option<&ProgressFn>,
) -> Result<()> {
    let mut file = tokio::fs::File::create(out)
        .await
        .ctx(|| format!("create {}", out.display()))?;
    let mut whole = Hasher::default();
    let mut done = 0u64;
    let layer = index.digest;
    let mut chunks = futures_util::stream::iter(index.chunks.clone())
        .map(|c: ChunkRef| async move {
            let data = match store.get_bytes(&chunk_key(&c.digest)).await {
                Err(BlobError::NotFound(_)) => {
                    return Err(BlobError::Corrupt(format!(
                        "chunk {} of layer {layer} is missing from the store",
                        c.digest
                    )))
                }
                other => other?,
            };
            if data.len() as u64 != c.size || Digest::of(&data) != c.digest {
                return Err(BlobError::Corrupt(format!(
                    "chunk {} of layer {layer} is damaged ({} bytes, expected {})",
                    c.digest,
                    data.len(),
                    c.size
                )));
            }
            Ok(data)
        })
        .buffered(CONCURRENCY);
    while let Some(data) = chunks.next().await {
        let data = data?;
        whole.update(&data);
        file.write_all(&data)
            .await
            .ctx(|| format!("write {}", out.display()))?;
        done += data.len() as u64;
        if let Some(f) = progress {
            f(Progress {
                done,
                total: index.size,
                skipped: 0,
            });
        }
    }
    let actual = whole.finish();
    if actual != index.digest || done != index.size {
        return Err(BlobError::Corrupt(format!(
            "layer {} reassembled to {actual} ({done} bytes)",
            index.digest
        )));
    }
    file.sync_all()
        .await
        .ctx(|| format!("sync {}", out.display()))?;
    Ok(())
}
