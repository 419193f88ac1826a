use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::sandbox::{CreateSandbox, SandboxList};

use super::AppState;
use crate::error::{parse_name, DaemonError, JsonOrDefault};

pub async fn put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonOrDefault(spec): JsonOrDefault<CreateSandbox>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    let (mut info, created) = s.manager.get_or_create(&name, spec).await?;
    info.created = Some(created);
    let status = if created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    Ok((status, Json(info)))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.info(&name, true).await?))
}

pub async fn list(State(s): State<AppState>) -> Result<Json<SandboxList>, DaemonError> {
    Ok(Json(SandboxList {
        sandboxes: s.manager.list().await?,
    }))
}

pub async fn sleep(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.sleep(&name).await?))
}

pub async fn wake(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.wake(&name).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    s.manager.destroy(&name).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Any other path under a sandbox: wake it if needed and forward to its agent.
pub async fn data_plane(
    State(s): State<AppState>,
    Path((name, _rest)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    let name = match parse_name(&name) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let (slot, running) = match s.manager.ensure_running(&name).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let guard = slot.activity();
    // The raw (still percent-encoded) rest of the path: "/v1/sandboxes/NAME/<rest>".
    let rest = req
        .uri()
        .path()
        .splitn(5, '/')
        .nth(4)
        .unwrap_or("")
        .to_string();
    let agent_path = match req.uri().query() {
        Some(q) => format!("/v1/{rest}?{q}"),
        None => format!("/v1/{rest}"),
    };
    crate::proxy::forward(&running.agent, req, agent_path, guard).await
}
