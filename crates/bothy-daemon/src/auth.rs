//! Bearer-token auth for TCP clients. The unix socket is protected by file permissions
//! (root only) instead.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bothy_api::ErrorCode;

use crate::error::DaemonError;

#[derive(Clone)]
pub struct Token(pub Arc<String>);

/// Rejects requests without the token: `Authorization: Bearer <token>`, or, on a WebSocket
/// upgrade (browsers cannot set headers there), the subprotocol `bothy.token.<token>`, which is
/// removed before the request goes on (it never reaches a sandbox). The web console's static
/// files (`/ui/`) need no token; they carry no data.
pub async fn require_token(State(token): State<Token>, mut req: Request, next: Next) -> Response {
    if crate::ui::is_asset_request(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let from_protocol = take_subprotocol_token(req.headers_mut());
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or(from_protocol);
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), token.0.as_bytes()) => next.run(req).await,
        _ => DaemonError::new(
            ErrorCode::Unauthorized,
            "missing or wrong bearer token: send `Authorization: Bearer $BOTHY_TOKEN`",
        )
        .into_response(),
    }
}

/// Subprotocol prefix that carries the token on a WebSocket upgrade.
pub const WS_TOKEN_PREFIX: &str = "bothy.token.";

/// Removes every `bothy.token.*` entry from `Sec-WebSocket-Protocol` and returns the first
/// token; the other subprotocols stay (the header goes if none is left).
pub fn take_subprotocol_token(headers: &mut http::HeaderMap) -> Option<String> {
    let name = http::header::SEC_WEBSOCKET_PROTOCOL;
    if !headers.contains_key(&name) {
        return None;
    }
    let mut token = None;
    let mut keep = Vec::new();
    for v in headers.get_all(&name) {
        for p in v.to_str().unwrap_or("").split(',').map(str::trim) {
            match p.strip_prefix(WS_TOKEN_PREFIX) {
                Some(t) => {
                    token.get_or_insert_with(|| t.to_string());
                }
                None if !p.is_empty() => keep.push(p.to_string()),
                None => {}
            }
        }
    }
    headers.remove(&name);
    if !keep.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(&keep.join(", ")) {
            headers.insert(name, v);
        }
    }
    token
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (32 lowercase hex characters... 128 bits).
pub fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(generate_token().len(), 32);
    }

    #[test]
    fn the_subprotocol_token_is_taken_out() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "bothy, bothy.token.s3cret".parse().unwrap(),
        );
        assert_eq!(take_subprotocol_token(&mut h).as_deref(), Some("s3cret"));
        assert_eq!(h[http::header::SEC_WEBSOCKET_PROTOCOL], "bothy");

        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "bothy.token.x".parse().unwrap(),
        );
        h.append(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "bothy.token.y".parse().unwrap(),
        );
        assert_eq!(take_subprotocol_token(&mut h).as_deref(), Some("x"));
        assert!(h.get(http::header::SEC_WEBSOCKET_PROTOCOL).is_none());

        let mut h = http::HeaderMap::new();
        assert_eq!(take_subprotocol_token(&mut h), None);
    }
}
