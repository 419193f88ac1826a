//! Terminals: programs on pseudo-terminals, attached over WebSocket (`/v1/terminals`).
//!
//! Owns the terminal records of the sandbox (in memory: a terminal's program dies when the
//! sandbox sleeps, and so does its record), their ptys ([`pty`]), output ring buffers with
//! absolute cursors ([`ring`]), and the WebSocket clients in both framings ([`ws`]). Wire types
//! and the frame reference are in `bothy_api::terminal`.

pub mod pty;
pub mod ring;
pub mod terminal;
pub mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bothy_api::terminal::{
    check_size, AttachQuery, CreateTerminal, KillTerminal, Resize, TerminalInfo, TerminalList,
    DEFAULT_BUFFER_BYTES,
};
use bothy_api::ErrorCode;

use crate::error::{AgentError, Json};
use crate::server::AgentState;
use terminal::{Spec, Terminal};

/// Exited terminals kept for their records (and remaining output); older ones are forgotten.
const KEEP_EXITED: usize = 16;

#[derive(Clone)]
struct Terminals {
    agent: AgentState,
    map: Arc<Mutex<HashMap<String, Arc<Terminal>>>>,
}

impl Terminals {
    fn get(&self, id: &str) -> Result<Arc<Terminal>, AgentError> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::new(ErrorCode::NotFound, format!("no terminal {id:?}")))
    }

    fn all(&self) -> Vec<Arc<Terminal>> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.info().created_at.cmp(&b.info().created_at));
        v
    }

    fn insert(&self, t: Arc<Terminal>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(t.id.clone(), t);
        let mut exited: Vec<(String, String)> = map
            .values()
            .filter(|t| t.exit().is_some())
            .map(|t| (t.info().created_at, t.id.clone()))
            .collect();
        if exited.len() > KEEP_EXITED {
            exited.sort();
            for (_, id) in &exited[..exited.len() - KEEP_EXITED] {
                map.remove(id);
            }
        }
    }
}

/// The terminal routes, with their own state.
pub fn routes(state: &AgentState) -> Router {
    let terms = Terminals {
        agent: state.clone(),
        map: Arc::new(Mutex::new(HashMap::new())),
    };
    Router::new()
        .route("/v1/terminals", post(create).get(list))
        .route("/v1/terminals/{id}", get(show).delete(remove))
        .route("/v1/terminals/{id}/resize", post(resize))
        .route("/v1/terminals/{id}/kill", post(kill))
        .route("/v1/terminals/{id}/ws", get(attach))
        .with_state(terms)
}

async fn create(
    State(t): State<Terminals>,
    Json(req): Json<CreateTerminal>,
) -> Result<(http::StatusCode, axum::Json<TerminalInfo>), AgentError> {
    req.validate()?;
    let cwd = bothy_api::path::normalize(req.cwd.as_deref().unwrap_or(bothy_api::WORKSPACE))?;
    let cwd = if req.cwd.is_none() && !std::path::Path::new(&cwd).is_dir() {
        "/".to_string()
    } else {
        cwd
    };
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(AgentError::new(
                ErrorCode::NotADirectory,
                format!("cwd {cwd}: not a directory"),
            ))
        }
        Err(e) => return Err(AgentError::io(&cwd, &e)),
    }
    let mut env = crate::env::merged([&t.agent.sandbox_env(), &req.env]);
    let command = req.command.clone().unwrap_or_else(default_shell);
    if !req.env.contains_key("SHELL") && req.command.is_none() {
        env.insert("SHELL".into(), command[0].clone());
    }
    let spec = Spec {
        id: new_id(),
        command,
        cwd,
        request_env: req.env.clone(),
        env,
        cols: req.cols.unwrap_or(80),
        rows: req.rows.unwrap_or(24),
        buffer_bytes: req.buffer_bytes.unwrap_or(DEFAULT_BUFFER_BYTES),
    };
    let term = Terminal::start(spec).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AgentError::invalid(format!("cannot start the command: {e}"))
        } else {
            AgentError::internal(format!("cannot start the terminal: {e}"))
        }
    })?;
    let info = term.info();
    t.insert(term);
    Ok((http::StatusCode::CREATED, axum::Json(info)))
}

async fn list(State(t): State<Terminals>) -> axum::Json<TerminalList> {
    axum::Json(TerminalList {
        terminals: t.all().iter().map(|t| t.info()).collect(),
    })
}

async fn show(
    State(t): State<Terminals>,
    Path(id): Path<String>,
) -> Result<axum::Json<TerminalInfo>, AgentError> {
    Ok(axum::Json(t.get(&id)?.info()))
}

async fn resize(
    State(t): State<Terminals>,
    Path(id): Path<String>,
    Json(req): Json<Resize>,
) -> Result<axum::Json<TerminalInfo>, AgentError> {
    let term = t.get(&id)?;
    check_size(req.cols, req.rows)?;
    term.resize(req.cols, req.rows)
        .map_err(|e| AgentError::internal(format!("resize failed: {e}")))?;
    Ok(axum::Json(term.info()))
}

async fn kill(
    State(t): State<Terminals>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<TerminalInfo>, AgentError> {
    let term = t.get(&id)?;
    let req: KillTerminal = if body.iter().all(u8::is_ascii_whitespace) {
        KillTerminal::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AgentError::new(
                ErrorCode::MalformedJson,
                format!("malformed JSON body: {e}"),
            )
        })?
    };
    match req.signal {
        Some(s) => {
            let sig = crate::proctree::parse_signal(&s)
                .ok_or_else(|| AgentError::invalid(format!("unknown signal {s:?}")))?;
            term.signal(sig);
        }
        None => term.terminate(),
    }
    Ok(axum::Json(term.info()))
}

async fn remove(
    State(t): State<Terminals>,
    Path(id): Path<String>,
) -> Result<http::StatusCode, AgentError> {
    let term = t.get(&id)?;
    term.terminate();
    t.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    Ok(http::StatusCode::NO_CONTENT)
}

async fn attach(
    State(t): State<Terminals>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    let term = t.get(&id)?;
    let q = parse_attach(&q)?;
    let upgrade = upgrade.map_err(|e| {
        AgentError::invalid(format!("this endpoint needs a WebSocket upgrade: {e}"))
    })?;
    let cursor = match &q.cursor {
        None => None,
        Some(c) => {
            let c: u64 = c
                .parse()
                .map_err(|_| AgentError::invalid(format!("invalid cursor {c:?}")))?;
            let end = term.snapshot().end;
            if c > end {
                return Err(AgentError::invalid(format!(
                    "cursor {c} is past the end of the output ({end})"
                )));
            }
            Some(c)
        }
    };
    match (q.cols, q.rows) {
        (Some(cols), Some(rows)) => {
            check_size(cols, rows)?;
            if term.exit().is_none() {
                term.resize(cols, rows)
                    .map_err(|e| AgentError::internal(format!("resize failed: {e}")))?;
            }
        }
        (None, None) => {}
        _ => return Err(AgentError::invalid("give both cols and rows, or neither")),
    }
    let attach = ws::Attach {
        protocol: q.protocol,
        cursor,
    };
    // Browsers offer `bothy` (beside the token the daemon strips); answer with it when offered.
    Ok(upgrade
        .protocols(["bothy"])
        .on_upgrade(move |socket| ws::serve(socket, term, attach))
        .into_response())
}

fn parse_attach(q: &HashMap<String, String>) -> Result<AttachQuery, AgentError> {
    let dim = |k: &str| -> Result<Option<u16>, AgentError> {
        q.get(k)
            .map(|v| {
                v.parse::<u16>()
                    .map_err(|_| AgentError::invalid(format!("invalid {k} {v:?}")))
            })
            .transpose()
    };
    let protocol = match q.get("protocol").map(String::as_str) {
        None | Some("stable") => bothy_api::terminal::Protocol::Stable,
        Some("cursor") => bothy_api::terminal::Protocol::Cursor,
        Some(p) => {
            return Err(AgentError::invalid(format!(
                "unknown protocol {p:?} (stable or cursor)"
            )))
        }
    };
    Ok(AttachQuery {
        protocol,
        cursor: q.get("cursor").cloned(),
        cols: dim("cols")?,
        rows: dim("rows")?,
    })
}

/// `bash -l` where there is a bash, `sh -l` otherwise.
fn default_shell() -> Vec<String> {
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match bash {
        Some(b) => vec![b.to_string(), "-l".to_string()],
        None => vec!["/bin/sh".to_string(), "-l".to_string()],
    }
}

fn new_id() -> String {
    let n: u64 = rand::random();
    format!("t{:012x}", n & 0xffff_ffff_ffff)
}
