//! Serving the API's router on a listener: what `axum::serve` does (HTTP/1.1 with upgrades,
//! graceful shutdown), plus hyper's header read timeout, which needs a timer that
//! `axum::serve` does not set. Without it, a connection that never completes a request head
//! (slowloris), or a kept-alive one that never sends another, stays open forever and holds one
//! of the listener's counted connections.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a connection may take to send a whole request head, counted from when the server
/// starts waiting for one (so it also bounds how long a kept-alive connection may sit idle).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop`; then asks every connection to finish its request in
/// flight and close, and returns when all have.
pub async fn serve<L>(mut listener: L, app: Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
{
    serve_with(&mut listener, app, stop, HEADER_READ_TIMEOUT).await
}

async fn serve_with<L>(
    listener: &mut L,
    app: Router,
    stop: CancellationToken,
    header_timeout: Duration,
) where
    L: axum::serve::Listener,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = TaskTracker::new();
    loop {
        let io = tokio::select! {
            (io, _addr) = listener.accept() => io,
            () = stop.cancelled() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let resp: Result<_, Infallible> = app.oneshot(req.map(axum::body::Body::new)).await;
                resp
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(header_timeout: Duration) -> (std::net::SocketAddr, CancellationToken) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut l = l;
            serve_with(&mut l, app, s, header_timeout).await
        });
        (addr, stop)
    }

    #[tokio::test]
    async fn serves_and_closes_connections_that_send_no_head_in_time() {
        let (addr, _stop) = server(Duration::from_millis(300)).await;
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        ok.read_to_string(&mut resp).await.unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with("hi"),
            "{resp}"
        );

        // Half a head, then nothing: closed after the timeout (with a 408, or just closed).
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "a slow head was not cut off");

        // A kept-alive connection that goes quiet is closed too.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "an idle kept-alive connection was not closed");
        assert!(String::from_utf8_lossy(&buf).contains("hi"));
    }

    #[tokio::test]
    async fn stopping_lets_the_request_in_flight_finish() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(l, app, stop.clone()));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).await.unwrap();
        assert!(String::from_utf8_lossy(&resp).ends_with("done"));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server returns once its connections are done")
            .unwrap();
    }
}
