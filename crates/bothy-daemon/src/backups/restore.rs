//! Restoring a backup into a sandbox: check the archive against its record, then send it to
//! the agent (`PUT /v1/archive`), checked again on the way.

use std::sync::Arc;

use axum::body::Body;
use bothy_api::archive::ExtractResult;
use bothy_api::backup::{RestoreBackup, RestoreResult};
use bothy_api::ErrorCode;
use bothy_blob::{BlobError, BlobKey, ByteStream};
use bothy_store::meta::BackupRecord;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};

use super::create::enc;
use super::*;

impl Backups {
    /// Restores backup `id` into `req.sandbox` at `req.path` (default: where it came from).
    pub async fn restore(
        &self,
        id: &str,
        req: RestoreBackup,
        progress: Arc<Progress>,
    ) -> Result<RestoreResult, DaemonError> {
        let rec = self.live(id)?;
        let sandbox = crate::error::parse_name(&req.sandbox)?;
        let path = bothy_api::path::normalize(req.path.as_deref().unwrap_or(&rec.path))?;
        if path == "/" {
            return Err(DaemonError::new(
                ErrorCode::InvalidPath,
                "refusing to replace / (the sandbox's root); give a directory below it",
            ));
        }
        let key = BlobKey::new(rec.blob_key.clone())
            .map_err(|e| blob_error("read the backup's key", e))?;

        // 1. The whole archive must match its record before anything reaches the sandbox.
        progress.start("verify", Some(rec.size_bytes));
        let mut stream = self.open(&rec, &key).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.read_error(&rec, e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            progress.add(chunk.len() as u64);
        }
        check(&rec, hasher, size)?;

        // 2. Send it, checked again: bytes that changed since are cut off before the end.
        let (slot, running) = self.manager.ensure_running(&sandbox).await?;
        let _awake = slot.activity();
        progress.start("send", Some(rec.size_bytes));
        let body = Body::from_stream(checked(
            self.open(&rec, &key).await?,
            rec.clone(),
            progress.clone(),
        ));
        let request = http::Request::put(format!("/v1/archive?path={}", enc(&path)))
            .header(http::header::CONTENT_TYPE, bothy_api::archive::CONTENT_TYPE)
            .body(body)
            .map_err(|e| DaemonError::internal("build the restore request", &e))?;
        let resp = match running.agent.send(request).await {
            Ok(r) => r,
            Err(_) => {
                return Err(DaemonError::new(
                    ErrorCode::SandboxUnavailable,
                    format!(
                        "restoring backup {id} into sandbox {sandbox} was interrupted (the archive changed while it was sent, or the sandbox stopped); nothing was restored"
                    ),
                ))
            }
        };
        if !resp.status().is_success() {
            return Err(agent_error(resp).await);
        }
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|_| agent_unavailable())?;
        let done: ExtractResult = serde_json::from_slice(&body).map_err(|_| {
            DaemonError::new(
                ErrorCode::BadGateway,
                "the sandbox's agent sent an unreadable reply",
            )
        })?;
        tracing::info!(backup = %id, sandbox = %sandbox, path = %done.path, "backup restored");
        Ok(RestoreResult {
            backup: rec.id,
            sandbox: sandbox.to_string(),
            path: done.path,
            entries: done.entries,
            bytes: done.bytes,
            replaced: done.replaced,
        })
    }

    async fn open(&self, rec: &BackupRecord, key: &BlobKey) -> Result<ByteStream, DaemonError> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.read_error(rec, e))
    }

    /// A missing archive is as unusable as a damaged one: `corrupt_blob`, nothing restored.
    fn read_error(&self, rec: &BackupRecord, e: BlobError) -> DaemonError {
        match e {
            BlobError::NotFound(_) => DaemonError::new(
                ErrorCode::CorruptBlob,
                format!(
                    "the archive of backup {} is missing from the blob store ({}); nothing was restored",
                    rec.id,
                    self.store.describe()
                ),
            ),
            other => blob_error("read the backup", other),
        }
    }
}

fn check(rec: &BackupRecord, hasher: Sha256, size: u64) -> Result<(), DaemonError> {
    let sha = hex::encode(hasher.finalize());
    if size != rec.size_bytes || sha != rec.sha256 {
        return Err(DaemonError::new(
            ErrorCode::CorruptBlob,
            format!(
                "the archive of backup {} failed its check (sha256 {sha}, {size} bytes; recorded {} with {} bytes); nothing was restored",
                rec.id, rec.sha256, rec.size_bytes
            ),
        ));
    }
    Ok(())
}

/// The archive's bytes, hashed as they pass; if the whole does not match the record, the
/// stream ends with an error instead of its end, so the agent never commits it.
fn checked(
    inner: ByteStream,
    rec: BackupRecord,
    progress: Arc<Progress>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct State {
        inner: ByteStream,
        rec: BackupRecord,
        hasher: Option<Sha256>,
        size: u64,
        progress: Arc<Progress>,
    }
    let state = State {
        inner,
        rec,
        hasher: Some(Sha256::new()),
        size: 0,
        progress,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        let hasher = s.hasher.as_mut()?;
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                s.size += chunk.len() as u64;
                s.progress.add(chunk.len() as u64);
                Some((Ok(chunk), s))
            }
            Some(Err(e)) => {
                s.hasher = None;
                Some((Err(std::io::Error::other(e.to_string())), s))
            }
            None => {
                let hasher = s.hasher.take()?;
                match check(&s.rec, hasher, s.size) {
                    Ok(()) => {
                        s.progress.start("commit", Some(s.rec.size_bytes));
                        None
                    }
                    Err(e) => Some((Err(std::io::Error::other(e.0.message)), s)),
                }
            }
        }
    })
}
