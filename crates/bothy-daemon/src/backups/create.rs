//! Taking a backup: the agent streams the archive, the daemon stores it as it comes, hashing
//! and counting on the way, and records it once it is complete.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use bothy_api::backup::{Backup, CreateBackup, DEFAULT_TTL_SECS};
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_api::{ErrorCode, SandboxName};
use bothy_blob::{BlobError, BlobKey};
use bothy_store::meta::BackupRecord;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};

use super::*;

/// What the archive stream saw: its hash, its size, and whether it broke on the agent's side.
#[derive(Default)]
struct Seen {
    hasher: Sha256,
    size: u64,
    source_error: Option<String>,
}

impl Backups {
    /// Backs up `req.path` of sandbox `name` (woken if it sleeps, kept awake meanwhile).
    pub async fn create(
        &self,
        name: &SandboxName,
        req: CreateBackup,
        progress: Arc<Progress>,
    ) -> Result<Backup, DaemonError> {
        let ttl_secs = match &req.ttl {
            None => DEFAULT_TTL_SECS,
            Some(t) => t.secs().ok_or_else(|| {
                DaemonError::invalid(format!(
                    "invalid ttl {t:?}: give seconds or a duration such as 90s, 30m, 12h, 7d"
                ))
            })?,
        };
        let path = bothy_api::path::normalize(&req.path)?;
        let (slot, running) = self.manager.ensure_running(name).await?;
        let _awake = slot.activity();

        let mut query = format!("path={}", enc(&path));
        for g in &req.exclude {
            query.push_str(&format!("&exclude={}", enc(g)));
        }
        if req.gitignore {
            query.push_str("&gitignore=true");
        }
        let request = http::Request::get(format!("/v1/archive?{query}"))
            .body(Body::empty())
            .map_err(|e| DaemonError::internal("build the archive request", &e))?;
        let resp = running
            .agent
            .send(request)
            .await
            .map_err(|_| agent_unavailable())?;
        if !resp.status().is_success() {
            return Err(agent_error(resp).await);
        }

        let id = new_id();
        let key = BlobKey::new(archive_key(&id)).map_err(|e| blob_error("name the backup", e))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        progress.start("archive", None);
        let stream = {
            let seen = seen.clone();
            resp.into_body().into_data_stream().map(move |chunk| {
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                match chunk {
                    Ok(bytes) => {
                        s.hasher.update(&bytes);
                        s.size += bytes.len() as u64;
                        progress.add(bytes.len() as u64);
                        Ok(bytes)
                    }
                    Err(e) => {
                        s.source_error = Some(e.to_string());
                        Err(BlobError::Invalid(format!("the archive stream broke: {e}")))
                    }
                }
            })
        };
        let created_at_ms = now_ms();
        if let Err(e) = self.store.put_stream(&key, Box::pin(stream)).await {
            let broke = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .source_error
                .clone();
            // Nothing is visible after a failed put, but a store may leave a part behind.
            let _ = self.store.delete(&key).await;
            return Err(match broke {
                Some(why) => DaemonError::new(
                    ErrorCode::SandboxUnavailable,
                    format!(
                        "archiving {path} in sandbox {name} failed part-way ({why}); nothing was stored (a file may be unreadable, or the sandbox stopped)"
                    ),
                ),
                None => blob_error("store the backup", e),
            });
        }
        let (sha256, size_bytes) = {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let hasher = std::mem::take(&mut s.hasher);
            (hex::encode(hasher.finalize()), s.size)
        };
        let rec = BackupRecord {
            id: id.clone(),
            sandbox: name.to_string(),
            path: path.clone(),
            exclude: req.exclude.clone(),
            gitignore: req.gitignore,
            blob_key: key.to_string(),
            sha256,
            size_bytes,
            created_at_ms,
            expires_at_ms: created_at_ms.saturating_add((ttl_secs as i64).saturating_mul(1000)),
            swept: false,
        };
        if let Err(e) = self.record(&rec).await {
            let _ = self.store.delete(&key).await;
            if let Ok(m) = BlobKey::new(manifest_key(&id)) {
                let _ = self.store.delete(&m).await;
            }
            return Err(e);
        }
        tracing::info!(backup = %id, sandbox = %name, path = %path, size = size_bytes, "backup taken");
        Ok(to_api(&rec))
    }

    /// Writes the manifest next to the archive, then the record (which makes it visible).
    async fn record(&self, rec: &BackupRecord) -> Result<(), DaemonError> {
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            id: rec.id.clone(),
            sandbox: rec.sandbox.clone(),
            path: rec.path.clone(),
            exclude: rec.exclude.clone(),
            gitignore: rec.gitignore,
            format: "tar+gzip".into(),
            sha256: rec.sha256.clone(),
            size_bytes: rec.size_bytes,
            created_at: rfc3339_ms(rec.created_at_ms),
            expires_at: rfc3339_ms(rec.expires_at_ms),
        };
        let key = BlobKey::new(manifest_key(&rec.id))
            .map_err(|e| blob_error("name the backup manifest", e))?;
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        self.store
            .put_bytes(&key, bytes.into())
            .await
            .map_err(|e| blob_error("store the backup manifest", e))?;
        self.manager
            .store
            .put_backup(rec)
            .map_err(|e| DaemonError::internal("record the backup", &e))
    }
}

/// Percent-encodes a query value.
pub(super) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
