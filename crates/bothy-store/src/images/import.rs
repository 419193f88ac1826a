//! `bothy image import NAME PATH`: a directory or a tarball becomes a read-only layer.
//!
//! - **Tarballs** (`.tar`, or gzip-compressed: recognised by their magic bytes, not their
//!   name) are unpacked as root, preserving ownership, modes and mtimes. Entries whose path is
//!   absolute or contains `..` are skipped (counted in [`ImportedLayer::skipped_unsafe`]); an
//!   entry that would be written through a symlink pointing out of the layer, or a hardlink to
//!   a file outside it, makes the whole import fail (the `tar` crate's `unpack_in` checks
//!   both). Extended attributes in tarballs are *not* unpacked: `trusted.overlay.*` ones could
//!   steer the overlay that mounts the layer.
//! - **Directories** are copied preserving modes, ownership, symlinks, hardlinks, fifos,
//!   timestamps and the extended attributes `user.*` and `security.capability` (no others, for
//!   the same reason).
//! - **Block and character device nodes are never created** (a device node in a layer could
//!   open a host device; overlays are also mounted `nodev`): they are skipped and counted in
//!   [`ImportedLayer::skipped_devices`]. Sockets are skipped too (`skipped_other`).
//!
//! Ids are `sha256-<16 hex>`: of the tarball's bytes (what `sha256sum` prints, cut), or of a
//! canonical encoding of the copied tree (paths, types, modes, owners, symlink targets,
//! hardlinks, kept xattrs, file bytes; not timestamps). The layer is built in a temporary
//! directory and renamed into place; an existing layer with the same id is reused.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_err, layer_size, new_temp_dir, publish, remove_tree, ImageError, Kind, TreeHasher};
use crate::Layout;

/// One extended attribute: name, value.
type Xattr = (Vec<u8>, Vec<u8>);
type Xattrs = Vec<Xattr>;

/// What an import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLayer {
    pub id: String,
    /// Apparent size of the layer (see [`layer_size`]).
    pub size_bytes: u64,
    /// The layer already existed (same content imported before); the counts below are then 0.
    pub reused: bool,
    /// Block and character device nodes left out.
    pub skipped_devices: u64,
    /// Tar entries left out because their path is absolute or contains `..`.
    pub skipped_unsafe: u64,
    /// Sockets left out (directory import).
    pub skipped_other: u64,
}

#[derive(Debug, Default)]
struct Stats {
    devices: u64,
    unsafe_paths: u64,
    other: u64,
}

const ACCEPTED: &str =
    "accepted: a directory, a tar archive, or a gzip-compressed tar archive (.tar.gz, .tgz)";

/// Imports `src` (a directory or a tarball) as a layer.
pub fn import_layer(layout: &Layout, src: &Path) -> Result<ImportedLayer, ImageError> {
    let md = fs::metadata(src).map_err(|e| user_io_err(src, e))?;
    if md.is_dir() {
        import_dir(layout, src)
    } else if md.is_file() {
        import_tar(layout, src)
    } else {
        Err(ImageError::Invalid(format!(
            "{} is neither a directory nor a tarball ({ACCEPTED})",
            src.display()
        )))
    }
}

/// Errors about the user's path are the user's to fix: say so plainly.
fn user_io_err(src: &Path, e: io::Error) -> ImageError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            ImageError::Invalid(format!("{}: no such file or directory", src.display()))
        }
        io::ErrorKind::PermissionDenied => {
            ImageError::Invalid(format!("{}: permission denied", src.display()))
        }
        _ => ImageError::Io {
            op: format!("read {}", src.display()),
            source: e,
        },
    }
}

fn finish(
    layout: &Layout,
    tmp: &Path,
    id: String,
    stats: Stats,
) -> Result<ImportedLayer, ImageError> {
    let reused = publish(layout, tmp, &id)?;
    let size_bytes = layer_size(layout, &id)?;
    let stats = if reused { Stats::default() } else { stats };
    Ok(ImportedLayer {
        id,
        size_bytes,
        reused,
        skipped_devices: stats.devices,
        skipped_unsafe: stats.unsafe_paths,
        skipped_other: stats.other,
    })
}

// ---------------------------------------------------------------------------------------------
// Tarballs

/// A reader that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest and returns the id of everything read.
    fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!(
            "sha256-{}",
            hex::encode(&self.hasher.finalize()[..8])
        ))
    }
}

fn import_tar(layout: &Layout, src: &Path) -> Result<ImportedLayer, ImageError> {
    let open = || fs::File::open(src).map_err(|e| user_io_err(src, e));
    // First pass: hash only, so that re-importing the same tarball is one read.
    let id = HashingReader::new(open()?)
        .finish()
        .map_err(|e| user_io_err(src, e))?;
    if layout.layer(&id).is_dir() {
        let size_bytes = layer_size(layout, &id)?;
        return Ok(ImportedLayer {
            id,
            size_bytes,
            reused: true,
            skipped_devices: 0,
            skipped_unsafe: 0,
            skipped_other: 0,
        });
    }

    let mut raw = HashingReader::new(open()?);
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut raw, &mut magic).map_err(|e| user_io_err(src, e))?;
    let magic = &magic[..n];
    let head = io::Cursor::new(magic.to_vec());
    let tmp = new_temp_dir(layout)?;
    let result = if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::MultiGzDecoder::new(head.chain(raw));
        extract(src, gz, &tmp).map(|(stats, gz)| (stats, gz.into_inner().into_inner().1))
    } else if let Some(kind) = other_compression(magic) {
        Err(ImageError::Invalid(format!(
            "{} is {kind}-compressed, which is not supported ({ACCEPTED})",
            src.display()
        )))
    } else {
        extract(src, head.chain(raw), &tmp).map(|(stats, r)| (stats, r.into_inner().1))
    };
    let (stats, raw) = match result {
        Ok(v) => v,
        Err(e) => {
            remove_tree(&tmp);
            return Err(e);
        }
    };
    let id2 = raw.finish().map_err(|e| user_io_err(src, e))?;
    if id2 != id {
        remove_tree(&tmp);
        return Err(ImageError::Invalid(format!(
            "{} changed while it was being imported",
            src.display()
        )));
    }
    finish(layout, &tmp, id, stats)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn other_compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// Unpacks the tar stream `r` into `dst`; returns what was skipped and the reader.
fn extract<R: Read>(src: &Path, r: R, dst: &Path) -> Result<(Stats, R), ImageError> {
    // Check the ustar magic of the first header before trusting the stream: the tar format has
    // no other signature, and any 512 bytes would otherwise parse as *something*.
    let mut r = io::BufReader::with_capacity(64 << 10, r);
    let mut header = [0u8; 512];
    let n = read_up_to(&mut r, &mut header).map_err(|e| bad_tar(src, e))?;
    if n < 512 || &header[257..262] != b"ustar" {
        return Err(ImageError::Invalid(format!(
            "{} is not a tar archive ({ACCEPTED})",
            src.display()
        )));
    }
    let mut ar = tar::Archive::new(io::Cursor::new(header).chain(r));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    ar.set_mask(0);

    let mut stats = Stats::default();
    {
        // Directories last and deepest first (like `Archive::unpack`), so that a read-only
        // directory's mode does not get in the way of its contents.
        let mut dirs = Vec::new();
        for entry in ar.entries().map_err(|e| bad_tar(src, e))? {
            let mut entry = entry.map_err(|e| bad_tar(src, e))?;
            let kind = entry.header().entry_type();
            if kind.is_block_special() || kind.is_character_special() {
                stats.devices += 1;
                continue;
            }
            let rel = match safe_rel_path(&entry, src)? {
                Some(rel) => rel,
                None => {
                    stats.unsafe_paths += 1;
                    continue;
                }
            };
            if kind.is_dir() {
                dirs.push(entry);
                continue;
            }
            if !entry.unpack_in(dst).map_err(|e| bad_entry(src, &rel, e))? {
                stats.unsafe_paths += 1;
                continue;
            }
            if kind.is_fifo() && !rel.as_os_str().is_empty() {
                // The tar crate writes fifos as empty regular files (at a path it has checked):
                // replace that file with the fifo.
                let header = entry.header();
                let mode = header.mode().map_err(|e| bad_entry(src, &rel, e))? & 0o7777;
                let uid = header.uid().map_err(|e| bad_entry(src, &rel, e))?;
                let gid = header.gid().map_err(|e| bad_entry(src, &rel, e))?;
                let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
                    (Ok(u), Ok(g)) => (u, g),
                    _ => return Err(bad_entry(src, &rel, io::Error::other("uid too large"))),
                };
                let path = dst.join(&rel);
                fs::remove_file(&path).map_err(io_err(format!("remove {}", path.display())))?;
                make_fifo(&path, mode, uid, gid)?;
            }
        }
        dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
        for mut dir in dirs {
            let rel = dir.path().map(|p| p.into_owned()).unwrap_or_default();
            if !dir.unpack_in(dst).map_err(|e| bad_entry(src, &rel, e))? {
                stats.unsafe_paths += 1;
            }
        }
    }
    let inner = ar.into_inner().into_inner().1;
    Ok((stats, inner.into_inner()))
}

/// The entry's path relative to the layer, or `None` if it is absolute or has a `..`.
fn safe_rel_path<R: Read>(
    entry: &tar::Entry<'_, R>,
    src: &Path,
) -> Result<Option<PathBuf>, ImageError> {
    let path = entry.path().map_err(|e| bad_tar(src, e))?;
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return Ok(None),
        }
    }
    Ok(Some(rel))
}

fn bad_tar(src: &Path, e: io::Error) -> ImageError {
    ImageError::Invalid(format!("{}: bad tar archive: {e}", src.display()))
}

fn bad_entry(src: &Path, rel: &Path, e: io::Error) -> ImageError {
    ImageError::Invalid(format!(
        "{}: cannot extract entry {}: {e}",
        src.display(),
        rel.display()
    ))
}

fn make_fifo(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), ImageError> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .map_err(|e| io_err(format!("mkfifo {}", path.display()))(e.into()))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(io_err(format!("chown {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Directories

fn import_dir(layout: &Layout, src: &Path) -> Result<ImportedLayer, ImageError> {
    let canon = src.canonicalize().map_err(|e| user_io_err(src, e))?;
    let data = layout
        .root()
        .canonicalize()
        .unwrap_or_else(|_| layout.root().to_path_buf());
    if data.starts_with(&canon) || canon.starts_with(&data) {
        return Err(ImageError::Invalid(format!(
            "{} overlaps the data directory {}; import another directory",
            src.display(),
            data.display()
        )));
    }
    let tmp = new_temp_dir(layout)?;
    let mut copier = Copier {
        src: &canon,
        dst: &tmp,
        hasher: TreeHasher::new("bothy-dir v1"),
        links: HashMap::new(),
        stats: Stats::default(),
    };
    let result = copier.copy_dir_contents(Path::new("")).and_then(|()| {
        // The layer's root takes the source directory's owner, mode, xattrs and times.
        let md = fs::symlink_metadata(&canon).map_err(|e| user_io_err(src, e))?;
        copier
            .hasher
            .entry(Kind::Dir, Path::new(""), md.mode(), md.uid(), md.gid());
        let xattrs = read_xattrs(&canon)?;
        copier.hasher_xattrs(&xattrs);
        apply_meta(&tmp, &md, &xattrs)
    });
    if let Err(e) = result {
        remove_tree(&tmp);
        return Err(e);
    }
    let Copier { hasher, stats, .. } = copier;
    let id = format!("sha256-{}", hasher.finish());
    finish(layout, &tmp, id, stats)
}

struct Copier<'a> {
    src: &'a Path,
    dst: &'a Path,
    hasher: TreeHasher,
    /// First copy of each multiply-linked inode, by (dev, ino), as a path relative to the root.
    links: HashMap<(u64, u64), PathBuf>,
    stats: Stats,
}

impl Copier<'_> {
    fn hasher_xattrs(&mut self, xattrs: &[Xattr]) {
        self.hasher.len_prefix(xattrs.len() as u64);
        for (name, value) in xattrs {
            self.hasher.bytes(name);
            self.hasher.bytes(value);
        }
    }

    /// Copies the entries of `src/rel` into `dst/rel` (which exists), in name order.
    fn copy_dir_contents(&mut self, rel: &Path) -> Result<(), ImageError> {
        let dir = self.src.join(rel);
        let mut names = Vec::new();
        for ent in fs::read_dir(&dir).map_err(|e| user_io_err(&dir, e))? {
            names.push(ent.map_err(|e| user_io_err(&dir, e))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            self.copy_entry(&rel.join(name))?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, rel: &Path) -> Result<(), ImageError> {
        let from = self.src.join(rel);
        let to = self.dst.join(rel);
        let md = fs::symlink_metadata(&from).map_err(|e| user_io_err(&from, e))?;
        let ft = md.file_type();
        let (mode, uid, gid) = (md.mode(), md.uid(), md.gid());
        if ft.is_block_device() || ft.is_char_device() {
            self.stats.devices += 1;
            return Ok(());
        }
        if ft.is_socket() {
            self.stats.other += 1;
            return Ok(());
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| user_io_err(&from, e))?;
            self.hasher.entry(Kind::Symlink, rel, 0o777, uid, gid);
            self.hasher.bytes(target.as_os_str().as_bytes());
            std::os::unix::fs::symlink(&target, &to)
                .map_err(io_err(format!("create symlink {}", to.display())))?;
            return apply_meta(&to, &md, &[]);
        }
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                self.hasher.entry(Kind::Hardlink, rel, 0, 0, 0);
                self.hasher.bytes(first.as_os_str().as_bytes());
                let first = self.dst.join(first);
                return fs::hard_link(&first, &to).map_err(io_err(format!(
                    "link {} to {}",
                    to.display(),
                    first.display()
                )));
            }
            self.links.insert((md.dev(), md.ino()), rel.to_path_buf());
        }
        let xattrs = read_xattrs(&from)?;
        if ft.is_dir() {
            self.hasher.entry(Kind::Dir, rel, mode, uid, gid);
            self.hasher_xattrs(&xattrs);
            fs::create_dir(&to).map_err(io_err(format!("create {}", to.display())))?;
            self.copy_dir_contents(rel)?;
        } else if ft.is_fifo() {
            self.hasher.entry(Kind::Fifo, rel, mode, uid, gid);
            self.hasher_xattrs(&xattrs);
            make_fifo(&to, mode & 0o7777, uid, gid)?;
        } else {
            self.hasher.entry(Kind::File, rel, mode, uid, gid);
            self.hasher_xattrs(&xattrs);
            self.copy_file(&from, &to, md.len())?;
        }
        apply_meta(&to, &md, &xattrs)
    }

    /// Copies exactly `len` bytes, hashing what is written.
    fn copy_file(&mut self, from: &Path, to: &Path, len: u64) -> Result<(), ImageError> {
        let mut input = fs::File::open(from).map_err(|e| user_io_err(from, e))?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(io_err(format!("create {}", to.display())))?;
        self.hasher.len_prefix(len);
        let mut buf = vec![0u8; 256 << 10];
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match input.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(user_io_err(from, e)),
            };
            self.hasher.chunk(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(io_err(format!("write {}", to.display())))?;
            left -= n as u64;
        }
        let grew = input
            .read(&mut buf[..1])
            .map_err(|e| user_io_err(from, e))?
            > 0;
        if left > 0 || grew {
            return Err(ImageError::Invalid(format!(
                "{} changed while it was being imported",
                from.display()
            )));
        }
        Ok(())
    }
}

/// Whether an extended attribute is copied: `user.*` and file capabilities. Never
/// `trusted.overlay.*` (they would steer the overlay that mounts the layer) nor security labels.
fn keep_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// The kept extended attributes of `path` (not following symlinks), sorted by name.
fn read_xattrs(path: &Path) -> Result<Xattrs, ImageError> {
    use rustix::io::Errno;
    let unsupported = |e: Errno| e == Errno::NOTSUP || e == Errno::OPNOTSUPP;
    let list_len = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(io_err(format!("list xattrs of {}", path.display()))(
                e.into(),
            ))
        }
    };
    if list_len == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; list_len];
    let n = rustix::fs::llistxattr(path, &mut list[..])
        .map_err(|e| io_err(format!("list xattrs of {}", path.display()))(e.into()))?;
    let mut out = Vec::new();
    for name in list[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && keep_xattr(n))
    {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(path, name_os) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => {
                return Err(io_err(format!("read xattr of {}", path.display()))(
                    e.into(),
                ))
            }
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, name_os, &mut value[..])
            .map_err(|e| io_err(format!("read xattr of {}", path.display()))(e.into()))?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Owner, then mode (chown clears set-id bits), xattrs, then times — of `to`, from `md`.
fn apply_meta(to: &Path, md: &fs::Metadata, xattrs: &[Xattr]) -> Result<(), ImageError> {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, XattrFlags, CWD};
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))
        .map_err(io_err(format!("chown {}", to.display())))?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io_err(format!("chmod {}", to.display())))?;
    }
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(
            to,
            std::ffi::OsStr::from_bytes(name),
            value,
            XattrFlags::empty(),
        )
        .map_err(|e| io_err(format!("set xattr on {}", to.display()))(e.into()))?;
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
    utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(format!("set times of {}", to.display()))(e.into()))
}
