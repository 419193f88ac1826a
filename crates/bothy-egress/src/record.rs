//! Building an egress log entry while a request is under way, and recording it exactly once,
//! when the last body (request or response) that carries it is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bothy_api::egress::{EgressDecision, EgressLogEntry};
use bothy_api::SandboxName;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::directory::Directory;

/// An entry in the making; recorded on drop.
pub struct Recorder {
    dir: Arc<dyn Directory>,
    sandbox: SandboxName,
    started: Instant,
    pub up: AtomicU64,
    pub down: AtomicU64,
    entry: Mutex<EgressLogEntry>,
}

impl Recorder {
    pub fn new(dir: Arc<dyn Directory>, sandbox: SandboxName, entry: EgressLogEntry) -> Arc<Self> {
        Arc::new(Self {
            dir,
            sandbox,
            started: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            entry: Mutex::new(entry),
        })
    }

    pub fn set_status(&self, status: u16) {
        self.entry.lock().unwrap_or_else(|e| e.into_inner()).status = Some(status);
    }

    pub fn fail(&self, decision: EgressDecision, error: String) {
        let mut e = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        e.decision = decision;
        e.error = Some(error);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut e = std::mem::replace(
            self.entry.get_mut().unwrap_or_else(|e| e.into_inner()),
            blank(),
        );
        e.bytes_up = *self.up.get_mut();
        e.bytes_down = *self.down.get_mut();
        e.duration_ms = self.started.elapsed().as_millis() as u64;
        self.dir.record(&self.sandbox, e);
        // The end of a long download is activity too, not only its start.
        self.dir.touch(&self.sandbox);
    }
}

/// A log entry with the time set to now and everything else empty.
pub fn blank() -> EgressLogEntry {
    EgressLogEntry {
        time: bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()),
        host: String::new(),
        port: 0,
        scheme: String::new(),
        method: String::new(),
        path: String::new(),
        status: None,
        bytes_up: 0,
        bytes_down: 0,
        rule: String::new(),
        decision: EgressDecision::Allowed,
        error: None,
        duration_ms: 0,
    }
}

#[derive(Clone, Copy)]
pub enum Direction {
    Up,
    Down,
}

/// A body that counts its data bytes into a [`Recorder`] and keeps it alive until it is done.
pub struct Counted<B> {
    inner: B,
    rec: Option<Arc<Recorder>>,
    dir: Direction,
}

impl<B> Counted<B> {
    pub fn new(inner: B, rec: Arc<Recorder>, dir: Direction) -> Self {
        Self {
            inner,
            rec: Some(rec),
            dir,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.inner).poll_frame(cx);
        match &out {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(rec)) = (f.data_ref(), &this.rec) {
                    let n = d.len() as u64;
                    match this.dir {
                        Direction::Up => rec.up.fetch_add(n, Ordering::Relaxed),
                        Direction::Down => rec.down.fetch_add(n, Ordering::Relaxed),
                    };
                }
            }
            Poll::Ready(None) => this.rec = None,
            Poll::Ready(Some(Err(_))) => {
                if let Some(rec) = this.rec.take() {
                    rec.fail(EgressDecision::Error, "body interrupted".into());
                }
            }
            Poll::Pending => {}
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
