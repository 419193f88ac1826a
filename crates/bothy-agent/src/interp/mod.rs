//! Code interpreter contexts: persistent Python, JavaScript and TypeScript interpreters.
//!
//! Routes: `POST/GET /v1/contexts`, `GET/DELETE /v1/contexts/{id}`,
//! `POST /v1/contexts/{id}/restart`, `POST /v1/contexts/{id}/run` and `POST /v1/run` (a run in
//! the default context of a language, created on first use).
//!
//! Each context is one long-lived interpreter process ([`kernel`]) running a small runner script
//! that is embedded in the agent and written under the agent's state directory ([`runtime`]).
//! A run streams events as they happen (SSE when the client accepts `text/event-stream`, one
//! JSON reply otherwise). Timeouts and client disconnects interrupt the code with SIGINT; code
//! that does not stop within a grace period is killed and the context restarted, and the caller
//! is told ([`context`]). TypeScript is transpiled in the agent ([`transpile`]).
//!
//! Context definitions (language, cwd, env) are kept in `state_dir/interp/contexts.json`, so a
//! context survives sleep; its interpreter (and so its variables) does not, and the first run
//! after a wake starts a fresh one (`start.fresh = true`).

pub mod context;
pub mod kernel;
pub mod runtime;
pub mod transpile;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bothy_api::interp::{
    Context as ContextInfo, CreateContextRequest, Language, RunEvent, RunRequest, RunResult,
};
use bothy_api::{ApiError, ErrorCode};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{AgentError, Json};
use crate::server::AgentState;
use context::{Context, ContextDef, Environment};

/// How often an idle run stream sends an SSE comment. Besides keeping proxies from timing the
/// stream out, the write is how a vanished client is noticed (and its run interrupted).
const KEEPALIVE: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Interp {
    agent: AgentState,
    contexts: Arc<Mutex<BTreeMap<String, Arc<Context>>>>,
    /// Serializes creation of default contexts.
    defaults: Arc<tokio::sync::Mutex<()>>,
}

/// The interpreter routes.
pub fn routes(state: &AgentState) -> Router {
    let interp = Interp::new(state.clone());
    Router::new()
        .route("/v1/contexts", get(list).post(create))
        .route("/v1/contexts/{id}", get(show).delete(remove))
        .route("/v1/contexts/{id}/restart", post(restart))
        .route("/v1/contexts/{id}/run", post(run_in_context))
        .route("/v1/run", post(run))
        .with_state(interp)
}

impl Interp {
    fn new(agent: AgentState) -> Self {
        let me = Self {
            agent,
            contexts: Arc::new(Mutex::new(BTreeMap::new())),
            defaults: Arc::new(tokio::sync::Mutex::new(())),
        };
        me.load();
        me
    }

    fn dir(&self) -> PathBuf {
        PathBuf::from(&self.agent.config.state_dir).join("interp")
    }

    fn records(&self) -> PathBuf {
        self.dir().join("contexts.json")
    }

    fn load(&self) {
        let Ok(bytes) = std::fs::read(self.records()) else {
            return;
        };
        match serde_json::from_slice::<Vec<ContextDef>>(&bytes) {
            Ok(defs) => {
                let mut map = self.lock();
                for d in defs {
                    map.insert(d.id.clone(), Arc::new(Context::new(d)));
                }
            }
            Err(e) => tracing::warn!("interp: ignoring unreadable context records: {e}"),
        }
    }

    fn save(&self) {
        let defs: Vec<ContextDef> = self.lock().values().map(|c| c.def.clone()).collect();
        let dir = self.dir();
        let tmp = dir.join(".contexts.json.tmp");
        let res = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&tmp, serde_json::to_vec(&defs).unwrap_or_default()))
            .and_then(|_| std::fs::rename(&tmp, self.records()));
        if let Err(e) = res {
            tracing::warn!("interp: could not save context records: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Context>>> {
        self.contexts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn environment(&self) -> Environment {
        Environment {
            env: crate::env::merged([&self.agent.sandbox_env()]),
            runner_dir: self.dir(),
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Context>, AgentError> {
        self.lock().get(id).cloned().ok_or_else(|| {
            AgentError::new(ErrorCode::NotFound, format!("no context with id {id:?}"))
        })
    }

    /// Creates a context and starts its interpreter.
    async fn create(&self, def: ContextDef) -> Result<Arc<Context>, AgentError> {
        let ctx = Arc::new(Context::new(def));
        ctx.ensure_started(&self.environment()).await?;
        self.lock().insert(ctx.def.id.clone(), ctx.clone());
        self.save();
        Ok(ctx)
    }

    async fn default_context(&self, language: Language) -> Result<Arc<Context>, AgentError> {
        let id = format!("default-{language}");
        if let Some(c) = self.lock().get(&id) {
            return Ok(c.clone());
        }
        let _one = self.defaults.lock().await;
        if let Some(c) = self.lock().get(&id) {
            return Ok(c.clone());
        }
        let cwd = if std::path::Path::new(bothy_api::WORKSPACE).is_dir() {
            bothy_api::WORKSPACE.to_string()
        } else {
            std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/".into())
        };
        self.create(ContextDef {
            id,
            language,
            cwd,
            env: BTreeMap::new(),
            default: true,
        })
        .await
    }
}

fn new_id() -> String {
    format!("ctx-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

async fn create(
    State(s): State<Interp>,
    Json(req): Json<CreateContextRequest>,
) -> Result<Response, AgentError> {
    req.validate()?;
    let cwd = bothy_api::path::normalize(req.cwd.as_deref().unwrap_or(bothy_api::WORKSPACE))?;
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
    let ctx = s
        .create(ContextDef {
            id: new_id(),
            language: req.language,
            cwd,
            env: req.env,
            default: false,
        })
        .await?;
    Ok((http::StatusCode::CREATED, axum::Json(ctx.info())).into_response())
}

async fn list(State(s): State<Interp>) -> axum::Json<Vec<ContextInfo>> {
    axum::Json(s.lock().values().map(|c| c.info()).collect())
}

async fn show(
    State(s): State<Interp>,
    Path(id): Path<String>,
) -> Result<axum::Json<ContextInfo>, AgentError> {
    Ok(axum::Json(s.get(&id)?.info()))
}

async fn remove(
    State(s): State<Interp>,
    Path(id): Path<String>,
) -> Result<http::StatusCode, AgentError> {
    let ctx = s.lock().remove(&id).ok_or_else(|| {
        AgentError::new(ErrorCode::NotFound, format!("no context with id {id:?}"))
    })?;
    ctx.kill();
    s.save();
    Ok(http::StatusCode::NO_CONTENT)
}

async fn restart(
    State(s): State<Interp>,
    Path(id): Path<String>,
) -> Result<axum::Json<ContextInfo>, AgentError> {
    let ctx = s.get(&id)?;
    ctx.restart(&s.environment()).await?;
    Ok(axum::Json(ctx.info()))
}

async fn run_in_context(
    State(s): State<Interp>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    Json(req): Json<RunRequest>,
) -> Result<Response, AgentError> {
    let ctx = s.get(&id)?;
    check_language(&ctx, &req)?;
    execute(&s, ctx, req, &headers).await
}

async fn run(
    State(s): State<Interp>,
    headers: http::HeaderMap,
    Json(req): Json<RunRequest>,
) -> Result<Response, AgentError> {
    let ctx = match &req.context {
        Some(id) => {
            let ctx = s.get(id)?;
            check_language(&ctx, &req)?;
            ctx
        }
        None => {
            s.default_context(req.language.unwrap_or(Language::Python))
                .await?
        }
    };
    execute(&s, ctx, req, &headers).await
}

fn check_language(ctx: &Context, req: &RunRequest) -> Result<(), ApiError> {
    match req.language {
        Some(l) if l != ctx.def.language => Err(ApiError::invalid(format!(
            "context {} runs {}, not {l}",
            ctx.def.id, ctx.def.language
        ))),
        _ => Ok(()),
    }
}

async fn execute(
    s: &Interp,
    ctx: Arc<Context>,
    req: RunRequest,
    headers: &http::HeaderMap,
) -> Result<Response, AgentError> {
    if req.timeout_ms == Some(0) {
        return Err(AgentError::invalid("timeout_ms must be positive"));
    }
    let run = ctx.begin(&s.environment()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let timeout = req.timeout_ms.map(Duration::from_millis);
    let code = req.code;
    tokio::spawn({
        let cancel = cancel.clone();
        async move { run.execute(&code, timeout, tx, cancel).await }
    });
    // Dropping the guard (the client went away, so the response or the handler is dropped)
    // interrupts the run.
    let guard = cancel.drop_guard();
    if crate::sse::wants_sse(headers) {
        let stream = futures_util::stream::unfold(Some((rx, guard)), |st| async move {
            let (mut rx, guard) = st?;
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        let last = matches!(ev, RunEvent::End(_));
                        let bytes = crate::sse::event(ev.name(), &ev);
                        let next = if last { guard.disarm(); None } else { Some((rx, guard)) };
                        Some((Ok::<Bytes, std::io::Error>(bytes), next))
                    }
                    None => { guard.disarm(); None }
                },
                _ = tokio::time::sleep(KEEPALIVE) => {
                    Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some((rx, guard))))
                }
            }
        });
        return Ok(crate::sse::response(stream));
    }
    let mut events = Vec::new();
    while let Some(ev) = rx.recv().await {
        events.push(ev);
    }
    guard.disarm();
    let result = RunResult::from_events(&events)
        .ok_or_else(|| AgentError::internal("the run ended without its start or end event"))?;
    Ok(axum::Json(result).into_response())
}
