//! Handlers of `/v1/sandboxes/{name}/ports`.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use bothy_api::preview::{ExposeRequest, PortInfo, PortList};
use bothy_api::{ErrorCode, SandboxName};
use bothy_store::meta::PortRecord;
use http::StatusCode;

use super::Previews;
use crate::error::{parse_name, DaemonError};

fn no_domain() -> DaemonError {
    DaemonError::new(
        ErrorCode::InvalidRequest,
        "preview URLs need a TCP listener (bothy serve --listen ADDR) or --preview-domain",
    )
}

fn existing(p: &Previews, name: &SandboxName) -> Result<(), DaemonError> {
    match p.manager.store.get_sandbox(name) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(DaemonError::not_found(name)),
        Err(e) => Err(DaemonError::internal("read sandbox record", &e)),
    }
}

fn parse_port(s: &str) -> Result<u16, DaemonError> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| DaemonError::invalid(format!("invalid port {s:?}: give 1-65535")))
}

fn info(p: &Previews, r: &PortRecord) -> Result<PortInfo, DaemonError> {
    p.info(r).ok_or_else(no_domain)
}

pub async fn expose(
    State(p): State<Previews>,
    Path(name): Path<String>,
    crate::error::Json(req): crate::error::Json<ExposeRequest>,
) -> Result<impl IntoResponse, DaemonError> {
    let name = parse_name(&name)?;
    if req.port == 0 {
        return Err(DaemonError::invalid("invalid port 0: give 1-65535"));
    }
    if p.domain().is_none() {
        return Err(no_domain());
    }
    existing(&p, &name)?;
    let store = &p.manager.store;
    let current = store
        .get_port(&name, req.port)
        .map_err(|e| DaemonError::internal("read port", &e))?;
    if let (Some(r), false) = (&current, req.rotate) {
        return Ok((StatusCode::OK, Json(info(&p, r)?)));
    }
    let rec = PortRecord {
        sandbox: name,
        port: req.port,
        token: super::new_token(),
        created_at_ms: bothy_api::time::now_ms(),
    };
    store
        .put_port(&rec)
        .map_err(|e| DaemonError::internal("save port", &e))?;
    Ok((StatusCode::CREATED, Json(info(&p, &rec)?)))
}

pub async fn list(
    State(p): State<Previews>,
    Path(name): Path<String>,
) -> Result<Json<PortList>, DaemonError> {
    let name = parse_name(&name)?;
    existing(&p, &name)?;
    let recs = p
        .manager
        .store
        .list_ports(&name)
        .map_err(|e| DaemonError::internal("list ports", &e))?;
    let ports = recs
        .iter()
        .map(|r| info(&p, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(PortList { ports }))
}

pub async fn get(
    State(p): State<Previews>,
    Path((name, port)): Path<(String, String)>,
) -> Result<Json<PortInfo>, DaemonError> {
    let name = parse_name(&name)?;
    let port = parse_port(&port)?;
    existing(&p, &name)?;
    match p.manager.store.get_port(&name, port) {
        Ok(Some(r)) => Ok(Json(info(&p, &r)?)),
        Ok(None) => Err(not_exposed(&name, port)),
        Err(e) => Err(DaemonError::internal("read port", &e)),
    }
}

pub async fn unexpose(
    State(p): State<Previews>,
    Path((name, port)): Path<(String, String)>,
) -> Result<StatusCode, DaemonError> {
    let name = parse_name(&name)?;
    let port = parse_port(&port)?;
    existing(&p, &name)?;
    match p.manager.store.delete_port(&name, port) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(not_exposed(&name, port)),
        Err(e) => Err(DaemonError::internal("delete port", &e)),
    }
}

fn not_exposed(name: &SandboxName, port: u16) -> DaemonError {
    DaemonError::new(
        ErrorCode::NotFound,
        format!("port {port} of sandbox {name} is not exposed"),
    )
}
