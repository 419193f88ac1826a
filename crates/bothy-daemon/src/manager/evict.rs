//! Evict: a sleeping sandbox's disk pushed to a blob store and removed here; the next wake
//! pulls it back ([`crate::blobs::evict`]). `persist` sandboxes push their disk on every
//! sleep.

use std::sync::Arc;

use bothy_api::blob::EvictResult;
use bothy_api::time::now_ms;
use bothy_api::SandboxName;

use super::{Manager, Slot};
use crate::blobs::evict::{self as marker, Evicted};
use crate::blobs::{push_dir, verify_remote, Sink};
use crate::error::DaemonError;

impl Manager {
    /// Puts the sandbox to sleep if it runs, pushes its disk to the store, verifies it there,
    /// and removes the local copy.
    pub async fn evict(
        self: &Arc<Self>,
        name: &SandboxName,
        store: Option<&str>,
        sink: Sink,
    ) -> Result<EvictResult, DaemonError> {
        let (url, store) = self.blobs.resolve(store)?;
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        let Some(_) = self.load(&slot)? else {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        };
        if let Some(m) = marker::read_marker(&self.layout, name) {
            if !self.layout.sandbox(name).disk().exists() {
                return Ok(EvictResult {
                    name: name.to_string(),
                    store: m.store,
                    digest: m.digest.to_string(),
                    size_bytes: m.size,
                    uploaded_bytes: 0,
                });
            }
        }
        if slot.running().is_some() {
            self.stop_locked(&slot).await?;
        }
        let disk = self.layout.sandbox(name).disk();
        if !disk.exists() {
            std::fs::create_dir_all(&disk)
                .map_err(|e| DaemonError::internal("create the sandbox disk", &e))?;
        }
        let (info, stats) =
            push_dir(&self.blobs, &store, &disk, name.as_str(), None, &sink).await?;
        verify_remote(store.as_ref(), &info.digest).await?;
        let m = Evicted {
            store: url.clone(),
            digest: info.digest,
            size: info.size,
            evicted_at_ms: now_ms(),
        };
        marker::write_marker(&self.layout, name, &m)
            .map_err(|e| DaemonError::internal("write the eviction marker", &e))?;
        // From here the store's copy is the sandbox's disk.
        let trash = self
            .layout
            .trash()
            .join(format!("evicted-{name}-{}", now_ms()));
        std::fs::rename(&disk, &trash)
            .map_err(|e| DaemonError::internal("move the evicted disk away", &e))?;
        tokio::task::spawn_blocking(move || crate::snapshots::remove_tree(&trash));
        tracing::info!(sandbox = %name, store = %url, digest = %info.digest, bytes = info.size, "evicted");
        Ok(EvictResult {
            name: name.to_string(),
            store: url,
            digest: info.digest.to_string(),
            size_bytes: info.size,
            uploaded_bytes: stats.uploaded_bytes,
        })
    }

    /// Pulls an evicted disk back (call with the lifecycle lock held).
    pub(crate) async fn pull_back_if_evicted(&self, name: &SandboxName) -> Result<(), DaemonError> {
        crate::blobs::evict::pull_back(&self.blobs, &self.layout, name).await
    }

    /// After a sleep: a `persist` sandbox pushes its disk to the default store (failures are
    /// logged; the sandbox sleeps either way). Call with the lifecycle lock held, so that it
    /// cannot wake while its disk is read.
    pub(crate) async fn persist_after_sleep(&self, slot: &Arc<Slot>) {
        let Some(rec) = slot.record() else { return };
        if !rec.persist || marker::is_evicted(&self.layout, &rec.name) {
            return;
        }
        let disk = self.layout.sandbox(&rec.name).disk();
        if !disk.exists() {
            return;
        }
        let store = match self.blobs.resolve(None) {
            Ok((_, s)) => s,
            Err(e) => {
                tracing::warn!(sandbox = %rec.name, error = %e.0.message, "persist: no blob store");
                return;
            }
        };
        let t0 = std::time::Instant::now();
        match push_dir(&self.blobs, &store, &disk, rec.name.as_str(), None, &None).await {
            Ok((info, stats)) => tracing::info!(
                sandbox = %rec.name, digest = %info.digest, uploaded = stats.uploaded_bytes,
                ms = t0.elapsed().as_millis() as u64, "persisted disk on sleep"
            ),
            Err(e) => {
                tracing::warn!(sandbox = %rec.name, error = %e.0.message, "persist on sleep failed")
            }
        }
    }
}
