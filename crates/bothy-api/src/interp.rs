//! Code interpreter contexts: `/v1/sandboxes/{name}/contexts` and `/v1/sandboxes/{name}/run`.
//!
//! A context is one long-lived interpreter (Python, or Node.js for JavaScript and TypeScript)
//! whose variables, imports and working directory persist between runs. A run streams
//! [`RunEvent`]s as server-sent events (the event name is the variant's `type`), or answers one
//! [`RunResult`] when the caller does not ask for `text/event-stream`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ApiError, Data, Encoding};

/// Language of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[serde(alias = "py", alias = "python3")]
    Python,
    #[serde(alias = "js", alias = "node")]
    Javascript,
    #[serde(alias = "ts")]
    Typescript,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Python, Language::Javascript, Language::Typescript];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Typescript => "typescript",
        }
    }

    /// Parses a name as the API accepts it (`python`, `py`, `javascript`, `js`, `node`,
    /// `typescript`, `ts`).
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).ok()
    }

    /// The language a file name suggests, by extension.
    pub fn from_extension(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1;
        match ext {
            "py" => Some(Language::Python),
            "js" | "mjs" | "cjs" => Some(Language::Javascript),
            "ts" | "mts" | "cts" => Some(Language::Typescript),
            _ => None,
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /contexts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContextRequest {
    pub language: Language,
    /// Working directory of the interpreter; relative to `/workspace` unless absolute.
    /// Default `/workspace`. It must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment of the interpreter, on top of the sandbox's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl CreateContextRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_env(&self.env)
    }
}

use crate::command::validate_env;

/// A context as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub id: String,
    pub language: Language,
    /// Absolute working directory the interpreter started in.
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Runs so far since the interpreter (re)started.
    pub execution_count: u64,
    /// Whether the interpreter process is alive (a context whose process died or was stopped by
    /// sleep starts a fresh one on its next run).
    pub running: bool,
    /// Whether this is the default context of its language (used by runs without a context).
    #[serde(default)]
    pub default: bool,
}

/// Body of `POST /contexts/{id}/run` and of `POST /run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub code: String,
    /// For `POST /run`: the language whose default context runs the code (default python).
    /// Ignored when `context` is given, except that it must then match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// For `POST /run`: the context to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Interrupt the run after this many milliseconds. The context survives when the language
    /// can interrupt the code; otherwise it is restarted and the caller told so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The code ran to the end.
    Ok,
    /// The code raised an error.
    Error,
    /// The timeout interrupted the code.
    Timeout,
    /// The client went away and the run was interrupted.
    Interrupted,
    /// The interpreter died during the run.
    Crashed,
}

/// One rich output: whatever representations the object provides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RichResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// SVG document text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    /// PNG bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    /// JPEG bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// True for the value of the cell's last expression; false for `display()` calls and
    /// captured figures.
    #[serde(default)]
    pub is_main_result: bool,
}

/// An error raised by the code (or a timeout).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// Exception class, e.g. `ZeroDivisionError`, `TypeError`, `TimeoutError`.
    pub name: String,
    pub value: String,
    /// Plain text, no terminal colour codes.
    pub traceback: String,
    /// The context had to be restarted: its state is gone.
    #[serde(default)]
    pub restarted: bool,
}

/// Start of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub context: String,
    pub language: Language,
    pub execution_count: u64,
    /// A fresh interpreter was started for this run (the previous one had died or slept).
    #[serde(default)]
    pub fresh: bool,
}

/// Final event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub execution_count: u64,
    pub duration_ms: u64,
    pub status: RunStatus,
    /// The context was restarted at the end of this run (timeout that could not interrupt,
    /// crash): its state is gone.
    #[serde(default)]
    pub restarted: bool,
}

/// The events of a run, in order: `start`, any number of `stdout`/`stderr`/`result`, at most
/// one `error`, and `end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    Start(RunStart),
    Stdout(Data),
    Stderr(Data),
    Result(RichResult),
    Error(RunError),
    End(RunEnd),
}

impl RunEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Start(_) => "start",
            RunEvent::Stdout(_) => "stdout",
            RunEvent::Stderr(_) => "stderr",
            RunEvent::Result(_) => "result",
            RunEvent::Error(_) => "error",
            RunEvent::End(_) => "end",
        }
    }
}

/// JSON reply of a run when the caller does not stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub context: String,
    pub language: Language,
    pub stdout: String,
    #[serde(default)]
    pub stdout_encoding: Encoding,
    pub stderr: String,
    #[serde(default)]
    pub stderr_encoding: Encoding,
    pub results: Vec<RichResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    pub execution_count: u64,
    pub duration_ms: u64,
    pub status: RunStatus,
    #[serde(default)]
    pub restarted: bool,
}

impl RunResult {
    /// Folds a run's events into the blocking reply.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> Option<Self> {
        let mut out: Vec<u8> = Vec::new();
        let mut err: Vec<u8> = Vec::new();
        let mut results = Vec::new();
        let mut error = None;
        let mut start = None;
        let mut end = None;
        for ev in events {
            match ev {
                RunEvent::Start(s) => start = Some(s.clone()),
                RunEvent::Stdout(d) => out.extend(d.decode().unwrap_or_default()),
                RunEvent::Stderr(d) => err.extend(d.decode().unwrap_or_default()),
                RunEvent::Result(r) => results.push(r.clone()),
                RunEvent::Error(e) => error = Some(e.clone()),
                RunEvent::End(e) => end = Some(e.clone()),
            }
        }
        let (start, end) = (start?, end?);
        let (o, e) = (Data::encode(&out), Data::encode(&err));
        Some(Self {
            context: start.context,
            language: start.language,
            stdout: o.data,
            stdout_encoding: o.encoding,
            stderr: e.data,
            stderr_encoding: e.encoding,
            results,
            error,
            execution_count: end.execution_count,
            duration_ms: end.duration_ms,
            status: end.status,
            restarted: end.restarted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_with_aliases() {
        assert_eq!(Language::parse("py"), Some(Language::Python));
        assert_eq!(Language::parse("JS"), Some(Language::Javascript));
        assert_eq!(Language::parse("typescript"), Some(Language::Typescript));
        assert_eq!(Language::parse("ruby"), None);
        assert_eq!(
            Language::from_extension("a/b.ts"),
            Some(Language::Typescript)
        );
        assert_eq!(Language::from_extension("x"), None);
    }

    #[test]
    fn events_are_tagged_by_type() {
        let ev = RunEvent::Stdout(Data::encode(b"hi\n"));
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "stdout", "data": "hi\n", "encoding": "utf-8"})
        );
        let back: RunEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
        assert_eq!(ev.name(), "stdout");
    }

    #[test]
    fn folds_events_into_a_result() {
        let evs = [
            RunEvent::Start(RunStart {
                context: "c".into(),
                language: Language::Python,
                execution_count: 1,
                fresh: false,
            }),
            RunEvent::Stdout(Data::encode(b"a")),
            RunEvent::Stdout(Data::encode(b"b")),
            RunEvent::Result(RichResult {
                text: Some("2".into()),
                is_main_result: true,
                ..Default::default()
            }),
            RunEvent::End(RunEnd {
                execution_count: 1,
                duration_ms: 3,
                status: RunStatus::Ok,
                restarted: false,
            }),
        ];
        let r = RunResult::from_events(&evs).unwrap();
        assert_eq!(r.stdout, "ab");
        assert_eq!(r.results.len(), 1);
        assert_eq!(r.status, RunStatus::Ok);
    }

    #[test]
    fn rejects_bad_env() {
        let mut r = CreateContextRequest {
            language: Language::Python,
            cwd: None,
            env: BTreeMap::new(),
        };
        assert!(r.validate().is_ok());
        r.env.insert("A=B".into(), "x".into());
        assert!(r.validate().is_err());
    }
}
