//! Starting a command and driving it to its end: stdin, stdout/stderr, exit, timeout.
//!
//! [`Running::next`] is the single place that moves a command forward; the JSON and SSE
//! replies (see [`super::output`]) only differ in what they do with its [`Event`]s. No thread
//! and no extra process is involved: the pipes are read on the agent's own runtime.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use bothy_api::exec::{ExecRequest, ExitEvent};
use bothy_api::{ApiError, ErrorCode};
use bytes::Bytes;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::error::AgentError;
use crate::proctree;
use crate::reaper::{self, ExitInfo, ExitWatch};

/// After the main process exits, output is still read until both pipes reach end of file, or
/// until they stay silent this long (a background process may hold them open forever).
pub const DRAIN_SILENCE: Duration = Duration::from_millis(30);
/// ... and in any case no longer than this after the exit (a background process that keeps
/// writing cannot hold the reply open).
pub const DRAIN_MAX: Duration = Duration::from_millis(500);

const READ_CHUNK: usize = 64 * 1024;

/// What to run, resolved from a request.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Program then arguments.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Absolute, existing directory.
    pub cwd: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl Spec {
    /// Checks a request and resolves it against the sandbox environment: `env` is the
    /// sandbox-level environment the request's own is layered on.
    pub fn from_request(
        req: &ExecRequest,
        sandbox_env: &BTreeMap<String, String>,
    ) -> Result<Self, AgentError> {
        req.validate()?;
        let argv = match (&req.argv, &req.shell) {
            (Some(argv), _) => argv.clone(),
            (None, Some(line)) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            (None, None) => unreachable!("validate refuses a request without argv or shell"),
        };
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(AgentError::invalid("argv or shell contains a NUL byte"));
        }
        let cwd = resolve_cwd(req.cwd.as_deref())?;
        let stdin = req.stdin_bytes()?;
        Ok(Self {
            argv,
            env: crate::env::merged([sandbox_env, &req.env]),
            cwd,
            stdin,
            timeout: req.timeout_ms.map(Duration::from_millis),
        })
    }
}

/// The working directory of a command: normalised, existing, a directory. Without one it is
/// `/workspace`, or `/` in a root that has no `/workspace` (an explicit cwd must exist).
fn resolve_cwd(cwd: Option<&str>) -> Result<String, AgentError> {
    let Some(cwd) = cwd else {
        let default = if std::path::Path::new(bothy_api::WORKSPACE).is_dir() {
            bothy_api::WORKSPACE
        } else {
            "/"
        };
        return Ok(default.to_string());
    };
    let cwd = bothy_api::path::normalize(cwd)?;
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => Ok(cwd),
        Ok(_) => Err(AgentError::new(
            ErrorCode::NotADirectory,
            format!("cwd {cwd} is not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(AgentError::new(
            ErrorCode::FileNotFound,
            format!("cwd {cwd} does not exist"),
        )),
        Err(e) => Err(AgentError::io(&format!("cwd {cwd}"), &e)),
    }
}

/// What a running command produced next.
#[derive(Debug)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    /// Something went wrong reading or writing the command's pipes; the command goes on.
    Error(ApiError),
    /// The last event.
    Exit(ExitEvent),
}

/// Kills the command's whole process tree when dropped before the command exited: a client
/// that goes away (its response future or body stream dropped) takes its command with it.
struct TreeGuard {
    pid: i32,
    armed: bool,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            proctree::kill_tree(self.pid, libc::SIGKILL);
        }
    }
}

/// A callback run with a command's exit.
type OnExit = Box<dyn FnOnce(&ExitEvent) + Send>;

/// A started command.
pub struct Running {
    guard: TreeGuard,
    exit: ExitWatch,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    stdin: Option<(pipe::Sender, Bytes)>,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
    /// When the main process exited, and how.
    exited: Option<(ExitInfo, Instant)>,
    last_output: Instant,
    done: bool,
    buf: Box<[u8]>,
    /// Called once with the exit, before [`Event::Exit`] is handed out (sessions record the
    /// state the command left behind).
    on_exit: Option<OnExit>,
}

impl Running {
    /// Starts the command as a session leader and subreaper, registered with the reaper.
    pub fn start(spec: Spec) -> Result<Self, AgentError> {
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(if spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        proctree::isolate(&mut cmd);
        let (mut child, exit) =
            reaper::spawn(&mut cmd).map_err(|e| spawn_error(&spec.argv[0], &e))?;
        let pid = child.id() as i32;
        // From here on the guard owns the tree: any early return kills it.
        let guard = TreeGuard { pid, armed: true };
        let started = Instant::now();
        let stdout = receiver(child.stdout.take().map(OwnedFd::from))?;
        let stderr = receiver(child.stderr.take().map(OwnedFd::from))?;
        let stdin = match (child.stdin.take(), spec.stdin) {
            (Some(fd), Some(bytes)) => Some((
                pipe::Sender::from_owned_fd(OwnedFd::from(fd)).map_err(pipe_error)?,
                Bytes::from(bytes),
            )),
            _ => None,
        };
        Ok(Self {
            guard,
            exit,
            stdout,
            stderr,
            stdin,
            started,
            deadline: spec.timeout.and_then(|t| started.checked_add(t)),
            timed_out: false,
            exited: None,
            last_output: started,
            done: false,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            on_exit: None,
        })
    }

    /// Registers `f` to be called with the exit, before the exit event is handed out. If the
    /// command is dropped before its exit (client gone), `f` is dropped uncalled.
    pub fn on_exit(&mut self, f: impl FnOnce(&ExitEvent) + Send + 'static) {
        self.on_exit = Some(Box::new(f));
    }

    pub fn pid(&self) -> i32 {
        self.guard.pid
    }

    /// The next event, or `None` after [`Event::Exit`].
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Some((info, at)) = self.exited {
                let drained = self.stdout.is_none() && self.stderr.is_none();
                let now = Instant::now();
                if drained || now >= self.last_output + DRAIN_SILENCE || now >= at + DRAIN_MAX {
                    self.done = true;
                    // Dropping the pipes now: a background process still writing gets EPIPE
                    // (or SIGPIPE) rather than blocking forever on a full pipe.
                    self.stdout = None;
                    self.stderr = None;
                    self.stdin = None;
                    let exit = ExitEvent {
                        exit_code: info.code,
                        signal: info.signal,
                        duration_ms: (at - self.started).as_millis() as u64,
                        timed_out: self.timed_out,
                    };
                    if let Some(f) = self.on_exit.take() {
                        f(&exit);
                    }
                    return Some(Event::Exit(exit));
                }
            }
            let step = {
                let drain_until = self
                    .exited
                    .map(|(_, at)| (self.last_output + DRAIN_SILENCE).min(at + DRAIN_MAX));
                let deadline = if self.exited.is_none() && !self.timed_out {
                    self.deadline
                } else {
                    None
                };
                let waiting_exit = self.exited.is_none();
                let (out, err, stdin, exit) =
                    (&self.stdout, &self.stderr, &self.stdin, &mut self.exit);
                // Unbiased on purpose: a command flooding one pipe must not starve the other
                // pipe, its exit or its deadline.
                tokio::select! {
                    _ = sleep_until(deadline) => Step::Deadline,
                    info = exit.wait(), if waiting_exit => Step::Exited(info),
                    r = readable(out) => Step::Stdout(r),
                    r = readable(err) => Step::Stderr(r),
                    r = writable(stdin) => Step::Stdin(r),
                    _ = sleep_until(drain_until) => Step::DrainOver,
                }
            };
            match step {
                Step::Stdout(r) => {
                    if let Some(chunk) = self.read_ready(r, Stream::Stdout) {
                        return Some(chunk);
                    }
                }
                Step::Stderr(r) => {
                    if let Some(chunk) = self.read_ready(r, Stream::Stderr) {
                        return Some(chunk);
                    }
                }
                Step::Stdin(r) => {
                    if let Some(e) = self.write_ready(r) {
                        return Some(e);
                    }
                }
                Step::Exited(info) => {
                    self.guard.armed = false;
                    self.exited = Some((info, Instant::now()));
                    self.last_output = Instant::now();
                }
                Step::Deadline => {
                    self.timed_out = true;
                    proctree::kill_tree_and_wait(self.guard.pid, Duration::from_secs(3)).await;
                }
                Step::DrainOver => {} // checked at the top of the loop
            }
        }
    }

    /// Reads what a ready pipe holds. Returns an event to hand out, or `None` to go on.
    fn read_ready(&mut self, ready: io::Result<()>, which: Stream) -> Option<Event> {
        let slot = match which {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let rx = slot.as_ref()?;
        let r = ready.and_then(|()| rx.try_read(&mut self.buf));
        match r {
            Ok(0) => {
                *slot = None;
                None
            }
            Ok(n) => {
                self.last_output = Instant::now();
                let bytes = Bytes::copy_from_slice(&self.buf[..n]);
                Some(match which {
                    Stream::Stdout => Event::Stdout(bytes),
                    Stream::Stderr => Event::Stderr(bytes),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                *slot = None;
                Some(Event::Error(ApiError::internal(format!(
                    "reading the command's {}: {e}",
                    which.name()
                ))))
            }
        }
    }

    fn write_ready(&mut self, ready: io::Result<()>) -> Option<Event> {
        let (tx, rest) = self.stdin.as_mut()?;
        match ready.and_then(|()| tx.try_write(rest)) {
            Ok(n) => {
                let _ = rest.split_to(n);
                if rest.is_empty() {
                    self.stdin = None; // closes the command's stdin
                }
                None
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            // The command closed its stdin without reading it all: its business, not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.stdin = None;
                None
            }
            Err(e) => {
                self.stdin = None;
                Some(Event::Error(ApiError::internal(format!(
                    "writing the command's stdin: {e}"
                ))))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

enum Step {
    Stdout(io::Result<()>),
    Stderr(io::Result<()>),
    Stdin(io::Result<()>),
    Exited(ExitInfo),
    Deadline,
    DrainOver,
}

async fn readable(rx: &Option<pipe::Receiver>) -> io::Result<()> {
    match rx {
        Some(rx) => rx.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(tx: &Option<(pipe::Sender, Bytes)>) -> io::Result<()> {
    match tx {
        Some((tx, _)) => tx.writable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn receiver(fd: Option<OwnedFd>) -> Result<Option<pipe::Receiver>, AgentError> {
    fd.map(pipe::Receiver::from_owned_fd)
        .transpose()
        .map_err(pipe_error)
}

fn pipe_error(e: io::Error) -> AgentError {
    AgentError::internal(format!("setting up the command's pipes: {e}"))
}

/// A failed spawn as an API error naming the program: the user's mistake is a 4xx.
fn spawn_error(program: &str, e: &io::Error) -> AgentError {
    let (code, what) = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => (ErrorCode::FileNotFound, "not found"),
        (io::ErrorKind::PermissionDenied, _) => (
            ErrorCode::PermissionDenied,
            "is not executable (permission denied)",
        ),
        (_, Some(libc::ENOEXEC)) => (ErrorCode::InvalidRequest, "is not in an executable format"),
        (_, Some(libc::E2BIG)) => (
            ErrorCode::InvalidRequest,
            "arguments and environment are too long",
        ),
        (_, Some(libc::ENOTDIR)) => (
            ErrorCode::NotADirectory,
            "not found (a path component is not a directory)",
        ),
        (_, Some(libc::ELOOP)) => (ErrorCode::InvalidPath, "too many levels of symbolic links"),
        (_, Some(libc::EAGAIN)) | (_, Some(libc::ENOMEM)) => (
            ErrorCode::ResourceExhausted,
            "could not be started: the sandbox is at its process or memory limit; retry once some processes exit",
        ),
        _ => {
            return AgentError::internal(format!("could not start program {program:?}: {e}"));
        }
    };
    AgentError::new(code, format!("program {program:?}: {what}"))
}
