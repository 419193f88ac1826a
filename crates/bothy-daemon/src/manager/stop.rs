//! Sleep: stop every process, release the mounts, keep the disk.

use std::sync::Arc;

use bothy_api::sandbox::{SandboxInfo, SandboxState};
use bothy_api::SandboxName;

use super::{Manager, Slot};
use crate::error::DaemonError;

impl Manager {
    pub async fn sleep(self: &Arc<Self>, name: &SandboxName) -> Result<SandboxInfo, DaemonError> {
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        let Some(_) = self.load(&slot)? else {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        };
        self.stop_locked(&slot).await?;
        let rec = slot.record().expect("loaded above");
        Ok(self.to_info(&slot, &rec, None))
    }

    pub async fn wake(self: &Arc<Self>, name: &SandboxName) -> Result<SandboxInfo, DaemonError> {
        let (slot, _) = self.ensure_running(name).await?;
        slot.touch();
        let rec = slot.record().ok_or_else(|| DaemonError::not_found(name))?;
        Ok(self.to_info(&slot, &rec, None))
    }

    /// Puts the sandbox to sleep if it is still idle (re-checked under the lock).
    pub(crate) async fn sleep_if_idle(self: &Arc<Self>, slot: &Arc<Slot>, deadline_ms: i64) {
        let _lock = slot.lifecycle.lock().await;
        if slot.active_count() > 0 || slot.last_activity_ms() > deadline_ms {
            return;
        }
        if slot.running().is_none() {
            return;
        }
        tracing::info!(sandbox = %slot.name, "sleeping after inactivity");
        if let Err(e) = self.stop_locked(slot).await {
            tracing::warn!(sandbox = %slot.name, error = ?e.0, "could not put sandbox to sleep");
        }
    }

    /// Stops the sandbox if it runs and records it as sleeping. Call with the lifecycle lock.
    pub(crate) async fn stop_locked(self: &Arc<Self>, slot: &Arc<Slot>) -> Result<(), DaemonError> {
        let started = slot.running().map(|r| r.started);
        let runtime = self.runtime.clone();
        let name = slot.name.clone();
        tokio::task::spawn_blocking(move || runtime.stop(&name, started))
            .await
            .map_err(|e| DaemonError::internal("stop sandbox", &e))?
            .map_err(|e| DaemonError::internal("stop sandbox", &e))?;
        self.set_running(slot, None);
        // The namespace is gone and with it the link pair: forget the address.
        self.net.detach_record(&slot.name);
        if let Some(mut rec) = slot.record() {
            rec.state = SandboxState::Sleeping;
            rec.runtime = None;
            rec.last_activity_ms = rec.last_activity_ms.max(slot.last_activity_ms());
            self.save(slot, rec)?;
            self.persist_after_sleep(slot).await;
        }
        Ok(())
    }
}
