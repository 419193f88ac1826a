//! Handlers of `/v1/secrets` and `/v1/sandboxes/{name}/egress-log`.

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use bothy_api::egress::{valid_secret_name, EgressLog, SecretList};
use bothy_api::ErrorCode;
use bytes::Bytes;
use http::StatusCode;

use super::secrets::MAX_SECRET_BYTES;
use crate::api::AppState;
use crate::error::{parse_name, DaemonError};

/// The routes, to merge into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list))
        .route("/v1/secrets/{name}", put(set).delete(delete))
        .route("/v1/sandboxes/{name}/egress-log", get(log))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SECRET_BYTES + 1))
}

fn secret_name(name: &str) -> Result<&str, DaemonError> {
    if valid_secret_name(name) {
        Ok(name)
    } else {
        Err(DaemonError::new(
            ErrorCode::InvalidName,
            format!("invalid secret name {name:?}: use 1-128 of A-Z a-z 0-9 _ . -"),
        ))
    }
}

/// `PUT /v1/secrets/{name}`: the body is the value (UTF-8, as is).
async fn set(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = secret_name(&name)?;
    let body = body.map_err(|_| {
        DaemonError::new(
            ErrorCode::BodyTooLarge,
            format!("a secret is at most {MAX_SECRET_BYTES} bytes"),
        )
    })?;
    if body.is_empty() {
        return Err(DaemonError::invalid(
            "the secret's value (the request body) is empty",
        ));
    }
    if body.len() > MAX_SECRET_BYTES {
        return Err(DaemonError::new(
            ErrorCode::BodyTooLarge,
            format!("a secret is at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    let value = std::str::from_utf8(&body)
        .map_err(|_| DaemonError::invalid("the secret's value must be UTF-8 text"))?;
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(DaemonError::invalid(
            "the secret's value must not contain CR, LF or NUL (it goes into a header)",
        ));
    }
    let secrets = s.egress.secrets.clone();
    let (name, value) = (name.to_string(), value.to_string());
    let (info, created) = tokio::task::spawn_blocking(move || secrets.put(&name, &value))
        .await
        .map_err(|e| DaemonError::internal("store secret", &e))?
        .map_err(|e| DaemonError::internal("store secret", &e))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

async fn list(State(s): State<AppState>) -> Json<SecretList> {
    Json(SecretList {
        secrets: s.egress.secrets.list(),
    })
}

async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, DaemonError> {
    let name = secret_name(&name)?.to_string();
    let secrets = s.egress.secrets.clone();
    let n2 = name.clone();
    let existed = tokio::task::spawn_blocking(move || secrets.delete(&n2))
        .await
        .map_err(|e| DaemonError::internal("delete secret", &e))?
        .map_err(|e| DaemonError::internal("delete secret", &e))?;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DaemonError::new(
            ErrorCode::SecretNotFound,
            format!("no secret named {name:?}"),
        ))
    }
}

/// Entries answered when the request names no `limit`.
const DEFAULT_LIMIT: usize = 1000;

#[derive(serde::Deserialize)]
struct LogQuery {
    /// Only the last `limit` entries (at most [`super::log::KEEP`]).
    limit: Option<usize>,
}

async fn log(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<EgressLog>, DaemonError> {
    let name = parse_name(&name)?;
    let created_at_ms = match s.manager.store.get_sandbox(&name) {
        Ok(Some(rec)) => rec.created_at_ms,
        Ok(None) => return Err(DaemonError::not_found(&name)),
        Err(e) => return Err(DaemonError::internal("read sandbox record", &e)),
    };
    let mut entries = s
        .egress
        .log
        .recent(&name, q.limit.unwrap_or(DEFAULT_LIMIT))
        .await?;
    // A sandbox destroyed and created again under the same name starts with an empty log
    // (the times are fixed-width RFC 3339, so they compare as strings).
    let since = bothy_api::time::rfc3339_ms(created_at_ms);
    entries.retain(|e| e.time >= since);
    Ok(Json(EgressLog { entries }))
}
