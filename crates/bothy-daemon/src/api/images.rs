use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use bothy_api::sandbox::{ImageList, ImportImage};
use bothy_api::ErrorCode;

use super::AppState;
use crate::error::{self, DaemonError};

pub async fn list(State(s): State<AppState>) -> Result<Json<ImageList>, DaemonError> {
    Ok(Json(ImageList {
        images: s.manager.images().list()?,
    }))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let info = s
        .manager
        .images()
        .list()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| {
            DaemonError::new(ErrorCode::ImageNotFound, format!("no image named {name:?}"))
        })?;
    Ok(Json(info))
}

pub async fn import(
    State(s): State<AppState>,
    error::Json(req): error::Json<ImportImage>,
) -> Result<impl IntoResponse, DaemonError> {
    let images = s.manager.images().clone();
    let info =
        tokio::task::spawn_blocking(move || images.import(&req.name, &PathBuf::from(&req.path)))
            .await
            .map_err(|e| DaemonError::internal("import image", &e))??;
    Ok((http::StatusCode::CREATED, Json(info)))
}
