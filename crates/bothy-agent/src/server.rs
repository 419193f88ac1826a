//! The agent's HTTP server and shared state.

use std::collections::BTreeMap;
use std::os::fd::FromRawFd;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::routing::{get, put};
use axum::Router;
use bothy_api::agent::{AgentConfig, AgentEnv, AGENT_LISTEN_FD};

use crate::error::Json;

/// State shared by every feature module.
#[derive(Clone)]
pub struct AgentState {
    pub config: Arc<AgentConfig>,
    /// Sandbox-level environment (replaced by the daemon through `PUT /v1/env`).
    env: Arc<RwLock<BTreeMap<String, String>>>,
    /// Sessions (records under `state_dir/sessions`); exec runs commands in them.
    pub sessions: Arc<crate::sessions::Sessions>,
}

impl AgentState {
    pub fn new(config: AgentConfig) -> Self {
        let env = config.env.clone();
        let sessions = crate::sessions::Sessions::load(std::path::Path::new(&config.state_dir));
        Self {
            config: Arc::new(config),
            env: Arc::new(RwLock::new(env)),
            sessions: Arc::new(sessions),
        }
    }

    /// The sandbox-level environment as it is now.
    pub fn sandbox_env(&self) -> BTreeMap<String, String> {
        self.env.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_env(&self, env: BTreeMap<String, String>) {
        *self.env.write().unwrap_or_else(|e| e.into_inner()) = env;
    }
}

/// The whole data-plane API. Feature modules add themselves here, one `merge` each.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/env", put(put_env))
        .with_state(state.clone())
        // Feature modules (each owns its routes and state):
        .merge(crate::exec::routes(&state))
        .merge(crate::files::routes(&state))
        .merge(crate::terminals::routes(&state))
        .merge(crate::interp::routes(&state))
        .merge(crate::watch::routes(&state))
        .merge(crate::sessions::routes(&state))
        .merge(crate::processes::routes(&state))
        .merge(crate::archive::routes(&state))
        .merge(crate::git::routes(&state))
        .layer(axum::extract::DefaultBodyLimit::max(
            bothy_api::MAX_JSON_BODY,
        ))
}

async fn health(State(s): State<AgentState>) -> axum::Json<serde_json::Value> {
    axum::Json(
        serde_json::json!({"status": "ok", "name": s.config.name, "pid": std::process::id()}),
    )
}

async fn put_env(State(s): State<AgentState>, Json(body): Json<AgentEnv>) -> http::StatusCode {
    s.set_env(body.env);
    http::StatusCode::NO_CONTENT
}

/// Where the agent listens.
pub enum Listen {
    /// The socket the runtime passed as fd 3 (the normal case, inside a sandbox).
    InheritedFd,
    /// A path to bind (for running the agent by hand or in tests).
    Path(std::path::PathBuf),
}

/// Runs the agent until it is killed. Builds a single-threaded runtime: an idle agent should
/// cost as little memory as possible, and one sandbox's data plane does not need more.
pub fn run(config: AgentConfig, listen: Listen) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        crate::reaper::start()?;
        let listener = match listen {
            Listen::InheritedFd => {
                // SAFETY: the runtime hands the agent a listening unix socket on this fd and
                // nothing else in the process owns it.
                let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(AGENT_LISTEN_FD) };
                // Keep it from leaking into commands the agent starts.
                rustix::io::fcntl_setfd(&std, rustix::io::FdFlags::CLOEXEC)?;
                std.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(std)?
            }
            Listen::Path(p) => {
                let _ = std::fs::remove_file(&p);
                tokio::net::UnixListener::bind(&p)?
            }
        };
        let _ = std::fs::create_dir_all(&config.state_dir);
        let app = router(AgentState::new(config));
        axum::serve(listener, app).await
    })
}
