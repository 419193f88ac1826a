//! Blob stores in the daemon: exporting snapshots to a store and importing them
//! ([`export`], [`import`]), and moving a sleeping sandbox's disk out to a store and back
//! ([`evict`], also used by `persist`).
//!
//! The daemon is configured with one or more stores (`--blob-store`, repeatable; the first is
//! the default; without any, `$DATA/blobs`). Requests may name one of them but never an
//! arbitrary location: a store string is a place the daemon writes to with its own
//! credentials, so it is the operator's to choose.
//!
//! Work files live in `$DATA/blobtmp` (emptied at start, so a `kill -9` leaves nothing
//! behind that matters); `$DATA/blobcache/<layer>.json` remembers the digest a layer packed
//! to, so a second export of an unchanged layer checks the store and moves nothing.

pub mod evict;
pub mod export;
pub mod import;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bothy_api::blob::TransferProgress;
use bothy_api::{ApiError, ErrorCode};
use bothy_blob::archive::{self, PackOptions, Packed};
use bothy_blob::transfer::{self, ProgressFn, PushStats};
use bothy_blob::{BlobError, BlobStore, Digest, StoreLocation};
use bothy_store::Layout;
use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// Where progress events go (an SSE stream), if anywhere.
pub type Sink = Option<tokio::sync::mpsc::UnboundedSender<TransferProgress>>;

/// The configured stores and the daemon's work directories.
pub struct BlobStores {
    tmp: PathBuf,
    cache: PathBuf,
    stores: RwLock<Vec<(String, Arc<dyn BlobStore>)>>,
    uid_base: std::sync::atomic::AtomicU32,
}

impl BlobStores {
    /// The default: a local store in `$DATA/blobs`.
    pub fn new(layout: &Layout) -> Self {
        let local = layout.root().join("blobs");
        let url = local.display().to_string();
        Self {
            tmp: layout.root().join("blobtmp"),
            cache: layout.root().join("blobcache"),
            stores: RwLock::new(vec![(
                url,
                Arc::new(bothy_blob::LocalStore::new(local)) as Arc<dyn BlobStore>,
            )]),
            uid_base: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Replaces the stores with `urls` (first = default), opening each (credentials from the
    /// environment); an empty list keeps the default.
    pub fn configure(&self, urls: &[String]) -> Result<(), BlobError> {
        if urls.is_empty() {
            return Ok(());
        }
        let mut opened = Vec::new();
        for u in urls {
            opened.push((u.clone(), StoreLocation::parse(u)?.open()?));
        }
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = opened;
        Ok(())
    }

    pub fn set_uid_base(&self, base: u32) {
        self.uid_base
            .store(base, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn uid_base(&self) -> u32 {
        self.uid_base.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store a request names (one of the configured ones), or the default.
    pub fn resolve(&self, sel: Option<&str>) -> Result<(String, Arc<dyn BlobStore>), DaemonError> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        match sel {
            None => Ok(stores[0].clone()),
            Some(s) => stores
                .iter()
                .find(|(u, _)| u == s)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = stores.iter().map(|(u, _)| u.as_str()).collect();
                    DaemonError::invalid(format!(
                        "blob store {s:?} is not configured on this daemon (configured: {names:?}; add it with --blob-store)"
                    ))
                }),
        }
    }

    /// Empties the work directory (what a crash left there is never referenced).
    pub fn clean_tmp(&self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = std::fs::create_dir_all(&self.tmp);
        let _ = std::fs::create_dir_all(&self.cache);
    }

    /// A fresh path in the work directory.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let _ = std::fs::create_dir_all(&self.tmp);
        self.tmp
            .join(format!("{what}-{:016x}", rand::random::<u64>()))
    }

    fn cache_path(&self, layer: &str) -> PathBuf {
        self.cache.join(format!("{layer}.json"))
    }
}

/// What `$DATA/blobcache/<layer>.json` remembers of a packed layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PackedInfo {
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub content_bytes: u64,
}

/// Maps a blob error onto the API: store and integrity errors keep their codes, local I/O is
/// an internal error (logged).
pub(crate) fn blob_err(context: &str, e: BlobError) -> DaemonError {
    match e {
        BlobError::Io { .. } => DaemonError::internal(context, &e),
        other => {
            let mut api = ApiError::from(other);
            api.message = format!("{context}: {}", api.message);
            DaemonError(api)
        }
    }
}

pub(crate) fn progress_fn(sink: &Sink, phase: &str, item: &str) -> Option<ProgressFn> {
    let tx = sink.clone()?;
    let (phase, item) = (phase.to_string(), item.to_string());
    Some(Arc::new(move |p: transfer::Progress| {
        let _ = tx.send(TransferProgress {
            phase: phase.clone(),
            item: item.clone(),
            done: p.done,
            total: p.total,
            skipped: p.skipped,
        });
    }))
}

fn send(sink: &Sink, phase: &str, item: &str, done: u64, total: u64) {
    if let Some(tx) = sink {
        let _ = tx.send(TransferProgress {
            phase: phase.into(),
            item: item.into(),
            done,
            total,
            skipped: 0,
        });
    }
}

/// Packs `dir` and pushes it to `store` as chunks. With `cache` (an immutable layer's id), a
/// layer packed before whose archive the store holds complete is not even packed again.
pub(crate) async fn push_dir(
    blobs: &BlobStores,
    store: &Arc<dyn BlobStore>,
    dir: &Path,
    item: &str,
    cache: Option<&str>,
    sink: &Sink,
) -> Result<(PackedInfo, PushStats), DaemonError> {
    if let Some(layer) = cache {
        if let Ok(b) = tokio::fs::read(blobs.cache_path(layer)).await {
            if let Ok(info) = serde_json::from_slice::<PackedInfo>(&b) {
                if transfer::layer_complete(store.as_ref(), &info.digest)
                    .await
                    .map_err(|e| blob_err("check the blob store", e))?
                {
                    send(sink, "upload", item, info.size, info.size);
                    let stats = PushStats {
                        skipped_bytes: info.size,
                        layer_skipped: true,
                        ..Default::default()
                    };
                    return Ok((info, stats));
                }
            }
        }
    }
    let archive_path = blobs.temp_path("pack");
    send(sink, "pack", item, 0, 0);
    let packed: Packed = {
        let (dir, out) = (dir.to_path_buf(), archive_path.clone());
        tokio::task::spawn_blocking(move || archive::pack(&dir, &out, &PackOptions::default()))
            .await
            .map_err(|e| DaemonError::internal("pack", &e))?
            .map_err(|e| blob_err(&format!("pack {item}"), e))
    }
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&archive_path);
    })?;
    send(sink, "pack", item, packed.size, packed.size);
    let pushed = transfer::push_archive(
        store.as_ref(),
        &archive_path,
        &packed,
        progress_fn(sink, "upload", item).as_ref(),
    )
    .await;
    let _ = tokio::fs::remove_file(&archive_path).await;
    let stats = pushed.map_err(|e| blob_err(&format!("upload {item}"), e))?;
    let info = PackedInfo {
        digest: packed.digest,
        size: packed.size,
        content_bytes: packed.content_bytes,
    };
    if let Some(layer) = cache {
        if let Ok(b) = serde_json::to_vec(&info) {
            let path = blobs.cache_path(layer);
            let tmp = path.with_extension("tmp");
            if tokio::fs::write(&tmp, b).await.is_ok() {
                let _ = tokio::fs::rename(&tmp, &path).await;
            }
        }
    }
    Ok((info, stats))
}

/// Checks that the store holds the whole layer: its index and every chunk at its size.
pub(crate) async fn verify_remote(
    store: &dyn BlobStore,
    digest: &Digest,
) -> Result<(), DaemonError> {
    let index = transfer::get_layer_index(store, digest)
        .await
        .map_err(|e| blob_err("verify the upload", e))?;
    for c in &index.chunks {
        let ok = store
            .head(&transfer::chunk_key(&c.digest))
            .await
            .map_err(|e| blob_err("verify the upload", e))?
            .is_some_and(|m| m.size == c.size);
        if !ok {
            return Err(DaemonError::new(
                ErrorCode::BlobStoreUnavailable,
                format!(
                    "the store lost chunk {} right after it was uploaded",
                    c.digest
                ),
            ));
        }
    }
    Ok(())
}

/// Downloads layer `digest` and unpacks it into `dest` (which must not exist), verified;
/// `dest` appears whole or not at all.
pub(crate) async fn pull_dir(
    blobs: &BlobStores,
    store: &Arc<dyn BlobStore>,
    digest: &Digest,
    dest: &Path,
    item: &str,
    sink: &Sink,
) -> Result<u64, DaemonError> {
    let archive_path = blobs.temp_path("pull");
    let index = transfer::pull_archive(
        store.as_ref(),
        digest,
        &archive_path,
        progress_fn(sink, "download", item).as_ref(),
    )
    .await
    .map_err(|e| blob_err(&format!("download {item}"), e))?;
    send(sink, "unpack", item, 0, index.size);
    let (a, d, dest_p) = (archive_path.clone(), *digest, dest.to_path_buf());
    let r = tokio::task::spawn_blocking(move || archive::unpack(&a, &d, &dest_p))
        .await
        .map_err(|e| DaemonError::internal("unpack", &e));
    let _ = tokio::fs::remove_file(&archive_path).await;
    r?.map_err(|e| blob_err(&format!("unpack {item}"), e))?;
    send(sink, "unpack", item, index.size, index.size);
    Ok(index.size)
}
