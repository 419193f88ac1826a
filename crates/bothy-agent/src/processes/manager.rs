//! Process records and their lifecycle: start, supervise, kill, stdin, recovery on wake.
//!
//! Each process has a directory `state_dir/processes/<id>/` with `record.json` (the API
//! record plus what is needed to start it again) and its log segments (see [`super::logs`]).
//! A supervisor task per run pumps stdout/stderr into the log, waits for the exit (from the
//! reaper) and writes the final record.
//!
//! When the agent starts (the sandbox woke), records a previous agent left `running` are
//! marked `killed` with the reason "sandbox slept", and processes with `restart: on-wake` are
//! started again under the same id, their log continuing where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bothy_api::process::{
    ProcessInfo, ProcessStart, ProcessStatus, RestartPolicy, DEFAULT_LOG_LIMIT,
};
use bothy_api::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::logs::{LogStore, Stream};
use crate::error::AgentError;
use crate::server::AgentState;

/// How long, after the main process exits, its output pipes are drained before the record is
/// closed (a daemonized grandchild may keep them open much longer; its output is still logged).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// What is persisted per process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    info: ProcessInfo,
    /// Variables layered over the sandbox's environment at each start (session changes and
    /// the request's own), and the sandbox variables the session unset.
    env: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    stdin: bool,
}

/// One process (all its runs).
pub struct Proc {
    dir: PathBuf,
    record: Mutex<Record>,
    pub logs: Arc<LogStore>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    /// Bumped on every status change; waiters watch it.
    changed: watch::Sender<u64>,
    /// Pid of the running main process, 0 when none.
    pid: AtomicI32,
    /// The signal a kill request sent to the current run, 0 if none.
    killed_with: AtomicI32,
}

impl Proc {
    pub fn info(&self) -> ProcessInfo {
        let mut info = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .info
            .clone();
        info.log_cursor = self.logs.end();
        info
    }

    pub fn status(&self) -> ProcessStatus {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .info
            .status
    }

    /// Watch that changes whenever the status does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut Record)) {
        let rec = {
            let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut r);
            r.info.log_cursor = self.logs.end();
            r.clone()
        };
        if let Err(e) = crate::persist::write_json(&self.dir.join("record.json"), &rec) {
            tracing::warn!(id = %rec.info.id, error = %e, "could not save process record");
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

/// All processes of the sandbox.
#[derive(Clone)]
pub struct Processes {
    dir: PathBuf,
    state: AgentState,
    procs: Arc<Mutex<HashMap<String, Arc<Proc>>>>,
}

impl Processes {
    /// Loads the records under `state_dir/processes`, marks those a previous agent left
    /// running as killed, and starts `on-wake` services again (when called inside a runtime).
    pub fn load(state: &AgentState) -> Self {
        let dir = Path::new(&state.config.state_dir).join("processes");
        let _ = std::fs::create_dir_all(&dir);
        let me = Self {
            dir: dir.clone(),
            state: state.clone(),
            procs: Arc::new(Mutex::new(HashMap::new())),
        };
        let mut services = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let pdir = e.path();
            let Some(rec) = crate::persist::read_json::<Record>(&pdir.join("record.json")) else {
                continue;
            };
            let logs = match LogStore::open(&pdir, rec.info.log_limit) {
                Ok(l) => Arc::new(l),
                Err(err) => {
                    tracing::warn!(dir = %pdir.display(), error = %err, "skipping process log");
                    continue;
                }
            };
            let id = rec.info.id.clone();
            let restart = rec.info.restart == RestartPolicy::OnWake;
            let p = Arc::new(new_proc(pdir, rec, logs));
            if p.status() == ProcessStatus::Running {
                p.update(|r| {
                    r.info.status = ProcessStatus::Killed;
                    r.info.reason = Some("sandbox slept".into());
                    r.info.ended_at = Some(bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()));
                });
            }
            if restart {
                services.push(p.clone());
            }
            me.procs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, p);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            for p in services {
                p.record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .info
                    .restarts += 1;
                me.launch(&p);
            }
        } else if !services.is_empty() {
            tracing::warn!("no async runtime: on-wake services not started");
        }
        me
    }

    pub fn get(&self, id: &str) -> Result<Arc<Proc>, AgentError> {
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::new(ErrorCode::NotFound, format!("no process named {id:?}")))
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let procs: Vec<Arc<Proc>> = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ProcessInfo> = procs.iter().map(|p| p.info()).collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Starts a process. Validation errors (bad request, unknown session, missing directory)
    /// are errors; a program that cannot be executed gives a record with status `failed`.
    pub fn start(&self, req: ProcessStart) -> Result<ProcessInfo, AgentError> {
        req.validate()?;
        let (mut cwd, mut env, mut unset) = (
            bothy_api::WORKSPACE.to_string(),
            BTreeMap::new(),
            Vec::new(),
        );
        if let Some(sid) = &req.session {
            let snap = self.state.sessions.snapshot(sid)?;
            cwd = snap.cwd;
            env = snap.delta.set;
            unset = snap.delta.unset;
        }
        if let Some(c) = &req.cwd {
            cwd = bothy_api::path::normalize(c)?;
        }
        if !Path::new(&cwd).is_dir() {
            return Err(AgentError::new(
                ErrorCode::FileNotFound,
                format!("working directory {cwd} does not exist"),
            ));
        }
        env.extend(req.env.clone());
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| crate::persist::random_id(10));
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = procs.get(&id) {
            if old.status() == ProcessStatus::Running {
                return Err(AgentError::new(
                    ErrorCode::Conflict,
                    format!("process {id:?} is running; kill it or choose another id"),
                ));
            }
            old.logs.remove();
            procs.remove(&id);
        }
        let pdir = self.dir.join(&id);
        let _ = std::fs::remove_dir_all(&pdir);
        let limit = req.log_limit.unwrap_or(DEFAULT_LOG_LIMIT);
        let logs = LogStore::open(&pdir, limit)
            .map_err(|e| AgentError::internal(format!("create log for process {id}: {e}")))?;
        let rec = Record {
            version: 1,
            info: ProcessInfo {
                id: id.clone(),
                argv: req.argv.clone(),
                shell: req.shell.clone(),
                cwd,
                session: req.session.clone(),
                status: ProcessStatus::Running,
                pid: None,
                exit_code: None,
                signal: None,
                reason: None,
                restart: req.restart,
                restarts: 0,
                started_at: bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()),
                ended_at: None,
                log_limit: limit,
                log_cursor: 0,
            },
            env,
            unset,
            stdin: req.stdin.unwrap_or(true),
        };
        let p = Arc::new(new_proc(pdir, rec, Arc::new(logs)));
        procs.insert(id, p.clone());
        drop(procs);
        self.launch(&p);
        Ok(p.info())
    }

    /// Removes an ended process's record and logs.
    pub fn remove(&self, id: &str) -> Result<(), AgentError> {
        let p = self.get(id)?;
        if p.status() == ProcessStatus::Running {
            return Err(AgentError::new(
                ErrorCode::Conflict,
                format!("process {id:?} is running; kill it first"),
            ));
        }
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        p.logs.remove();
        let _ = std::fs::remove_dir_all(&p.dir);
        Ok(())
    }

    /// Sends `signal` to the process's whole tree.
    pub fn kill(&self, id: &str, signal: i32) -> Result<ProcessInfo, AgentError> {
        let p = self.get(id)?;
        let pid = p.pid.load(Ordering::SeqCst);
        if p.status() != ProcessStatus::Running || pid == 0 {
            return Err(AgentError::new(
                ErrorCode::ProcessExited,
                format!("process {id:?} is not running ({})", p.status().as_str()),
            ));
        }
        p.killed_with.store(signal, Ordering::SeqCst);
        crate::proctree::kill_tree(pid, signal);
        Ok(p.info())
    }

    /// Writes to the process's stdin, and closes it on `eof`.
    pub async fn write_stdin(&self, id: &str, data: &[u8], eof: bool) -> Result<(), AgentError> {
        let p = self.get(id)?;
        if p.status() != ProcessStatus::Running {
            return Err(AgentError::new(
                ErrorCode::ProcessExited,
                format!("process {id:?} is not running ({})", p.status().as_str()),
            ));
        }
        let mut stdin = p.stdin.lock().await;
        let Some(w) = stdin.as_mut() else {
            return Err(AgentError::new(
                ErrorCode::Conflict,
                format!("stdin of process {id:?} is closed"),
            ));
        };
        if !data.is_empty() {
            if let Err(e) = w.write_all(data).await {
                *stdin = None;
                return Err(AgentError::new(
                    ErrorCode::Conflict,
                    format!("stdin of process {id:?} is closed: {e}"),
                ));
            }
        }
        if eof {
            *stdin = None;
        }
        Ok(())
    }

    /// Spawns a run of `p` and its supervisor.
    fn launch(&self, p: &Arc<Proc>) {
        let rec = p.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut env = crate::env::merged([&self.state.sandbox_env()]);
        for k in &rec.unset {
            env.remove(k);
        }
        env.extend(rec.env.clone());
        let mut cmd = match (&rec.info.argv, &rec.info.shell) {
            (Some(argv), _) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            (None, Some(line)) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
            (None, None) => unreachable!("validated at start"),
        };
        cmd.env_clear()
            .envs(&env)
            .current_dir(&rec.info.cwd)
            .stdin(if rec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::proctree::isolate(&mut cmd);
        p.killed_with.store(0, Ordering::SeqCst);
        let (mut child, exit) = match crate::reaper::spawn(&mut cmd) {
            Ok(x) => x,
            Err(e) => {
                let what = rec
                    .info
                    .argv
                    .as_ref()
                    .map_or("/bin/sh", |a| a[0].as_str())
                    .to_string();
                p.update(|r| {
                    r.info.status = ProcessStatus::Failed;
                    r.info.pid = None;
                    r.info.reason = Some(format!("could not start {what}: {e}"));
                    r.info.ended_at = Some(bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()));
                });
                return;
            }
        };
        let pid = child.id() as i32;
        p.pid.store(pid, Ordering::SeqCst);
        let stdin = child
            .stdin
            .take()
            .and_then(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)).ok());
        let out = child.stdout.take().map(OwnedFd::from);
        let err = child.stderr.take().map(OwnedFd::from);
        if let Ok(mut slot) = p.stdin.try_lock() {
            *slot = stdin;
        }
        p.update(|r| {
            r.info.status = ProcessStatus::Running;
            r.info.pid = Some(pid);
            r.info.exit_code = None;
            r.info.signal = None;
            r.info.reason = None;
            r.info.ended_at = None;
            if r.info.restarts > 0 {
                r.info.started_at = bothy_api::time::rfc3339_ms(bothy_api::time::now_ms());
            }
        });
        let p = p.clone();
        tokio::spawn(async move {
            let pumps = [
                out.map(|fd| tokio::spawn(pump(fd, Stream::Stdout, p.logs.clone()))),
                err.map(|fd| tokio::spawn(pump(fd, Stream::Stderr, p.logs.clone()))),
            ];
            let mut exit = exit;
            let info = exit.wait().await;
            p.pid.store(0, Ordering::SeqCst);
            for h in pumps.into_iter().flatten() {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, h).await;
            }
            *p.stdin.lock().await = None;
            let killed_with = p.killed_with.load(Ordering::SeqCst);
            p.update(|r| {
                r.info.exit_code = info.code;
                r.info.signal = info.signal;
                r.info.ended_at = Some(bothy_api::time::rfc3339_ms(bothy_api::time::now_ms()));
                if killed_with != 0 {
                    r.info.status = ProcessStatus::Killed;
                    r.info.reason = Some(format!("killed with {}", signal_name(killed_with)));
                } else if let Some(sig) = info.signal {
                    r.info.status = ProcessStatus::Killed;
                    r.info.reason = Some(format!("terminated by {}", signal_name(sig)));
                } else {
                    r.info.status = ProcessStatus::Exited;
                }
            });
        });
    }
}

fn new_proc(dir: PathBuf, rec: Record, logs: Arc<LogStore>) -> Proc {
    Proc {
        dir,
        record: Mutex::new(rec),
        logs,
        stdin: tokio::sync::Mutex::new(None),
        changed: watch::channel(0).0,
        pid: AtomicI32::new(0),
        killed_with: AtomicI32::new(0),
    }
}

/// Copies one output pipe into the log. An incomplete UTF-8 sequence at the end of a read is
/// held back for the next one, so text is not split into undecodable chunks.
async fn pump(fd: OwnedFd, stream: Stream, logs: Arc<LogStore>) {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = 0usize;
    loop {
        match rx.read(&mut buf[held..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let filled = held + n;
                let cut = bothy_api::data::split_incomplete_utf8(&buf[..filled]);
                let cut = if cut == 0 && filled == buf.len() {
                    filled
                } else {
                    cut
                };
                if cut > 0 {
                    logs.append(stream, &buf[..cut]);
                }
                buf.copy_within(cut..filled, 0);
                held = filled - cut;
            }
        }
    }
    if held > 0 {
        logs.append(stream, &buf[..held]);
    }
}

/// `SIGTERM`-style name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}
