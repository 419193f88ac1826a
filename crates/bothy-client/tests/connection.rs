//! `Client::connection` keeps one connection alive across requests; the other calls open one
//! per request. Checked against a real HTTP server on a unix socket that counts connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bothy_client::http::{Method, Response};
use bothy_client::Client;
use hyper_util::rt::TokioIo;

async fn serve(listener: tokio::net::UnixListener, accepted: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("{{\"path\":\"{}\"}}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::test]
async fn connection_is_reused_and_plain_calls_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(listener, accepted.clone()));
    let client = Client::new(&format!("unix:{}", sock.display()), None).unwrap();

    let mut conn = client.connection().await.unwrap();
    for i in 0..5 {
        let v: serde_json::Value = conn
            .json(Method::GET, &format!("/x/{i}"), None::<&()>)
            .await
            .unwrap();
        assert_eq!(v["path"], format!("/x/{i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    for _ in 0..2 {
        let _: serde_json::Value = client.json(Method::GET, "/y", None::<&()>).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
