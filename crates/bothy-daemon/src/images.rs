//! Images as the daemon sees them: names → layers, and the overlays a sandbox of an image gets.

use std::path::Path;
use std::sync::{Arc, RwLock};

use bothy_api::sandbox::ImageInfo;
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_api::ErrorCode;
use bothy_runtime::{Lower, OverlaySpec};
use bothy_store::images::{self as layers, HostImage};
use bothy_store::layout::SandboxDirs;
use bothy_store::meta::{ImageRecord, MetaStore};
use bothy_store::Layout;

use crate::error::{DaemonError, StartupError};

pub const HOST_IMAGE: &str = "host";

#[derive(Clone)]
pub struct Images {
    layout: Layout,
    store: Arc<dyn MetaStore>,
    host: Arc<RwLock<HostImage>>,
}

impl Images {
    /// Builds or refreshes the `host` image and records it.
    pub fn open(layout: Layout, store: Arc<dyn MetaStore>) -> Result<Self, StartupError> {
        layers::remove_stale_temp_dirs(&layout)
            .map_err(|e| StartupError::new("clean temporary layers", e))?;
        let host = layers::ensure_host_image(&layout)
            .map_err(|e| StartupError::new("build the host image", e))?;
        let size = dir_size(&layout.layer(&host.skeleton_layer));
        let prev = store
            .get_image(HOST_IMAGE)
            .map_err(|e| StartupError::new("read images", e))?;
        store
            .put_image(&ImageRecord {
                name: HOST_IMAGE.into(),
                kind: "host".into(),
                layers: vec![host.skeleton_layer.clone()],
                created_at_ms: prev.map(|p| p.created_at_ms).unwrap_or_else(now_ms),
                size_bytes: size,
            })
            .map_err(|e| StartupError::new("record the host image", e))?;
        Ok(Self {
            layout,
            store,
            host: Arc::new(RwLock::new(host)),
        })
    }

    pub fn get(&self, name: &str) -> Result<ImageRecord, DaemonError> {
        match self.store.get_image(name) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(DaemonError::new(
                ErrorCode::ImageNotFound,
                format!("no image named {name:?}; list images with `bothy image ls`, import one with `bothy image import NAME PATH`"),
            )),
            Err(e) => Err(DaemonError::internal("read image", &e)),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageInfo>, DaemonError> {
        let recs = self
            .store
            .list_images()
            .map_err(|e| DaemonError::internal("list images", &e))?;
        Ok(recs.into_iter().map(info).collect())
    }

    /// Imports a directory or tarball at `path` (on the daemon's machine) as image `name`.
    pub fn import(&self, name: &str, path: &Path) -> Result<ImageInfo, DaemonError> {
        bothy_api::name::validate_label(name).map_err(|e| {
            DaemonError::new(ErrorCode::InvalidName, format!("invalid image name: {e}"))
        })?;
        if name == HOST_IMAGE {
            return Err(DaemonError::new(
                ErrorCode::Conflict,
                "the image name `host` is reserved for the built-in view of the host",
            ));
        }
        if !path.is_absolute() {
            return Err(DaemonError::invalid(
                "the import path must be absolute (it is read by the daemon)",
            ));
        }
        let layer = layers::import_layer(&self.layout, path).map_err(|e| match e {
            layers::ImageError::Invalid(m) if m.ends_with("no such file or directory") => {
                DaemonError::new(ErrorCode::FileNotFound, m)
            }
            layers::ImageError::Invalid(m) => DaemonError::invalid(m),
            other => DaemonError::internal("import image", &other),
        })?;
        let rec = ImageRecord {
            name: name.to_string(),
            kind: "imported".into(),
            layers: vec![layer.id],
            created_at_ms: now_ms(),
            size_bytes: layer.size_bytes,
        };
        self.store
            .put_image(&rec)
            .map_err(|e| DaemonError::internal("record image", &e))?;
        Ok(info(rec))
    }

    /// Registers image `name` from layer directories pulled from a blob store (lowest first):
    /// each is published as `$DATA/layers/<id>` ([`crate::snapshots::publish_layer`]); the
    /// image record comes last.
    /// Blocking.
    pub fn register_pulled(
        &self,
        name: &str,
        pulled: Vec<(String, std::path::PathBuf)>,
    ) -> Result<ImageInfo, DaemonError> {
        let fail = |what: &str, e: &dyn std::error::Error| {
            DaemonError::internal(&format!("register image {name}: {what}"), e)
        };
        let mut ids = Vec::new();
        let mut size = 0;
        for (id, dir) in pulled {
            crate::snapshots::publish_layer(&self.layout, &id, &dir)
                .map_err(|e| fail("publish a layer", &e))?;
            size += layers::layer_size(&self.layout, &id).map_err(|e| fail("size a layer", &e))?;
            ids.push(id);
        }
        let rec = ImageRecord {
            name: name.to_string(),
            kind: "imported".into(),
            layers: ids,
            created_at_ms: now_ms(),
            size_bytes: size,
        };
        self.store.put_image(&rec).map_err(|e| fail("record", &e))?;
        Ok(info(rec))
    }

    /// Mount targets of the overlays of a sandbox of `image`, in mount order (`/` first).
    pub fn mount_targets(&self, image: &ImageRecord) -> Vec<String> {
        let mut out = vec!["/".to_string()];
        if image.kind == "host" {
            let host = self.host.read().unwrap_or_else(|e| e.into_inner());
            out.extend(
                host.host_dirs
                    .iter()
                    .map(|d| d.to_string_lossy().to_string()),
            );
        }
        out
    }

    /// The overlays of a sandbox of `image` whose own snapshot layers are `chain` (lowest
    /// first), in mount order. A snapshot layer holds one directory per mount
    /// ([`bothy_store::layout::mount_key`]); a mount it has no changes for is skipped. A layer
    /// that is not on disk (evicted, or lost) is an error, never silently left out.
    pub fn overlays(
        &self,
        image: &ImageRecord,
        chain: &[String],
        dirs: &SandboxDirs,
    ) -> Result<Vec<OverlaySpec>, DaemonError> {
        for id in chain {
            if !self.layout.layer(id).is_dir() {
                return Err(DaemonError::new(
                    ErrorCode::SandboxUnavailable,
                    format!("layer {id} of this sandbox is not on disk"),
                ));
            }
        }
        let snapshot_lowers = |target: &str| -> Vec<Lower> {
            let key = bothy_store::layout::mount_key(target);
            chain
                .iter()
                .rev()
                .map(|id| self.layout.layer(id).join(&key))
                .filter(|p| p.is_dir())
                .map(|path| Lower { path, idmap: false })
                .collect()
        };
        let overlay = |target: String, image_lowers: Vec<Lower>| {
            let mut lowers = snapshot_lowers(&target);
            lowers.extend(image_lowers);
            OverlaySpec {
                upper: dirs.upper(&target),
                work: dirs.work(&target),
                lowers,
                target,
            }
        };
        if image.kind == "host" {
            let host = self.host.read().unwrap_or_else(|e| e.into_inner()).clone();
            let mut out = vec![overlay(
                "/".into(),
                vec![Lower {
                    path: self.layout.layer(&host.skeleton_layer),
                    idmap: true,
                }],
            )];
            for d in &host.host_dirs {
                out.push(overlay(
                    d.to_string_lossy().to_string(),
                    vec![Lower {
                        path: d.clone(),
                        idmap: true,
                    }],
                ));
            }
            Ok(out)
        } else {
            // Stored lowest first; overlayfs wants the top-most first.
            let lowers = image
                .layers
                .iter()
                .rev()
                .map(|id| Lower {
                    path: self.layout.layer(id),
                    idmap: true,
                })
                .collect();
            Ok(vec![overlay("/".into(), lowers)])
        }
    }
}

fn info(r: ImageRecord) -> ImageInfo {
    ImageInfo {
        name: r.name,
        layers: r.layers,
        created_at: rfc3339_ms(r.created_at_ms),
        size_bytes: r.size_bytes,
        kind: r.kind,
    }
}

/// Bytes used by the regular files under `dir` (not following symlinks).
pub fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}
