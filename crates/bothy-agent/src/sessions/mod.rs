//! Sessions: named execution contexts whose `cd`, `export`/`unset` and `$?` carry over from
//! one exec to the next (`/v1/sessions`).
//!
//! A session is a record, not a shell: `{id, cwd, env delta, last exit code}`, persisted as
//! JSON under `state_dir/sessions/` so it survives sleep and agent restarts (there is no
//! process to lose). Each command in a session runs in a fresh shell built by [`script`], so a
//! command can be killed like any other and `exit 3` ends the command, not the session.
//! Commands in one session run one at a time ([`Sessions::prepare`] waits for the previous one
//! to finish); different sessions run in parallel.
//!
//! The session's environment is kept as a *delta* against the sandbox-level environment, so a
//! later change of the sandbox's environment (`PUT /v1/env`) reaches every session for the
//! variables the session did not change itself.

pub mod exec;
pub mod script;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bothy_api::exec::ExecRequest;
use bothy_api::session::{SessionCreate, SessionInfo, SessionList};
use bothy_api::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::error::{AgentError, Json};
use crate::reaper::ExitInfo;
use crate::server::AgentState;
use script::{EnvDelta, Shell, UserCommand};

/// The persisted form of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    id: String,
    cwd: String,
    env: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    last_exit_code: i32,
    created_at: String,
}

struct Slot {
    record: Mutex<Record>,
    /// Held for the whole life of a command in the session.
    running: Arc<tokio::sync::Mutex<()>>,
    deleted: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn info(&self) -> SessionInfo {
        let r = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SessionInfo {
            id: r.id,
            cwd: r.cwd,
            env: r.env,
            unset: r.unset,
            last_exit_code: r.last_exit_code,
            created_at: r.created_at,
            busy: self.running.try_lock().is_err(),
        }
    }
}

/// All sessions of the sandbox.
pub struct Sessions {
    dir: PathBuf,
    shell: Shell,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A starting point taken from a session (for background processes, which do not change it).
pub struct Snapshot {
    pub cwd: String,
    /// The session's changes to the sandbox's environment.
    pub delta: EnvDelta,
}

impl Sessions {
    /// Loads the sessions persisted under `state_dir/sessions`.
    pub fn load(state_dir: &Path) -> Self {
        let dir = state_dir.join("sessions");
        let _ = std::fs::create_dir_all(&dir);
        let mut slots = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Some(r) = crate::persist::read_json::<Record>(&p) {
                        slots.insert(r.id.clone(), Arc::new(new_slot(r)));
                    }
                }
            }
        }
        Self {
            dir,
            shell: Shell::detect(),
            slots: Mutex::new(slots),
        }
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, AgentError> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::new(ErrorCode::NotFound, format!("no session named {id:?}")))
    }

    fn save(&self, r: &Record) -> Result<(), AgentError> {
        crate::persist::write_json(&self.dir.join(format!("{}.json", r.id)), r)
            .map_err(|e| AgentError::internal(format!("save session {}: {e}", r.id)))
    }

    pub fn create(&self, req: SessionCreate) -> Result<SessionInfo, AgentError> {
        req.validate()?;
        let cwd = bothy_api::path::normalize(req.cwd.as_deref().unwrap_or(bothy_api::WORKSPACE))?;
        let id = req.id.unwrap_or_else(|| crate::persist::random_id(12));
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.contains_key(&id) {
            return Err(AgentError::new(
                ErrorCode::AlreadyExists,
                format!("a session named {id:?} exists"),
            ));
        }
        let r = Record {
            version: 1,
            id: id.clone(),
            cwd,
            env: req.env,
            unset: Vec::new(),
            last_exit_code: 0,
            created_at: bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()),
        };
        self.save(&r)?;
        let slot = Arc::new(new_slot(r));
        let info = slot.info();
        slots.insert(id, slot);
        Ok(info)
    }

    pub fn get(&self, id: &str) -> Result<SessionInfo, AgentError> {
        Ok(self.slot(id)?.info())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<SessionInfo> = slots.iter().map(|s| s.info()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Deletes a session. A command running in it finishes, but its changes are not kept.
    pub fn delete(&self, id: &str) -> Result<(), AgentError> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .ok_or_else(|| {
                AgentError::new(ErrorCode::NotFound, format!("no session named {id:?}"))
            })?;
        slot.deleted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.state")));
        Ok(())
    }

    /// The directory and environment a background process started "in" the session gets.
    pub fn snapshot(&self, id: &str) -> Result<Snapshot, AgentError> {
        let slot = self.slot(id)?;
        let r = slot
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Snapshot {
            cwd: r.cwd,
            delta: EnvDelta {
                set: r.env,
                unset: r.unset,
            },
        })
    }

    /// Waits until the session is free, then builds the command for `req` (its `argv` or
    /// `shell`, `env` as one-shot variables, `cwd` as a one-shot start directory). The caller
    /// runs [`SessionRun::argv`] (see [`exec::start`]) and calls [`SessionRun::finish`] with
    /// its exit; dropping the run without finishing keeps the session unchanged and frees it.
    pub async fn prepare(
        &self,
        id: &str,
        req: &ExecRequest,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<SessionRun, AgentError> {
        let slot = self.slot(id)?;
        let guard = slot.running.clone().lock_owned().await;
        if slot.deleted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AgentError::new(
                ErrorCode::NotFound,
                format!("no session named {id:?}"),
            ));
        }
        let r = slot
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let one_shot_cwd = match &req.cwd {
            Some(c) => {
                let c = bothy_api::path::normalize(c)?;
                if !Path::new(&c).is_dir() {
                    return Err(AgentError::new(
                        ErrorCode::FileNotFound,
                        format!("cwd {c} does not exist or is not a directory"),
                    ));
                }
                Some(c)
            }
            None => None,
        };
        let cwd = one_shot_cwd.clone().unwrap_or_else(|| r.cwd.clone());
        let baseline = crate::env::merged([sandbox_env]);
        let delta = EnvDelta {
            set: r.env.clone(),
            unset: r.unset.clone(),
        };
        let env = delta.apply(&baseline, &req.env);
        let state_file = self.dir.join(format!("{id}.state"));
        let _ = std::fs::remove_file(&state_file);
        let user = match &req.shell {
            Some(line) => UserCommand::Shell(line),
            None => UserCommand::Argv,
        };
        let script = script::build(self.shell, &state_file, &cwd, r.last_exit_code, &user);
        let (prog, lead) = self.shell.program();
        let mut argv: Vec<String> = vec![prog.to_string()];
        argv.extend(lead.iter().map(|a| a.to_string()));
        argv.extend(["-c".to_string(), script, "bothy-session".to_string()]);
        if let Some(user_argv) = &req.argv {
            argv.extend(user_argv.iter().cloned());
        }
        // The shell starts where the session is (falling back like the script does), so even a
        // relative program path in argv form resolves the same way.
        let start_dir = [cwd.as_str(), bothy_api::WORKSPACE, "/"]
            .into_iter()
            .find(|d| Path::new(d).is_dir())
            .unwrap_or("/")
            .to_string();
        Ok(SessionRun {
            argv,
            env,
            cwd: start_dir,
            slot,
            sessions_dir: self.dir.clone(),
            state_file,
            baseline,
            delta,
            one_shot_env: req.env.clone(),
            one_shot_cwd,
            _guard: guard,
        })
    }
}

fn new_slot(r: Record) -> Slot {
    Slot {
        record: Mutex::new(r),
        running: Arc::new(tokio::sync::Mutex::new(())),
        deleted: std::sync::atomic::AtomicBool::new(false),
    }
}

/// One command running in a session; holds the session until it is finished or dropped.
pub struct SessionRun {
    /// The shell and its arguments (the script, then the user's argv in argv form).
    pub argv: Vec<String>,
    /// The environment the shell starts with.
    pub env: BTreeMap<String, String>,
    /// The directory the shell starts in.
    pub cwd: String,
    slot: Arc<Slot>,
    sessions_dir: PathBuf,
    state_file: PathBuf,
    baseline: BTreeMap<String, String>,
    delta: EnvDelta,
    one_shot_env: BTreeMap<String, String>,
    one_shot_cwd: Option<String>,
    _guard: OwnedMutexGuard<()>,
}

impl SessionRun {
    /// Records what the command left behind: the state it dumped on exit, or, if it left none
    /// (killed, `exec`, a replaced trap), only its exit status.
    pub fn finish(self, exit: &ExitInfo) {
        let dump = std::fs::read(&self.state_file)
            .ok()
            .and_then(|b| script::parse(&b));
        let _ = std::fs::remove_file(&self.state_file);
        if self.slot.deleted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut r = self.slot.record.lock().unwrap_or_else(|e| e.into_inner());
        match dump {
            Some(d) => {
                r.last_exit_code = d.exit_code;
                if self.one_shot_cwd.as_deref() != Some(d.cwd.as_str()) {
                    r.cwd = d.cwd;
                }
                let delta = self.delta.after(&self.baseline, &self.one_shot_env, &d.env);
                r.env = delta.set;
                r.unset = delta.unset;
            }
            None => r.last_exit_code = exit.shell_code(),
        }
        let path = self.sessions_dir.join(format!("{}.json", r.id));
        if let Err(e) = crate::persist::write_json(&path, &*r) {
            tracing::warn!(session = %r.id, error = %e, "could not save session");
        }
    }
}

/// Routes: `POST/GET /v1/sessions`, `GET/DELETE /v1/sessions/{id}`.
pub fn routes(state: &AgentState) -> Router {
    Router::new()
        .route("/v1/sessions", get(list).post(create))
        .route("/v1/sessions/{id}", get(show).delete(remove))
        .with_state(state.sessions.clone())
}

async fn create(
    State(s): State<Arc<Sessions>>,
    Json(req): Json<SessionCreate>,
) -> Result<(StatusCode, axum::Json<SessionInfo>), AgentError> {
    Ok((StatusCode::CREATED, axum::Json(s.create(req)?)))
}

async fn list(State(s): State<Arc<Sessions>>) -> axum::Json<SessionList> {
    axum::Json(SessionList { sessions: s.list() })
}

async fn show(
    State(s): State<Arc<Sessions>>,
    UrlPath(id): UrlPath<String>,
) -> Result<axum::Json<SessionInfo>, AgentError> {
    Ok(axum::Json(s.get(&id)?))
}

async fn remove(
    State(s): State<Arc<Sessions>>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, AgentError> {
    s.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
