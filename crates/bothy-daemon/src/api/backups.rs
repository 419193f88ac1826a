//! Directory backups: thin handlers over [`crate::backups::Backups`].

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use bothy_api::backup::{BackupList, CreateBackup, RestoreBackup};

use super::AppState;
use crate::error::{parse_name, DaemonError, Json as JsonBody};

/// `POST /v1/sandboxes/{name}/backups`
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<CreateBackup>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    let backup = s.backups.create(&name, req).await?;
    Ok((http::StatusCode::CREATED, Json(backup)))
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
    JsonBody(req): JsonBody<RestoreBackup>,
) -> Result<impl IntoResponse, DaemonError> {
    Ok(Json(s.backups.restore(&id, req).await?))
}
