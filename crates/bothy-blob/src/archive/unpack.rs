//! Unpacking an archive into a new directory, verified before it becomes visible.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, Timespec, Timestamps};
use tar::EntryType;

use super::{PAX_MTIME, PAX_XATTR};
use crate::digest::{Digest, HashingReader};
use crate::error::{BlobError, IoContext, Result};

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub content_bytes: u64,
}

/// Unpacks the archive file `archive` into the new directory `dest` (which must not exist),
/// after checking that the archive's bytes hash to `expected`. `dest` appears whole or not at
/// all: the tree is built in a temporary sibling and renamed into place at the end.
pub fn unpack(archive: &Path, expected: &Digest, dest: &Path) -> Result<Unpacked> {
    let parent = dest
        .parent()
        .ok_or_else(|| BlobError::Invalid(format!("{} has no parent", dest.display())))?;
    if fs::symlink_metadata(dest).is_ok() {
        return Err(BlobError::io(
            format!("unpack into {}", dest.display()),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    let name = dest
        .file_name()
        .unwrap_or(OsStr::new("x"))
        .to_string_lossy();
    let temp = parent.join(format!(".{name}.unpack-{:08x}", rand::random::<u32>()));
    let result = unpack_into(archive, expected, &temp);
    match result {
        Ok(u) => match fs::rename(&temp, dest) {
            Ok(()) => Ok(u),
            Err(e) => {
                remove_tree(&temp);
                Err(BlobError::io(format!("rename into {}", dest.display()), e))
            }
        },
        Err(e) => {
            remove_tree(&temp);
            Err(e)
        }
    }
}

fn remove_tree(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a partial unpack");
        }
    }
}

/// Errors reading the archive (bad compression, bad tar, short stream) mean a corrupt blob.
fn corrupt(what: &str, e: impl std::fmt::Display) -> BlobError {
    BlobError::Corrupt(format!("{what}: {e}"))
}

struct Deferred {
    path: PathBuf,
    mode: u32,
    mtime: Timespec,
}

fn unpack_into(archive: &Path, expected: &Digest, temp: &Path) -> Result<Unpacked> {
    let file = fs::File::open(archive).ctx(|| format!("open {}", archive.display()))?;
    let mut hashing = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let decoder = zstd::Decoder::with_buffer(BufReader::new(&mut hashing))
        .map_err(|e| corrupt("archive", e))?;
    let mut tar = tar::Archive::new(decoder);
    let mut state = State {
        temp,
        dirs: HashSet::from([PathBuf::new()]),
        files: HashSet::new(),
        seen: HashSet::new(),
        deferred: Vec::new(),
        entries: 0,
        content_bytes: 0,
    };
    let mut root_seen = false;
    let entries = tar.entries().map_err(|e| corrupt("archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt("archive entry", e))?;
        let rel = safe_path(&entry.path_bytes())?;
        if rel.as_os_str().is_empty() {
            if root_seen {
                return Err(BlobError::corrupt("archive has two root entries"));
            }
            root_seen = true;
        }
        state.entry(&mut entry, rel)?;
    }
    if !root_seen {
        return Err(BlobError::corrupt(
            "archive has no root entry (empty or not a layer archive)",
        ));
    }
    // Read to the end of the compressed stream (and past it: trailing bytes are corruption) so
    // that every byte is hashed.
    let mut decoder = tar.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| corrupt("archive", e))?;
    drop(decoder);
    let mut rest = Vec::new();
    hashing
        .read_to_end(&mut rest)
        .map_err(|e| corrupt("archive", e))?;
    if !rest.is_empty() {
        return Err(BlobError::corrupt("archive has trailing bytes"));
    }
    let (digest, size) = hashing.finish();
    if digest != *expected {
        return Err(BlobError::Corrupt(format!(
            "archive digest mismatch: expected {expected}, got {digest} ({size} bytes)"
        )));
    }
    // Directory modes and mtimes last (children change a directory's mtime; a read-only
    // directory would refuse its children), deepest first.
    for d in state.deferred.iter().rev() {
        let full = temp.join(&d.path);
        fs::set_permissions(&full, fs::Permissions::from_mode(d.mode))
            .ctx(|| format!("chmod {}", full.display()))?;
        set_times(&full, d.mtime)?;
    }
    Ok(Unpacked {
        entries: state.entries,
        content_bytes: state.content_bytes,
    })
}

/// A relative path of only normal components (`.` components dropped); anything absolute or
/// with `..` is refused.
fn safe_path(bytes: &[u8]) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    if bytes.first() == Some(&b'/') {
        return Err(escape(bytes));
    }
    for seg in bytes.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(escape(bytes)),
            s => out.push(OsStr::from_bytes(s)),
        }
    }
    Ok(out)
}

fn escape(bytes: &[u8]) -> BlobError {
    BlobError::Corrupt(format!(
        "archive entry {:?} escapes the destination",
        String::from_utf8_lossy(bytes)
    ))
}

struct State<'a> {
    temp: &'a Path,
    /// Directories created so far (relative; "" is the root). An entry's parent must be one:
    /// so nothing is ever created through a symlink, or under a file.
    dirs: HashSet<PathBuf>,
    /// Regular files created so far: the only valid hardlink targets.
    files: HashSet<PathBuf>,
    seen: HashSet<PathBuf>,
    deferred: Vec<Deferred>,
    entries: u64,
    content_bytes: u64,
}

impl State<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, rel: PathBuf) -> Result<()> {
        let is_root = rel.as_os_str().is_empty();
        if !is_root {
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if !self.dirs.contains(&parent) {
                return Err(BlobError::Corrupt(format!(
                    "archive entry {} is not inside a directory of the archive",
                    rel.display()
                )));
            }
            if !self.seen.insert(rel.clone()) {
                return Err(BlobError::Corrupt(format!(
                    "archive entry {} appears twice",
                    rel.display()
                )));
            }
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let uid = header.uid().map_err(|e| corrupt("uid", e))?;
        let gid = header.gid().map_err(|e| corrupt("gid", e))?;
        let mode = header.mode().map_err(|e| corrupt("mode", e))? & 0o7777;
        let mut mtime = Timespec {
            tv_sec: header.mtime().map_err(|e| corrupt("mtime", e))? as i64,
            tv_nsec: 0,
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| corrupt("pax header", e))?
        {
            for rec in pax {
                let rec = rec.map_err(|e| corrupt("pax header", e))?;
                let key = rec.key().map_err(|e| corrupt("pax header", e))?;
                if let Some(name) = key.strip_prefix(PAX_XATTR) {
                    xattrs.push((name.to_string(), rec.value_bytes().to_vec()));
                } else if key == PAX_MTIME {
                    mtime = parse_mtime(rec.value_bytes())?;
                }
            }
        }
        let full = self.temp.join(&rel);
        let ctx = || format!("unpack {}", full.display());
        let uid = u32::try_from(uid).map_err(|e| corrupt("uid", e))?;
        let gid = u32::try_from(gid).map_err(|e| corrupt("gid", e))?;
        match kind {
            EntryType::Directory => {
                fs::DirBuilder::new().mode(0o700).create(&full).ctx(ctx)?;
                lchown(&full, uid, gid)?;
                set_xattrs(&full, &xattrs)?;
                self.dirs.insert(rel.clone());
                self.deferred.push(Deferred {
                    path: rel,
                    mode,
                    mtime,
                });
            }
            _ if is_root => {
                return Err(BlobError::corrupt("archive root entry is not a directory"));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&full)
                    .ctx(ctx)?;
                let size = entry.header().size().map_err(|e| corrupt("size", e))?;
                let mut buf = vec![0u8; 256 * 1024];
                let mut copied = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| corrupt(&format!("archive entry {}", rel.display()), e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).ctx(ctx)?;
                    copied += n as u64;
                }
                if copied != size {
                    return Err(BlobError::Corrupt(format!(
                        "archive entry {} is truncated",
                        rel.display()
                    )));
                }
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(io::Error::from)
                .ctx(ctx)?;
                // After chown, which clears setuid/setgid.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
                set_xattrs(&full, &xattrs)?;
                rustix::fs::futimens(&file, &times(mtime))
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
                self.files.insert(rel);
                self.content_bytes += copied;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| BlobError::corrupt("hardlink without a target"))?;
                let target = safe_path(&target)?;
                if !self.files.contains(&target) {
                    return Err(BlobError::Corrupt(format!(
                        "hardlink {} points at {}, which is not a file of the archive",
                        rel.display(),
                        target.display()
                    )));
                }
                fs::hard_link(self.temp.join(&target), &full).ctx(ctx)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| BlobError::corrupt("symlink without a target"))?;
                // The target is stored as written; it is never followed here (every later
                // entry must sit in a directory the archive created).
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full).ctx(ctx)?;
                lchown(&full, uid, gid)?;
                set_xattrs(&full, &xattrs)?;
                set_times(&full, mtime)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header
                    .device_major()
                    .map_err(|e| corrupt("device", e))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| corrupt("device", e))?
                    .unwrap_or(0);
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &full,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(io::Error::from)
                .ctx(ctx)?;
                lchown(&full, uid, gid)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode)).ctx(ctx)?;
                set_xattrs(&full, &xattrs)?;
                set_times(&full, mtime)?;
            }
            other => {
                return Err(BlobError::Corrupt(format!(
                    "archive entry {} has an unsupported type {other:?}",
                    rel.display()
                )));
            }
        }
        self.entries += 1;
        Ok(())
    }
}

fn parse_mtime(v: &[u8]) -> Result<Timespec> {
    let s = std::str::from_utf8(v).map_err(|e| corrupt("mtime", e))?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let tv_sec: i64 = secs.parse().map_err(|e| corrupt("mtime", e))?;
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let tv_nsec: i64 = frac.parse().map_err(|e| corrupt("mtime", e))?;
    Ok(Timespec { tv_sec, tv_nsec })
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BlobError::io(format!("chown {}", path.display()), e.into()))
}

fn set_times(path: &Path, t: Timespec) -> Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times(t),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BlobError::io(format!("set times of {}", path.display()), e.into()))
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(path, name.as_str(), value, rustix::fs::XattrFlags::empty())
            .map_err(|e| {
                BlobError::io(format!("set xattr {name} on {}", path.display()), e.into())
            })?;
    }
    Ok(())
}
