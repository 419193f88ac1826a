//! After a (re)start of the daemon: records vs what really runs.

use std::sync::Arc;

use bothy_api::sandbox::SandboxState;
use bothy_runtime::Started;

use super::{Manager, Running};
use crate::agent_conn::AgentConn;

impl Manager {
    /// Re-attaches to sandboxes whose init still runs and records the others as sleeping.
    /// Sandboxes are never killed by a daemon restart.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), crate::error::StartupError> {
        // Snapshots and restores a crash interrupted: finished or undone before anything runs.
        {
            let (layout, store) = (self.layout.clone(), self.store.clone());
            tokio::task::spawn_blocking(move || crate::snapshots::recover(&layout, store.as_ref()))
                .await
                .map_err(|e| crate::error::StartupError::new("recover snapshots", e))?
                .map_err(|e| crate::error::StartupError::new("recover snapshots", e))?;
        }
        let recs = self
            .store
            .list_sandboxes()
            .map_err(|e| crate::error::StartupError::new("read sandbox records", e))?;
        for rec in recs {
            let started = rec.runtime.map(|r| Started {
                pid: r.pid,
                start_time: r.start_time,
            });
            let alive = started.is_some_and(|s| self.runtime.is_alive(&s));
            let slot = self.slot(&rec.name);
            let _lock = slot.lifecycle.lock().await;
            let _ = self.load(&slot);
            match (alive, started) {
                (true, Some(s)) => {
                    let socket = self.layout.sandbox(&rec.name).agent_socket();
                    self.set_running(
                        &slot,
                        Some(Running {
                            started: s,
                            agent: AgentConn::new(socket),
                        }),
                    );
                    slot.touch();
                    // A daemon killed while snapshotting it may have left it frozen.
                    let (runtime, name) = (self.runtime.clone(), rec.name.clone());
                    if let Ok(Err(e)) =
                        tokio::task::spawn_blocking(move || runtime.thaw(&name)).await
                    {
                        tracing::warn!(sandbox = %rec.name, error = ?e, "cannot thaw sandbox");
                    }
                    self.watch_exit(slot.clone(), s);
                    self.readopt_network(&rec.name, &s).await;
                    tracing::info!(sandbox = %rec.name, pid = s.pid, "re-attached to running sandbox");
                }
                _ if rec.state != SandboxState::Sleeping || rec.runtime.is_some() => {
                    tracing::info!(sandbox = %rec.name, "sandbox no longer runs; recording it asleep");
                    if let Err(e) = self.stop_locked(&slot).await {
                        tracing::warn!(sandbox = %rec.name, error = ?e.0, "cleanup failed");
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = self.gc_layers().await {
            tracing::warn!(error = ?e.0, "layer garbage collection failed");
        }
        // Leftovers of deletions interrupted by a crash.
        if let Ok(rd) = std::fs::read_dir(self.layout.trash()) {
            for e in rd.flatten() {
                let p = e.path();
                tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_dir_all(p);
                });
            }
        }
        Ok(())
    }

    /// Finds the link of a sandbox that kept running while the daemon was away (its address
    /// is how the proxy knows it), or gives it one.
    async fn readopt_network(&self, name: &bothy_api::SandboxName, started: &Started) {
        let Ok(cfg) = self.network_of(name) else {
            return;
        };
        if cfg.mode != bothy_api::network::NetworkMode::Proxy {
            return;
        }
        let policy = Arc::new(cfg.policy.clone());
        if let Ok(ns) = self.runtime.netns(started) {
            if self.net.adopt(name, ns, policy).await {
                return;
            }
        }
        if let Err(e) = self.net_attach(name, started, &cfg).await {
            tracing::warn!(sandbox = %name, error = ?e.0, "could not give the sandbox its link again");
        }
    }
}
