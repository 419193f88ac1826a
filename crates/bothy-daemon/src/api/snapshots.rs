//! Snapshot routes (control plane: never proxied to the agent).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use bothy_api::snapshot::{CreateSnapshot, ForkRequest, ForkResult, RestoreRequest, SnapshotList};

use super::AppState;
use crate::error::{self, parse_name, DaemonError, JsonOrDefault};

pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonOrDefault(req): JsonOrDefault<CreateSnapshot>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    let info = s.manager.take_snapshot(&name, req).await?;
    Ok((http::StatusCode::CREATED, Json(info)))
}

/// Snapshots taken of a sandbox (they outlive it, so this also answers for a deleted one).
pub async fn list_of_sandbox(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<SnapshotList>, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(SnapshotList {
        snapshots: s.manager.list_snapshots(Some(&name))?,
    }))
}

pub async fn list(State(s): State<AppState>) -> Result<Json<SnapshotList>, DaemonError> {
    Ok(Json(SnapshotList {
        snapshots: s.manager.list_snapshots(None)?,
    }))
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let rec = s.manager.get_snapshot(&id)?;
    Ok(Json(crate::snapshots::info(&rec)))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    s.manager.delete_snapshot(&id).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

pub async fn fork(
    State(s): State<AppState>,
    Path(id): Path<String>,
    error::Json(req): error::Json<ForkRequest>,
) -> Result<impl IntoResponse, DaemonError> {
    let sandboxes = s.manager.fork_many(&id, req).await?;
    Ok((http::StatusCode::CREATED, Json(ForkResult { sandboxes })))
}

pub async fn restore(
    State(s): State<AppState>,
    Path(name): Path<String>,
    error::Json(req): error::Json<RestoreRequest>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.restore(&name, &req.snapshot).await?))
}
