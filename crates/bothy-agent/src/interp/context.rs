//! A code context: its definition, its interpreter (started on demand) and running cells.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_api::interp::{
    Context as ContextInfo, Language, RunEnd, RunError, RunEvent, RunStart, RunStatus,
};
use bothy_api::{ApiError, Data};
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::kernel::{kill_pid_tree, Kernel, KernelEvent, KernelSpec, RunnerRequest};
use super::{runtime, transpile};

/// How long interrupted code may take to stop before the interpreter is killed and restarted.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// A context's fixed definition.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContextDef {
    pub id: String,
    pub language: Language,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub default: bool,
}

pub struct Context {
    pub def: ContextDef,
    kernel: Arc<Mutex<Option<Kernel>>>,
    /// Pid of the live interpreter (0 when none), readable without waiting for a running cell.
    pid: AtomicI32,
    count: AtomicU64,
    next_run: AtomicU64,
}

/// Everything a kernel start needs from the agent.
pub struct Environment {
    /// The sandbox-level environment (base + sandbox's).
    pub env: BTreeMap<String, String>,
    pub runner_dir: PathBuf,
}

impl Context {
    pub fn new(def: ContextDef) -> Self {
        Self {
            def,
            kernel: Arc::new(Mutex::new(None)),
            pid: AtomicI32::new(0),
            count: AtomicU64::new(0),
            next_run: AtomicU64::new(1),
        }
    }

    pub fn info(&self) -> ContextInfo {
        ContextInfo {
            id: self.def.id.clone(),
            language: self.def.language,
            cwd: self.def.cwd.clone(),
            env: self.def.env.clone(),
            execution_count: self.count.load(Ordering::Relaxed),
            running: self.pid.load(Ordering::Relaxed) > 0,
            default: self.def.default,
        }
    }

    fn spec(&self, envs: &Environment) -> Result<KernelSpec, ApiError> {
        let mut env = envs.env.clone();
        env.extend(self.def.env.clone());
        let path_var = env.get("PATH").cloned().unwrap_or_default();
        let launch = runtime::launch(self.def.language, &path_var, &envs.runner_dir)?;
        for (k, v) in launch.env {
            env.entry(k).or_insert(v);
        }
        Ok(KernelSpec {
            program: launch.program,
            args: launch.args,
            cwd: self.def.cwd.clone(),
            env,
        })
    }

    async fn start_kernel(
        &self,
        slot: &mut Option<Kernel>,
        envs: &Environment,
    ) -> Result<(), ApiError> {
        let spec = self.spec(envs)?;
        let kernel = Kernel::start(&spec).await.map_err(|e| {
            ApiError::internal(format!(
                "could not start the {} interpreter: {e}",
                self.def.language
            ))
        })?;
        self.pid.store(kernel.pid, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        *slot = Some(kernel);
        Ok(())
    }

    fn forget_kernel(&self, slot: &mut Option<Kernel>) {
        self.pid.store(0, Ordering::Relaxed);
        *slot = None; // drop kills the tree
    }

    /// Starts the interpreter now (context creation), so errors surface at once.
    pub async fn ensure_started(&self, envs: &Environment) -> Result<(), ApiError> {
        let mut slot = self.kernel.lock().await;
        if slot.is_none() {
            self.start_kernel(&mut slot, envs).await?;
        }
        Ok(())
    }

    /// Kills the interpreter and starts a fresh one. Does not wait for a running cell: that
    /// cell sees its interpreter die and reports it.
    pub async fn restart(&self, envs: &Environment) -> Result<(), ApiError> {
        kill_pid_tree(self.pid.load(Ordering::Relaxed));
        let mut slot = self.kernel.lock().await;
        if let Some(k) = slot.take() {
            k.kill().await;
        }
        self.pid.store(0, Ordering::Relaxed);
        self.start_kernel(&mut slot, envs).await
    }

    /// Kills the interpreter for good (delete, agent shutdown).
    pub fn kill(&self) {
        kill_pid_tree(self.pid.swap(0, Ordering::Relaxed));
    }

    /// Waits for the context to be free, makes sure an interpreter runs, and returns the right
    /// to run one cell.
    pub async fn begin(self: &Arc<Self>, envs: &Environment) -> Result<Run, ApiError> {
        let mut slot = self.kernel.clone().lock_owned().await;
        let mut fresh = false;
        if let Some(k) = slot.as_mut() {
            if !k.discard_stale() {
                self.forget_kernel(&mut slot);
            }
        }
        if slot.is_none() {
            self.start_kernel(&mut slot, envs).await?;
            fresh = true;
        }
        Ok(Run {
            ctx: self.clone(),
            slot,
            fresh,
        })
    }
}

/// The right to run one cell in a context (holds the context's lock).
pub struct Run {
    ctx: Arc<Context>,
    slot: OwnedMutexGuard<Option<Kernel>>,
    fresh: bool,
}

enum Phase {
    Running,
    /// SIGINT sent; the code has until the deadline to stop.
    Interrupting {
        deadline: tokio::time::Instant,
        by_timeout: bool,
    },
}

/// Turns the cell's source into what the runner executes.
fn prepare(language: Language, code: &str, count: u64) -> Result<transpile::Cell, RunError> {
    match language {
        Language::Python => Ok(transpile::Cell {
            code: code.to_string(),
            wrapped: false,
        }),
        Language::Javascript => Ok(transpile::prepare_js(code)),
        Language::Typescript => {
            let js =
                transpile::typescript_to_js(code, &format!("cell-{count}.ts")).map_err(|e| {
                    RunError {
                        name: "SyntaxError".into(),
                        value: e.message,
                        traceback: e.report,
                        restarted: false,
                    }
                })?;
            Ok(transpile::prepare_js(&js))
        }
    }
}

impl Run {
    /// Runs `code`, sending events to `sink` as they happen. Never fails: problems become
    /// `error` events. `cancel` interrupts the run (client gone).
    pub async fn execute(
        mut self,
        code: &str,
        timeout: Option<Duration>,
        sink: mpsc::UnboundedSender<RunEvent>,
        cancel: CancellationToken,
    ) {
        let started = Instant::now();
        let ctx = self.ctx.clone();
        let count = ctx.count.fetch_add(1, Ordering::Relaxed) + 1;
        let emit = |ev: RunEvent| {
            let _ = sink.send(ev);
        };
        emit(RunEvent::Start(RunStart {
            context: ctx.def.id.clone(),
            language: ctx.def.language,
            execution_count: count,
            fresh: self.fresh,
        }));
        let end = |status: RunStatus, restarted: bool| {
            RunEvent::End(RunEnd {
                execution_count: count,
                duration_ms: started.elapsed().as_millis() as u64,
                status,
                restarted,
            })
        };
        let cell = match prepare(ctx.def.language, code, count) {
            Ok(c) => c,
            Err(e) => {
                emit(RunEvent::Error(e));
                emit(end(RunStatus::Error, false));
                return;
            }
        };
        let id = ctx.next_run.fetch_add(1, Ordering::Relaxed);
        let Some(kernel) = self.slot.as_mut() else {
            emit(end(RunStatus::Crashed, true));
            return;
        };
        let req = RunnerRequest {
            id,
            code: &cell.code,
            wrapped: cell.wrapped,
        };
        if let Err(e) = kernel.send(&req).await {
            ctx.forget_kernel(&mut self.slot);
            emit(RunEvent::Error(RunError {
                name: "InterpreterExited".into(),
                value: format!("the interpreter is gone ({e}); the next run starts a fresh one"),
                traceback: String::new(),
                restarted: true,
            }));
            emit(end(RunStatus::Crashed, true));
            return;
        }

        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut phase = Phase::Running;
        let mut had_error = false;
        let mut timed_out = false;
        let mut cancelled = false;
        // SIGINT is only sent once the runner said it started this run: earlier, it would hit
        // an idle runner (which ignores it) and the interrupt would be lost.
        let mut started = false;
        let mut interrupt_pending = false;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        loop {
            let (interrupt_at, grace_at) = match phase {
                Phase::Running => (deadline.unwrap_or(far), far),
                Phase::Interrupting { deadline, .. } => (far, deadline),
            };
            let running = matches!(phase, Phase::Running);
            tokio::select! {
                biased;
                ev = kernel.next() => match ev {
                    KernelEvent::Stdout(b) => emit(RunEvent::Stdout(Data::encode(&b))),
                    KernelEvent::Stderr(b) => emit(RunEvent::Stderr(Data::encode(&b))),
                    KernelEvent::Result(r) => emit(RunEvent::Result(r)),
                    KernelEvent::Error(mut e) => {
                        had_error = true;
                        if timed_out {
                            e.name = "TimeoutError".into();
                            e.value = format!(
                                "execution timed out after {} ms and was interrupted; the context keeps its state",
                                timeout.unwrap_or_default().as_millis()
                            );
                        }
                        emit(RunEvent::Error(e));
                    }
                    KernelEvent::Done(Some(done)) if done == id => break,
                    KernelEvent::Started(Some(s)) if s == id => {
                        started = true;
                        if interrupt_pending {
                            kernel.interrupt();
                        }
                    }
                    KernelEvent::Done(_) | KernelEvent::Started(_) | KernelEvent::Ready => {}
                    KernelEvent::Exited => {
                        ctx.forget_kernel(&mut self.slot);
                        emit(RunEvent::Error(RunError {
                            name: "InterpreterExited".into(),
                            value: "the interpreter exited during the run; its state is lost and \
                                    the next run starts a fresh one"
                                .into(),
                            traceback: String::new(),
                            restarted: true,
                        }));
                        let status = if timed_out { RunStatus::Timeout } else { RunStatus::Crashed };
                        emit(end(status, true));
                        return;
                    }
                },
                _ = tokio::time::sleep_until(interrupt_at), if running && deadline.is_some() => {
                    timed_out = true;
                    if started { kernel.interrupt() } else { interrupt_pending = true }
                    phase = Phase::Interrupting {
                        deadline: tokio::time::Instant::now() + INTERRUPT_GRACE,
                        by_timeout: true,
                    };
                }
                _ = cancel.cancelled(), if running => {
                    cancelled = true;
                    if started { kernel.interrupt() } else { interrupt_pending = true }
                    phase = Phase::Interrupting {
                        deadline: tokio::time::Instant::now() + INTERRUPT_GRACE,
                        by_timeout: false,
                    };
                }
                _ = tokio::time::sleep_until(grace_at), if !running => {
                    let by_timeout = matches!(phase, Phase::Interrupting { by_timeout: true, .. });
                    ctx.forget_kernel(&mut self.slot);
                    let why = if by_timeout {
                        format!(
                            "execution timed out after {} ms and did not stop within {} s of an interrupt",
                            timeout.unwrap_or_default().as_millis(),
                            INTERRUPT_GRACE.as_secs()
                        )
                    } else {
                        format!("the run was interrupted and did not stop within {} s", INTERRUPT_GRACE.as_secs())
                    };
                    emit(RunEvent::Error(RunError {
                        name: if by_timeout { "TimeoutError" } else { "KeyboardInterrupt" }.into(),
                        value: format!("{why}; the interpreter was restarted and its state is lost"),
                        traceback: String::new(),
                        restarted: true,
                    }));
                    let status = if by_timeout { RunStatus::Timeout } else { RunStatus::Interrupted };
                    emit(end(status, true));
                    return;
                }
            }
        }
        let status = if timed_out && had_error {
            RunStatus::Timeout
        } else if cancelled {
            RunStatus::Interrupted
        } else if had_error {
            RunStatus::Error
        } else {
            RunStatus::Ok
        };
        emit(end(status, false));
    }
}
