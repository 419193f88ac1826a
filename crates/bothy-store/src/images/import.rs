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
        let mut skipped_devices = std::collections::HashSet::new();
        for entry in ar.entries().map_err(|e| bad_tar(src, e))? {
            let mut entry = entry.map_err(|e| bad_tar(src, e))?;
            let kind = entry.header().entry_type();
            let rel = safe_rel_path(&entry, src)?;
            if kind.is_block_special() || kind.is_character_special() {
                stats.devices += 1;
                skipped_devices.extend(rel);
                continue;
            }
            if kind.is_hard_link() {
                // A hardlink to a device node we left out is a device node too.
                let target = entry.link_name().map_err(|e| bad_tar(src, e))?;
                if target
                    .and_then(|t| rel_path(&t))
                    .is_some_and(|t| skipped_devices.contains(&t))
                {
                    stats.devices += 1;
                    continue;
                }
            }
            let Some(rel) = rel else {
                stats.unsafe_paths += 1;
                continue;
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
    Ok(rel_path(&entry.path().map_err(|e| bad_tar(src, e))?))
}

/// `path` as a path relative to the layer root (`./a` → `a`), or `None` if it is absolute or
/// has a `..`.
fn rel_path(path: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(rel)
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
    use rustix::fs::XattrFlags;
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
    crate::tree::set_times(to, md)
        .map_err(|e| io_err(format!("set times of {}", to.display()))(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::is_root;
    use std::os::unix::fs::symlink;

    fn header(path: &str, kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        // Written raw: `set_path` rightly refuses `..` and absolute paths, which we need here.
        let name = &mut h.as_ustar_mut().unwrap().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    fn link(path: &str, kind: tar::EntryType, target: &str) -> tar::Header {
        let mut h = header(path, kind, 0o777, 0, 0);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        h
    }

    /// A tarball with a file, a dir, a symlink, a hardlink, a fifo, device nodes, and entries
    /// that try to leave the layer.
    fn sample_tar() -> Vec<u8> {
        use tar::EntryType as T;
        let mut b = tar::Builder::new(Vec::new());
        let data = b"hello\n";
        b.append(&header("./", T::Directory, 0o755, 0, 0), &[][..])
            .unwrap();
        b.append(&header("etc/", T::Directory, 0o755, 0, 0), &[][..])
            .unwrap();
        b.append(&header("etc/motd", T::Regular, 0o640, 1000, 6), &data[..])
            .unwrap();
        b.append(&header("opt/ro/", T::Directory, 0o555, 0, 0), &[][..])
            .unwrap();
        b.append(&header("opt/ro/x", T::Regular, 0o4755, 0, 6), &data[..])
            .unwrap();
        b.append(&link("etc/motd.link", T::Symlink, "motd"), &[][..])
            .unwrap();
        b.append(&link("etc/abs.link", T::Symlink, "/etc/shadow"), &[][..])
            .unwrap();
        b.append(&link("etc/motd.hard", T::Link, "etc/motd"), &[][..])
            .unwrap();
        b.append(&header("run/fifo", T::Fifo, 0o620, 7, 0), &[][..])
            .unwrap();
        let mut dev = header("dev/sda", T::Block, 0o666, 0, 0);
        dev.set_device_major(8).unwrap();
        dev.set_device_minor(0).unwrap();
        dev.set_cksum();
        b.append(&dev, &[][..]).unwrap();
        let mut dev = header("dev/mem", T::Char, 0o666, 0, 0);
        dev.set_device_major(1).unwrap();
        dev.set_device_minor(1).unwrap();
        dev.set_cksum();
        b.append(&dev, &[][..]).unwrap();
        b.append(&link("dev/mem2", T::Link, "./dev/mem"), &[][..])
            .unwrap();
        b.append(&header("../escape", T::Regular, 0o644, 0, 6), &data[..])
            .unwrap();
        b.append(
            &header("a/../../escape2", T::Regular, 0o644, 0, 6),
            &data[..],
        )
        .unwrap();
        b.append(&header("/abs-escape", T::Regular, 0o644, 0, 6), &data[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn md(p: &Path) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    fn check_sample_layer(root: &Path) {
        assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"hello\n");
        let m = md(&root.join("etc/motd"));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1000, 1000));
        assert_eq!(m.mtime(), 1_700_000_000);
        assert_eq!(m.nlink(), 2, "hardlink kept");
        assert_eq!(md(&root.join("etc/motd.hard")).ino(), m.ino());
        assert_eq!(
            fs::read_link(root.join("etc/motd.link")).unwrap(),
            Path::new("motd")
        );
        assert_eq!(
            fs::read_link(root.join("etc/abs.link")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert_eq!(md(&root.join("opt/ro")).mode() & 0o7777, 0o555);
        assert_eq!(md(&root.join("opt/ro/x")).mode() & 0o7777, 0o4755);
        let fifo = md(&root.join("run/fifo"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!((fifo.mode() & 0o7777, fifo.uid()), (0o620, 7));
        for dev in ["dev/sda", "dev/mem", "dev/mem2"] {
            assert!(!root.join(dev).exists(), "{dev}");
        }
        assert!(!root.join("escape").exists() && !root.join("abs-escape").exists());
        assert!(!root.parent().unwrap().join("escape").exists());
    }

    #[test]
    fn tar_import_is_safe_and_idempotent() {
        if !is_root() {
            eprintln!("skipping: needs root (unpacks with ownership)");
            return;
        }
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path().join("data"));
        let inputs = tempfile::tempdir().unwrap();
        let tar_path = inputs.path().join("rootfs.img"); // not named .tar: sniffed
        fs::write(&tar_path, sample_tar()).unwrap();

        let l = import_layer(&layout, &tar_path).unwrap();
        assert!(l.id.starts_with("sha256-") && l.id.len() == "sha256-".len() + 16);
        assert_eq!(
            (l.skipped_devices, l.skipped_unsafe, l.reused),
            (3, 3, false)
        );
        assert_eq!(
            l.size_bytes,
            6 + 6 + "motd".len() as u64 + "/etc/shadow".len() as u64
        );
        let root = layout.layer(&l.id);
        check_sample_layer(&root);
        assert!(!data.path().join("escape").exists());
        assert!(!inputs.path().join("escape").exists());

        let again = import_layer(&layout, &tar_path).unwrap();
        assert_eq!(again.id, l.id);
        assert!(again.reused);
        assert_eq!(again.size_bytes, l.size_bytes);

        let gz_path = inputs.path().join("rootfs.tgz");
        fs::write(&gz_path, gzip(&sample_tar())).unwrap();
        let gz = import_layer(&layout, &gz_path).unwrap();
        assert_ne!(gz.id, l.id, "the id hashes the input bytes");
        assert_eq!((gz.skipped_devices, gz.skipped_unsafe), (3, 3));
        check_sample_layer(&layout.layer(&gz.id));
        assert_eq!(crate::images::remove_stale_temp_dirs(&layout).unwrap(), 0);
    }

    #[test]
    fn tar_writing_through_a_symlink_is_refused() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        use tar::EntryType as T;
        let outside = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        for (name, evil) in [
            (
                "symlink",
                link("evil", T::Symlink, outside.path().to_str().unwrap()),
            ),
            (
                "relative symlink",
                link("evil", T::Symlink, "../../../../../../../.."),
            ),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            b.append(&evil, &[][..]).unwrap();
            b.append(&header("evil/pwned", T::Regular, 0o644, 0, 3), &b"hi\n"[..])
                .unwrap();
            let p = outside.path().join("evil.tar");
            fs::write(&p, b.into_inner().unwrap()).unwrap();
            let err = import_layer(&layout, &p).unwrap_err();
            assert!(
                matches!(&err, ImageError::Invalid(m) if m.contains("evil")),
                "{name}: {err}"
            );
            assert!(!outside.path().join("pwned").exists(), "{name}");
            assert!(!Path::new("/pwned").exists(), "{name}");
        }
        // A hardlink to a host file.
        let secret = outside.path().join("secret");
        fs::write(&secret, "s").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&link("h", T::Link, secret.to_str().unwrap()), &[][..])
            .unwrap();
        let p = outside.path().join("hard.tar");
        fs::write(&p, b.into_inner().unwrap()).unwrap();
        assert!(matches!(
            import_layer(&layout, &p),
            Err(ImageError::Invalid(_))
        ));
        assert_eq!(md(&secret).nlink(), 1);
        // Nothing was published, nothing left behind.
        assert_eq!(fs::read_dir(layout.layers()).unwrap().count(), 0);
    }

    #[test]
    fn directory_import() {
        if !is_root() {
            eprintln!("skipping: needs root (copies ownership)");
            return;
        }
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path().join("data"));
        let src_dir = tempfile::tempdir().unwrap();
        let s = src_dir.path().join("rootfs");
        fs::create_dir_all(s.join("etc")).unwrap();
        fs::create_dir_all(s.join("secret")).unwrap();
        fs::write(s.join("etc/motd"), "hello\n").unwrap();
        std::os::unix::fs::chown(s.join("etc/motd"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(s.join("etc/motd"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::hard_link(s.join("etc/motd"), s.join("etc/motd.hard")).unwrap();
        symlink("/etc/passwd", s.join("etc/passwd.link")).unwrap();
        fs::set_permissions(s.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(s.join("sock")).unwrap();
        let xattr = rustix::fs::lsetxattr(
            s.join("etc/motd"),
            "user.bothy",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        // Overlay's own xattrs in a lower layer would steer the overlay: never copied.
        let trusted = rustix::fs::lsetxattr(
            s.join("secret"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let old = Timespec(1_600_000_000);
        old.set(&s.join("etc/motd"));

        let l = import_layer(&layout, &s).unwrap();
        assert!(!l.reused);
        assert_eq!((l.skipped_devices, l.skipped_other), (1, 1));
        assert_eq!(l.size_bytes, 6 + "/etc/passwd".len() as u64);
        let r = layout.layer(&l.id);
        let m = md(&r.join("etc/motd"));
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.nlink()),
            (0o4750, 1234, 5678, 2)
        );
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(md(&r.join("etc/motd.hard")).ino(), m.ino());
        assert_eq!(
            fs::read_link(r.join("etc/passwd.link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(md(&r.join("secret")).mode() & 0o7777, 0o700);
        assert!(md(&r.join("fifo")).file_type().is_fifo());
        assert!(!r.join("null").exists() && !r.join("sock").exists());
        if xattr {
            let mut v = [0u8; 8];
            let n = rustix::fs::lgetxattr(r.join("etc/motd"), "user.bothy", &mut v[..]).unwrap();
            assert_eq!(&v[..n], b"v");
        }

        if trusted {
            let mut v = [0u8; 8];
            assert!(
                rustix::fs::lgetxattr(r.join("secret"), "trusted.overlay.opaque", &mut v[..])
                    .is_err()
            );
        }
        eprintln!("xattrs tested: user.* {xattr}, trusted.* {trusted}");

        let again = import_layer(&layout, &s).unwrap();
        assert_eq!((again.id.as_str(), again.reused), (l.id.as_str(), true));
        fs::write(s.join("etc/new"), "x").unwrap();
        let changed = import_layer(&layout, &s).unwrap();
        assert_ne!(changed.id, l.id);
        assert_eq!(crate::images::remove_stale_temp_dirs(&layout).unwrap(), 0);
    }

    struct Timespec(i64);
    impl Timespec {
        fn set(&self, p: &Path) {
            let t = rustix::fs::Timespec {
                tv_sec: self.0,
                tv_nsec: 0,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                p,
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        }
    }

    #[test]
    fn bad_inputs_are_clear() {
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path().join("data"));
        let dir = tempfile::tempdir().unwrap();
        let msg = |p: &Path| match import_layer(&layout, p) {
            Err(ImageError::Invalid(m)) => m,
            other => panic!("{}: {other:?}", p.display()),
        };
        assert!(msg(&dir.path().join("missing")).contains("no such file"));
        let junk = dir.path().join("junk");
        fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(msg(&junk).contains("not a tar archive"));
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").unwrap();
        assert!(msg(&empty).contains("not a tar archive"));
        let gz_junk = dir.path().join("junk.gz");
        fs::write(&gz_junk, gzip(b"not a tarball")).unwrap();
        assert!(msg(&gz_junk).contains("not a tar archive"));
        let truncated = dir.path().join("trunc.gz");
        let gz = gzip(&sample_tar());
        fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
        assert!(!msg(&truncated).is_empty());
        let xz = dir.path().join("x.tar.xz");
        fs::write(&xz, [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0]).unwrap();
        assert!(msg(&xz).contains("xz-compressed"));
        assert!(msg(Path::new("/dev/null")).contains("neither a directory nor a tarball"));
        fs::create_dir_all(layout.layers()).unwrap();
        assert!(msg(data.path()).contains("overlaps the data directory"));
        assert!(msg(&layout.layers()).contains("overlaps the data directory"));
        // Nothing half-built was left.
        assert_eq!(fs::read_dir(layout.layers()).unwrap().count(), 0);
    }
}
