//! One interpreter process (a "kernel") and the line protocol with its runner script.
//!
//! The runner gets requests on fd 3 and writes events on fd 4, one JSON object per line (see the
//! header of `runner.py` / `runner.js`). Its stdout and stderr (fd 1 and 2) stay raw pipes for
//! what bypasses the language's own streams (child processes, C extensions); they are streamed
//! too. When the runner reports a run done, whatever is already in the raw pipes is read before
//! the `Done` event is passed on, so a subprocess's output is never reported after its cell.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bothy_api::interp::{RichResult, RunError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::reaper::{self, ExitInfo, ExitWatch};

/// How long a runner may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} exited during startup ({status}){stderr}")]
    EarlyExit {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program} did not become ready within {}s", READY_TIMEOUT.as_secs())]
    NotReady { program: String },
    #[error("pipe setup failed: {0}")]
    Pipe(#[from] std::io::Error),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
}

/// Something the kernel said.
#[derive(Debug)]
pub enum KernelEvent {
    /// The runner has started and waits for requests.
    Ready,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Result(RichResult),
    Error(RunError),
    /// The runner began the run with this id (SIGINT interrupts it from now on).
    Started(Option<u64>),
    Done(Option<u64>),
    /// The process closed its event pipe: it exited (or is about to).
    Exited,
}

/// A request to the runner.
#[derive(Debug, Serialize)]
pub struct RunnerRequest<'a> {
    pub id: u64,
    pub code: &'a str,
    pub wrapped: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum RunnerMsg {
    Ready {},
    Out {
        s: String,
    },
    Err {
        s: String,
    },
    Result {
        r: RichResult,
    },
    Error {
        name: String,
        #[serde(default)]
        value: String,
        #[serde(default)]
        traceback: String,
    },
    Started {
        #[serde(default)]
        id: Option<u64>,
    },
    Done {
        #[serde(default)]
        id: Option<u64>,
    },
}

/// A running interpreter. Dropping it kills its whole process tree.
pub struct Kernel {
    pub pid: i32,
    exit: ExitWatch,
    ctl: pipe::Sender,
    events: mpsc::UnboundedReceiver<KernelEvent>,
    reader: tokio::task::JoinHandle<()>,
}

fn high_cloexec(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    // Above 4, so that dup2 onto 3 and 4 in the child cannot clobber one with the other.
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 10)?)
}

impl Kernel {
    /// Starts the runner and waits until it is ready.
    pub async fn start(spec: &KernelSpec) -> Result<Kernel, KernelError> {
        let program = spec.program.display().to_string();
        let (ctl_r, ctl_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        let (ev_r, ev_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        let child_ctl = high_cloexec(&ctl_r)?;
        let child_ev = high_cloexec(&ev_w)?;
        drop((ctl_r, ev_w));

        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::proctree::isolate(&mut cmd);
        let (cfd, efd) = (child_ctl.as_raw_fd(), child_ev.as_raw_fd());
        // SAFETY: runs between fork and exec; dup2 is async-signal-safe and the source fds are
        // open (owned by this function until after spawn). dup2 onto a new number clears
        // FD_CLOEXEC, so exactly these two descriptors are inherited as 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cfd, 3) < 0 || libc::dup2(efd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (mut child, exit) = reaper::spawn(&mut cmd).map_err(|source| KernelError::Spawn {
            program: program.clone(),
            source,
        })?;
        drop((child_ctl, child_ev));
        let pid = child.id() as i32;

        let out = child.stdout.take().map(OwnedFd::from);
        let err = child.stderr.take().map(OwnedFd::from);
        let (Some(out), Some(err)) = (out, err) else {
            return Err(KernelError::Pipe(std::io::Error::other("no stdio pipes")));
        };
        let out = pipe::Receiver::from_owned_fd(out)?;
        let err = pipe::Receiver::from_owned_fd(err)?;
        let ev = pipe::Receiver::from_owned_fd(ev_r)?;
        let ctl = pipe::Sender::from_owned_fd(ctl_w)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(ev, out, err, tx));
        let mut kernel = Kernel {
            pid,
            exit,
            ctl,
            events: rx,
            reader,
        };
        kernel.wait_ready(&program).await?;
        Ok(kernel)
    }

    async fn wait_ready(&mut self, program: &str) -> Result<(), KernelError> {
        let mut stderr = Vec::new();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv()).await;
            match ev {
                Err(_) => {
                    return Err(KernelError::NotReady {
                        program: program.to_string(),
                    })
                }
                Ok(Some(KernelEvent::Ready)) => return Ok(()),
                Ok(Some(KernelEvent::Stderr(b))) => stderr.extend(b),
                Ok(Some(KernelEvent::Exited)) | Ok(None) => {
                    let status = tokio::time::timeout(Duration::from_secs(2), self.exit.wait())
                        .await
                        .map(describe_exit)
                        .unwrap_or_else(|_| "still running".into());
                    let text = String::from_utf8_lossy(&stderr);
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(2000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    return Err(KernelError::EarlyExit {
                        program: program.to_string(),
                        status,
                        stderr: if tail.trim().is_empty() {
                            String::new()
                        } else {
                            format!(": {}", tail.trim_end())
                        },
                    });
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// Sends a run request.
    pub async fn send(&mut self, req: &RunnerRequest<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.ctl.write_all(&line).await
    }

    /// The next event; [`KernelEvent::Exited`] once the process is gone (and forever after).
    pub async fn next(&mut self) -> KernelEvent {
        self.events.recv().await.unwrap_or(KernelEvent::Exited)
    }

    /// Drops events left over from an earlier run (output of background threads or timers
    /// after their cell ended). Returns false if the process has exited.
    pub fn discard_stale(&mut self) -> bool {
        loop {
            match self.events.try_recv() {
                Ok(KernelEvent::Exited) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    return false
                }
                Ok(_) => continue,
                Err(mpsc::error::TryRecvError::Empty) => return self.exit.try_get().is_none(),
            }
        }
    }

    /// Asks the running code to stop (SIGINT to the interpreter only, as Ctrl-C in a REPL).
    pub fn interrupt(&self) {
        if self.exit.try_get().is_none() {
            // SAFETY: kill(2) with the pid of our own child, which the reaper has not reaped
            // (try_get is None), so the pid cannot have been reused.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
        }
    }

    /// Kills the interpreter and everything it started, and waits (briefly) for it to go.
    pub async fn kill(mut self) {
        self.kill_tree();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.exit.wait()).await;
    }

    fn kill_tree(&mut self) {
        if self.exit.try_get().is_none() {
            crate::proctree::kill_tree(self.pid, libc::SIGKILL);
        }
        self.reader.abort();
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// Kills a kernel's process tree by pid, without owning the kernel (for restart and delete
/// while a run holds it).
pub fn kill_pid_tree(pid: i32) {
    if pid > 0 {
        crate::proctree::kill_tree(pid, libc::SIGKILL);
    }
}

fn describe_exit(e: ExitInfo) -> String {
    match (e.code, e.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Keeps back an incomplete UTF-8 sequence at the end of a raw chunk.
fn split_raw(carry: &mut Vec<u8>, chunk: &[u8]) -> Vec<u8> {
    carry.extend_from_slice(chunk);
    let cut = bothy_api::data::split_incomplete_utf8(carry);
    let rest = carry.split_off(cut);
    std::mem::replace(carry, rest)
}

/// Reads whatever a non-blocking pipe holds right now, without waiting.
fn drain_now(fd: &impl AsFd, into: &mut Vec<u8>) {
    let mut buf = [0u8; 65536];
    while let Ok(n @ 1..) = rustix::io::read(fd, &mut buf) {
        into.extend_from_slice(&buf[..n]);
    }
}

struct Batch {
    out: mpsc::UnboundedSender<KernelEvent>,
    /// Consecutive text of one stream, merged into one event.
    text: Option<(bool, String)>,
}

impl Batch {
    fn flush(&mut self) {
        if let Some((is_err, s)) = self.text.take() {
            let b = s.into_bytes();
            let _ = self.out.send(if is_err {
                KernelEvent::Stderr(b)
            } else {
                KernelEvent::Stdout(b)
            });
        }
    }

    fn text(&mut self, is_err: bool, s: String) {
        match &mut self.text {
            Some((e, acc)) if *e == is_err => acc.push_str(&s),
            _ => {
                self.flush();
                self.text = Some((is_err, s));
            }
        }
    }

    fn send(&mut self, ev: KernelEvent) {
        self.flush();
        let _ = self.out.send(ev);
    }
}

async fn read_loop(
    mut ev: pipe::Receiver,
    mut out: pipe::Receiver,
    mut err: pipe::Receiver,
    tx: mpsc::UnboundedSender<KernelEvent>,
) {
    let mut batch = Batch {
        out: tx,
        text: None,
    };
    let mut lines: Vec<u8> = Vec::new();
    let (mut ebuf, mut obuf, mut rbuf) = (vec![0u8; 65536], vec![0u8; 65536], vec![0u8; 65536]);
    let (mut out_open, mut err_open) = (true, true);
    let (mut out_carry, mut err_carry) = (Vec::new(), Vec::new());
    loop {
        tokio::select! {
            r = ev.read(&mut ebuf) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                lines.extend_from_slice(&ebuf[..n]);
                let mut start = 0;
                while let Some(nl) = lines[start..].iter().position(|&b| b == b'\n') {
                    let line = &lines[start..start + nl];
                    start += nl + 1;
                    let msg: RunnerMsg = match serde_json::from_slice(line) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("interp: bad runner line: {e}");
                            continue;
                        }
                    };
                    match msg {
                        RunnerMsg::Ready {} => batch.send(KernelEvent::Ready),
                        RunnerMsg::Out { s } => batch.text(false, s),
                        RunnerMsg::Err { s } => batch.text(true, s),
                        RunnerMsg::Result { r } => batch.send(KernelEvent::Result(r)),
                        RunnerMsg::Error { name, value, traceback } => {
                            batch.send(KernelEvent::Error(RunError {
                                name,
                                value,
                                traceback,
                                restarted: false,
                            }))
                        }
                        RunnerMsg::Started { id } => batch.send(KernelEvent::Started(id)),
                        RunnerMsg::Done { id } => {
                            // Raw output written before the runner said "done" is in the pipes
                            // already: pass it on first.
                            batch.flush();
                            let mut raw = Vec::new();
                            drain_now(&out, &mut raw);
                            out_carry.extend(raw);
                            if !out_carry.is_empty() {
                                batch.send(KernelEvent::Stdout(std::mem::take(&mut out_carry)));
                            }
                            let mut raw = Vec::new();
                            drain_now(&err, &mut raw);
                            err_carry.extend(raw);
                            if !err_carry.is_empty() {
                                batch.send(KernelEvent::Stderr(std::mem::take(&mut err_carry)));
                            }
                            batch.send(KernelEvent::Done(Some(id.unwrap_or(0))));
                        }
                    }
                }
                lines.drain(..start);
                batch.flush();
            }
            r = out.read(&mut obuf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    let b = split_raw(&mut out_carry, &obuf[..n]);
                    if !b.is_empty() { batch.send(KernelEvent::Stdout(b)); }
                }
            },
            r = err.read(&mut rbuf), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    let b = split_raw(&mut err_carry, &rbuf[..n]);
                    if !b.is_empty() { batch.send(KernelEvent::Stderr(b)); }
                }
            },
        }
    }
    // The event pipe closed: pass on the last raw output (a crash message, say), then the exit.
    let mut raw = std::mem::take(&mut out_carry);
    drain_now(&out, &mut raw);
    if !raw.is_empty() {
        batch.send(KernelEvent::Stdout(raw));
    }
    let mut raw = std::mem::take(&mut err_carry);
    drain_now(&err, &mut raw);
    if !raw.is_empty() {
        batch.send(KernelEvent::Stderr(raw));
    }
    batch.send(KernelEvent::Exited);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_chunks_keep_split_characters_back() {
        let mut carry = Vec::new();
        let e = "é".as_bytes();
        assert_eq!(split_raw(&mut carry, &[b'a', e[0]]), b"a");
        assert_eq!(split_raw(&mut carry, &[e[1], b'b']), "éb".as_bytes());
        assert!(carry.is_empty());
    }

    #[test]
    fn runner_messages_parse() {
        let m: RunnerMsg = serde_json::from_str(r#"{"t":"ready","pid":3}"#).unwrap();
        assert!(matches!(m, RunnerMsg::Ready {}));
        let m: RunnerMsg =
            serde_json::from_str(r#"{"t":"result","r":{"text":"2","is_main_result":true}}"#)
                .unwrap();
        assert!(matches!(m, RunnerMsg::Result { r } if r.text.as_deref() == Some("2")));
    }
}
