//! Directory backups: one directory of a sandbox, archived by its agent (`GET /v1/archive`),
//! kept in the blob store, restored into any sandbox (`PUT /v1/archive`).
//!
//! In the blob store, a backup is two objects:
//! ```text
//! backups/<id>.tar.gz   the archive, exactly as the agent made it
//! backups/<id>.json     its manifest (id, sandbox, path, sha256, size, times; versioned)
//! ```
//! The authority is the `backups` table of the metadata store. A backup is recorded only once
//! its archive is completely stored (with its sha256 and size), so a failed or interrupted
//! backup leaves no record; one whose record cannot be written has its objects removed.
//!
//! Restoring reads the archive twice: once to check its sha256 and size against the record
//! before anything reaches the sandbox (a damaged or missing archive is `422 corrupt_blob`,
//! nothing written), then again while sending it to the agent, hashed again on the way: if
//! the bytes changed in between, the upload is cut before its end and the agent discards it.
//! The agent itself unpacks into a staging directory and swaps the contents in only when the
//! whole archive is in, so the target is never half-restored.
//!
//! A backup expires `ttl` after it is taken: from then on it is refused (`backup_not_found`,
//! saying it expired) and a periodic sweep ([`Backups::spawn_gc_loop`]) removes its record
//! and objects. Backups are independent of their sandbox: destroying it keeps them.

mod create;
mod restore;

use std::sync::Arc;
use std::time::Duration;

use bothy_api::backup::Backup;
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_api::ErrorCode;
use bothy_blob::{BlobKey, BlobStore};
use bothy_store::meta::BackupRecord;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::DaemonError;
use crate::manager::Manager;

/// How long the record of an expired backup is kept (without its objects) after it expired.
const TOMBSTONE: Duration = Duration::from_secs(7 * 86_400);

/// Version of the manifest format written next to each archive.
const MANIFEST_VERSION: u32 = 1;

/// How far a create or restore has come; read by the SSE form of the API.
#[derive(Debug, Default)]
pub struct Progress {
    phase: std::sync::Mutex<&'static str>,
    bytes: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn start(&self, phase: &'static str, total: Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.bytes.store(0, Relaxed);
        self.total.store(total.unwrap_or(0), Relaxed);
    }

    fn add(&self, n: u64) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The current state, for a `progress` event.
    pub fn snapshot(&self) -> bothy_api::backup::Progress {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.total.load(Relaxed);
        bothy_api::backup::Progress {
            phase: self
                .phase
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_string(),
            bytes: self.bytes.load(Relaxed),
            total: (total > 0).then_some(total),
        }
    }
}

/// The backup service: records in the metadata store, archives in a blob store.
#[derive(Clone)]
pub struct Backups {
    manager: Arc<Manager>,
    store: Arc<dyn BlobStore>,
}

/// What `backups/<id>.json` holds: enough to know the archive without the daemon's database.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    id: String,
    sandbox: String,
    path: String,
    exclude: Vec<String>,
    gitignore: bool,
    format: String,
    sha256: String,
    size_bytes: u64,
    created_at: String,
    expires_at: String,
}

impl Backups {
    pub fn new(manager: Arc<Manager>, store: Arc<dyn BlobStore>) -> Self {
        Self { manager, store }
    }

    /// The backup `id`, if it exists and has not expired.
    pub fn get(&self, id: &str) -> Result<Backup, DaemonError> {
        Ok(to_api(&self.live(id)?))
    }

    /// Every backup that has not expired, oldest first; only `sandbox`'s if given.
    pub fn list(&self, sandbox: Option<&str>) -> Result<Vec<Backup>, DaemonError> {
        let now = now_ms();
        Ok(self
            .records()?
            .iter()
            .filter(|r| r.expires_at_ms > now)
            .filter(|r| sandbox.is_none_or(|s| r.sandbox == s))
            .map(to_api)
            .collect())
    }

    /// Deletes a backup (an expired one too: it would be swept anyway).
    pub async fn delete(&self, id: &str) -> Result<(), DaemonError> {
        if !valid_id(id) {
            return Err(not_found(id));
        }
        let rec = self
            .manager
            .store
            .get_backup(id)
            .map_err(|e| DaemonError::internal("read the backup record", &e))?
            .ok_or_else(|| not_found(id))?;
        self.remove(&rec).await
    }

    /// Removes the record first (the backup is gone from then on), then its objects. An
    /// object left behind by a failed delete is only wasted space.
    async fn remove(&self, rec: &BackupRecord) -> Result<(), DaemonError> {
        self.manager
            .store
            .delete_backup(&rec.id)
            .map_err(|e| DaemonError::internal("delete the backup record", &e))?;
        self.delete_objects(rec).await;
        Ok(())
    }

    /// Deletes the archive and the manifest of a backup; returns whether both went.
    async fn delete_objects(&self, rec: &BackupRecord) -> bool {
        let mut ok = true;
        for key in [rec.blob_key.clone(), manifest_key(&rec.id)] {
            if let Ok(key) = BlobKey::new(key) {
                if let Err(e) = self.store.delete(&key).await {
                    tracing::warn!(backup = %rec.id, key = %key, error = %e, "could not delete a backup object");
                    ok = false;
                }
            }
        }
        ok
    }

    /// Deletes the objects of every expired backup (its record is marked swept and kept for
    /// [`TOMBSTONE`], so asking for it says it expired), and the records past that. Returns
    /// how many backups had their objects removed.
    pub async fn sweep_expired(&self) -> Result<usize, DaemonError> {
        let now = now_ms();
        let mut n = 0;
        for rec in self.records()? {
            if rec.expires_at_ms > now {
                continue;
            }
            if !rec.swept && self.delete_objects(&rec).await {
                self.manager
                    .store
                    .mark_backup_swept(&rec.id)
                    .map_err(|e| DaemonError::internal("mark a backup swept", &e))?;
                tracing::info!(backup = %rec.id, "removed an expired backup's archive");
                n += 1;
            }
            if rec
                .expires_at_ms
                .saturating_add(TOMBSTONE.as_millis() as i64)
                <= now
            {
                self.remove(&rec).await?;
            }
        }
        Ok(n)
    }

    /// Sweeps expired backups every `every` until `stop`.
    pub fn spawn_gc_loop(&self, every: Duration, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = this.sweep_expired().await {
                    tracing::warn!(error = ?e.0, "sweeping expired backups failed");
                }
            }
        });
    }

    fn records(&self) -> Result<Vec<BackupRecord>, DaemonError> {
        self.manager
            .store
            .list_backups()
            .map_err(|e| DaemonError::internal("list backup records", &e))
    }

    /// The record of `id`, refused if missing or expired.
    fn live(&self, id: &str) -> Result<BackupRecord, DaemonError> {
        if !valid_id(id) {
            return Err(not_found(id));
        }
        let rec = self
            .manager
            .store
            .get_backup(id)
            .map_err(|e| DaemonError::internal("read the backup record", &e))?
            .ok_or_else(|| not_found(id))?;
        if rec.expires_at_ms <= now_ms() {
            return Err(DaemonError::new(
                ErrorCode::BackupNotFound,
                format!(
                    "backup {id} expired at {}; it can no longer be restored",
                    rfc3339_ms(rec.expires_at_ms)
                ),
            ));
        }
        Ok(rec)
    }
}

fn not_found(id: &str) -> DaemonError {
    DaemonError::new(
        ErrorCode::BackupNotFound,
        format!("no backup with id {id:?}; list them with GET /v1/backups"),
    )
}

fn manifest_key(id: &str) -> String {
    format!("backups/{id}.json")
}

fn archive_key(id: &str) -> String {
    format!("backups/{id}.tar.gz")
}

/// A new backup id: `bk-` and 16 hex digits.
fn new_id() -> String {
    format!("bk-{:016x}", rand::random::<u64>())
}

/// Whether `id` has the shape of a backup id (so it is safe in a blob key).
fn valid_id(id: &str) -> bool {
    id.len() == 19
        && id.starts_with("bk-")
        && id[3..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn to_api(r: &BackupRecord) -> Backup {
    Backup {
        id: r.id.clone(),
        sandbox: r.sandbox.clone(),
        path: r.path.clone(),
        exclude: r.exclude.clone(),
        gitignore: r.gitignore,
        size_bytes: r.size_bytes,
        sha256: r.sha256.clone(),
        created_at: rfc3339_ms(r.created_at_ms),
        expires_at: rfc3339_ms(r.expires_at_ms),
    }
}

/// Maps a blob-store failure to the API: the store's own codes (unavailable, corrupt...).
fn blob_error(context: &str, e: bothy_blob::BlobError) -> DaemonError {
    let api = bothy_api::ApiError::from(e);
    if api.code == ErrorCode::Internal {
        tracing::error!("{context}: {}", api.message);
        return DaemonError::new(
            ErrorCode::Internal,
            format!("{context} failed; see the daemon log"),
        );
    }
    DaemonError::new(api.code, format!("{context}: {}", api.message))
}

/// Reads an error reply of the agent (bounded) and passes it on as it is: its `{code,
/// message}` is already in the API's shape.
async fn agent_error(resp: http::Response<hyper::body::Incoming>) -> DaemonError {
    use http_body_util::BodyExt as _;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match serde_json::from_slice::<bothy_api::ApiError>(&body) {
        Ok(e) => DaemonError(e),
        Err(_) => DaemonError::new(
            ErrorCode::BadGateway,
            format!("the sandbox's agent answered {status} without an API error"),
        ),
    }
}

fn agent_unavailable() -> DaemonError {
    DaemonError::new(
        ErrorCode::SandboxUnavailable,
        "the sandbox's agent did not answer (the sandbox may have just gone to sleep or restarted); retry",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for _ in 0..100 {
            assert!(valid_id(&new_id()));
        }
        for bad in [
            "",
            "bk-",
            "bk-0123456789ABCDEF",
            "bk-0123456789abcdeg",
            "../x",
            "bk-0123456789abcdef0",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
