//! Importing a snapshot: the manifest fetched and checked against its digest, each layer this
//! daemon lacks downloaded (every chunk and the whole archive verified) and unpacked into the
//! work directory, and only then all of them registered with the snapshot record in one step
//! ([`Manager::register_snapshot`]). A corrupt or missing piece fails the import before
//! anything is registered; a crash leaves only work files, removed at the next start.

use std::sync::Arc;

use bothy_api::blob::{ImportRequest, ImportResult};
use bothy_api::ErrorCode;
use bothy_blob::manifest;
use bothy_blob::Digest;
use bothy_store::meta::SnapshotRecord;

use super::export::{LABEL_ID, LABEL_UID_BASE};
use super::{blob_err, pull_dir, Sink};
use crate::error::DaemonError;
use crate::manager::Manager;

impl Manager {
    pub async fn import_snapshot(
        self: &Arc<Self>,
        req: ImportRequest,
        sink: Sink,
    ) -> Result<ImportResult, DaemonError> {
        let (_url, store) = self.blobs.resolve(req.store.as_deref())?;
        let digest = Digest::parse(&req.manifest).map_err(|_| {
            DaemonError::invalid(format!(
                "manifest must be a sha256 digest (sha256:<64 hex>), got {:?}",
                req.manifest
            ))
        })?;
        let m = manifest::get_snapshot_manifest(store.as_ref(), &digest)
            .await
            .map_err(|e| blob_err("read the manifest", e))?;
        let corrupt = |msg: String| DaemonError::new(ErrorCode::CorruptBlob, msg);
        if !bothy_store::images::is_valid_layer_id(&m.snapshot.id) {
            return Err(corrupt(format!(
                "manifest {digest} names an invalid snapshot id {:?}",
                m.snapshot.id
            )));
        }
        let mut ids = Vec::new();
        for l in &m.layers {
            let id = l.labels.get(LABEL_ID).cloned().unwrap_or_default();
            if !bothy_store::images::is_valid_layer_id(&id) {
                return Err(corrupt(format!(
                    "manifest {digest} names an invalid layer id {id:?}"
                )));
            }
            let base = l.labels.get(LABEL_UID_BASE).map(String::as_str);
            let ours = self.blobs.uid_base().to_string();
            if base.is_some_and(|b| b != ours) {
                return Err(DaemonError::invalid(format!(
                    "layer {id} was exported by a daemon whose sandboxes map root to uid {}; this one uses {ours}, and shifting owners on import is not supported",
                    base.unwrap_or("?")
                )));
            }
            ids.push(id);
        }
        if let Some(existing) = self
            .store
            .get_snapshot(&m.snapshot.id)
            .map_err(|e| DaemonError::internal("read snapshot", &e))?
        {
            return Ok(ImportResult {
                snapshot: crate::snapshots::info(&existing),
                downloaded_bytes: 0,
                already_present: true,
            });
        }
        self.images().get(&m.image.name).map_err(|e| {
            DaemonError::new(
                e.0.code,
                format!(
                    "the snapshot sits on image {:?}, which this daemon does not have (import the image first): {}",
                    m.image.name, e.0.message
                ),
            )
        })?;

        let work = self.blobs.temp_path("import");
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|e| DaemonError::internal("create the import directory", &e))?;
        let result = async {
            let mut fetched = Vec::new();
            let mut downloaded = 0;
            for (l, id) in m.layers.iter().zip(&ids) {
                if self.layout.layer(id).is_dir() || fetched.iter().any(|(f, _)| f == id) {
                    continue;
                }
                let dest = work.join(id);
                downloaded += pull_dir(&self.blobs, &store, &l.digest, &dest, id, &sink).await?;
                fetched.push((id.clone(), dest));
            }
            let rec = SnapshotRecord {
                id: m.snapshot.id.clone(),
                name: m.snapshot.name.clone(),
                sandbox: m.snapshot.sandbox.clone().unwrap_or_default(),
                image: m.image.name.clone(),
                parent: m.snapshot.parent.clone(),
                layers: ids.clone(),
                size_bytes: m.snapshot.size,
                created_at_ms: m.snapshot.created_at_ms.unwrap_or(0),
            };
            let info = self.register_snapshot(fetched, rec).await?;
            Ok::<_, DaemonError>(ImportResult {
                snapshot: info,
                downloaded_bytes: downloaded,
                already_present: false,
            })
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        if let Ok(r) = &result {
            tracing::info!(snapshot = %r.snapshot.id, manifest = %digest, downloaded = r.downloaded_bytes, "imported snapshot");
        }
        result
    }
}
