//! Child processes and zombie reaping.
//!
//! The agent is PID 1 of its sandbox, so every orphan in the sandbox becomes its child and must
//! be reaped. It does so with `waitpid(-1)` on every `SIGCHLD`, which would steal the exit status
//! of children started any other way: **start every process through [`spawn`]** (never
//! `tokio::process`, `Command::status`/`output`), which registers the child before the reaper can
//! see it and hands its exit status back through the returned [`ExitWatch`].

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};

use tokio::sync::watch;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_wait_status(status: i32) -> Self {
        if libc::WIFEXITED(status) {
            Self {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            Self {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            Self {
                code: None,
                signal: None,
            }
        }
    }

    /// Shell-style status: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// Resolves when the process exits; cloneable, so several waiters can watch one process.
#[derive(Clone)]
pub struct ExitWatch(watch::Receiver<Option<ExitInfo>>);

impl ExitWatch {
    /// Waits for the exit. If the reaper is gone (cannot happen while the agent runs) it
    /// reports an unknown status rather than hanging.
    pub async fn wait(&mut self) -> ExitInfo {
        match self.0.wait_for(|s| s.is_some()).await {
            Ok(v) => v.expect("checked by wait_for"),
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        }
    }

    /// The exit, if it happened already.
    pub fn try_get(&self) -> Option<ExitInfo> {
        *self.0.borrow()
    }
}

struct Reaper {
    waiters: Mutex<HashMap<i32, watch::Sender<Option<ExitInfo>>>>,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(|| Reaper {
        waiters: Mutex::new(HashMap::new()),
    })
}

/// Spawns `cmd` and registers it with the reaper. The returned [`Child`] is only for its pid
/// and stdio handles: do not call `wait` on it.
pub fn spawn(cmd: &mut Command) -> io::Result<(Child, ExitWatch)> {
    // Hold the lock across fork+exec so the reaper cannot reap this child before it is known.
    let mut waiters = reaper().waiters.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    let (tx, rx) = watch::channel(None);
    waiters.insert(child.id() as i32, tx);
    Ok((child, ExitWatch(rx)))
}

/// Reaps every child that has exited, delivering statuses to registered waiters.
pub fn reap_now() {
    let mut waiters = reaper().waiters.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local int; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break; // 0: children remain but none exited; -1/ECHILD: no children at all
        }
        if let Some(tx) = waiters.remove(&pid) {
            let _ = tx.send(Some(ExitInfo::from_wait_status(status)));
        }
        // Unregistered pids are orphans reparented to PID 1: reaping them is all there is to do.
    }
}

/// Starts the reaper task. Call once, inside the runtime, before spawning anything.
pub fn start() -> io::Result<()> {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_now();
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    });
    Ok(())
}
