//! Images: ordered read-only layers under `$DATA/layers`.
//!
//! This module owns layers *on disk*: building the built-in `host` image's skeleton layer
//! ([`ensure_host_image`], in [`host`]), importing a directory or a tarball as a layer
//! ([`import_layer`], in [`import`]), and measuring or removing layers. Image *names* and their
//! ordered layer lists live in SQLite (the daemon's business, not this module's).
//!
//! Every layer is a directory `$DATA/layers/<id>/` that is never modified once published. Ids
//! are content-addressed (sha256, first 16 hex digits): a layer is built into a temporary
//! directory `$DATA/layers/.tmp-*` and renamed to its id in one step, and an id that already
//! exists is reused, so building the same content twice is free and never duplicates it.
//! Files in layers carry image uids (0 = root); the runtime mounts them idmapped.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Layout;

mod host;
mod import;

pub use host::{ensure_host_image, ensure_host_image_from};
pub use import::{import_layer, ImportedLayer};

/// The built-in `host` image: a small skeleton layer (a filtered copy of `/etc`, empty `/root`,
/// `/home`, `/tmp`, `/workspace`, `/run`, `/proc`, `/dev`, `/sys`, and the host's top-level
/// symlinks such as `bin -> usr/bin`) plus the host directories that are real directories
/// (`/usr`, and `/bin`, `/lib*`, `/sbin` on hosts without merged `/usr`), each mounted as the
/// lower layer of its own overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// Layer id of the skeleton (under `$DATA/layers`).
    pub skeleton_layer: String,
    /// Absolute host directories shown read-only (through an overlay) at the same path.
    ///
    /// Each is `host_root.join(name)`; with the real host root `/` (the only one outside of
    /// tests) that is exactly the path inside the sandbox (`/usr`).
    pub host_dirs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad user input (a missing path, something that is neither a directory nor a tarball, a
    /// tarball with an entry that would escape the layer). The message is meant for the user.
    #[error("{0}")]
    Invalid(String),
}

/// `map_err` helper: an I/O error with a short verb phrase saying what failed.
pub(crate) fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let op = op.into();
    move |source| ImageError::Io { op, source }
}

/// Prefix of temporary build directories under `$DATA/layers`.
const TEMP_PREFIX: &str = ".tmp-";

/// Whether `id` is a well-formed layer id (no `/`, no `..`, not a temp dir).
pub fn is_valid_layer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Creates a fresh, empty temporary directory under `$DATA/layers` (mode 0755, so that it is
/// ready to become a layer's root).
pub(crate) fn new_temp_dir(layout: &Layout) -> Result<PathBuf, ImageError> {
    let layers = layout.layers();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&layers)
        .map_err(io_err(format!("create {}", layers.display())))?;
    for _ in 0..16 {
        let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
        let dir = layers.join(name);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
    }
    Err(ImageError::Invalid(
        "could not pick a temporary layer name".into(),
    ))
}

/// Publishes a fully built temporary directory as layer `id`: flushes it to disk, then renames
/// it into place. If the layer already exists (built concurrently, or earlier), the temporary
/// directory is removed and the existing layer kept. Returns whether it was already there.
pub(crate) fn publish(layout: &Layout, tmp: &Path, id: &str) -> Result<bool, ImageError> {
    let dst = layout.layer(id);
    if dst.exists() {
        remove_tree(tmp);
        return Ok(true);
    }
    // A layer must never be visible under its id with contents still in the page cache only:
    // after a crash it would be a half-written layer that every later build trusts.
    let dir = fs::File::open(tmp).map_err(io_err(format!("open {}", tmp.display())))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err(format!("sync {}", tmp.display()))(e.into()))?;
    match fs::rename(tmp, &dst) {
        Ok(()) => Ok(false),
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                || e.kind() == io::ErrorKind::DirectoryNotEmpty =>
        {
            remove_tree(tmp);
            Ok(true)
        }
        Err(e) => {
            remove_tree(tmp);
            Err(io_err(format!(
                "rename {} to {}",
                tmp.display(),
                dst.display()
            ))(e))
        }
    }
}

/// Best-effort removal of a temporary tree (errors are logged: a leftover is cleaned by
/// [`remove_stale_temp_dirs`]).
pub(crate) fn remove_tree(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "remove temporary layer");
        }
    }
}

/// Removes temporary build directories left by a crash. Call it at daemon start, before any
/// build or import runs.
pub fn remove_stale_temp_dirs(layout: &Layout) -> Result<usize, ImageError> {
    let layers = layout.layers();
    let rd = match fs::read_dir(&layers) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(format!("read {}", layers.display()))(e)),
    };
    let mut n = 0;
    for ent in rd {
        let ent = ent.map_err(io_err(format!("read {}", layers.display())))?;
        if ent.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            remove_tree(&ent.path());
            n += 1;
        }
    }
    Ok(n)
}

/// Apparent size of a layer in bytes: the lengths of its regular files and symlinks, each inode
/// counted once (hardlinks do not count twice).
pub fn layer_size(layout: &Layout, id: &str) -> Result<u64, ImageError> {
    if !is_valid_layer_id(id) {
        return Err(ImageError::Invalid(format!("invalid layer id {id:?}")));
    }
    let root = layout.layer(id);
    if !root.is_dir() {
        return Err(ImageError::Invalid(format!("no such layer {id:?}")));
    }
    let mut seen = std::collections::HashSet::new();
    tree_size(&root, &mut seen)
}

fn tree_size(
    dir: &Path,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> Result<u64, ImageError> {
    let mut total = 0;
    for ent in fs::read_dir(dir).map_err(io_err(format!("read {}", dir.display())))? {
        let ent = ent.map_err(io_err(format!("read {}", dir.display())))?;
        let path = ent.path();
        let md = fs::symlink_metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        if md.is_dir() {
            total += tree_size(&path, seen)?;
        } else if (md.is_file() || md.file_type().is_symlink()) && seen.insert((md.dev(), md.ino()))
        {
            total += md.len();
        }
    }
    Ok(total)
}

/// Removes a layer. The daemon must make sure no image or sandbox still uses it (names and
/// their layer lists are in SQLite, which this module does not read). The layer is first
/// renamed into `$DATA/trash`, so a crash never leaves a half-deleted layer under its id.
pub fn remove_layer(layout: &Layout, id: &str) -> Result<(), ImageError> {
    if !is_valid_layer_id(id) {
        return Err(ImageError::Invalid(format!("invalid layer id {id:?}")));
    }
    let src = layout.layer(id);
    let trash = layout.trash();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&trash)
        .map_err(io_err(format!("create {}", trash.display())))?;
    let dst = trash.join(format!("layer-{id}-{:016x}", rand::random::<u64>()));
    match fs::rename(&src, &dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("move {} to trash", src.display()))(e)),
    }
    fs::remove_dir_all(&dst).map_err(io_err(format!("remove {}", dst.display())))
}

/// Hashes a tree of entries in a canonical, prefix-free encoding. The caller feeds entries in
/// path order (component-wise, as `PathBuf`'s `Ord`, which is a depth-first walk with names
/// sorted bytewise).
pub(crate) struct TreeHasher(Sha256);

/// Entry kinds as hashed.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Dir = b'd' as isize,
    File = b'f' as isize,
    Symlink = b'l' as isize,
    Fifo = b'p' as isize,
    /// A hardlink to an earlier entry (the path of which follows).
    Hardlink = b'h' as isize,
}

impl TreeHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        h.update([0]);
        Self(h)
    }

    /// Starts an entry: kind, path relative to the layer root, mode bits (`& 0o7777`), owner.
    pub fn entry(&mut self, kind: Kind, rel: &Path, mode: u32, uid: u32, gid: u32) {
        use std::os::unix::ffi::OsStrExt;
        self.0.update([kind as u8]);
        self.bytes(rel.as_os_str().as_bytes());
        self.0.update((mode & 0o7777).to_le_bytes());
        self.0.update(uid.to_le_bytes());
        self.0.update(gid.to_le_bytes());
    }

    /// Length-prefixed bytes (file contents, symlink target, xattr name or value).
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    /// Length prefix of content that follows in pieces through [`Self::chunk`].
    pub fn len_prefix(&mut self, len: u64) {
        self.0.update(len.to_le_bytes());
    }

    pub fn chunk(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    /// The first 16 hex digits of the digest.
    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        hex::encode(&digest[..8])
    }
}

/// Whether the current process is root (tests that need it skip otherwise).
#[cfg(test)]
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids() {
        for ok in ["host-0123456789abcdef", "sha256-0123456789abcdef", "snap_1"] {
            assert!(is_valid_layer_id(ok), "{ok}");
        }
        for bad in ["", ".tmp-1", "..", "a/b", "../x", "A", "x y"] {
            assert!(!is_valid_layer_id(bad), "{bad}");
        }
    }

    #[test]
    fn size_remove_and_stale_temp_dirs() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        layout.create().unwrap();
        let tmp = new_temp_dir(&layout).unwrap();
        fs::create_dir(tmp.join("d")).unwrap();
        fs::write(tmp.join("d/a"), b"12345").unwrap();
        fs::hard_link(tmp.join("d/a"), tmp.join("b")).unwrap();
        std::os::unix::fs::symlink("d/a", tmp.join("c")).unwrap();
        assert!(!publish(&layout, &tmp, "l1").unwrap());
        assert_eq!(layer_size(&layout, "l1").unwrap(), 5 + 3);
        assert!(matches!(
            layer_size(&layout, "../l1"),
            Err(ImageError::Invalid(_))
        ));
        assert!(matches!(
            layer_size(&layout, "nope"),
            Err(ImageError::Invalid(_))
        ));

        // Publishing the same id again keeps the first and drops the new one.
        let tmp2 = new_temp_dir(&layout).unwrap();
        assert!(publish(&layout, &tmp2, "l1").unwrap());
        assert!(!tmp2.exists());
        assert_eq!(layer_size(&layout, "l1").unwrap(), 8);

        let stale = new_temp_dir(&layout).unwrap();
        fs::write(stale.join("x"), b"x").unwrap();
        assert_eq!(remove_stale_temp_dirs(&layout).unwrap(), 1);
        assert!(!stale.exists());

        remove_layer(&layout, "l1").unwrap();
        assert!(!layout.layer("l1").exists());
        assert_eq!(fs::read_dir(layout.trash()).unwrap().count(), 0);
        remove_layer(&layout, "l1").unwrap(); // already gone: fine
        assert!(matches!(
            remove_layer(&layout, ".."),
            Err(ImageError::Invalid(_))
        ));
    }
}
