//! Forwarding data-plane requests to a sandbox's agent.
//!
//! The request is passed on as is (method, path and query, body streamed), minus hop-by-hop
//! headers and the client's credentials; the response streams back. WebSocket (and any HTTP/1.1
//! upgrade) is bridged byte for byte once both sides have switched protocols. An
//! [`ActivityGuard`] rides along until the response body or the upgraded connection ends, which
//! keeps the sandbox awake while a stream is open.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bothy_api::ErrorCode;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::agent_conn::AgentConn;
use crate::error::DaemonError;
use crate::manager::ActivityGuard;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Forwards `req` to the agent at `agent_path` (path and query on the agent).
pub async fn forward(
    agent: &AgentConn,
    mut req: http::Request<Body>,
    agent_path: String,
    guard: ActivityGuard,
) -> Response {
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = if is_upgrade {
        req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip(&mut headers, is_upgrade);
    headers.remove(header::AUTHORIZATION);
    // A browser's token subprotocol too, whichever listener it came through.
    crate::auth::take_subprotocol_token(&mut headers);
    headers.remove(header::COOKIE);
    headers.remove(header::HOST);
    if is_upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
    let mut out = http::Request::builder()
        .method(parts.method)
        .uri(agent_path)
        .body(body)
        .expect("method and path come from a valid request");
    *out.headers_mut() = headers;

    let mut resp = match agent.send(out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = ?e, "agent request failed");
            return DaemonError::new(
                ErrorCode::SandboxUnavailable,
                "the sandbox's agent did not answer (the sandbox may have just gone to sleep or restarted); retry",
            )
            .into_response();
        }
    };

    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return DaemonError::new(ErrorCode::BadGateway, "unexpected protocol switch")
                .into_response();
        };
        let agent_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _guard = guard;
            let (Ok(c), Ok(a)) = (client_upgrade.await, agent_upgrade.await) else {
                return;
            };
            let mut c = TokioIo::new(c);
            let mut a = TokioIo::new(a);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
        });
        let (mut parts, _) = resp.into_parts();
        parts.headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return Response::from_parts(parts, Body::empty());
    }

    let (mut parts, body) = resp.into_parts();
    strip(&mut parts.headers, false);
    Response::from_parts(
        parts,
        Body::new(Guarded {
            body,
            _guard: guard,
        }),
    )
}

/// A response body that holds an activity guard until it ends or is dropped.
struct Guarded {
    body: Incoming,
    _guard: ActivityGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
