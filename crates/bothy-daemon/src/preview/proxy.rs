//! Serving one preview connection: token check, wake, connect inside the sandbox, splice.

use std::time::Duration;

use bothy_api::preview::PreviewHost;
use bothy_api::{ApiError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Previews;

/// After a wake, how long the port is waited for (on-wake services are starting).
pub const WAKE_PORT_WAIT: Duration = Duration::from_secs(30);
/// Buffer size, each way, when copying through user space.
const COPY_BUF: usize = 256 * 1024;

/// Whether bytes are moved with `splice(2)` (default) or copied through user space
/// (`BOTHY_PREVIEW_SPLICE=0`, for comparison in the benchmark).
fn use_splice() -> bool {
    static SPLICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPLICE.get_or_init(|| std::env::var("BOTHY_PREVIEW_SPLICE").as_deref() != Ok("0"))
}

/// Delay between connection attempts while waiting.
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// Serves a connection whose first request (of `head_len` bytes of head, not yet read) is for
/// `target`.
pub async fn serve(p: Previews, client: TcpStream, target: PreviewHost, head_len: usize) {
    let _ = client.set_nodelay(true);
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            "no preview at this address: the port is not exposed or the token is wrong",
        )
    };
    let exposed = match p.manager.store.get_port(&target.sandbox, target.port) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "read port");
            return reject(
                client,
                head_len,
                &ApiError::internal("could not read the preview record"),
            )
            .await;
        }
    };
    match exposed {
        Some(r) if super::tokens_match(&r.token, &target.token) => {}
        _ => return reject(client, head_len, &not_found()).await,
    }
    // Held until the connection closes.
    let _counted = match p.limit.acquire(&target.sandbox) {
        Ok(g) => g,
        Err(e) => return reject(client, head_len, &e).await,
    };
    let was_running = p.manager.slot(&target.sandbox).running().is_some();
    let (slot, running) = match p.manager.ensure_running(&target.sandbox).await {
        Ok(x) => x,
        Err(e) if e.0.code == ErrorCode::SandboxNotFound => {
            return reject(client, head_len, &not_found()).await
        }
        Err(e) => return reject(client, head_len, &e.0).await,
    };
    // Held until the connection closes: preview traffic keeps the sandbox awake.
    let _activity = slot.activity();
    let netns = match p.manager.runtime.netns(&running.started) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, sandbox = %target.sandbox.as_str(), "open netns");
            let e = ApiError::new(
                ErrorCode::SandboxUnavailable,
                "the sandbox is not reachable",
            );
            return reject(client, head_len, &e).await;
        }
    };
    let deadline = tokio::time::Instant::now()
        + if was_running {
            Duration::ZERO
        } else {
            WAKE_PORT_WAIT
        };
    let upstream = loop {
        let connected = p
            .sockets
            .connect(&target.sandbox, running.started.pid, &netns, target.port)
            .await;
        match connected {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "preview upstream not ready yet");
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => {
                let msg = if was_running {
                    format!(
                        "nothing is listening on port {} in sandbox {} ({e})",
                        target.port,
                        target.sandbox.as_str()
                    )
                } else {
                    format!(
                        "sandbox {} woke but nothing listened on port {} within {} s ({e})",
                        target.sandbox.as_str(),
                        target.port,
                        WAKE_PORT_WAIT.as_secs()
                    )
                };
                return reject(client, head_len, &ApiError::new(ErrorCode::BadGateway, msg)).await;
            }
        }
    };
    if use_splice() {
        let _ = super::splice::bidirectional(&client, &upstream).await;
    } else {
        let (mut client, mut upstream) = (client, upstream);
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            COPY_BUF,
            COPY_BUF,
        )
        .await;
    }
}

/// Answers the first request with an API error and closes the connection. The request head is
/// read first so the client sees the answer rather than a reset.
async fn reject(mut client: TcpStream, head_len: usize, e: &ApiError) {
    let mut head = vec![0u8; head_len];
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut head)).await;
    let body = e.to_json();
    let status =
        http::StatusCode::from_u16(e.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let resp = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
    // Let the client read the answer before the socket goes (unread body bytes would make the
    // kernel send a reset).
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
