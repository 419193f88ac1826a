//! The egress log, kept in the metadata store so that it survives daemon restarts. The proxy's
//! entries are batched in memory and written every [`FLUSH_EVERY`] (or sooner when many are
//! waiting, and always before a read or at shutdown); the newest [`KEEP`] of each sandbox are
//! kept, and a sandbox's entries go with it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bothy_api::egress::EgressLogEntry;
use bothy_api::SandboxName;
use bothy_store::egress_log::EgressLogStore;
use tokio_util::sync::CancellationToken;

use crate::error::DaemonError;

/// Entries kept per sandbox.
pub const KEEP: usize = 10_000;
/// How often waiting entries are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Waiting entries that trigger a write before [`FLUSH_EVERY`].
const BATCH: usize = 512;
/// Waiting entries kept when the store cannot be written (the oldest are dropped).
const MAX_PENDING: usize = 100_000;

pub struct EgressLog {
    store: Arc<dyn EgressLogStore>,
    pending: Mutex<VecDeque<(SandboxName, EgressLogEntry)>>,
    /// Held while a batch is taken and written, so batches reach the store in order.
    writing: Mutex<()>,
    wake: tokio::sync::Notify,
}

impl EgressLog {
    pub fn new(store: Arc<dyn EgressLogStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: Mutex::default(),
            writing: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Records an entry (cheap: no I/O).
    pub fn push(&self, sandbox: &SandboxName, entry: EgressLogEntry) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_PENDING {
            p.pop_front();
        }
        p.push_back((sandbox.clone(), entry));
        if p.len() >= BATCH {
            self.wake.notify_one();
        }
    }

    /// Writes the waiting entries. Blocking (a short SQLite transaction).
    pub fn flush(&self) -> Result<(), DaemonError> {
        let _w = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let rows: Vec<(SandboxName, String)> = batch
            .iter()
            .filter_map(|(n, e)| Some((n.clone(), serde_json::to_string(e).ok()?)))
            .collect();
        if let Err(e) = self.store.append_egress_log(&rows, KEEP) {
            // Put them back (ahead of newer ones) for the next try.
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut *p, batch);
            p.extend(newer);
            let excess = p.len().saturating_sub(MAX_PENDING);
            p.drain(..excess);
            return Err(DaemonError::internal("write the egress log", &e));
        }
        Ok(())
    }

    /// The newest `limit` entries of a sandbox (at most [`KEEP`]), oldest first, including
    /// the ones not written yet.
    pub async fn recent(
        self: &Arc<Self>,
        sandbox: &SandboxName,
        limit: usize,
    ) -> Result<Vec<EgressLogEntry>, DaemonError> {
        let (me, name) = (self.clone(), sandbox.clone());
        tokio::task::spawn_blocking(move || {
            me.flush()?;
            let rows = me
                .store
                .egress_log(&name, limit.min(KEEP))
                .map_err(|e| DaemonError::internal("read the egress log", &e))?;
            Ok(rows
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect())
        })
        .await
        .map_err(|e| DaemonError::internal("read the egress log", &e))?
    }

    /// Writes waiting entries every [`FLUSH_EVERY`] until `stop`, then once more.
    pub fn spawn_writer(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    () = tokio::time::sleep(FLUSH_EVERY) => false,
                    () = me.wake.notified() => false,
                    () = stop.cancelled() => true,
                };
                let m = me.clone();
                match tokio::task::spawn_blocking(move || m.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = ?e.0, "egress log not written; retrying"),
                    Err(e) => tracing::warn!(error = %e, "egress log writer"),
                }
                if stopping {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_store::meta::{MetaStore, SandboxRecord, SqliteStore};

    fn entry(path: &str) -> EgressLogEntry {
        serde_json::from_value(serde_json::json!({
            "time": "2026-11-23T00:00:00.000Z", "host": "h", "port": 443, "scheme": "https",
            "method": "GET", "path": path, "status": 200, "bytes_up": 0, "bytes_down": 0,
            "rule": "default", "decision": "allowed", "duration_ms": 0
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn entries_are_read_back_in_order_written_or_not() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let name = SandboxName::new("s").unwrap();
        store
            .insert_sandbox(&SandboxRecord::fresh(
                name.clone(),
                "host".into(),
                bothy_api::sandbox::SandboxState::Creating,
                600,
                1,
            ))
            .unwrap();
        let log = EgressLog::new(store.clone());
        log.push(&name, entry("/1"));
        log.flush().unwrap();
        log.push(&name, entry("/2"));
        let got: Vec<String> = log
            .recent(&name, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(got, ["/1", "/2"]);
        let last = log.recent(&name, 1).await.unwrap();
        assert_eq!(last[0].path, "/2");
        // A second log over the same store (a restarted daemon) sees them.
        let again = EgressLog::new(store);
        assert_eq!(again.recent(&name, 10).await.unwrap().len(), 2);
    }
}
