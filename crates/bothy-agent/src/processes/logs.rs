//! A process's output on disk: stdout and stderr interleaved as produced, byte-exact, capped.
//!
//! The log is a sequence of frames `[stream: u8][len: u32 LE][bytes]` in at most two segment
//! files `log-<start>.bin`, where `<start>` is the *cursor* (count of output bytes, both
//! streams together) of the segment's first byte. When the current segment reaches half the
//! cap, a new one is started and the older one deleted, so between half the cap and the whole
//! cap of the most recent output is kept. A reader asking for dropped output is told how many
//! bytes it missed. A sparse in-memory index (one entry per 64 KiB) makes a read from any
//! cursor cost at most 64 KiB of scanning.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

const HEADER: u64 = 5;
const INDEX_EVERY: u64 = 64 * 1024;

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> u8 {
        match self {
            Self::Stdout => 1,
            Self::Stderr => 2,
        }
    }

    fn from_tag(t: u8) -> Option<Self> {
        match t {
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A chunk read back, with the cursor just after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Vec<u8>,
    pub cursor: u64,
}

/// The result of a read from a cursor.
#[derive(Debug, Default)]
pub struct LogRead {
    /// Bytes between the requested cursor and the oldest one kept (dropped by the cap).
    pub dropped: u64,
    pub chunks: Vec<Chunk>,
    /// Where the next read continues.
    pub next: u64,
}

struct Segment {
    start: u64,
    /// Output bytes in the segment.
    len: u64,
    path: PathBuf,
    /// (cursor, file offset) of frame starts, sparse.
    index: Vec<(u64, u64)>,
    file_len: u64,
}

struct Inner {
    segments: Vec<Segment>,
    current: Option<File>,
    end: u64,
}

/// The on-disk log of one process.
pub struct LogStore {
    dir: PathBuf,
    limit: u64,
    inner: Mutex<Inner>,
    end_tx: watch::Sender<u64>,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("log-{start:020}.bin"))
}

/// Scans a segment file, building its index; cuts off a torn last frame (an agent killed
/// mid-write).
fn scan(path: &Path, start: u64) -> std::io::Result<Segment> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut r = BufReader::new(f);
    let (mut off, mut len) = (0u64, 0u64);
    let mut index = Vec::new();
    let mut last_indexed: Option<u64> = None;
    loop {
        let mut h = [0u8; HEADER as usize];
        if off + HEADER > size || r.read_exact(&mut h).is_err() {
            break;
        }
        let n = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as u64;
        if Stream::from_tag(h[0]).is_none() || off + HEADER + n > size {
            break;
        }
        if last_indexed.is_none_or(|l| start + len - l >= INDEX_EVERY) {
            index.push((start + len, off));
            last_indexed = Some(start + len);
        }
        r.seek_relative(n as i64)?;
        off += HEADER + n;
        len += n;
    }
    if off < size {
        OpenOptions::new().write(true).open(path)?.set_len(off)?;
    }
    Ok(Segment {
        start,
        len,
        path: path.to_path_buf(),
        index,
        file_len: off,
    })
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering what an earlier agent wrote.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut starts: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("log-")?
                    .strip_suffix(".bin")?
                    .parse()
                    .ok()
            })
            .collect();
        starts.sort_unstable();
        let mut segments = Vec::new();
        for s in starts {
            segments.push(scan(&segment_path(dir, s), s)?);
        }
        let end = segments.last().map_or(0, |s| s.start + s.len);
        let current = match segments.last() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        let (end_tx, _) = watch::channel(end);
        Ok(Self {
            dir: dir.to_path_buf(),
            limit,
            inner: Mutex::new(Inner {
                segments,
                current,
                end,
            }),
            end_tx,
        })
    }

    /// The cursor at the end of the output so far.
    pub fn end(&self) -> u64 {
        *self.end_tx.borrow()
    }

    /// The oldest cursor still kept.
    pub fn oldest(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.segments.first().map_or(inner.end, |s| s.start)
    }

    /// Notified with the new end cursor after every append.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    /// Appends output. Never fails the process: an I/O error (disk full) is logged and the
    /// output dropped.
    pub fn append(&self, stream: Stream, data: &[u8]) {
        let half = (self.limit / 2).max(1);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for piece in data.chunks(half as usize) {
            if let Err(e) = self.append_piece(&mut inner, stream, piece, half) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "dropping process output");
                return;
            }
        }
        let end = inner.end;
        drop(inner);
        self.end_tx.send_replace(end);
    }

    fn append_piece(
        &self,
        inner: &mut Inner,
        stream: Stream,
        piece: &[u8],
        half: u64,
    ) -> std::io::Result<()> {
        let n = piece.len() as u64;
        let rotate = match inner.segments.last() {
            None => true,
            Some(s) => s.len > 0 && s.len + n > half,
        };
        if rotate {
            let start = inner.end;
            let path = segment_path(&self.dir, start);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.set_len(0)?;
            inner.current = Some(file);
            inner.segments.push(Segment {
                start,
                len: 0,
                path,
                index: Vec::new(),
                file_len: 0,
            });
            while inner.segments.len() > 2 {
                let old = inner.segments.remove(0);
                let _ = std::fs::remove_file(&old.path);
            }
        }
        let end = inner.end;
        let seg = inner
            .segments
            .last_mut()
            .expect("a segment was just ensured");
        let mut frame = Vec::with_capacity(piece.len() + HEADER as usize);
        frame.push(stream.tag());
        frame.extend_from_slice(&(piece.len() as u32).to_le_bytes());
        frame.extend_from_slice(piece);
        inner
            .current
            .as_mut()
            .expect("the current segment is open")
            .write_all(&frame)?;
        if seg.index.last().is_none_or(|(c, _)| end - c >= INDEX_EVERY) {
            seg.index.push((end, seg.file_len));
        }
        seg.file_len += frame.len() as u64;
        seg.len += n;
        inner.end += n;
        Ok(())
    }

    /// Reads up to about `max` bytes of output from `since` on.
    pub fn read(&self, since: u64, max: u64) -> std::io::Result<LogRead> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = inner.segments.first().map_or(inner.end, |s| s.start);
        let mut out = LogRead {
            dropped: oldest.saturating_sub(since),
            ..Default::default()
        };
        let mut pos = since.max(oldest).min(inner.end);
        let mut budget = max;
        for seg in &inner.segments {
            if seg.start + seg.len <= pos || budget == 0 {
                continue;
            }
            let i = seg.index.partition_point(|(c, _)| *c <= pos);
            let (mut at, off) = if i == 0 {
                (seg.start, 0)
            } else {
                seg.index[i - 1]
            };
            let mut f = File::open(&seg.path)?;
            f.seek(SeekFrom::Start(off))?;
            let mut r = BufReader::with_capacity(64 * 1024, f);
            let mut consumed = off;
            while consumed < seg.file_len && budget > 0 {
                let mut h = [0u8; HEADER as usize];
                r.read_exact(&mut h)?;
                let n = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as u64;
                let stream = Stream::from_tag(h[0]).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad log frame")
                })?;
                consumed += HEADER + n;
                if at + n <= pos {
                    r.seek_relative(n as i64)?;
                    at += n;
                    continue;
                }
                let skip = pos - at;
                r.seek_relative(skip as i64)?;
                let take = (n - skip).min(budget);
                let mut data = vec![0u8; take as usize];
                r.read_exact(&mut data)?;
                pos += take;
                budget -= take;
                out.chunks.push(Chunk {
                    stream,
                    data,
                    cursor: pos,
                });
                if take < n - skip {
                    break;
                }
                at += n;
            }
        }
        out.next = pos;
        Ok(out)
    }

    /// Deletes the log files (for a record being replaced or removed).
    pub fn remove(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.current = None;
        for s in inner.segments.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("bothy-logs-{}", crate::persist::random_id(10)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn all(store: &LogStore, since: u64) -> (u64, Vec<u8>, Vec<u8>, u64) {
        let r = store.read(since, u64::MAX).unwrap();
        let (mut o, mut e) = (Vec::new(), Vec::new());
        for c in &r.chunks {
            match c.stream {
                Stream::Stdout => o.extend_from_slice(&c.data),
                Stream::Stderr => e.extend_from_slice(&c.data),
            }
        }
        (r.dropped, o, e, r.next)
    }

    #[test]
    fn reads_from_any_cursor_byte_exact() {
        let dir = tempdir();
        let s = LogStore::open(&dir, 1 << 20).unwrap();
        s.append(Stream::Stdout, b"hello ");
        s.append(Stream::Stderr, &[0xff, 0x00]);
        s.append(Stream::Stdout, b"world\n");
        assert_eq!(s.end(), 14);
        assert_eq!(
            all(&s, 0),
            (0, b"hello world\n".to_vec(), vec![0xff, 0], 14)
        );
        // From the middle of a frame.
        let (_, o, e, next) = all(&s, 3);
        assert_eq!(
            (o.as_slice(), e.as_slice(), next),
            (&b"lo world\n"[..], &[0xff, 0][..], 14)
        );
        let r = s.read(7, u64::MAX).unwrap();
        assert_eq!(r.chunks[0].data, vec![0]);
        assert_eq!(r.chunks[0].cursor, 8);
        assert_eq!(all(&s, 14).3, 14);
        // Bounded reads continue where they stopped.
        let r = s.read(0, 4).unwrap();
        assert_eq!((r.chunks[0].data.as_slice(), r.next), (&b"hell"[..], 4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cap_drops_oldest_and_says_so() {
        let dir = tempdir();
        let s = LogStore::open(&dir, 8192).unwrap();
        let mut expect = Vec::new();
        for i in 0..1000u32 {
            let line = format!("line {i:05}\n");
            expect.extend_from_slice(line.as_bytes());
            s.append(Stream::Stdout, line.as_bytes());
        }
        let end = s.end();
        assert_eq!(end, expect.len() as u64);
        let (dropped, o, _, next) = all(&s, 0);
        assert!(dropped > 0 && dropped < end - 4096, "dropped {dropped}");
        assert!(
            o.len() as u64 <= 8192 && o.len() >= 4096,
            "kept {}",
            o.len()
        );
        assert_eq!(o, expect[dropped as usize..]);
        assert_eq!(next, end);
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files <= 2, "{files} segment files");
        // Reopening (an agent restart) recovers the same view.
        drop(s);
        let s = LogStore::open(&dir, 8192).unwrap();
        assert_eq!(s.end(), end);
        assert_eq!(all(&s, 0).1, o);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_frame_is_cut_on_reopen() {
        let dir = tempdir();
        let s = LogStore::open(&dir, 1 << 20).unwrap();
        s.append(Stream::Stdout, b"whole");
        drop(s);
        let seg = segment_path(&dir, 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[1, 100, 0, 0, 0, b'x']).unwrap();
        let s = LogStore::open(&dir, 1 << 20).unwrap();
        assert_eq!(s.end(), 5);
        s.append(Stream::Stdout, b"!");
        assert_eq!(all(&s, 0).1, b"whole!".to_vec());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn large_logs_read_from_late_cursors() {
        let dir = tempdir();
        let s = LogStore::open(&dir, 64 << 20).unwrap();
        let chunk = vec![b'a'; 1000];
        for _ in 0..5000 {
            s.append(Stream::Stdout, &chunk);
        }
        s.append(Stream::Stderr, b"tail");
        let r = s.read(5_000_000, u64::MAX).unwrap();
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.chunks[0].data, b"tail");
        assert_eq!(r.next, 5_000_004);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
