//! Taking, listing and deleting snapshots.
//!
//! Sleeping sandbox: its uppers are *moved* into the new layer (no copy) and it gets fresh
//! empty ones on top of a chain that now ends with that layer. Running sandbox: its uppers
//! (only what changed since its chain) are copied while it runs, then it is frozen while the
//! copy catches up with what changed meanwhile, and thawed; its own chain does not change. Chains longer than `--max-layer-depth` are flattened into one layer. See
//! [`crate::snapshots`] for the on-disk protocol that keeps a crash from exposing half a
//! snapshot.

use std::sync::Arc;

use bothy_api::snapshot::{validate_snapshot_name, CreateSnapshot, SnapshotInfo};
use bothy_api::time::now_ms;
use bothy_api::{ErrorCode, SandboxName};
use bothy_store::meta::{LayerRecord, MetaError, SnapshotRecord};

use super::Manager;
use crate::error::DaemonError;
use crate::snapshots::{self, Build};

impl Manager {
    pub async fn take_snapshot(
        self: &Arc<Self>,
        name: &SandboxName,
        req: CreateSnapshot,
    ) -> Result<SnapshotInfo, DaemonError> {
        if let Some(n) = &req.name {
            validate_snapshot_name(n).map_err(|m| DaemonError::new(ErrorCode::InvalidName, m))?;
        }
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        let Some(rec) = self.load(&slot)? else {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        };
        // An evicted disk comes back first: a snapshot of it must hold its files.
        self.pull_back_if_evicted(name).await?;
        let _layers = self.layers_lock.lock().await;
        if let Some(n) = &req.name {
            if self
                .store
                .get_snapshot(n)
                .map_err(|e| DaemonError::internal("read snapshot", &e))?
                .is_some()
            {
                return Err(name_taken(n));
            }
        }
        let image = self.images.get(&rec.image)?;
        let id = snapshots::new_snapshot_id();
        let running = slot.running().is_some();
        let flatten = rec.layers.len() + 1 > self.max_layer_depth();
        let build = Build {
            layout: self.layout.clone(),
            sandbox: name.clone(),
            targets: self.images.mount_targets(&image),
            chain: rec.layers.clone(),
            id: id.clone(),
            flatten,
            running: running.then(|| self.runtime.clone()),
        };
        let t0 = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || build.run())
            .await
            .map_err(|e| DaemonError::internal("take snapshot", &e))?
            .map_err(|e| DaemonError::internal("take snapshot", &e))?;

        let chain = if flatten {
            vec![id.clone()]
        } else {
            let mut c = rec.layers.clone();
            c.push(id.clone());
            c
        };
        let now = now_ms();
        let snap = SnapshotRecord {
            id: id.clone(),
            name: req.name.clone(),
            sandbox: name.to_string(),
            image: rec.image.clone(),
            parent: rec.parent_snapshot.clone(),
            layers: chain.clone(),
            size_bytes: built.size_bytes,
            created_at_ms: now,
        };
        let mut new_rec = rec.clone();
        new_rec.parent_snapshot = Some(id.clone());
        if !running {
            // Its uppers became the new layer: the chain must name it.
            new_rec.layers = chain;
        }
        let layer = LayerRecord {
            id: id.clone(),
            size_bytes: built.size_bytes,
            created_at_ms: now,
        };
        let (frozen_ms, size) = (built.frozen_ms, built.size_bytes);
        if let Err(e) = self.store.commit_snapshot(&[layer], &snap, Some(&new_rec)) {
            let layout = self.layout.clone();
            let _ = tokio::task::spawn_blocking(move || snapshots::abandon(&layout, built)).await;
            return Err(match e {
                MetaError::NameTaken(n) => name_taken(&n),
                e => DaemonError::internal("record snapshot", &e),
            });
        }
        self.cache_record(&slot, new_rec);
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || snapshots::publish(&layout, built))
            .await
            .map_err(|e| DaemonError::internal("publish snapshot", &e))?
            .map_err(|e| DaemonError::internal("publish snapshot", &e))?;
        if flatten && !running {
            // The sandbox's old chain may be used by nothing else now.
            self.gc_locked().await?;
        }
        tracing::info!(
            sandbox = %name, snapshot = %id, running, flatten, bytes = size,
            frozen_ms = format!("{frozen_ms:.1}"),
            total_ms = format!("{:.1}", t0.elapsed().as_secs_f64() * 1000.0),
            "snapshot taken"
        );
        Ok(snapshots::info(&snap))
    }

    pub fn get_snapshot(&self, id_or_name: &str) -> Result<SnapshotRecord, DaemonError> {
        self.store
            .get_snapshot(id_or_name)
            .map_err(|e| DaemonError::internal("read snapshot", &e))?
            .ok_or_else(|| snapshots::not_found(id_or_name))
    }

    /// Every snapshot (oldest first), or those taken of `sandbox`.
    pub fn list_snapshots(
        &self,
        sandbox: Option<&SandboxName>,
    ) -> Result<Vec<SnapshotInfo>, DaemonError> {
        let all = self
            .store
            .list_snapshots()
            .map_err(|e| DaemonError::internal("list snapshots", &e))?;
        Ok(all
            .iter()
            .filter(|s| sandbox.is_none_or(|n| s.sandbox == n.as_str()))
            .map(snapshots::info)
            .collect())
    }

    /// Deletes a snapshot's record; its layers go once no sandbox or snapshot uses them.
    pub async fn delete_snapshot(&self, id_or_name: &str) -> Result<(), DaemonError> {
        let _layers = self.layers_lock.lock().await;
        let snap = self.get_snapshot(id_or_name)?;
        self.store
            .delete_snapshot(&snap.id)
            .map_err(|e| DaemonError::internal("delete snapshot", &e))?;
        tracing::info!(snapshot = %snap.id, "snapshot deleted");
        self.gc_locked().await
    }
}

fn name_taken(n: &str) -> DaemonError {
    DaemonError::new(
        ErrorCode::Conflict,
        format!("a snapshot named {n:?} exists; pick another name or delete it first"),
    )
}
