//! A byte ring buffer addressed by absolute cursors.
//!
//! Every byte ever written has a cursor: its offset in the whole output since the terminal
//! started. The buffer keeps the most recent `capacity` bytes, so a reader that remembers a
//! cursor can ask for exactly what came after it, or learn that part of it is gone.

use std::collections::VecDeque;

/// What a reader gets for a cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The bytes from the requested cursor, up to `max` of them; `next` is the cursor after.
    Bytes { data: Vec<u8>, next: u64 },
    /// Bytes from the requested cursor fell out of the buffer; the oldest one held is `start`.
    Truncated { start: u64 },
    /// The cursor is beyond the end of the output.
    Ahead { end: u64 },
}

pub struct Ring {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Cursor of the first byte in `buf`.
    start: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(capacity.min(64 * 1024)),
            capacity: capacity.max(1),
            start: 0,
        }
    }

    /// Cursor after the last byte written.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Cursor of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends bytes, dropping the oldest ones beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            // Only the tail can be kept; account for the rest as written-and-dropped.
            let skip = data.len() - self.capacity;
            self.start += (self.buf.len() + skip) as u64;
            self.buf.clear();
            &data[skip..]
        } else {
            data
        };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.buf.drain(..overflow);
            self.start += overflow as u64;
        }
        self.buf.extend(data);
    }

    /// Up to `max` bytes from `cursor`.
    pub fn read_from(&self, cursor: u64, max: usize) -> Read {
        if cursor < self.start {
            return Read::Truncated { start: self.start };
        }
        if cursor > self.end() {
            return Read::Ahead { end: self.end() };
        }
        let from = (cursor - self.start) as usize;
        let to = (from + max).min(self.buf.len());
        let (a, b) = self.buf.as_slices();
        let mut data = Vec::with_capacity(to - from);
        if from < a.len() {
            data.extend_from_slice(&a[from..to.min(a.len())]);
        }
        if to > a.len() {
            data.extend_from_slice(&b[from.saturating_sub(a.len())..to - a.len()]);
        }
        Read::Bytes {
            next: cursor + data.len() as u64,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: Read) -> (Vec<u8>, u64) {
        match r {
            Read::Bytes { data, next } => (data, next),
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    #[test]
    fn reads_from_any_cursor() {
        let mut r = Ring::new(8);
        r.push(b"hello");
        assert_eq!(bytes(r.read_from(0, 100)), (b"hello".to_vec(), 5));
        assert_eq!(bytes(r.read_from(3, 100)), (b"lo".to_vec(), 5));
        assert_eq!(bytes(r.read_from(5, 100)), (vec![], 5));
        assert_eq!(bytes(r.read_from(1, 2)), (b"el".to_vec(), 3));
        assert_eq!(r.read_from(6, 1), Read::Ahead { end: 5 });
    }

    #[test]
    fn wraps_and_reports_truncation() {
        let mut r = Ring::new(8);
        r.push(b"hello");
        r.push(b" world");
        assert_eq!((r.start(), r.end()), (3, 11));
        assert_eq!(r.read_from(2, 100), Read::Truncated { start: 3 });
        assert_eq!(bytes(r.read_from(3, 100)), (b"lo world".to_vec(), 11));
        assert_eq!(bytes(r.read_from(6, 100)), (b"world".to_vec(), 11));
    }

    #[test]
    fn a_push_larger_than_capacity_keeps_the_tail() {
        let mut r = Ring::new(4);
        r.push(b"ab");
        r.push(b"0123456789");
        assert_eq!((r.start(), r.end()), (8, 12));
        assert_eq!(bytes(r.read_from(8, 100)), (b"6789".to_vec(), 12));
    }

    #[test]
    fn many_small_pushes_keep_exact_cursors() {
        let mut r = Ring::new(1000);
        let mut all = Vec::new();
        for i in 0..5000u32 {
            let s = format!("{i},");
            r.push(s.as_bytes());
            all.extend_from_slice(s.as_bytes());
        }
        assert_eq!(r.end(), all.len() as u64);
        let (data, next) = bytes(r.read_from(r.start(), usize::MAX));
        assert_eq!(next, all.len() as u64);
        assert_eq!(data, all[all.len() - 1000..]);
    }
}
