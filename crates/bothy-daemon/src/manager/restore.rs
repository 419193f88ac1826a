//! Restore: a sandbox goes back to a snapshot's state, keeping its name and settings.
//!
//! Its layer chain becomes the snapshot's and its own (writable) layers start empty. The old
//! disk is set aside as `disk.restoring` (with a marker naming the snapshot) before the record
//! changes, so a crash in between is rolled back or finished by
//! [`crate::snapshots::recover`], never half-applied.

use std::sync::Arc;

use bothy_api::sandbox::{SandboxInfo, SandboxState};
use bothy_api::{ErrorCode, SandboxName};

use super::Manager;
use crate::error::DaemonError;
use crate::snapshots::{remove_tree, RESTORE_MARKER, RESTORING_DIR};

impl Manager {
    pub async fn restore(
        self: &Arc<Self>,
        name: &SandboxName,
        snapshot: &str,
    ) -> Result<SandboxInfo, DaemonError> {
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        let Some(mut rec) = self.load(&slot)? else {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        };
        // An evicted disk comes back first, so the crash-safe swap below has a disk to set
        // aside (and an interrupted restore rolls back to it).
        self.pull_back_if_evicted(name).await?;
        let layers = self.layers_lock.lock().await;
        let snap = self.get_snapshot(snapshot)?;
        if snap.image != rec.image {
            return Err(DaemonError::new(
                ErrorCode::Conflict,
                format!(
                    "snapshot {} is of image {:?} but sandbox {name} uses {:?}",
                    snap.id, snap.image, rec.image
                ),
            ));
        }
        let was_running = slot.running().is_some();
        self.stop_locked(&slot).await?;
        if let Some(r) = slot.record() {
            rec = r;
        }
        let dirs = self.layout.sandbox(name);
        let old = dirs.root.join(RESTORING_DIR);
        let disk = dirs.disk();
        let snap_id = snap.id.clone();
        let set_aside = tokio::task::spawn_blocking(move || {
            remove_tree(&old);
            match std::fs::metadata(&disk) {
                Ok(_) => {
                    std::fs::write(disk.join(RESTORE_MARKER), &snap_id)?;
                    std::fs::rename(&disk, &old)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| DaemonError::internal("restore sandbox", &e))?;
        set_aside.map_err(|e| DaemonError::internal("set the sandbox's disk aside", &e))?;
        rec.layers = snap.layers.clone();
        rec.parent_snapshot = Some(snap.id.clone());
        rec.state = SandboxState::Sleeping;
        self.save(&slot, rec.clone())?;
        let old = dirs.root.join(RESTORING_DIR);
        let trash = self
            .layout
            .trash()
            .join(format!("{name}-restore-{}", bothy_api::time::now_ms()));
        if std::fs::rename(&old, &trash).is_ok() {
            tokio::task::spawn_blocking(move || remove_tree(&trash));
        }
        self.gc_locked().await?;
        drop(layers);
        tracing::info!(sandbox = %name, snapshot = %snap.id, "sandbox restored");
        if was_running {
            self.start_locked(&slot, rec).await?;
        }
        let rec = slot.record().ok_or_else(|| DaemonError::not_found(name))?;
        Ok(self.to_info(&slot, &rec, None))
    }
}
