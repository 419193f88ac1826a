//! Exporting a snapshot: each of its layers (and those of its image, unless that is `host`)
//! packed, pushed as content-addressed chunks (skipping what the store has), then a manifest
//! naming them in order. The manifest is written last: until it exists, nothing refers to the chunks, so an
//! export cut short (even by `kill -9`) leaves nothing half-made, and re-running it uploads
//! only what is missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use bothy_api::blob::{ExportRequest, ExportResult, ExportedLayer};
use bothy_blob::manifest::{self, ImageRef, LayerRef, SnapshotInfo, SnapshotManifest};

use super::{blob_err, push_dir, Sink};
use crate::error::DaemonError;
use crate::images::HOST_IMAGE;
use crate::manager::Manager;

/// Label of a layer's id in a manifest.
pub const LABEL_ID: &str = "id";
/// Label of the exporting daemon's uid base (files carry uids shifted by it).
pub const LABEL_UID_BASE: &str = "uid_base";

impl Manager {
    pub async fn export_snapshot(
        self: &Arc<Self>,
        id: &str,
        req: ExportRequest,
        sink: Sink,
    ) -> Result<ExportResult, DaemonError> {
        let (url, store) = self.blobs.resolve(req.store.as_deref())?;
        let (snap, layers) = self.snapshot_layers(id)?;
        // `host` is each machine's own view of its host and travels by name only; the layers of
        // an imported image travel with the snapshot, so the importer can recreate the image.
        let machine_local = snap.image == HOST_IMAGE;
        let mut image = ImageRef {
            name: snap.image.clone(),
            machine_local,
            layers: Vec::new(),
        };
        let mut out = Vec::new();
        let mut refs = Vec::new();
        let (mut uploaded, mut skipped) = (0, 0);
        for l in layers.iter().filter(|l| !(l.image_layer && machine_local)) {
            let (info, stats) =
                push_dir(&self.blobs, &store, &l.path, &l.id, Some(&l.id), &sink).await?;
            uploaded += stats.uploaded_bytes;
            skipped += stats.skipped_bytes;
            let mut labels = BTreeMap::from([(LABEL_ID.to_string(), l.id.clone())]);
            // Image layers hold the image's own owners; snapshot layers the shifted ones.
            if !l.image_layer {
                labels.insert(
                    LABEL_UID_BASE.to_string(),
                    self.blobs.uid_base().to_string(),
                );
            }
            let r = LayerRef {
                digest: info.digest,
                size: info.size,
                content_bytes: info.content_bytes,
                labels,
            };
            if l.image_layer {
                image.layers.push(r);
            } else {
                refs.push(r);
            }
            out.push(ExportedLayer {
                id: l.id.clone(),
                digest: info.digest.to_string(),
                size_bytes: info.size,
                uploaded_bytes: stats.uploaded_bytes,
            });
        }
        let m = SnapshotManifest {
            format: manifest::SNAPSHOT_FORMAT.to_string(),
            snapshot: SnapshotInfo {
                id: snap.id.clone(),
                name: snap.name.clone(),
                created_at_ms: Some(snap.created_at_ms),
                sandbox: Some(snap.sandbox.clone()),
                parent: snap.parent.clone(),
                size: snap.size_bytes,
            },
            image,
            layers: refs,
        };
        let digest = manifest::put_manifest(store.as_ref(), &m)
            .await
            .map_err(|e| blob_err("write the manifest", e))?;
        manifest::put_ref(store.as_ref(), "snapshots", &snap.id, &digest)
            .await
            .map_err(|e| blob_err("write the snapshot ref", e))?;
        tracing::info!(snapshot = %snap.id, store = %url, manifest = %digest, uploaded, skipped, "exported snapshot");
        Ok(ExportResult {
            snapshot: snap.id,
            store: url,
            manifest: digest.to_string(),
            layers: out,
            uploaded_bytes: uploaded,
            skipped_bytes: skipped,
        })
    }
}
