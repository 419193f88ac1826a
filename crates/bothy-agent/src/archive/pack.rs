//! Packing a directory into a gzip-compressed tar, written to any `Write` (the HTTP response
//! body through [`ChannelWriter`]).
//!
//! Entries keep their mode, owner, group and mtime. Symlinks are stored as links, never
//! followed; sockets and device nodes are skipped (they cannot be restored in a sandbox). A
//! file that disappears during the walk is skipped; a file that changes size while it is read
//! is stored with the size it had when opened (cut or padded with zeros), so the archive stays
//! well-formed. Hard links are stored as separate copies.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use tar::{EntryType, Header, HeaderMode};

use super::select::{walker, Selection};

/// Size of the chunks sent to the response body.
const CHUNK: usize = 256 * 1024;

/// Packing failed. Headers are already sent by then, so the error ends the body early and the
/// client sees a truncated (invalid) archive rather than a short valid one.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("walking {path}: {source}")]
    Walk {
        path: String,
        #[source]
        source: ignore::Error,
    },
    #[error("archiving {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What was packed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// An output that can be cut off: after `abort`, it takes no more bytes. On an error the tar
/// builder and the gzip encoder still write their trailers when dropped; aborting first keeps a
/// failed archive from ending like a complete one.
pub trait Abort: Write {
    fn abort(&mut self);
}

/// Writes the archive of `root` to `out` with gzip `level` (0–9).
pub fn pack<W: Abort>(
    root: &Path,
    selection: &Selection,
    level: u32,
    out: W,
) -> Result<PackStats, PackError> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
    let mut tar = tar::Builder::new(gz);
    tar.mode(HeaderMode::Complete);
    tar.follow_symlinks(false);
    let result = pack_into(&mut tar, root, selection);
    if result.is_err() {
        tar.get_mut().get_mut().abort();
        return result;
    }
    let stats = result?;
    let gz = tar.into_inner().map_err(|source| PackError::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut out = gz.finish().map_err(|source| PackError::Io {
        path: root.display().to_string(),
        source,
    })?;
    out.flush().map_err(|source| PackError::Io {
        path: root.display().to_string(),
        source,
    })?;
    Ok(stats)
}

fn pack_into<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    selection: &Selection,
) -> Result<PackStats, PackError> {
    let mut stats = PackStats::default();
    for item in walker(root, selection) {
        let entry = item.map_err(|source| PackError::Walk {
            path: root.display().to_string(),
            source,
        })?;
        let path = entry.path();
        let name = match path.strip_prefix(root) {
            Ok(rel) if rel.as_os_str().is_empty() => Path::new("./"),
            Ok(rel) => rel,
            Err(_) => continue,
        };
        let io_err = |source| PackError::Io {
            path: path.display().to_string(),
            source,
        };
        match append(tar, path, name) {
            Ok(Some(bytes)) => {
                stats.entries += 1;
                stats.bytes += bytes;
            }
            Ok(None) => {}
            // Gone since the walk listed it: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound && entry.depth() > 0 => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(stats)
}

/// Appends one entry; `Ok(None)` when its kind is skipped, else the bytes of content stored.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> io::Result<Option<u64>> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let mut header = Header::new_gnu();
    if ft.is_file() {
        // Sizes come from the open file, and exactly that many bytes are stored.
        let file = File::open(path)?;
        let meta = file.metadata()?;
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        let len = meta.len();
        header.set_size(len);
        tar.append_data(&mut header, name, Exactly::new(file, len))?;
        Ok(Some(len))
    } else if ft.is_dir() {
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty())?;
        Ok(Some(0))
    } else if ft.is_symlink() {
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        header.set_size(0);
        let target = std::fs::read_link(path)?;
        tar.append_link(&mut header, name, target)?;
        Ok(Some(0))
    } else {
        use std::os::unix::fs::FileTypeExt as _;
        if ft.is_fifo() {
            header.set_metadata_in_mode(&meta, HeaderMode::Complete);
            header.set_entry_type(EntryType::Fifo);
            header.set_size(0);
            tar.append_data(&mut header, name, io::empty())?;
            Ok(Some(0))
        } else {
            // Sockets and device nodes.
            Ok(None)
        }
    }
}

/// Reads exactly `len` bytes from `inner`: cut if it grew, padded with zeros if it shrank.
struct Exactly<R> {
    inner: io::Take<R>,
    missing: u64,
}

impl<R: Read> Exactly<R> {
    fn new(inner: R, len: u64) -> Self {
        Self {
            inner: inner.take(len),
            missing: 0,
        }
    }
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.missing == 0 {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.missing = self.inner.limit();
            if self.missing == 0 {
                return Ok(0);
            }
        }
        let n = buf
            .len()
            .min(usize::try_from(self.missing).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.missing -= n as u64;
        if self.missing == 0 {
            // Mark the inner reader as exhausted so the next read ends.
            self.inner.set_limit(0);
        }
        Ok(n)
    }
}

/// A blocking writer that sends full chunks into a channel read by the async response body.
/// A send fails when the receiver is gone (the client went away), which stops the packing.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    aborted: bool,
}

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            aborted: false,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Abort for ChannelWriter {
    fn abort(&mut self) {
        self.aborted = true;
        self.buf = Vec::new();
    }
}

impl Abort for Vec<u8> {
    fn abort(&mut self) {}
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.aborted {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "archive aborted"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.aborted {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "archive aborted"));
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_cuts_and_pads() {
        let mut out = Vec::new();
        Exactly::new(&b"abcdef"[..], 3)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
        out.clear();
        Exactly::new(&b"ab"[..], 5).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0\0");
    }
}
