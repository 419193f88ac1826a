//! `GET|PUT /v1/sandboxes/{name}/network`: a control route (the daemon owns networking; it is
//! never forwarded to the agent).

use axum::extract::{Path, State};
use axum::Json;
use bothy_api::network::{NetworkConfig, NetworkInfo};

use super::AppState;
use crate::error::{parse_name, DaemonError, Json as JsonBody};

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<NetworkInfo>, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.get_network(&name).await?))
}

pub async fn put(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(cfg): JsonBody<NetworkConfig>,
) -> Result<Json<NetworkInfo>, DaemonError> {
    let name = parse_name(&name)?;
    Ok(Json(s.manager.set_network(&name, cfg).await?))
}
