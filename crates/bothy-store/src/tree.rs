//! Exact copies and merges of overlay layers on the host's filesystem.
//!
//! A sandbox's writable layer (an overlayfs *upper*) holds, besides files, overlayfs' own
//! markers: whiteouts (character devices 0/0 standing for a deleted lower file) and opaque
//! directories (`trusted.overlay.opaque = "y"`, a directory that hides the lower ones). A
//! snapshot of a running sandbox copies its uppers with [`copy_tree`], which keeps every file
//! type (devices included), owner, mode, xattr (`trusted.*` too), symlink, hardlink and
//! timestamp, so the copy works as a lower layer exactly as the upper did. A long chain of
//! layers is flattened by [`merge_layers`], which applies each layer on top of the ones below
//! as overlayfs would, but keeps whiteouts and opaque markers (the merged layer still sits on
//! top of an image whose files they hide).
//!
//! Overlays are mounted with `redirect_dir=off` and `metacopy=off` (see the runtime), so an
//! upper is self-contained: no entry refers to data in a lower layer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct TreeError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

pub type Result<T> = std::result::Result<T, TreeError>;

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |source| TreeError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn errno<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> TreeError + 'a {
    move |e| TreeError {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether `md` is an overlayfs whiteout (a character device 0/0).
pub fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the directory at `path` is marked opaque (hides the same directory in lower layers).
pub fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut v = [0u8; 4];
        matches!(rustix::fs::lgetxattr(path, *name, &mut v[..]), Ok(n) if v[..n] == *b"y")
    })
}

/// Statistics of a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub entries: u64,
    /// Bytes of regular file data copied (hardlinks counted once).
    pub bytes: u64,
}

/// Copies the tree at `src` to `dst` (which must not exist) exactly.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let mut c = Copier::default();
    let md = fs::symlink_metadata(src).map_err(err("stat", src))?;
    c.copy_node(src, dst, &md)?;
    Ok(c.stats)
}

/// Builds in `dst` (which must not exist) one layer equal to `layers` (lowest first) stacked
/// as overlayfs stacks them; whiteouts and opaque markers are kept. Missing layers (a mount key
/// a layer has no changes for) are skipped.
pub fn merge_layers(layers: &[PathBuf], dst: &Path) -> Result<CopyStats> {
    let mut c = Copier::default();
    let mut started = false;
    for l in layers {
        let md = match fs::symlink_metadata(l) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("stat", l)(e)),
        };
        // Hardlinks are only shared inside one layer.
        c.links.clear();
        if !started {
            c.copy_node(l, dst, &md)?;
            started = true;
        } else {
            c.apply_dir(l, dst)?;
            apply_meta(l, dst, &md)?;
        }
    }
    if !started {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dst)
            .map_err(err("create", dst))?;
    }
    Ok(c.stats)
}

/// Copies a tree that may change meanwhile (a running sandbox's upper) in two passes, so that
/// the sandbox only has to be frozen for the second: [`LiveCopy::precopy`] copies everything
/// while the tree still changes and remembers each entry's inode and ctime;
/// [`LiveCopy::finish`] (call it frozen) makes the copy exactly equal to the tree, copying again
/// only the entries whose inode or ctime changed, and removing what disappeared. ctime cannot be
/// set from user space and changes with every write, chmod, chown, xattr, link or rename; an
/// entry whose ctime is within [`FRESH`] of the moment it was seen is not trusted (a coarse
/// clock tick could hide a later change) and is copied again.
///
/// The first pass reads a tree the sandbox is changing, so it never lets the sandbox steer it
/// out of the tree: directories and files are opened relative to the tree's root with
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and checked to be the inode that was listed,
/// and file data is read up to the size seen (a file swapped for a symlink to `/dev/zero` or to a
/// host directory is refused, not followed). Anything refused is simply left to the frozen pass.
pub struct LiveCopy {
    src: PathBuf,
    dst: PathBuf,
    root: std::os::fd::OwnedFd,
    seen: HashMap<PathBuf, (u64, i64, i64)>,
    pub stats: CopyStats,
}

/// Entries changed this recently when first copied are copied again by the second pass.
pub const FRESH: std::time::Duration = std::time::Duration::from_millis(200);

fn ctime_key(md: &fs::Metadata) -> (u64, i64, i64) {
    (md.ino(), md.ctime(), md.ctime_nsec())
}

impl LiveCopy {
    /// First pass, while `src` may change. `dst` must not exist. Entries that change or vanish
    /// under it are left for [`LiveCopy::finish`].
    pub fn precopy(src: &Path, dst: &Path) -> Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let root = rustix::fs::open(
            src,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open", src))?;
        let mut lc = Self {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            root,
            seen: HashMap::new(),
            stats: CopyStats::default(),
        };
        let md = fs::symlink_metadata(src).map_err(err("stat", src))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(err("create directory", dst))?;
        let mut c = Copier::default();
        lc.pre_dir(&mut c, Path::new(""), md.ino())?;
        lc.record(Path::new(""), &md);
        lc.stats = c.stats;
        Ok(lc)
    }

    fn record(&mut self, rel: &Path, md: &fs::Metadata) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ctime = std::time::Duration::new(md.ctime().max(0) as u64, md.ctime_nsec() as u32);
        if ctime + FRESH < now {
            self.seen.insert(rel.to_path_buf(), ctime_key(md));
        }
    }

    /// Opens `rel` inside the tree without following any symlink or leaving the tree, and
    /// checks it is inode `ino`.
    fn open_beneath(&self, rel: &Path, flags: rustix::fs::OFlags, ino: u64) -> Result<fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let p = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let path = self.src.join(rel);
        let fd = rustix::fs::openat2(
            &self.root,
            p,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::NO_XDEV,
        )
        .map_err(errno("open", &path))?;
        let st = rustix::fs::fstat(&fd).map_err(errno("stat", &path))?;
        if st.st_ino != ino {
            return Err(err("open", &path)(io::Error::other("changed while copied")));
        }
        Ok(fs::File::from(fd))
    }

    fn pre_dir(&mut self, c: &mut Copier, rel: &Path, ino: u64) -> Result<()> {
        use rustix::fs::OFlags;
        let sdir = self.src.join(rel);
        let dir = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY, ino)?;
        // Listed through the open descriptor: the directory that was checked, wherever it is.
        let listing = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ));
        for e in fs::read_dir(&listing).map_err(err("read directory", &sdir))? {
            let Ok(e) = e else { continue };
            let r = rel.join(e.file_name());
            let (s, d) = (self.src.join(&r), self.dst.join(&r));
            let Ok(md) = fs::symlink_metadata(&s) else {
                continue; // gone already
            };
            let done = if md.is_dir() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(err("create directory", &d))
                    .and_then(|()| self.pre_dir(c, &r, md.ino()))
            } else if md.is_file() {
                self.open_beneath(&r, OFlags::RDONLY, md.ino())
                    .and_then(|f| c.copy_file(f, &s, &d, &md))
            } else {
                c.copy_node(&s, &d, &md)
            };
            match done {
                Ok(()) => self.record(&r, &md),
                Err(e) => {
                    // Changed or gone under us: the second pass copies it.
                    if fs::symlink_metadata(&s).is_ok_and(|now| ctime_key(&now) == ctime_key(&md)) {
                        return Err(e);
                    }
                    remove_any(&d);
                }
            }
        }
        Ok(())
    }

    /// Second pass, with `src` frozen: afterwards `dst` equals `src` exactly.
    pub fn finish(mut self) -> Result<CopyStats> {
        let mut c = Copier::default();
        self.sync_dir(&mut c, Path::new(""))?;
        let md = fs::symlink_metadata(&self.src).map_err(err("stat", &self.src))?;
        clear_xattrs(&self.dst)?;
        apply_meta(&self.src, &self.dst, &md)?;
        self.stats.entries = c.stats.entries;
        self.stats.bytes += c.stats.bytes;
        Ok(self.stats)
    }

    fn sync_dir(&mut self, c: &mut Copier, rel: &Path) -> Result<()> {
        let (sdir, ddir) = (self.src.join(rel), self.dst.join(rel));
        let mut names = std::collections::HashSet::new();
        for e in fs::read_dir(&sdir).map_err(err("read directory", &sdir))? {
            let e = e.map_err(err("read directory", &sdir))?;
            names.insert(e.file_name());
        }
        for e in fs::read_dir(&ddir).map_err(err("read directory", &ddir))? {
            let e = e.map_err(err("read directory", &ddir))?;
            if !names.contains(&e.file_name()) {
                remove_any(&e.path());
            }
        }
        for name in names {
            let r = rel.join(&name);
            let (s, d) = (self.src.join(&r), self.dst.join(&r));
            let md = fs::symlink_metadata(&s).map_err(err("stat", &s))?;
            let same = self.seen.get(&r) == Some(&ctime_key(&md));
            let dmd = fs::symlink_metadata(&d).ok();
            if md.is_dir()
                && dmd.as_ref().is_some_and(|m| m.is_dir())
                && self.seen.get(&r).is_some_and(|k| k.0 == md.ino())
            {
                // The same directory: bring its entries up to date, then its own metadata.
                self.sync_dir(c, &r)?;
                if !same {
                    clear_xattrs(&d)?;
                }
                apply_meta(&s, &d, &md)?;
                continue;
            }
            if same && dmd.is_some() && !md.is_dir() {
                c.stats.entries += 1;
                continue;
            }
            if dmd.is_some() {
                remove_any(&d);
            }
            c.copy_node(&s, &d, &md)?;
        }
        Ok(())
    }
}

fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[derive(Default)]
struct Copier {
    /// (dev, ino) of multiply-linked files already copied → their copy.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

impl Copier {
    fn copy_node(&mut self, src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
        self.stats.entries += 1;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dst)
                .map_err(err("create directory", dst))?;
            for e in fs::read_dir(src).map_err(err("read directory", src))? {
                let e = e.map_err(err("read directory", src))?;
                let s = e.path();
                let emd = fs::symlink_metadata(&s).map_err(err("stat", &s))?;
                self.copy_node(&s, &dst.join(e.file_name()), &emd)?;
            }
            return apply_meta(src, dst, md);
        }
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                return fs::hard_link(first, dst).map_err(err("link", dst));
            }
            self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
        if ft.is_file() {
            let mut from = fs::File::open(src).map_err(err("open", src))?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dst)
                .map_err(err("create", dst))?;
            // std uses copy_file_range (in-kernel, no round trip through user space).
            self.stats.bytes += io::copy(&mut from, &mut to).map_err(err("copy", src))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(err("read link", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(err("create symlink", dst))?;
        } else {
            use rustix::fs::{FileType, Mode};
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else if ft.is_fifo() {
                FileType::Fifo
            } else {
                FileType::Socket
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dst,
                kind,
                Mode::from_raw_mode(0o600),
                md.rdev(),
            )
            .map_err(errno("create node", dst))?;
        }
        apply_meta(src, dst, md)
    }

    /// Copies an opened regular file (at most the `md.len()` bytes seen), keeping hardlinks.
    fn copy_file(
        &mut self,
        from: fs::File,
        src: &Path,
        dst: &Path,
        md: &fs::Metadata,
    ) -> Result<()> {
        self.stats.entries += 1;
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                return fs::hard_link(first, dst).map_err(err("link", dst));
            }
        }
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(err("create", dst))?;
        self.stats.bytes +=
            io::copy(&mut io::Read::take(from, md.len()), &mut to).map_err(err("copy", src))?;
        if md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
        }
        apply_meta(src, dst, md)
    }

    /// Applies the entries of directory `src` (a higher layer) onto directory `dst`.
    fn apply_dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        for e in fs::read_dir(src).map_err(err("read directory", src))? {
            let e = e.map_err(err("read directory", src))?;
            let s = e.path();
            let d = dst.join(e.file_name());
            let smd = fs::symlink_metadata(&s).map_err(err("stat", &s))?;
            let dmd = fs::symlink_metadata(&d).ok();
            if smd.is_dir() && !is_opaque(&s) && dmd.as_ref().is_some_and(|m| m.is_dir()) {
                self.apply_dir(&s, &d)?;
                clear_xattrs(&d)?;
                apply_meta(&s, &d, &smd)?;
                continue;
            }
            if let Some(dmd) = dmd {
                if dmd.is_dir() {
                    fs::remove_dir_all(&d).map_err(err("remove", &d))?;
                } else {
                    fs::remove_file(&d).map_err(err("remove", &d))?;
                }
            }
            self.copy_node(&s, &d, &smd)?;
        }
        Ok(())
    }
}

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn xattr_names(path: &Path) -> Result<Vec<Vec<u8>>> {
    use rustix::io::Errno;
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(errno("list xattrs of", path)(e)),
    };
    let mut buf = vec![0u8; len + 256];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).map_err(errno("list xattrs of", path))?;
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn read_xattrs(path: &Path) -> Result<Xattrs> {
    use rustix::io::Errno;
    let mut out = Vec::new();
    for name in xattr_names(path)? {
        let name_os = OsStr::from_bytes(&name);
        let len = match rustix::fs::lgetxattr_query(path, name_os) {
            Ok(n) => n,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(errno("read xattr of", path)(e)),
        };
        let mut v = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, name_os, &mut v[..])
            .map_err(errno("read xattr of", path))?;
        v.truncate(n);
        out.push((name, v));
    }
    Ok(out)
}

fn clear_xattrs(path: &Path) -> Result<()> {
    for name in xattr_names(path)? {
        match rustix::fs::lremovexattr(path, OsStr::from_bytes(&name)) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(errno("remove xattr of", path)(e)),
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), then xattrs (chown clears file capabilities),
/// then times (last: every other change moves ctime/mtime of directories).
fn apply_meta(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
    use rustix::fs::XattrFlags;
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())).map_err(err("chown", dst))?;
    if !md.file_type().is_symlink() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
    }
    for (name, value) in read_xattrs(src)? {
        rustix::fs::lsetxattr(dst, OsStr::from_bytes(&name), &value, XattrFlags::empty())
            .map_err(errno("set xattr on", dst))?;
    }
    set_times(dst, md).map_err(errno("set times of", dst))
}

/// Sets the access and modification times of `path` (not following a symlink) to `md`'s.
pub(crate) fn set_times(path: &Path, md: &fs::Metadata) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
}

/// Bytes of regular files and symlinks under `dir`, each inode once.
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if (md.is_file() || md.file_type().is_symlink())
                && (md.nlink() == 1 || seen.insert((md.dev(), md.ino())))
            {
                total += md.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    fn opaque(p: &Path) {
        rustix::fs::lsetxattr(
            p,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    /// A listing of everything that matters about a tree: path, type, mode, owner, rdev,
    /// xattrs, mtime, contents or link target, and which entries share an inode.
    fn describe(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut inodes: HashMap<u64, String> = HashMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mut xs = read_xattrs(&p).unwrap();
            xs.sort();
            let body = if md.is_file() {
                format!("{:?}", fs::read(&p).unwrap())
            } else if md.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let link = if !md.is_dir() && md.nlink() > 1 {
                inodes
                    .entry(md.ino())
                    .or_insert_with(|| rel.clone())
                    .clone()
            } else {
                String::new()
            };
            out.push(format!(
                "{rel} mode={:o} uid={} gid={} rdev={} mtime={}.{} xattrs={xs:?} body={body} link={link}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.rdev(),
                md.mtime(),
                if md.is_dir() { 0 } else { md.mtime_nsec() },
            ));
            if md.is_dir() {
                let mut names: Vec<_> = fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                names.sort();
                names.reverse();
                stack.extend(names);
            }
        }
        out
    }

    #[test]
    fn copy_is_exact() {
        if !is_root() {
            eprintln!("skipped: needs root (whiteouts, trusted xattrs, chown)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/file"), b"hello").unwrap();
        fs::set_permissions(src.join("d/file"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(src.join("d/file"), Some(1000123), Some(1000456)).unwrap();
        fs::hard_link(src.join("d/file"), src.join("d/e/hard")).unwrap();
        std::os::unix::fs::symlink("../nowhere", src.join("d/link")).unwrap();
        whiteout(&src.join("d/gone"));
        opaque(&src.join("d/e"));
        rustix::fs::lsetxattr(
            src.join("d/file"),
            "user.note",
            b"x\0y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let dst = t.path().join("dst");
        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!(stats.bytes, 5);
        assert_eq!(describe(&src), describe(&dst));
        assert!(is_opaque(&dst.join("d/e")));
        assert!(is_whiteout(
            &fs::symlink_metadata(dst.join("d/gone")).unwrap()
        ));
    }

    #[test]
    fn live_copy_catches_up_with_changes() {
        if !is_root() {
            eprintln!("skipped: needs root (whiteouts, chown)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(src.join("gone-dir/x")).unwrap();
        for i in 0..50 {
            fs::write(src.join(format!("a/f{i}")), format!("{i}")).unwrap();
        }
        fs::write(src.join("a/b/keep"), b"keep").unwrap();
        fs::write(src.join("gone"), b"gone").unwrap();
        fs::hard_link(src.join("a/f1"), src.join("a/b/f1-link")).unwrap();
        // Old enough to be trusted by the second pass.
        std::thread::sleep(FRESH + std::time::Duration::from_millis(50));
        let dst = t.path().join("dst");
        let lc = LiveCopy::precopy(&src, &dst).unwrap();
        // Changes between the passes: data, mode, new file, deletions, a file that becomes a
        // directory, a whiteout, an opaque marker, a hardlinked file rewritten in place.
        fs::write(src.join("a/f2"), b"changed").unwrap();
        fs::set_permissions(src.join("a/f3"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(src.join("a/new"), b"new").unwrap();
        fs::remove_file(src.join("gone")).unwrap();
        fs::remove_dir_all(src.join("gone-dir")).unwrap();
        fs::remove_file(src.join("a/f4")).unwrap();
        fs::create_dir(src.join("a/f4")).unwrap();
        fs::remove_file(src.join("a/f5")).unwrap();
        whiteout(&src.join("a/f5"));
        opaque(&src.join("a/b"));
        fs::write(src.join("a/f1"), b"via one link").unwrap();
        let stats = lc.finish().unwrap();
        assert_eq!(describe(&src), describe(&dst));
        assert!(stats.bytes > 0);
        assert_eq!(fs::read(dst.join("a/b/f1-link")).unwrap(), b"via one link");
    }

    #[test]
    fn the_first_pass_never_follows_symlinks_out_of_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"x").unwrap();
        let lc = LiveCopy::precopy(&src, &t.path().join("dst")).unwrap();
        // As if the sandbox swapped entries for symlinks after they were listed.
        let etc = fs::metadata("/etc").unwrap().ino();
        std::os::unix::fs::symlink("/etc", src.join("evil")).unwrap();
        let dir = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
        assert!(lc.open_beneath(Path::new("evil"), dir, etc).is_err());
        let passwd = fs::metadata("/etc/passwd").unwrap().ino();
        let file = rustix::fs::OFlags::RDONLY;
        assert!(lc
            .open_beneath(Path::new("evil/passwd"), file, passwd)
            .is_err());
        std::os::unix::fs::symlink("/dev/zero", src.join("zero")).unwrap();
        let zero = fs::metadata("/dev/zero").unwrap().ino();
        assert!(lc.open_beneath(Path::new("zero"), file, zero).is_err());
        // A different inode at the same name is refused too.
        let f = fs::metadata(src.join("d/f")).unwrap().ino();
        assert!(lc.open_beneath(Path::new("d/f"), file, f).is_ok());
        assert!(lc.open_beneath(Path::new("d/f"), file, f + 1).is_err());
    }

    #[test]
    fn merge_honours_whiteouts_and_opaque_dirs() {
        if !is_root() {
            eprintln!("skipped: needs root (whiteouts, trusted xattrs)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        // a: base files
        fs::create_dir_all(a.join("keep")).unwrap();
        fs::create_dir_all(a.join("op")).unwrap();
        fs::write(a.join("keep/x"), b"a").unwrap();
        fs::write(a.join("keep/y"), b"a").unwrap();
        fs::write(a.join("op/old"), b"a").unwrap();
        fs::write(a.join("file"), b"a").unwrap();
        // b: deletes keep/y, replaces op with an opaque dir, turns file into a dir
        fs::create_dir_all(b.join("keep")).unwrap();
        whiteout(&b.join("keep/y"));
        fs::create_dir_all(b.join("op")).unwrap();
        opaque(&b.join("op"));
        fs::write(b.join("op/new"), b"b").unwrap();
        fs::create_dir_all(b.join("file")).unwrap();
        fs::write(b.join("file/inner"), b"b").unwrap();
        // c: recreates keep/y, deletes a whole dir of a lower image (whiteout stays)
        fs::create_dir_all(c.join("keep")).unwrap();
        fs::write(c.join("keep/y"), b"c").unwrap();
        whiteout(&c.join("etc"));
        let m = t.path().join("m");
        merge_layers(
            &[a.clone(), b.clone(), t.path().join("missing"), c.clone()],
            &m,
        )
        .unwrap();
        assert_eq!(fs::read(m.join("keep/x")).unwrap(), b"a");
        assert_eq!(fs::read(m.join("keep/y")).unwrap(), b"c");
        assert!(!m.join("op/old").exists());
        assert_eq!(fs::read(m.join("op/new")).unwrap(), b"b");
        assert!(is_opaque(&m.join("op")));
        assert_eq!(fs::read(m.join("file/inner")).unwrap(), b"b");
        assert!(is_whiteout(&fs::symlink_metadata(m.join("etc")).unwrap()));
        // Only b's whiteout of keep/y was replaced by c's file; the merged layer is 2 levels.
        let empty = t.path().join("none");
        merge_layers(&[], &empty).unwrap();
        assert!(empty.is_dir());
    }
}
