//! Unpacking an archive into a fresh staging directory, refusing anything that could land
//! outside it.
//!
//! Every entry's path must be relative without `..`; no entry may be written through a symlink
//! (an earlier entry `a -> /etc` followed by `a/passwd` is refused, not followed); a hard link
//! must point at an earlier regular file of the same archive; device nodes are refused. Counts
//! of entries and bytes of contents are capped. The whole gzip stream is read to its end, so a
//! truncated or corrupted archive (CRC, length) fails even when the tar part looked complete.
//! Owners are restored where the sandbox's user namespace maps them (best effort: an unmapped
//! id keeps the agent's own); modes, including setuid bits, and mtimes are restored exactly.

use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tar::EntryType;

/// Unpacking failed; nothing was moved into the target.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the body is not a gzip-compressed tar archive")]
    NotGzip,
    #[error("the archive is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("the upload ended before the archive did: {0}")]
    Cut(String),
    #[error("archive entry {entry:?} {why}")]
    Escape { entry: String, why: &'static str },
    #[error("archive entry {entry:?} is a {kind}, which cannot be restored in a sandbox")]
    Unsupported { entry: String, kind: &'static str },
    #[error("archive entry {entry:?}: {why}")]
    Conflict { entry: String, why: String },
    #[error("the archive has more than {0} entries (raise max_entries to allow more)")]
    TooManyEntries(u64),
    #[error("the archive unpacks to more than {0} bytes (raise max_bytes to allow more)")]
    TooManyBytes(u64),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Caps on what one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// What was unpacked.
#[derive(Debug, Default)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    /// The archive's own root (`./`): applied to the target when the contents move in.
    pub root: Option<DirMeta>,
}

/// Metadata of a directory, applied once everything inside it is written.
#[derive(Debug)]
pub struct DirMeta {
    path: PathBuf,
    depth: usize,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
}

impl DirMeta {
    /// Gives `path` this directory's owner (where mapped), mode and mtime.
    pub fn apply(&self, path: &Path) -> io::Result<()> {
        set_owner(path, self.uid, self.gid, None);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode & 0o7777))?;
        set_mtime(path, self.mtime)
    }
}

/// Unpacks the gzip-compressed tar read from `input` into `dst`, an empty directory.
pub fn unpack(input: impl Read, dst: &Path, limits: Limits) -> Result<UnpackStats, UnpackError> {
    let mut input = input;
    let mut magic = [0u8; 2];
    read_magic(&mut input, &mut magic)?;
    if magic != [0x1f, 0x8b] {
        return Err(UnpackError::NotGzip);
    }
    let failed = Arc::new(AtomicBool::new(false));
    let source = Tracked {
        inner: flate2::bufread::GzDecoder::new(io::BufReader::with_capacity(
            256 * 1024,
            io::Cursor::new(magic).chain(input),
        )),
        failed: failed.clone(),
    };
    let mut archive = tar::Archive::new(source);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    let mut stats = UnpackStats::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    let read_err = |e: io::Error| classify_read(e);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries(limits.max_entries));
        }
        let raw = entry.path().map_err(read_err)?.into_owned();
        let name = raw.display().to_string();
        let rel = relative(&raw).ok_or_else(|| UnpackError::Escape {
            entry: name.clone(),
            why: "is absolute or climbs out with `..`",
        })?;
        let header = entry.header();
        let (mode, mtime) = (header.mode().unwrap_or(0o755), header.mtime().unwrap_or(0));
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let target = dst.join(&rel);
        if kind.is_dir() {
            if rel.as_os_str().is_empty() {
                stats.root = Some(DirMeta {
                    path: dst.to_path_buf(),
                    depth: 0,
                    mode,
                    mtime,
                    uid,
                    gid,
                });
                continue;
            }
            make_parents(dst, &rel, &name)?;
            make_dir(&target, &name)?;
            dirs.push(DirMeta {
                path: target,
                depth: rel.components().count(),
                mode,
                mtime,
                uid,
                gid,
            });
            continue;
        }
        if rel.as_os_str().is_empty() {
            return Err(UnpackError::Conflict {
                entry: name,
                why: "the archive's root must be a directory".into(),
            });
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                stats.bytes = stats.bytes.saturating_add(entry.size());
                if stats.bytes > limits.max_bytes {
                    return Err(UnpackError::TooManyBytes(limits.max_bytes));
                }
            }
            EntryType::Symlink | EntryType::Fifo => {}
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let src = relative(&link)
                    .filter(|l| !l.as_os_str().is_empty())
                    .ok_or_else(|| UnpackError::Escape {
                        entry: name.clone(),
                        why: "is a hard link to a path outside the archive",
                    })?;
                make_parents(dst, &src, &name)?;
                match std::fs::symlink_metadata(dst.join(&src)) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(UnpackError::Conflict {
                            entry: name,
                            why: "a hard link must point at an earlier regular file of the archive"
                                .into(),
                        })
                    }
                }
            }
            EntryType::Char => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: "character device",
                })
            }
            EntryType::Block => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: "block device",
                })
            }
            _ => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: "special entry",
                })
            }
        }
        make_parents(dst, &rel, &name)?;
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            if m.is_dir() {
                return Err(UnpackError::Conflict {
                    entry: name,
                    why: "a directory of the same name came earlier".into(),
                });
            }
        }
        if kind == EntryType::Fifo {
            // tar would write a fifo as an empty regular file.
            make_fifo(&target, mode, mtime).map_err(|e| io_err(&target, e))?;
            set_owner(&target, uid, gid, Some(mode));
            continue;
        }
        let unpacked = entry.unpack_in(dst).map_err(|e| {
            if failed.load(Ordering::Relaxed) {
                classify_read(e)
            } else {
                UnpackError::Io {
                    path: name.clone(),
                    source: e,
                }
            }
        })?;
        if !unpacked {
            // tar skips what it judges outside `dst`; `relative` already refused that.
            return Err(UnpackError::Escape {
                entry: name,
                why: "would land outside the target",
            });
        }
        if kind != EntryType::Link {
            set_owner(
                &target,
                uid,
                gid,
                (kind != EntryType::Symlink).then_some(mode),
            );
        }
    }
    // Read the gzip stream to its end: its trailer (CRC and length) is checked only there.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(classify_read)?;
    let mut raw = rest.inner.into_inner();
    if !io::BufRead::fill_buf(&mut raw)
        .map_err(classify_read)?
        .is_empty()
    {
        return Err(UnpackError::Corrupt(
            "unexpected data after the end of the archive".into(),
        ));
    }

    // Deepest first, so setting a parent's mtime comes after its children are written.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.depth));
    for d in &dirs {
        d.apply(&d.path).map_err(|e| io_err(&d.path, e))?;
    }
    Ok(stats)
}

fn read_magic(input: &mut impl Read, magic: &mut [u8; 2]) -> Result<(), UnpackError> {
    let mut got = 0;
    while got < 2 {
        match input.read(&mut magic[got..]) {
            Ok(0) => return Err(UnpackError::NotGzip),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify_read(e)),
        }
    }
    Ok(())
}

/// An error while reading the archive: the upload was cut (the body reader says so with
/// `ConnectionAborted`), or the bytes are not a valid archive.
fn classify_read(e: io::Error) -> UnpackError {
    if e.kind() == io::ErrorKind::ConnectionAborted {
        UnpackError::Cut(e.to_string())
    } else {
        UnpackError::Corrupt(e.to_string())
    }
}

fn io_err(path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `path` made of plain names (`.` dropped), or `None` if it is absolute or has `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Creates the missing parents of `dst/rel` and checks that every existing one is a real
/// directory, not a symlink: nothing is ever written through a link the archive made.
fn make_parents(dst: &Path, rel: &Path, name: &str) -> Result<(), UnpackError> {
    let mut at = dst.to_path_buf();
    let mut parts: Vec<_> = rel.components().collect();
    parts.pop();
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Escape {
                    entry: name.to_string(),
                    why: "goes through a symlink of the archive",
                })
            }
            Ok(_) => {
                return Err(UnpackError::Conflict {
                    entry: name.to_string(),
                    why: format!("{} is not a directory", at.display()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(&at, name)?,
            Err(e) => return Err(io_err(&at, e)),
        }
    }
    Ok(())
}

/// Creates a directory (owner-only until its own mode is applied at the end); an existing real
/// directory is fine, a symlink in its place is refused.
fn make_dir(path: &Path, name: &str) -> Result<(), UnpackError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(m) if m.file_type().is_symlink() => Err(UnpackError::Escape {
                    entry: name.to_string(),
                    why: "replaces a symlink of the archive with a directory",
                }),
                _ => Err(UnpackError::Conflict {
                    entry: name.to_string(),
                    why: "a file of the same name came earlier".into(),
                }),
            }
        }
        Err(e) => Err(io_err(path, e)),
    }
}

/// Gives `path` its archived owner if the user namespace maps it, keeping the agent's own
/// otherwise. A chown clears setuid/setgid bits, so `mode` is applied again after it.
fn set_owner(path: &Path, uid: u64, gid: u64, mode: Option<u32>) {
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return;
    };
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if (uid, gid) == me {
        return;
    }
    let (u, g) = (
        rustix::process::Uid::from_raw(uid),
        rustix::process::Gid::from_raw(gid),
    );
    let changed = rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(u),
        Some(g),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .is_ok();
    if let (true, Some(mode)) = (changed, mode) {
        if mode & 0o6000 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777));
        }
    }
}

fn make_fifo(path: &Path, mode: u32, mtime: u64) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    set_mtime(path, mtime)
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// The archive's source: records that a read failed, so a failed `unpack_in` can be told apart
/// (bad archive or cut upload) from a failed write.
struct Tracked<R> {
    inner: R,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_only() {
        assert_eq!(relative(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(relative(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(relative(Path::new("/etc/passwd")), None);
        assert_eq!(relative(Path::new("a/../../b")), None);
    }
}
