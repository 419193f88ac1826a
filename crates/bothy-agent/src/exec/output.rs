//! The two shapes of an exec reply: one JSON document at the end, or a stream of SSE events.

use bothy_api::data::split_incomplete_utf8;
use bothy_api::exec::{ExecResult, StartEvent};
use bothy_api::Data;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::run::{Event, Running};
use crate::sse;

/// Most bytes of each stream (stdout, stderr) a JSON reply carries. Output past it is read and
/// dropped (so the command is never blocked on a full pipe) and the reply says
/// `stdout_truncated` / `stderr_truncated`. A streamed (SSE) exec has no cap.
pub const JSON_CAPTURE_LIMIT: usize = 64 * 1024 * 1024;

/// One captured stream, capped at a limit.
#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, chunk: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// Runs the command to its end and collects everything into an [`ExecResult`].
pub async fn collect(mut running: Running, limit: usize) -> ExecResult {
    let (mut out, mut err) = (Capture::default(), Capture::default());
    let mut exit = None;
    while let Some(ev) = running.next().await {
        match ev {
            Event::Stdout(b) => out.push(&b, limit),
            Event::Stderr(b) => err.push(&b, limit),
            Event::Error(e) => tracing::warn!(pid = running.pid(), "exec: {}", e.message),
            Event::Exit(e) => exit = Some(e),
        }
    }
    // `next` always ends with an exit event; the fallback only keeps this total.
    let exit = exit.unwrap_or(bothy_api::exec::ExitEvent {
        exit_code: None,
        signal: None,
        duration_ms: 0,
        timed_out: false,
    });
    let (stdout, stderr) = (Data::encode(&out.bytes), Data::encode(&err.bytes));
    ExecResult {
        exit_code: exit.exit_code,
        signal: exit.signal,
        stdout: stdout.data,
        stdout_encoding: stdout.encoding,
        stdout_truncated: out.truncated,
        stderr: stderr.data,
        stderr_encoding: stderr.encoding,
        stderr_truncated: err.truncated,
        duration_ms: exit.duration_ms,
        timed_out: exit.timed_out,
    }
}

/// Holds back an incomplete UTF-8 sequence at the end of a chunk until the next chunk, so that
/// text split across reads stays text (and is not sent as base64).
#[derive(Debug, Default)]
pub struct Utf8Carry {
    held: BytesMut,
}

impl Utf8Carry {
    /// The part of `held + chunk` that can be sent now (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        let cut = split_incomplete_utf8(&self.held);
        self.held.split_to(cut).freeze()
    }

    /// Whatever is still held, at the end of the stream.
    pub fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

struct SseState {
    running: Running,
    started: bool,
    out: Utf8Carry,
    err: Utf8Carry,
    /// Events ready to go out before the next one is awaited.
    queue: std::collections::VecDeque<Bytes>,
}

/// The command's events as SSE: `start {pid}`, then `stdout`/`stderr` with [`Data`] as the
/// command produces them, then `exit {exit_code, signal, duration_ms, timed_out}`; `error
/// {code, message}` if something fails on the way. Dropping the stream kills the command's
/// process tree if it is still running.
pub fn events(running: Running) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = SseState {
        running,
        started: false,
        out: Utf8Carry::default(),
        err: Utf8Carry::default(),
        queue: Default::default(),
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if !s.started {
            s.started = true;
            let ev = sse::event(
                "start",
                &StartEvent {
                    pid: s.running.pid(),
                },
            );
            return Some((Ok(ev), s));
        }
        loop {
            if let Some(b) = s.queue.pop_front() {
                return Some((Ok(b), s));
            }
            match s.running.next().await? {
                Event::Stdout(b) => push_data(&mut s.queue, "stdout", s.out.push(&b)),
                Event::Stderr(b) => push_data(&mut s.queue, "stderr", s.err.push(&b)),
                Event::Error(e) => s.queue.push_back(sse::event("error", &e)),
                Event::Exit(e) => {
                    push_data(&mut s.queue, "stdout", s.out.finish());
                    push_data(&mut s.queue, "stderr", s.err.finish());
                    s.queue.push_back(sse::event("exit", &e));
                }
            }
        }
    })
}

fn push_data(queue: &mut std::collections::VecDeque<Bytes>, name: &str, bytes: Bytes) {
    if !bytes.is_empty() {
        queue.push_back(sse::event(name, &Data::encode(&bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps_and_flags() {
        let mut c = Capture::default();
        c.push(b"abc", 5);
        assert!(!c.truncated);
        c.push(b"defg", 5);
        assert_eq!(c.bytes, b"abcde");
        assert!(c.truncated);
        c.push(b"h", 5);
        assert_eq!(c.bytes, b"abcde");
    }

    #[test]
    fn carry_keeps_split_characters_together() {
        let euro = "a€b".as_bytes(); // 'a', 3 bytes, 'b'
        let mut c = Utf8Carry::default();
        assert_eq!(&c.push(&euro[..2])[..], b"a");
        assert_eq!(&c.push(&euro[2..3])[..], b"");
        assert_eq!(&c.push(&euro[3..])[..], "€b".as_bytes());
        assert!(c.finish().is_empty());
        // Garbage that never completes comes out at the end, byte-exact.
        assert_eq!(&c.push(&[b'x', 0xe2])[..], b"x");
        assert_eq!(&c.finish()[..], &[0xe2]);
    }
}
