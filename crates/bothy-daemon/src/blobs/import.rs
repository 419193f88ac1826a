//! Importing a snapshot: the manifest fetched and checked against its digest, its image
//! recreated from the layers the manifest carries if this daemon lacks it (an image of that
//! name here must be the same one), each layer this daemon lacks downloaded (every chunk and the whole archive verified) and unpacked into the
//! work directory, and only then all of them registered with the snapshot record in one step
//! ([`Manager::register_snapshot`]). A corrupt or missing piece fails the import before
//! anything is registered; a crash leaves only work files, removed at the next start.

use std::sync::Arc;

use bothy_api::blob::{ImportRequest, ImportResult};
use bothy_api::ErrorCode;
use bothy_blob::manifest::{self, ImageRef};
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
        let image_ids = image_layer_ids(&m.image, &digest)?;
        let need_image = self.image_to_import(&m.image, &image_ids)?;

        let work = self.blobs.temp_path("import");
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|e| DaemonError::internal("create the import directory", &e))?;
        let result = async {
            let mut downloaded = 0;
            if need_image {
                let mut pulled = Vec::new();
                for (l, id) in m.image.layers.iter().zip(&image_ids) {
                    let dest = work.join(format!("image-{id}"));
                    downloaded +=
                        pull_dir(&self.blobs, &store, &l.digest, &dest, id, &sink).await?;
                    pulled.push((id.clone(), dest));
                }
                let _g = self.layers_lock.lock().await;
                let (me, name) = (self.clone(), m.image.name.clone());
                tokio::task::spawn_blocking(move || me.images().register_pulled(&name, pulled))
                    .await
                    .map_err(|e| DaemonError::internal("register the image", &e))??;
                tracing::info!(image = %m.image.name, manifest = %digest, "imported image with snapshot");
            }
            let mut fetched = Vec::new();
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

    /// Whether the snapshot's image must be recreated from the manifest. An image of that
    /// name already here must be the same (same layers) when the manifest says what it is.
    fn image_to_import(&self, image: &ImageRef, ids: &[String]) -> Result<bool, DaemonError> {
        match self.images().get(&image.name) {
            Ok(local) => {
                if !image.machine_local && !ids.is_empty() && local.layers != ids {
                    return Err(DaemonError::new(
                        ErrorCode::Conflict,
                        format!(
                            "this daemon has another image named {:?} (its layers differ from the exporter's); remove or rename it, then import again",
                            image.name
                        ),
                    ));
                }
                Ok(false)
            }
            Err(e) if e.0.code == ErrorCode::ImageNotFound && !ids.is_empty() => Ok(true),
            Err(e) => Err(DaemonError::new(
                e.0.code,
                format!(
                    "the snapshot sits on image {:?}, which this daemon does not have and the manifest does not carry (import the image first): {}",
                    image.name, e.0.message
                ),
            )),
        }
    }
}

/// The layer ids of the manifest's image (empty for `host`, and for manifests that carry no
/// image layers), each checked to be a valid layer id.
fn image_layer_ids(image: &ImageRef, digest: &Digest) -> Result<Vec<String>, DaemonError> {
    if image.machine_local {
        return Ok(Vec::new());
    }
    if bothy_api::name::validate_label(&image.name).is_err() {
        return Err(DaemonError::new(
            ErrorCode::CorruptBlob,
            format!("manifest {digest} names an invalid image {:?}", image.name),
        ));
    }
    image
        .layers
        .iter()
        .map(|l| {
            let id = l.labels.get(LABEL_ID).cloned().unwrap_or_default();
            if bothy_store::images::is_valid_layer_id(&id) {
                Ok(id)
            } else {
                Err(DaemonError::new(
                    ErrorCode::CorruptBlob,
                    format!("manifest {digest} names an invalid image layer id {id:?}"),
                ))
            }
        })
        .collect()
}
