//! Directory backups: thin handlers over [`crate::backups::Backups`].
//!
//! Create and restore answer JSON, or with `Accept: text/event-stream` a stream of `progress`
//! events (every 200 ms) ending with the reply (`backup` / `restored`) or an `error` event. In
//! the streamed form the operation runs to its end even if the client goes away.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::backup::{BackupList, CreateBackup, RestoreBackup};
use bytes::Bytes;
use http::HeaderMap;

use super::AppState;
use crate::backups::Progress;
use crate::error::{parse_name, DaemonError, Json as JsonBody};

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

fn event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Runs `op` in its own task and streams its progress, then its result as event `done`.
fn sse<T, F>(progress: Arc<Progress>, done: &'static str, op: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    let mut task = tokio::spawn(op);
    let stream = async_stream(move |tx| async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                res = &mut task => {
                    let last = match res {
                        Ok(Ok(v)) => event(done, &v),
                        Ok(Err(e)) => event("error", &e.0),
                        Err(e) => event("error", &bothy_api::ApiError::internal(format!("backup task failed: {e}"))),
                    };
                    let _ = tx.send(last).await;
                    return;
                }
                _ = tick.tick() => {
                    if tx.send(event("progress", &progress.snapshot())).await.is_err() {
                        return; // the client went away; the task runs on
                    }
                }
            }
        }
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A stream fed by `f` through a small channel.
fn async_stream<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// `POST /v1/sandboxes/{name}/backups`
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateBackup>,
) -> Result<Response, DaemonError> {
    let name = parse_name(&name)?;
    let progress = Arc::new(Progress::default());
    if wants_sse(&headers) {
        let backups = s.backups.clone();
        let p = progress.clone();
        return Ok(sse(progress, "backup", async move {
            backups.create(&name, req, p).await
        }));
    }
    let backup = s.backups.create(&name, req, progress).await?;
    Ok((http::StatusCode::CREATED, Json(backup)).into_response())
}

/// `GET /v1/sandboxes/{name}/backups`: the backups taken from this sandbox.
pub async fn list_of_sandbox(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BackupList>, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(BackupList {
        backups: s.backups.list(Some(name.as_str()))?,
    }))
}

/// `GET /v1/backups`
pub async fn list(State(s): State<AppState>) -> Result<Json<BackupList>, DaemonError> {
    Ok(Json(BackupList {
        backups: s.backups.list(None)?,
    }))
}

/// `GET /v1/backups/{id}`
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    Ok(Json(s.backups.get(&id)?))
}

/// `DELETE /v1/backups/{id}`
pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    s.backups.delete(&id).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// `POST /v1/backups/{id}/restore`
pub async fn restore(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RestoreBackup>,
) -> Result<Response, DaemonError> {
    let progress = Arc::new(Progress::default());
    if wants_sse(&headers) {
        let backups = s.backups.clone();
        let p = progress.clone();
        return Ok(sse(progress, "restored", async move {
            backups.restore(&id, req, p).await
        }));
    }
    Ok(Json(s.backups.restore(&id, req, progress).await?).into_response())
}
