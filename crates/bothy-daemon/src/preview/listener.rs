//! The daemon's TCP listener, split between preview traffic and the API.
//!
//! Every accepted connection is classified by a task of its own (a slow client cannot hold up
//! the others): the head of its first request is *peeked* (not read), and if its `Host` is a
//! preview host the connection goes to [`super::proxy`]; otherwise it is handed, untouched, to
//! the API server through [`SplitListener`], which `axum::serve` accepts from.
//!
//! The port is public (preview URLs are shared), so open connections are counted: past what the
//! daemon's file descriptors allow (see [`crate::fds::tcp_listener_connections`]) a new one is
//! closed at once, and a flood of idle connections cannot starve the rest of the daemon.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bothy_api::preview::PreviewHost;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Previews;

/// Longest request head looked at; a longer one is not a preview request.
const MAX_HEAD: usize = 16 * 1024;
/// How long a new connection may take to send its first request head before it is handed to
/// the API server as it is (which applies its own timeouts).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections of the listener, and the most it keeps.
struct Open {
    now: AtomicUsize,
    max: usize,
}

/// One open connection, counted until dropped.
struct OpenGuard(Arc<Open>);

impl Open {
    fn enter(self: &Arc<Self>) -> Option<OpenGuard> {
        let admitted = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| OpenGuard(self.clone()))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection handed to the API server; counted while it is open.
pub struct Counted {
    io: TcpStream,
    _open: OpenGuard,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The API side of the split: what `axum::serve` accepts from.
pub struct SplitListener {
    rx: mpsc::Receiver<(Counted, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for SplitListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Starts accepting on `tcp`, keeping at most `max_open` connections open at once; returns the
/// listener of the API side.
pub fn split(
    tcp: TcpListener,
    previews: Previews,
    max_open: usize,
) -> std::io::Result<SplitListener> {
    let local = tcp.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
    let open = Arc::new(Open {
        now: AtomicUsize::new(0),
        max: max_open.max(1),
    });
    let mut refused_logged = false;
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let Some(counted) = open.enter() else {
                // Closed unanswered: reading a request to answer it would cost what is short.
                if !refused_logged {
                    tracing::warn!(
                        max = open.max,
                        "too many open TCP connections: new ones are closed until some end"
                    );
                    refused_logged = true;
                }
                continue;
            };
            refused_logged = false;
            let (tx, previews) = (tx.clone(), previews.clone());
            tokio::spawn(async move {
                match classify(&stream, previews.domain()).await {
                    Some((target, head_len)) => {
                        super::proxy::serve(previews, stream, target, head_len).await;
                        drop(counted);
                    }
                    None => {
                        let io = Counted {
                            io: stream,
                            _open: counted,
                        };
                        let _ = tx.send((io, addr)).await;
                    }
                }
            });
        }
    });
    Ok(SplitListener { rx, local })
}

/// Peeks at the first request head; `Some((target, head length))` for a preview request.
async fn classify(stream: &TcpStream, domain: Option<&str>) -> Option<(PreviewHost, usize)> {
    let domain = domain?;
    let mut buf = vec![0u8; MAX_HEAD];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let mut seen = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(len)) => {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))?;
                let host = std::str::from_utf8(host.value).ok()?;
                return bothy_api::preview::parse_host(host, domain).map(|t| (t, len));
            }
            Ok(httparse::Status::Partial) if n < MAX_HEAD => {
                // The head came in pieces: wait for more before peeking again.
                if n == seen {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen = n;
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
            }
            _ => return None,
        }
    }
}
