//! Destroy: stop, forget, and remove the sandbox's disk.

use std::sync::Arc;

use bothy_api::SandboxName;

use super::Manager;
use crate::error::DaemonError;

impl Manager {
    pub async fn destroy(self: &Arc<Self>, name: &SandboxName) -> Result<(), DaemonError> {
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        if self.load(&slot)?.is_none() {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        }
        self.stop_locked(&slot).await?;
        let runtime = self.runtime.clone();
        let n = name.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.cleanup(&n)).await;

        // Move the directory out of the way first (atomic), so a crash between the steps never
        // leaves an old disk where a new sandbox of the same name would find it.
        let dir = self.layout.sandbox(name).root;
        let trash = self.layout.trash().join(format!(
            "{name}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DaemonError::internal("remove sandbox directory", &e)),
        }
        self.store
            .delete_sandbox(name)
            .map_err(|e| DaemonError::internal("delete sandbox record", &e))?;
        {
            let mut inner = slot.inner();
            inner.record = None;
            inner.running = None;
            inner.loaded = true;
        }
        drop(_lock);
        self.forget_slot(name);
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(trash);
        });
        tracing::info!(sandbox = %name, "sandbox destroyed");
        // Its snapshot layers may be used by nothing else now.
        self.gc_layers().await
    }
}
