//! One terminal: a program on a pty, its output ring buffer, its exit, its size.
//!
//! A reader task moves output from the pty master into the ring and bumps a `watch` version;
//! every attached client keeps its own cursor and copies what it has not sent yet, so a slow
//! client never holds up the program or the other clients (it falls behind and, past the
//! buffer, is told what it lost).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bothy_api::terminal::{TerminalInfo, TerminalStatus};
use tokio::sync::watch;

use super::pty::{self, Master};
use super::ring::{Read, Ring};
use crate::reaper::ExitInfo;

/// How long output may keep arriving after the program exited before the exit is reported.
/// Output normally ends with the program (the slave closes); a background job that keeps the
/// slave open must not delay the exit forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

/// Grace between `SIGHUP` and `SIGKILL` when a terminal is ended.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What it takes to start a terminal, resolved and validated.
pub struct Spec {
    pub id: String,
    pub command: Vec<String>,
    pub cwd: String,
    /// The environment the request added (reported back).
    pub request_env: BTreeMap<String, String>,
    /// The whole environment of the program.
    pub env: BTreeMap<String, String>,
    pub cols: u16,
    pub rows: u16,
    pub buffer_bytes: usize,
}

struct Inner {
    ring: Ring,
    cols: u16,
    rows: u16,
    exit: Option<ExitInfo>,
    output_closed: bool,
    clients: usize,
}

pub struct Terminal {
    pub id: String,
    command: Vec<String>,
    cwd: String,
    env: BTreeMap<String, String>,
    created_at: String,
    pub pid: i32,
    master: Master,
    inner: Mutex<Inner>,
    /// Bumped on every change (output, exit, resize); clients wait on it.
    changed: watch::Sender<()>,
    /// Serializes writes of input from several clients.
    write_lock: tokio::sync::Mutex<()>,
}

/// The state a client sees when it wakes up.
pub struct Snapshot {
    pub end: u64,
    pub exit: Option<ExitInfo>,
}

impl Terminal {
    /// Starts the program and the tasks that follow it. Call inside the agent's runtime.
    pub fn start(spec: Spec) -> std::io::Result<Arc<Self>> {
        let (master, slave) = pty::open(spec.cols, spec.rows)?;
        // Registered before the program starts, so a failure here leaves no orphan behind.
        let master = Master::new(master)?;
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd);
        let (child, mut exit) = pty::spawn(&mut cmd, &slave)?;
        // Our copies of the slave must go, or the master never sees the end of output.
        drop(cmd);
        drop(slave);
        let (changed, _) = watch::channel(());
        let term = Arc::new(Self {
            id: spec.id,
            command: spec.command,
            cwd: spec.cwd,
            env: spec.request_env,
            created_at: crate::time::rfc3339(std::time::SystemTime::now()),
            pid: child.id() as i32,
            master,
            inner: Mutex::new(Inner {
                ring: Ring::new(spec.buffer_bytes),
                cols: spec.cols,
                rows: spec.rows,
                exit: None,
                output_closed: false,
                clients: 0,
            }),
            changed,
            write_lock: tokio::sync::Mutex::new(()),
        });

        let reader = term.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.master.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        reader.lock().ring.push(&buf[..n]);
                        reader.changed.send_replace(());
                    }
                }
            }
            reader.lock().output_closed = true;
            reader.changed.send_replace(());
        });

        let waiter = term.clone();
        tokio::spawn(async move {
            let status = exit.wait().await;
            // Let the last output land in the ring first, so clients see it before the exit.
            let mut rx = waiter.changed.subscribe();
            let _ = tokio::time::timeout(
                DRAIN_AFTER_EXIT,
                rx.wait_for(|_| waiter.lock().output_closed),
            )
            .await;
            waiter.lock().exit = Some(status);
            waiter.changed.send_replace(());
        });
        Ok(term)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            end: g.ring.end(),
            exit: g.exit,
        }
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.lock().exit
    }

    /// Output from `cursor`, at most `max` bytes.
    pub fn read_from(&self, cursor: u64, max: usize) -> Read {
        self.lock().ring.read_from(cursor, max)
    }

    pub fn buffer_start(&self) -> u64 {
        self.lock().ring.start()
    }

    /// Writes input for the program. Input to a terminal whose program is gone is dropped.
    pub async fn write_input(&self, data: &[u8]) -> std::io::Result<()> {
        if self.exit().is_some() {
            return Ok(());
        }
        let _g = self.write_lock.lock().await;
        self.master.write_all(data).await
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.master.resize(cols, rows)?;
        let mut g = self.lock();
        g.cols = cols;
        g.rows = rows;
        Ok(())
    }

    /// `SIGINT` to the foreground process group (what Ctrl-C does, whatever the tty mode).
    pub fn interrupt(&self) {
        if self.exit().is_some() {
            return;
        }
        let target = match self.master.foreground_pgrp() {
            Some(pgrp) if pgrp > 1 => -pgrp,
            _ => self.pid,
        };
        // SAFETY: kill(2) with a pid or negated process group id and a signal number.
        unsafe { libc::kill(target, libc::SIGINT) };
    }

    /// Sends `signal` to the program's whole process tree.
    pub fn signal(&self, signal: i32) {
        if self.exit().is_none() {
            crate::proctree::kill_tree(self.pid, signal);
        }
    }

    /// Ends the terminal: `SIGHUP` to the tree (an interactive shell ignores `SIGTERM`), then
    /// `SIGKILL` if it is still there after a grace period.
    pub fn terminate(self: &Arc<Self>) {
        if self.exit().is_some() {
            return;
        }
        crate::proctree::kill_tree(self.pid, libc::SIGHUP);
        let me = self.clone();
        tokio::spawn(async move {
            let mut rx = me.subscribe();
            let done = tokio::time::timeout(KILL_GRACE, rx.wait_for(|_| me.exit().is_some()));
            if done.await.is_err() {
                crate::proctree::kill_tree(me.pid, libc::SIGKILL);
            }
        });
    }

    /// Counts an attached client for as long as the guard lives.
    pub fn attach(self: &Arc<Self>) -> ClientGuard {
        self.lock().clients += 1;
        ClientGuard(self.clone())
    }

    pub fn info(&self) -> TerminalInfo {
        let g = self.lock();
        TerminalInfo {
            id: self.id.clone(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            cols: g.cols,
            rows: g.rows,
            pid: self.pid,
            created_at: self.created_at.clone(),
            status: if g.exit.is_some() {
                TerminalStatus::Exited
            } else {
                TerminalStatus::Running
            },
            exit_code: g.exit.and_then(|e| e.code),
            signal: g.exit.and_then(|e| e.signal),
            cursor: g.ring.end().to_string(),
            buffer_start: g.ring.start().to_string(),
            buffer_bytes: g.ring.capacity(),
            clients: g.clients,
        }
    }
}

/// See [`Terminal::attach`].
pub struct ClientGuard(Arc<Terminal>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.clients = g.clients.saturating_sub(1);
    }
}
