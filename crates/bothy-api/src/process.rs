//! Background processes: `/v1/sandboxes/{name}/processes`.
//!
//! A process runs detached from any client connection. Its record and its logs (stdout and
//! stderr, byte-exact, interleaved as produced, capped on disk) live in the sandbox's state
//! directory and outlive client connections, daemon restarts and sandbox sleep.
//!
//! Log positions are *cursors*: the number of output bytes (stdout and stderr together) the
//! process had produced before that point. A stream started with `since=N` resumes exactly
//! after the first `N` bytes; every event carries the cursor after it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ApiError, Data};

/// Default cap on the log kept on disk for one process (stdout and stderr together).
pub const DEFAULT_LOG_LIMIT: u64 = 16 * 1024 * 1024;
/// Smallest accepted log cap.
pub const MIN_LOG_LIMIT: u64 = 4 * 1024;

/// When a process is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    Never,
    /// Every time the sandbox wakes: a service.
    OnWake,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "never" => Some(Self::Never),
            "on-wake" => Some(Self::OnWake),
            _ => None,
        }
    }
}

/// Body of `POST /v1/processes`. Exactly one of `argv` and `shell`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessStart {
    /// Caller-chosen id (a DNS label); generated when absent. An id whose process has ended
    /// may be reused (the old record and logs are replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A command line run by `bash -c` (or `/bin/sh -c` without bash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; relative to `/workspace` unless absolute. Default: the session's, or
    /// `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Start from this session's directory and environment (the session is not changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Cap in bytes on the log kept on disk (stdout and stderr together); the oldest output is
    /// dropped beyond it. Default [`DEFAULT_LOG_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_limit: Option<u64>,
    /// Keep stdin open for `POST …/stdin` (default true); false gives the process an empty
    /// stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

impl ProcessStart {
    pub fn validate(&self) -> Result<(), ApiError> {
        crate::command::validate_argv_or_shell(self.argv.as_deref(), self.shell.as_deref())?;
        if let Some(id) = &self.id {
            crate::name::validate_label(id)
                .map_err(|e| ApiError::invalid(format!("invalid process id {id:?}: {e}")))?;
        }
        if let Some(l) = self.log_limit {
            if l < MIN_LOG_LIMIT {
                return Err(ApiError::invalid(format!(
                    "log_limit must be at least {MIN_LOG_LIMIT} bytes"
                )));
            }
        }
        crate::command::validate_env(&self.env)
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Running,
    /// Ended on its own with an exit code.
    Exited,
    /// Ended by a signal, a kill request, or the sandbox going to sleep.
    Killed,
    /// Could not be started.
    Failed,
}

impl ProcessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Killed => "killed",
            Self::Failed => "failed",
        }
    }
}

/// A process record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub status: ProcessStatus,
    /// Pid inside the sandbox (of the latest run).
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the process ended or failed, when not on its own (`killed by SIGTERM`, `sandbox
    /// slept`, `spawn failed: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How many times the process was started again on wake.
    #[serde(default)]
    pub restarts: u32,
    /// RFC 3339.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub log_limit: u64,
    /// Cursor at the end of the output so far.
    #[serde(default)]
    pub log_cursor: u64,
}

/// Reply of `GET /v1/processes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// Body of `POST /v1/processes/{id}/kill`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Signal name (`TERM`, `SIGKILL`, `int`) or number. Default `TERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// Body of `POST /v1/processes/{id}/stdin`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinWrite {
    /// Bytes to write (may be empty).
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub encoding: crate::Encoding,
    /// Close stdin after writing.
    #[serde(default)]
    pub eof: bool,
}

/// Reply of `GET /v1/processes/{id}/logs` (without `Accept: text/event-stream`): the output
/// kept from `since` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessLogs {
    pub stdout: Data,
    pub stderr: Data,
    /// Output bytes between `since` and the oldest byte still kept, dropped by the size cap.
    pub dropped_bytes: u64,
    /// Cursor after the returned output (pass as `since` to continue).
    pub cursor: u64,
    pub status: ProcessStatus,
}

/// SSE events of `GET /v1/processes/{id}/logs` with `Accept: text/event-stream`. The SSE
/// event name is `stdout`, `stderr`, `truncated` or `exit`; the SSE `id` is the cursor after
/// the event (a client reconnects with `since=<id>` or `Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunkEvent {
    pub data: String,
    #[serde(default)]
    pub encoding: crate::Encoding,
    pub cursor: u64,
}

/// The reader asked for output older than what is kept: `dropped_bytes` were skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogTruncatedEvent {
    pub dropped_bytes: u64,
    pub cursor: u64,
}

/// The process ended and all its output was sent; the stream ends after this event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogExitEvent {
    pub status: ProcessStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub cursor: u64,
}

/// Which output a log wait looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSel {
    #[default]
    Both,
    Stdout,
    Stderr,
}

/// Body of `POST /v1/processes/{id}/wait/log`: waits for a line matching `pattern` (a regex),
/// in the output already produced or to come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitLog {
    pub pattern: String,
    #[serde(default)]
    pub stream: StreamSel,
    /// Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Reply of a log wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitLogResult {
    /// The whole line (without its newline).
    pub line: Data,
    /// The part of the line the pattern matched.
    pub matched: Data,
    /// Cursor after the line.
    pub cursor: u64,
}

/// Body of `POST /v1/processes/{id}/wait/port`: waits until something accepts TCP connections
/// on `port` on the sandbox's loopback, or, with `http`, answers an HTTP GET with a status in
/// range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitPort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Delay between attempts, default 100 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status_min")]
    pub status_min: u16,
    #[serde(default = "default_status_max")]
    pub status_max: u16,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: default_path(),
            status_min: default_status_min(),
            status_max: default_status_max(),
        }
    }
}

fn default_path() -> String {
    "/".into()
}
fn default_status_min() -> u16 {
    200
}
fn default_status_max() -> u16 {
    399
}

/// Reply of a port wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitPortResult {
    pub port: u16,
    /// The HTTP status seen, in HTTP mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Body of `POST /v1/processes/{id}/wait/exit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitExit {
    /// Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Default timeout of the waits.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
