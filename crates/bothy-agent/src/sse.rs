//! Server-sent events.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;

/// Formats one SSE event. `data` must not contain a newline (it is JSON on one line).
pub fn event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// Same, with an `id:` line (a cursor the client can resume from with `Last-Event-ID`).
pub fn event_with_id(name: &str, id: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {id}\nevent: {name}\ndata: {json}\n\n"))
}

/// A streaming `text/event-stream` response.
pub fn response<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .expect("static headers are valid")
}

/// Whether a request asked for an event stream.
pub fn wants_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}
