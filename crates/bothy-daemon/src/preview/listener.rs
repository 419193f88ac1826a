//! The daemon's TCP listener, split between preview traffic and the API.
//!
//! Every accepted connection is classified by a task of its own (a slow client cannot hold up
//! the others): the head of its first request is *peeked* (not read), and if its `Host` is a
//! preview host the connection goes to [`super::proxy`]; otherwise it is handed, untouched, to
//! the API server through [`SplitListener`], which `axum::serve` accepts from.

use std::net::SocketAddr;
use std::time::Duration;

use bothy_api::preview::PreviewHost;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Previews;

/// Longest request head looked at; a longer one is not a preview request.
const MAX_HEAD: usize = 16 * 1024;
/// How long a new connection may take to send its first request head before it is handed to
/// the API server as it is (which applies its own timeouts).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The API side of the split: what `axum::serve` accepts from.
pub struct SplitListener {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for SplitListener {
    type Io = TcpStream;
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

/// Starts accepting on `tcp`; returns the listener of the API side.
pub fn split(tcp: TcpListener, previews: Previews) -> std::io::Result<SplitListener> {
    let local = tcp.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
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
            let (tx, previews) = (tx.clone(), previews.clone());
            tokio::spawn(async move {
                match classify(&stream, previews.domain()).await {
                    Some((target, head_len)) => {
                        super::proxy::serve(previews, stream, target, head_len).await
                    }
                    None => {
                        let _ = tx.send((stream, addr)).await;
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
