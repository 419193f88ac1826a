//! SHA-256 digests: the names of chunks, layer archives and manifests.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{BlobError, Result};

/// A SHA-256 digest. Written `sha256:<64 hex>` on the wire; the bare hex names objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Accepts `sha256:<hex>` or bare hex (64 lowercase or uppercase hex digits).
    pub fn parse(s: &str) -> Result<Self> {
        let h = s.strip_prefix("sha256:").unwrap_or(s);
        let mut out = [0u8; 32];
        if h.len() != 64 || hex::decode_to_slice(h, &mut out).is_err() {
            return Err(BlobError::Invalid(format!("invalid sha256 digest {s:?}")));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::default(),
            count: 0,
        }
    }

    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// One fixed-size piece of an archive, stored at `chunks/<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub digest: Digest,
    pub size: u64,
}

/// A writer that hashes the whole stream and each `chunk_size` piece of it.
pub struct ChunkingWriter<W> {
    inner: W,
    chunk_size: u64,
    whole: Hasher,
    chunk: Hasher,
    in_chunk: u64,
    total: u64,
    chunks: Vec<ChunkRef>,
}

impl<W: Write> ChunkingWriter<W> {
    pub fn new(inner: W, chunk_size: u64) -> Self {
        assert!(chunk_size > 0);
        Self {
            inner,
            chunk_size,
            whole: Hasher::default(),
            chunk: Hasher::default(),
            in_chunk: 0,
            total: 0,
            chunks: Vec::new(),
        }
    }

    /// Flushes and returns the inner writer, the whole stream's digest and size, and its chunks.
    pub fn finish(mut self) -> io::Result<(W, Digest, u64, Vec<ChunkRef>)> {
        self.inner.flush()?;
        if self.in_chunk > 0 {
            let h = std::mem::take(&mut self.chunk);
            self.chunks.push(ChunkRef {
                digest: h.finish(),
                size: self.in_chunk,
            });
        }
        Ok((self.inner, self.whole.finish(), self.total, self.chunks))
    }
}

impl<W: Write> Write for ChunkingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = (self.chunk_size - self.in_chunk) as usize;
        let n = self.inner.write(&buf[..buf.len().min(room)])?;
        self.whole.update(&buf[..n]);
        self.chunk.update(&buf[..n]);
        self.in_chunk += n as u64;
        self.total += n as u64;
        if self.in_chunk == self.chunk_size {
            let h = std::mem::take(&mut self.chunk);
            self.chunks.push(ChunkRef {
                digest: h.finish(),
                size: self.in_chunk,
            });
            self.in_chunk = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse(&d.hex()).unwrap(), d);
        assert!(Digest::parse("sha256:xyz").is_err());
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
    }

    #[test]
    fn chunking_writer_splits_exactly() {
        let data: Vec<u8> = (0..25u32).map(|i| i as u8).collect();
        let mut w = ChunkingWriter::new(Vec::new(), 10);
        w.write_all(&data).unwrap();
        let (out, whole, size, chunks) = w.finish().unwrap();
        assert_eq!(out, data);
        assert_eq!(size, 25);
        assert_eq!(whole, Digest::of(&data));
        let sizes: Vec<u64> = chunks.iter().map(|c| c.size).collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(chunks[1].digest, Digest::of(&data[10..20]));
        assert_eq!(chunks[2].digest, Digest::of(&data[20..]));
    }
}
