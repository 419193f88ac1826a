//! A sandbox's disk in a blob store: the `evicted.json` marker and pulling the disk back.
//!
//! Eviction ([`crate::manager::evict`]) pushes the disk, verifies that the store holds every
//! chunk, writes `$DATA/sandboxes/<name>/evicted.json` (fsynced, renamed into place) and only
//! then moves the disk away. So at any instant either the local disk is whole, or the marker
//! names a complete copy in the store — after a `kill -9` too. A marker next to a disk means
//! the daemon died before removing the disk: the disk is kept and the marker dropped.

use std::path::PathBuf;

use bothy_api::{ErrorCode, SandboxName};
use bothy_blob::Digest;
use bothy_store::Layout;
use serde::{Deserialize, Serialize};

use super::{pull_dir, BlobStores};
use crate::error::DaemonError;

const MARKER: &str = "evicted.json";

/// What `evicted.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evicted {
    pub store: String,
    pub digest: Digest,
    pub size: u64,
    pub evicted_at_ms: i64,
}

pub fn marker_path(layout: &Layout, name: &SandboxName) -> PathBuf {
    layout.sandbox(name).root.join(MARKER)
}

/// Whether the sandbox's disk is in a blob store rather than here.
pub fn is_evicted(layout: &Layout, name: &SandboxName) -> bool {
    marker_path(layout, name).exists()
}

pub fn read_marker(layout: &Layout, name: &SandboxName) -> Option<Evicted> {
    let b = std::fs::read(marker_path(layout, name)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Writes the marker durably (temp file, fsync, rename, fsync of the directory).
pub fn write_marker(layout: &Layout, name: &SandboxName, m: &Evicted) -> std::io::Result<()> {
    use std::io::Write;
    let path = marker_path(layout, name);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(m).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(layout.sandbox(name).root)?.sync_all()
}

/// Brings an evicted sandbox's disk back (call with its lifecycle lock, before mounting).
/// Nothing to do when it is not evicted.
pub async fn pull_back(
    blobs: &BlobStores,
    layout: &Layout,
    name: &SandboxName,
) -> Result<(), DaemonError> {
    let marker = marker_path(layout, name);
    if !marker.exists() {
        return Ok(());
    }
    let disk = layout.sandbox(name).disk();
    if disk.exists() {
        // Died between writing the marker and removing the disk: the disk is whole.
        let _ = std::fs::remove_file(&marker);
        return Ok(());
    }
    let m = read_marker(layout, name).ok_or_else(|| {
        DaemonError::new(
            ErrorCode::SandboxUnavailable,
            format!(
                "sandbox {name} is evicted but its marker {} is unreadable",
                marker.display()
            ),
        )
    })?;
    let (_, store) = blobs.resolve(Some(&m.store)).map_err(|_| {
        DaemonError::new(
            ErrorCode::SandboxUnavailable,
            format!(
                "sandbox {name} was evicted to {}, which is not configured on this daemon",
                m.store
            ),
        )
    })?;
    let t0 = std::time::Instant::now();
    pull_dir(blobs, &store, &m.digest, &disk, name.as_str(), &None).await?;
    std::fs::remove_file(&marker)
        .map_err(|e| DaemonError::internal("remove the eviction marker", &e))?;
    tracing::info!(sandbox = %name, bytes = m.size, ms = t0.elapsed().as_millis() as u64, "pulled an evicted disk back");
    Ok(())
}
