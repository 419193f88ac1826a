//! Snapshot layers on disk: building one from a sandbox's uppers (a move when it sleeps, a
//! copy under a brief freeze when it runs), flattening long chains, publishing, recovering
//! after a crash, and garbage collection. Locks and records are the lifecycle's business
//! ([`crate::manager::snapshot`], [`crate::manager::fork`], [`crate::manager::restore`]); this
//! module is also the seam for exporting and importing snapshots ([`Manager::snapshot_layers`],
//! [`Manager::register_snapshot`]).
//!
//! # Layout and crash safety
//!
//! A snapshot layer is `$DATA/layers/<id>/<mount-key>/`, one former (or copied) upper per
//! overlay of the sandbox (`root` for `/`, `usr` for `/usr` …); a mount without changes has no
//! directory. It is built in `$DATA/layers/.snap-<id>` and only renamed to its id **after** its
//! records are committed in SQLite (one transaction: layer, snapshot, sandbox chain). So:
//!
//! - crash before the commit: [`recover`] at the next start finds `.snap-<id>` with no layer
//!   record and throws it away — after moving the uppers back into the sandbox if they had
//!   been moved there (`.origin` names the sandbox);
//! - crash after the commit: [`recover`] finishes the rename.
//!
//! When a chain is flattened, the sandbox's new changes are gathered in
//! `.snap-<id>.changes` and merged with the chain into `.snap-<id>`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bothy_api::snapshot::SnapshotInfo;
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_api::{ErrorCode, SandboxName};
use bothy_runtime::Runtime;
use bothy_store::layout::mount_key;
use bothy_store::meta::{LayerRecord, MetaError, MetaStore, SnapshotRecord};
use bothy_store::tree;
use bothy_store::Layout;

use crate::error::DaemonError;
use crate::manager::Manager;

/// Prefix of snapshot layers being built.
pub const TMP_PREFIX: &str = ".snap-";
const CHANGES_SUFFIX: &str = ".changes";
/// In a directory of moved uppers: the name of the sandbox they belong to.
const ORIGIN_FILE: &str = ".origin";
/// A sandbox's disk being replaced by a restore: `$DATA/sandboxes/<name>/disk.restoring`.
pub const RESTORING_DIR: &str = "disk.restoring";
/// In [`RESTORING_DIR`]: the snapshot the sandbox is being restored to.
pub const RESTORE_MARKER: &str = ".restore-to";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("copy layer")]
    Tree(#[from] tree::TreeError),
    #[error("freeze or thaw the sandbox")]
    Runtime(#[from] bothy_runtime::RuntimeError),
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let op = op.into();
    move |source| SnapshotError::Io { op, source }
}

/// A new snapshot id (`snap-` + 16 hex digits); its own layer has the same id.
pub fn new_snapshot_id() -> String {
    format!(
        "{}{:016x}",
        bothy_api::snapshot::SNAPSHOT_ID_PREFIX,
        rand::random::<u64>()
    )
}

pub fn info(r: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        sandbox: r.sandbox.clone(),
        image: r.image.clone(),
        parent: r.parent.clone(),
        layers: r.layers.clone(),
        size_bytes: r.size_bytes,
        created_at: rfc3339_ms(r.created_at_ms),
    }
}

pub fn not_found(id: &str) -> DaemonError {
    DaemonError::new(
        ErrorCode::SnapshotNotFound,
        format!("no snapshot with id or name {id:?}"),
    )
}

/// One layer of a snapshot, as an exporter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub id: String,
    /// `$DATA/layers/<id>`. For a snapshot layer it holds one directory per mount key.
    pub path: PathBuf,
    /// An image's layer (files with image uids, mounted idmapped) rather than a snapshot's
    /// (files with the sandbox's shifted uids, one directory per mount key).
    pub image_layer: bool,
}

/// What to build.
pub(crate) struct Build {
    pub layout: Layout,
    pub sandbox: SandboxName,
    /// Mount targets of the sandbox's overlays.
    pub targets: Vec<String>,
    /// The sandbox's snapshot layers, lowest first.
    pub chain: Vec<String>,
    pub id: String,
    /// Merge the chain and the changes into one layer.
    pub flatten: bool,
    /// `Some` for a running sandbox: freeze it, copy its uppers, thaw it. `None`: it sleeps,
    /// its uppers are moved.
    pub running: Option<Arc<dyn Runtime>>,
}

/// A built, not yet published, layer.
#[derive(Debug)]
pub(crate) struct Built {
    pub id: String,
    pub size_bytes: u64,
    /// How long the sandbox was frozen (running sandboxes).
    pub frozen_ms: f64,
    tmp: PathBuf,
    /// Where the changes were gathered, when different from `tmp` (flattening).
    changes: Option<PathBuf>,
    /// Whether the uppers were moved (not copied) out of the sandbox.
    moved: bool,
}

impl Build {
    pub fn run(self) -> Result<Built, SnapshotError> {
        let layers = self.layout.layers();
        let tmp = layers.join(format!("{TMP_PREFIX}{}", self.id));
        let changes = if self.flatten {
            layers.join(format!("{TMP_PREFIX}{}{CHANGES_SUFFIX}", self.id))
        } else {
            tmp.clone()
        };
        mkdir(&changes)?;
        let dirs = self.layout.sandbox(&self.sandbox);
        let mut frozen_ms = 0.0;
        let moved = self.running.is_none();
        let gathered = match &self.running {
            Some(rt) => {
                // First pass while it runs; the second, frozen, only catches up with what
                // changed meanwhile, so the freeze does not grow with the size of the state.
                let pre = (|| {
                    let mut pre = Vec::new();
                    for t in &self.targets {
                        let up = dirs.upper(t);
                        if up.is_dir() {
                            let key = mount_key(t);
                            pre.push((
                                key.clone(),
                                tree::LiveCopy::precopy(&up, &changes.join(key))?,
                            ));
                        }
                    }
                    Ok::<_, SnapshotError>(pre)
                })();
                match pre {
                    Err(e) => Err(e),
                    Ok(pre) => {
                        let t0 = Instant::now();
                        match rt.freeze(&self.sandbox) {
                            Ok(()) => {
                                let copied = (|| {
                                    let mut done = Vec::new();
                                    for (key, lc) in pre {
                                        lc.finish()?;
                                        done.push(key);
                                    }
                                    // An upper that appeared between the passes.
                                    for t in &self.targets {
                                        let key = mount_key(t);
                                        let up = dirs.upper(t);
                                        if up.is_dir() && !done.contains(&key) {
                                            tree::copy_tree(&up, &changes.join(key))?;
                                        }
                                    }
                                    Ok::<_, SnapshotError>(())
                                })();
                                let thawed = rt.thaw(&self.sandbox);
                                frozen_ms = t0.elapsed().as_secs_f64() * 1000.0;
                                copied.and(thawed.map_err(SnapshotError::from))
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
            None => move_uppers(&dirs, &self.targets, &self.sandbox, &changes),
        };
        if let Err(e) = gathered {
            if moved {
                move_back(&self.layout, &changes);
            }
            remove_tree(&changes);
            return Err(e);
        }
        if self.flatten {
            let merged = (|| {
                mkdir(&tmp)?;
                for t in &self.targets {
                    let key = mount_key(t);
                    let stack: Vec<PathBuf> = self
                        .chain
                        .iter()
                        .map(|l| self.layout.layer(l).join(&key))
                        .chain([changes.join(&key)])
                        .collect();
                    if stack.iter().any(|p| p.is_dir()) {
                        tree::merge_layers(&stack, &tmp.join(&key))?;
                    }
                }
                Ok::<_, SnapshotError>(())
            })();
            if let Err(e) = merged {
                remove_tree(&tmp);
                if moved {
                    move_back(&self.layout, &changes);
                }
                remove_tree(&changes);
                return Err(e);
            }
        }
        let size_bytes = tree::tree_bytes(&tmp);
        let built = Built {
            id: self.id,
            size_bytes,
            frozen_ms,
            changes: self.flatten.then_some(changes),
            tmp,
            moved,
        };
        if let Err(e) = sync_dir(&built.tmp) {
            abandon(&self.layout, built);
            return Err(e);
        }
        Ok(built)
    }
}

/// Moves the sandbox's uppers into `changes` (same filesystem: renames) and gives it fresh
/// empty ones with the same owner and mode. `.origin` is written first, so a crash half-way
/// is undone by [`recover`].
fn move_uppers(
    dirs: &bothy_store::layout::SandboxDirs,
    targets: &[String],
    sandbox: &SandboxName,
    changes: &Path,
) -> Result<(), SnapshotError> {
    let origin = changes.join(ORIGIN_FILE);
    fs::write(&origin, sandbox.as_str()).map_err(io_err("write snapshot origin"))?;
    fs::File::open(&origin)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync snapshot origin"))?;
    sync_dir(changes)?;
    for t in targets {
        let up = dirs.upper(t);
        let Ok(md) = fs::symlink_metadata(&up) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        fs::rename(&up, changes.join(mount_key(t)))
            .map_err(io_err(format!("move {}", up.display())))?;
        let fresh = (|| {
            fs::create_dir(&up)?;
            std::os::unix::fs::lchown(&up, Some(md.uid()), Some(md.gid()))?;
            fs::set_permissions(&up, fs::Permissions::from_mode(md.mode() & 0o7777))
        })();
        fresh.map_err(io_err(format!("create {}", up.display())))?;
    }
    Ok(())
}

/// Moves uppers gathered in `dir` back into the sandbox named in its `.origin`.
fn move_back(layout: &Layout, dir: &Path) {
    let Ok(name) = fs::read_to_string(dir.join(ORIGIN_FILE)) else {
        return;
    };
    let Ok(name) = SandboxName::new(name.trim()) else {
        return;
    };
    let disk = layout.sandbox(&name).disk();
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name() == ORIGIN_FILE {
            continue;
        }
        let upper = disk.join(e.file_name()).join("upper");
        // A fresh (empty) upper made by the move is replaced by the moved one.
        let _ = fs::remove_dir(&upper);
        if upper.exists() {
            tracing::warn!(upper = %upper.display(), "cannot move a snapshot's upper back: the sandbox has a new one");
            continue;
        }
        if let Some(p) = upper.parent() {
            let _ = fs::create_dir_all(p);
        }
        match fs::rename(e.path(), &upper) {
            Ok(()) => {
                tracing::info!(sandbox = %name, upper = %upper.display(), "moved an unfinished snapshot's upper back")
            }
            Err(err) => {
                tracing::error!(upper = %upper.display(), error = %err, "cannot move an upper back")
            }
        }
    }
    let _ = fs::remove_file(dir.join(ORIGIN_FILE));
}

/// Publishes a built layer whose records are committed.
pub(crate) fn publish(layout: &Layout, built: Built) -> Result<(), SnapshotError> {
    if let Some(changes) = &built.changes {
        let _ = fs::remove_file(changes.join(ORIGIN_FILE));
        remove_tree(changes);
    }
    let _ = fs::remove_file(built.tmp.join(ORIGIN_FILE));
    let dst = layout.layer(&built.id);
    fs::rename(&built.tmp, &dst).map_err(io_err(format!("publish layer {}", built.id)))
}

/// Throws away a built layer whose records could not be committed (the sandbox gets its
/// uppers back).
pub(crate) fn abandon(layout: &Layout, built: Built) {
    let gathered = built.changes.as_ref().unwrap_or(&built.tmp);
    if built.moved {
        move_back(layout, gathered);
    }
    if let Some(c) = &built.changes {
        remove_tree(c);
    }
    remove_tree(&built.tmp);
}

/// Finishes or undoes what a crash interrupted: snapshot layers being built, restores being
/// applied. Call at daemon start, before any sandbox starts.
pub fn recover(layout: &Layout, store: &dyn MetaStore) -> Result<(), MetaError> {
    let known: HashSet<String> = store.list_layers()?.into_iter().map(|l| l.id).collect();
    if let Ok(rd) = fs::read_dir(layout.layers()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                continue;
            };
            let path = e.path();
            if let Some(id) = rest.strip_suffix(CHANGES_SUFFIX) {
                if !known.contains(id) {
                    move_back(layout, &path);
                }
                let _ = fs::remove_file(path.join(ORIGIN_FILE));
                remove_tree(&path);
            } else if known.contains(rest) && !layout.layer(rest).exists() {
                let _ = fs::remove_file(path.join(ORIGIN_FILE));
                match fs::rename(&path, layout.layer(rest)) {
                    Ok(()) => tracing::info!(layer = rest, "published a committed snapshot layer"),
                    Err(err) => {
                        tracing::error!(layer = rest, error = %err, "cannot publish layer")
                    }
                }
            } else {
                move_back(layout, &path);
                remove_tree(&path);
                tracing::info!(
                    layer = rest,
                    "removed an unfinished snapshot layer left by a crash"
                );
            }
        }
    }
    // Restores: committed if the record already names the snapshot, else rolled back.
    for rec in store.list_sandboxes()? {
        let dirs = layout.sandbox(&rec.name);
        let old = dirs.root.join(RESTORING_DIR);
        if !old.exists() {
            continue;
        }
        let target = fs::read_to_string(old.join(RESTORE_MARKER)).unwrap_or_default();
        if !target.is_empty() && rec.parent_snapshot.as_deref() == Some(target.as_str()) {
            remove_tree(&old);
        } else if !dirs.disk().exists() {
            let _ = fs::remove_file(old.join(RESTORE_MARKER));
            if let Err(err) = fs::rename(&old, dirs.disk()) {
                tracing::error!(sandbox = %rec.name, error = %err, "cannot roll back a restore");
            }
        } else {
            remove_tree(&old);
        }
    }
    Ok(())
}

/// Deletes the records of layers no sandbox and no snapshot uses, and moves their directories
/// to the trash; returns the trash paths (remove them without holding the layers lock).
pub(crate) fn gc(layout: &Layout, store: &dyn MetaStore) -> Result<Vec<PathBuf>, MetaError> {
    let mut used: HashSet<String> = HashSet::new();
    for s in store.list_sandboxes()? {
        used.extend(s.layers);
    }
    for s in store.list_snapshots()? {
        used.extend(s.layers);
    }
    let mut trash = Vec::new();
    for l in store.list_layers()? {
        if used.contains(&l.id) {
            continue;
        }
        store.delete_layer(&l.id)?;
        let dir = layout.layer(&l.id);
        let to = layout.trash().join(format!("layer-{}-{}", l.id, now_ms()));
        match fs::rename(&dir, &to) {
            Ok(()) => trash.push(to),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(layer = %l.id, error = %e, "cannot remove layer"),
        }
        tracing::info!(layer = %l.id, "garbage-collected an unused layer");
    }
    Ok(trash)
}

fn mkdir(p: &Path) -> Result<(), SnapshotError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(p)
        .map_err(io_err(format!("create {}", p.display())))
}

fn sync_dir(p: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(p).map_err(io_err(format!("open {}", p.display())))?;
    rustix::fs::syncfs(&f).map_err(|e| io_err(format!("sync {}", p.display()))(e.into()))
}

/// Moves a fully written layer directory `dir` (on the data directory's filesystem) to
/// `$DATA/layers/<id>` after a `syncfs`, unless a layer with that id is there already (then
/// `dir` is removed: layer ids name their content). Returns the layer's path.
pub(crate) fn publish_layer(
    layout: &Layout,
    id: &str,
    dir: &Path,
) -> Result<PathBuf, SnapshotError> {
    let dst = layout.layer(id);
    if dst.exists() {
        remove_tree(dir);
    } else {
        sync_dir(dir)?;
        fs::rename(dir, &dst).map_err(io_err(format!("publish layer {id}")))?;
    }
    Ok(dst)
}

pub(crate) fn remove_tree(p: &Path) {
    if let Err(e) = fs::remove_dir_all(p) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove");
        }
    }
}

impl Manager {
    /// Garbage-collects unused layers (takes the layers lock).
    pub async fn gc_layers(&self) -> Result<(), DaemonError> {
        let _g = self.layers_lock.lock().await;
        self.gc_locked().await
    }

    /// Same, with the layers lock held by the caller.
    pub(crate) async fn gc_locked(&self) -> Result<(), DaemonError> {
        let trash = gc(&self.layout, self.store.as_ref())
            .map_err(|e| DaemonError::internal("garbage-collect layers", &e))?;
        if !trash.is_empty() {
            tokio::task::spawn_blocking(move || {
                for t in trash {
                    remove_tree(&t);
                }
            });
        }
        Ok(())
    }

    /// The layers of a snapshot, lowest first: its image's layers (`image_layer`), then its own
    /// chain. For the built-in `host` image that is its skeleton layer only (the host's `/usr`
    /// and friends are not layers: they are mounted from the host, which an importing machine
    /// must also have).
    pub fn snapshot_layers(
        &self,
        id_or_name: &str,
    ) -> Result<(SnapshotRecord, Vec<LayerRef>), DaemonError> {
        let snap = self
            .store
            .get_snapshot(id_or_name)
            .map_err(|e| DaemonError::internal("read snapshot", &e))?
            .ok_or_else(|| not_found(id_or_name))?;
        let image = self.images().get(&snap.image)?;
        let mut out: Vec<LayerRef> = image
            .layers
            .iter()
            .map(|id| LayerRef {
                id: id.clone(),
                path: self.layout.layer(id),
                image_layer: true,
            })
            .collect();
        out.extend(snap.layers.iter().map(|id| LayerRef {
            id: id.clone(),
            path: self.layout.layer(id),
            image_layer: false,
        }));
        Ok((snap, out))
    }

    /// Registers a snapshot that came from elsewhere (an import): `layers` are fully written
    /// directories on the data directory's filesystem (one directory per mount key, files
    /// with this daemon's shifted uids), moved to `$DATA/layers/<id>` unless a layer with that
    /// id exists already (then the given directory is removed). `rec.layers` must list them
    /// (and any layer already here), lowest first, and `rec.image` must exist. The layers and
    /// the record are committed together; nothing is visible before.
    pub async fn register_snapshot(
        &self,
        layers: Vec<(String, PathBuf)>,
        mut rec: SnapshotRecord,
    ) -> Result<SnapshotInfo, DaemonError> {
        if let Some(n) = &rec.name {
            bothy_api::snapshot::validate_snapshot_name(n)
                .map_err(|m| DaemonError::new(ErrorCode::InvalidName, m))?;
        }
        self.images().get(&rec.image)?;
        for (id, _) in &layers {
            if !bothy_store::images::is_valid_layer_id(id) {
                return Err(DaemonError::invalid(format!("invalid layer id {id:?}")));
            }
        }
        if rec.created_at_ms == 0 {
            rec.created_at_ms = now_ms();
        }
        let _g = self.layers_lock.lock().await;
        let layout = self.layout.clone();
        let records = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for (id, dir) in layers {
                let dst = publish_layer(&layout, &id, &dir)?;
                records.push(LayerRecord {
                    size_bytes: tree::tree_bytes(&dst),
                    id,
                    created_at_ms: now_ms(),
                });
            }
            Ok::<_, SnapshotError>(records)
        })
        .await
        .map_err(|e| DaemonError::internal("register snapshot", &e))?
        .map_err(|e| DaemonError::internal("register snapshot", &e))?;
        // Recorded first: from now on an unused one is garbage-collected, never orphaned.
        for l in &records {
            self.store
                .put_layer(l)
                .map_err(|e| DaemonError::internal("record layer", &e))?;
        }
        let missing = rec
            .layers
            .iter()
            .find(|id| !self.layout.layer(id).is_dir())
            .cloned();
        let r = match missing {
            Some(id) => Err(DaemonError::invalid(format!(
                "layer {id} of the snapshot is not on disk"
            ))),
            None => match self.store.commit_snapshot(&[], &rec, None) {
                Ok(()) => Ok(info(&rec)),
                Err(MetaError::NameTaken(n)) => Err(DaemonError::new(
                    ErrorCode::Conflict,
                    format!("a snapshot named {n:?} exists"),
                )),
                Err(e) => Err(DaemonError::internal("record snapshot", &e)),
            },
        };
        if r.is_err() {
            self.gc_locked().await?;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_store::meta::SqliteStore;

    fn setup() -> (tempfile::TempDir, Layout, SqliteStore) {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::new(t.path());
        layout.create().unwrap();
        (t, layout, SqliteStore::open_in_memory().unwrap())
    }

    #[test]
    fn uncommitted_moved_uppers_go_back_to_their_sandbox() {
        let (_t, layout, store) = setup();
        let name = SandboxName::new("s").unwrap();
        let tmp = layout.layers().join(format!("{TMP_PREFIX}snap-1"));
        fs::create_dir_all(tmp.join("root/workspace")).unwrap();
        fs::write(tmp.join("root/workspace/f"), b"x").unwrap();
        fs::write(tmp.join(ORIGIN_FILE), "s").unwrap();
        // The fresh empty upper the move left behind is replaced.
        let upper = layout.sandbox(&name).upper("/");
        fs::create_dir_all(&upper).unwrap();
        recover(&layout, &store).unwrap();
        assert_eq!(fs::read(upper.join("workspace/f")).unwrap(), b"x");
        assert!(!tmp.exists());
        assert!(!layout.layer("snap-1").exists());
    }

    #[test]
    fn committed_layers_are_published_and_others_removed() {
        let (_t, layout, store) = setup();
        store
            .put_layer(&LayerRecord {
                id: "snap-2".into(),
                size_bytes: 1,
                created_at_ms: 1,
            })
            .unwrap();
        let committed = layout.layers().join(format!("{TMP_PREFIX}snap-2"));
        fs::create_dir_all(committed.join("root")).unwrap();
        fs::write(committed.join(ORIGIN_FILE), "s").unwrap();
        let changes = layout
            .layers()
            .join(format!("{TMP_PREFIX}snap-2{CHANGES_SUFFIX}"));
        fs::create_dir_all(changes.join("root")).unwrap();
        let stray = layout.layers().join(format!("{TMP_PREFIX}snap-3"));
        fs::create_dir_all(stray.join("root")).unwrap();
        recover(&layout, &store).unwrap();
        assert!(layout.layer("snap-2").join("root").is_dir());
        assert!(!layout.layer("snap-2").join(ORIGIN_FILE).exists());
        assert!(!committed.exists() && !changes.exists() && !stray.exists());
        // Nobody uses snap-2: collected.
        let trash = gc(&layout, &store).unwrap();
        assert_eq!(trash.len(), 1);
        assert!(!layout.layer("snap-2").exists());
        assert!(store.list_layers().unwrap().is_empty());
    }
}
