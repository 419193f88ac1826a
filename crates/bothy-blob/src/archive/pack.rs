//! Packing a directory tree into a zstd-compressed tar archive file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{pax, DEFAULT_CHUNK_SIZE, PAX_MTIME, PAX_XATTR, ZSTD_LEVEL};
use crate::digest::{ChunkRef, ChunkingWriter, Digest};
use crate::error::{BlobError, IoContext, Result};

/// Decides whether a path (relative to the packed root) is included; `is_dir` tells whether it
/// is a directory (a skipped directory skips everything under it).
pub type Filter<'a> = &'a (dyn Fn(&Path, bool) -> bool + Sync);

pub struct PackOptions<'a> {
    /// Size of the chunks the archive's digest list is computed over.
    pub chunk_size: u64,
    pub zstd_level: i32,
    /// Which entries to include (all when `None`).
    pub filter: Option<Filter<'a>>,
}

impl Default for PackOptions<'_> {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: ZSTD_LEVEL,
            filter: None,
        }
    }
}

/// A packed archive: its file's digest and size, and its chunks in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub digest: Digest,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    /// Entries written (files, directories, links, devices).
    pub entries: u64,
    /// Bytes of regular-file content before compression.
    pub content_bytes: u64,
}

/// Packs the tree under `dir` into the file `out` (created or truncated).
pub fn pack(dir: &Path, out: &Path, opts: &PackOptions<'_>) -> Result<Packed> {
    let meta = fs::symlink_metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(BlobError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let file = fs::File::create(out).ctx(|| format!("create {}", out.display()))?;
    let chunker = ChunkingWriter::new(BufWriter::with_capacity(1 << 20, file), opts.chunk_size);
    let mut encoder =
        zstd::Encoder::new(chunker, opts.zstd_level).ctx(|| "start zstd".to_string())?;
    encoder
        .include_checksum(true)
        .ctx(|| "configure zstd".to_string())?;
    let mut packer = Packer {
        builder: tar::Builder::new(encoder),
        links: HashMap::new(),
        filter: opts.filter,
        entries: 0,
        content_bytes: 0,
    };
    packer.builder.mode(tar::HeaderMode::Complete);
    packer.entry(dir, Path::new("."), &meta)?;
    packer.walk(dir, Path::new(""))?;
    let (entries, content_bytes) = (packer.entries, packer.content_bytes);
    let encoder = packer
        .builder
        .into_inner()
        .ctx(|| "finish tar stream".to_string())?;
    let chunker = encoder.finish().ctx(|| "finish zstd stream".to_string())?;
    let (writer, digest, size, chunks) = chunker
        .finish()
        .ctx(|| format!("write {}", out.display()))?;
    let file = writer
        .into_inner()
        .map_err(|e| BlobError::io(format!("write {}", out.display()), e.into_error()))?;
    file.sync_all().ctx(|| format!("sync {}", out.display()))?;
    Ok(Packed {
        digest,
        size,
        chunks,
        entries,
        content_bytes,
    })
}

struct Packer<'a, W: Write> {
    builder: tar::Builder<W>,
    /// (dev, ino) of files with more than one link → the first path written.
    links: HashMap<(u64, u64), PathBuf>,
    filter: Option<Filter<'a>>,
    entries: u64,
    content_bytes: u64,
}

impl<W: Write> Packer<'_, W> {
    /// Writes the entries under `abs` (whose path in the archive is `rel`), sorted by name.
    fn walk(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .ctx(|| format!("read {}", abs.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("read {}", abs.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let abs = abs.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&abs).ctx(|| format!("stat {}", abs.display()))?;
            let is_dir = meta.is_dir();
            if let Some(filter) = self.filter {
                if !filter(&rel, is_dir) {
                    continue;
                }
            }
            self.entry(&abs, &rel, &meta)?;
            if is_dir {
                self.walk(&abs, &rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &Path, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            tracing::debug!(path = %abs.display(), "skipping socket");
            return Ok(());
        }
        let mut header = Header::new_gnu();
        header.set_uid(meta.uid() as u64);
        header.set_gid(meta.gid() as u64);
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);

        // Hardlinks: the second and later paths of a file become link entries.
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                header.set_entry_type(EntryType::Link);
                self.builder
                    .append_link(&mut header, rel, &first)
                    .ctx(|| format!("archive {}", abs.display()))?;
                self.entries += 1;
                return Ok(());
            }
            self.links.insert(key, rel.to_path_buf());
        }

        let mut records = xattr_records(abs)?;
        records.push((
            PAX_MTIME.to_string(),
            format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()).into_bytes(),
        ));
        pax::append(&mut self.builder, &records).ctx(|| format!("archive {}", abs.display()))?;

        let ctx = || format!("archive {}", abs.display());
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.builder
                .append_data(&mut header, rel, io::empty())
                .ctx(ctx)?;
        } else if ft.is_file() {
            let file = fs::File::open(abs).ctx(ctx)?;
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            // A file that changes size while being read would corrupt the stream: read exactly
            // the size in the header and fail if it is short.
            let mut reader = ExactReader {
                inner: file,
                left: meta.len(),
            };
            self.builder
                .append_data(&mut header, rel, &mut reader)
                .ctx(ctx)?;
            self.content_bytes += meta.len();
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).ctx(ctx)?;
            header.set_entry_type(EntryType::Symlink);
            self.builder
                .append_link(&mut header, rel, &target)
                .ctx(ctx)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            header.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            });
            let rdev = meta.rdev();
            header.set_device_major(rustix::fs::major(rdev)).ctx(ctx)?;
            header.set_device_minor(rustix::fs::minor(rdev)).ctx(ctx)?;
            self.builder
                .append_data(&mut header, rel, io::empty())
                .ctx(ctx)?;
        }
        self.entries += 1;
        Ok(())
    }
}

/// Reads at most `left` bytes and errors if the file ends before.
struct ExactReader {
    inner: fs::File,
    left: u64,
}

impl io::Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The extended attributes of `path` (not following symlinks) as PAX records.
fn xattr_records(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let ctx = || format!("list xattrs of {}", path.display());
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr_query(path)
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(BlobError::io(ctx(), e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(BlobError::Invalid(format!(
                "{}: xattr name is not utf-8",
                path.display()
            )));
        };
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr_query(path, name)
                        .map_err(io::Error::from)
                        .ctx(ctx)?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(BlobError::io(ctx(), e.into())),
            }
        };
        if len == usize::MAX {
            continue;
        }
        value.truncate(len);
        out.push((format!("{PAX_XATTR}{name}"), value));
    }
    out.sort();
    Ok(out)
}
