//! Noticing a sandbox whose init exited on its own (crash, OOM kill of the agent).

use std::sync::Arc;

use bothy_runtime::Started;
use tokio::io::unix::AsyncFd;

use super::{Manager, Slot};

impl Manager {
    /// Watches the init of a running sandbox; if it exits while the record still says running,
    /// the sandbox is recorded as sleeping (the next request wakes it again).
    pub(crate) fn watch_exit(self: &Arc<Self>, slot: Arc<Slot>, started: Started) {
        let this = self.clone();
        tokio::spawn(async move {
            let fd = match this.runtime.pidfd(&started) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!(sandbox = %slot.name, error = ?e, "cannot watch sandbox init");
                    return;
                }
            };
            // SAFETY: the AsyncFd takes ownership of the pidfd (an OwnedFd), so the fd stays
            // open for as long as it is registered.
            let Ok(afd) = (unsafe { AsyncFd::register(fd) }) else {
                return;
            };
            let _ = afd.readable().await;
            let _lock = slot.lifecycle.lock().await;
            if slot.running().map(|r| r.started) != Some(started) {
                return; // stopped on purpose, or restarted since
            }
            tracing::warn!(sandbox = %slot.name, pid = started.pid, "sandbox init exited on its own; marking it asleep");
            if let Err(e) = this.stop_locked(&slot).await {
                tracing::warn!(sandbox = %slot.name, error = ?e.0, "cleanup after exit failed");
            }
        });
    }
}
