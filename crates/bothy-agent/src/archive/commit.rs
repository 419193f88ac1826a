//! Putting unpacked contents in place of a directory's.
//!
//! The archive is first unpacked into a staging directory next to the target (same file
//! system), so a corrupt, truncated, refused or failed upload never touches the target: the
//! staging directory is removed and that is all. Only a fully unpacked archive is committed:
//!
//! - target missing: the staging directory is renamed to it (atomic);
//! - target present: its entries are moved aside into a trash directory, the staging
//!   directory's entries are moved in, then the trash is removed. These are renames only (no
//!   data is copied); if one fails, the ones done are undone. The directory itself (its inode)
//!   is kept, so processes whose working directory is the target (a shell in `/workspace`)
//!   see the restored contents, not a deleted directory.
//!
//! The result is the archive's contents exactly: what was in the target before and is not in
//! the archive is gone (a restore, not a merge).

use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use bothy_api::ErrorCode;

use super::unpack::DirMeta;
use crate::error::AgentError;

/// The directory an archive goes to, symlinks resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub existed: bool,
}

/// Resolves the (normalised) `path` to restore into: an existing directory (through a symlink
/// if it is one), or a new directory whose parents are created.
pub fn resolve(path: &str) -> Result<Target, AgentError> {
    let root_refused = || {
        AgentError::new(
            ErrorCode::InvalidPath,
            "refusing to replace / (the sandbox's root); give a directory below it",
        )
    };
    if path == "/" {
        return Err(root_refused());
    }
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Target {
            path: PathBuf::from(path),
            existed: true,
        },
        Ok(m) if m.file_type().is_symlink() => {
            let real = std::fs::canonicalize(path).map_err(|e| AgentError::io(path, &e))?;
            if !real.is_dir() {
                return Err(not_a_dir(path));
            }
            Target {
                path: real,
                existed: true,
            }
        }
        Ok(_) => return Err(not_a_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let p = Path::new(path);
            let (Some(parent), Some(base)) = (p.parent(), p.file_name()) else {
                return Err(root_refused());
            };
            std::fs::create_dir_all(parent)
                .map_err(|e| AgentError::io(&parent.display().to_string(), &e))?;
            let parent = std::fs::canonicalize(parent)
                .map_err(|e| AgentError::io(&parent.display().to_string(), &e))?;
            Target {
                path: parent.join(base),
                existed: false,
            }
        }
        Err(e) => return Err(AgentError::io(path, &e)),
    };
    if target.path == Path::new("/") {
        return Err(root_refused());
    }
    Ok(target)
}

fn not_a_dir(path: &str) -> AgentError {
    AgentError::new(
        ErrorCode::NotADirectory,
        format!("{path}: exists and is not a directory"),
    )
}

/// A directory next to the target, removed (with whatever is in it) when dropped.
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(target: &Path, what: &str) -> Result<Self, AgentError> {
        let parent = target.parent().unwrap_or(Path::new("/"));
        let base = target
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = parent.join(format!(
            ".{base}.bothy-{what}-{:016x}",
            rand::random::<u64>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| AgentError::io(&dir.display().to_string(), &e))?;
        Ok(Self { dir, keep: false })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a scratch directory");
                }
            }
        }
    }
}

/// The staging directory for `target`.
pub fn stage(target: &Target) -> Result<Scratch, AgentError> {
    Scratch::new(&target.path, "restore")
}

/// Puts the staged contents in place (see the module docs). `root` is the archive's own
/// directory entry (mode, owner, mtime), applied to the target.
pub fn commit(
    staging: Scratch,
    target: &Target,
    root: Option<&DirMeta>,
) -> Result<bool, AgentError> {
    let mut staging = staging;
    let path_str = target.path.display().to_string();
    let io_err = |e: io::Error| AgentError::io(&path_str, &e);
    if !target.existed {
        match rename_noreplace(&staging.dir, &target.path) {
            Ok(()) => {
                staging.keep = true;
                match root {
                    Some(meta) => meta.apply(&target.path).map_err(io_err)?,
                    None => {
                        use std::os::unix::fs::PermissionsExt as _;
                        std::fs::set_permissions(
                            &target.path,
                            std::fs::Permissions::from_mode(0o755),
                        )
                        .map_err(io_err)?
                    }
                }
                return Ok(false);
            }
            // Created meanwhile by someone else: replace its contents like any existing one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.path.is_dir() => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let trash = Scratch::new(&target.path, "old")?;
    let mut moved_out: Vec<PathBuf> = Vec::new();
    let undo_out = |moved: &[PathBuf]| {
        for name in moved.iter().rev() {
            let _ = std::fs::rename(trash.dir.join(name), target.path.join(name));
        }
    };
    for name in children(&target.path).map_err(io_err)? {
        if let Err(e) = std::fs::rename(target.path.join(&name), trash.dir.join(&name)) {
            undo_out(&moved_out);
            return Err(io_err(e));
        }
        moved_out.push(name);
    }
    let mut moved_in: Vec<PathBuf> = Vec::new();
    for name in children(&staging.dir).map_err(io_err)? {
        if let Err(e) = rename_noreplace(&staging.dir.join(&name), &target.path.join(&name)) {
            for n in moved_in.iter().rev() {
                let _ = std::fs::rename(target.path.join(n), staging.dir.join(n));
            }
            undo_out(&moved_out);
            return Err(io_err(e));
        }
        moved_in.push(name);
    }
    if let Some(meta) = root {
        meta.apply(&target.path).map_err(io_err)?;
    }
    drop(trash);
    Ok(true)
}

fn children(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| PathBuf::from(e.file_name())))
        .collect()
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: check, then rename (a small race remains).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}
