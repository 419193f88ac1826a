//! Export, import and evict routes. Each runs as its own task (a client that goes away does not
//! cut a transfer short); the reply is JSON, or with `Accept: text/event-stream` an SSE stream
//! of `progress` events closed by one `result` or `error` event.

use std::convert::Infallible;
use std::future::Future;

use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::blob::{EvictRequest, ExportRequest, ImportRequest};
use http::HeaderMap;
use serde::Serialize;

use super::AppState;
use crate::blobs::Sink;
use crate::error::{self, parse_name, DaemonError, JsonOrDefault};

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

async fn transfer<T, F, Fut>(headers: &HeaderMap, status: http::StatusCode, op: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(Sink) -> Fut,
    Fut: Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    if !wants_sse(headers) {
        return match tokio::spawn(op(None)).await {
            Ok(Ok(v)) => (status, Json(v)).into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(e) => DaemonError::internal("transfer task", &e).into_response(),
        };
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(op(Some(tx)));
    let stream = futures_util::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
        let task = task?;
        if let Some(p) = rx.recv().await {
            let ev = Event::default()
                .event("progress")
                .data(serde_json::to_string(&p).unwrap_or_default());
            return Some((Ok::<_, Infallible>(ev), (rx, Some(task))));
        }
        let ev = match task.await {
            Ok(Ok(v)) => Event::default()
                .event("result")
                .data(serde_json::to_string(&v).unwrap_or_default()),
            Ok(Err(e)) => Event::default().event("error").data(e.0.to_json()),
            Err(e) => Event::default()
                .event("error")
                .data(DaemonError::internal("transfer task", &e).0.to_json()),
        };
        Some((Ok(ev), (rx, None)))
    });
    Sse::new(stream).into_response()
}

pub async fn export(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonOrDefault(req): JsonOrDefault<ExportRequest>,
) -> Response {
    let m = s.manager.clone();
    transfer(&headers, http::StatusCode::OK, move |sink| async move {
        m.export_snapshot(&id, req, sink).await
    })
    .await
}

pub async fn import(
    State(s): State<AppState>,
    headers: HeaderMap,
    error::Json(req): error::Json<ImportRequest>,
) -> Response {
    let m = s.manager.clone();
    transfer(
        &headers,
        http::StatusCode::CREATED,
        move |sink| async move { m.import_snapshot(req, sink).await },
    )
    .await
}

pub async fn evict(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonOrDefault(req): JsonOrDefault<EvictRequest>,
) -> Response {
    let name = match parse_name(&name) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let m = s.manager.clone();
    transfer(&headers, http::StatusCode::OK, move |sink| async move {
        m.evict(&name, req.store.as_deref(), sink).await
    })
    .await
}

/// `GET /v1/snapshots/import`: the static import route shadows a snapshot named `import`.
pub async fn get_named_import(State(s): State<AppState>) -> Result<impl IntoResponse, DaemonError> {
    super::snapshots::get(State(s), Path("import".to_string())).await
}

pub async fn delete_named_import(
    State(s): State<AppState>,
) -> Result<impl IntoResponse, DaemonError> {
    super::snapshots::delete(State(s), Path("import".to_string())).await
}
