//! Running a command: `POST /v1/sandboxes/{name}/exec`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ApiError, Data, Encoding};

/// Request body of exec. Exactly one of `argv` and `shell` must be given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments, run without a shell (looked up in `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A command line run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; relative to `/workspace` unless absolute. Default `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command's whole process tree after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes for the command's standard input (closed after them). Without it stdin is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Encoding of `stdin` (default utf-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_encoding: Option<Encoding>,
    /// Run in this session (its cwd and environment apply, and its changes persist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl ExecRequest {
    /// Checks the request for contradictions before anything runs.
    pub fn validate(&self) -> Result<(), ApiError> {
        crate::command::validate_argv_or_shell(self.argv.as_deref(), self.shell.as_deref())?;
        crate::command::validate_env(&self.env)
    }

    pub fn stdin_bytes(&self) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(s) = &self.stdin else {
            return Ok(None);
        };
        let d = Data {
            data: s.clone(),
            encoding: self.stdin_encoding.unwrap_or_default(),
        };
        d.decode()
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("stdin is not valid base64: {e}")))
    }
}

/// JSON reply of exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code, or `None` when the command was ended by a signal.
    pub exit_code: Option<i32>,
    /// Number of the signal that ended the command, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    #[serde(default)]
    pub stdout_encoding: Encoding,
    /// The agent kept only the first part of stdout (its JSON-mode cap, 64 MiB); the rest was
    /// read and dropped. Streamed (SSE) output has no cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    pub stderr: String,
    #[serde(default)]
    pub stderr_encoding: Encoding,
    /// Same for stderr.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    /// The command was killed because it ran past `timeout_ms`.
    #[serde(default)]
    pub timed_out: bool,
}

impl ExecResult {
    pub fn stdout_bytes(&self) -> Vec<u8> {
        Data {
            data: self.stdout.clone(),
            encoding: self.stdout_encoding,
        }
        .decode()
        .unwrap_or_default()
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        Data {
            data: self.stderr.clone(),
            encoding: self.stderr_encoding,
        }
        .decode()
        .unwrap_or_default()
    }
}

/// SSE events of a streamed exec (`Accept: text/event-stream`). The SSE event name is the
/// variant name (`start`, `stdout`, `stderr`, `exit`, `error`), the data the JSON below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartEvent {
    pub pid: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitEvent {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    #[serde(default)]
    pub timed_out: bool,
}
