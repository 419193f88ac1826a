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
    use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};
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
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno("set times of", dst))
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
