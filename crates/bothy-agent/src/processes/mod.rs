//! Background processes (`/v1/processes`): detached commands whose records and byte-exact,
//! capped logs live under `state_dir/processes/`, with kill (whole tree), stdin, log reads
//! and cursor-resumable SSE streams, and readiness waits (log line, port, exit).
//!
//! - [`logs`]: the capped, segmented on-disk log and its cursors.
//! - [`manager`]: records, spawning and supervision, kill, stdin, recovery on wake.
//! - [`wait`]: the readiness waits.
//! - this file: the HTTP handlers.

pub mod logs;
pub mod manager;
pub mod wait;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bothy_api::process::{
    KillRequest, LogChunkEvent, LogExitEvent, LogTruncatedEvent, ProcessInfo, ProcessList,
    ProcessLogs, ProcessStart, ProcessStatus, StdinWrite, WaitExit, WaitLog, WaitLogResult,
    WaitPort, WaitPortResult,
};
use bothy_api::Data;
use bytes::Bytes;
use serde::Deserialize;

use crate::error::{AgentError, Json};
use crate::server::AgentState;
use logs::Stream;
use manager::{Proc, Processes};

/// How much output one SSE read takes from disk at a time.
const SSE_READ: u64 = 256 * 1024;
/// A comment is sent on an idle stream this often, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Routes under `/v1/processes`. Loading recovers the records of a previous agent and starts
/// `on-wake` services.
pub fn routes(state: &AgentState) -> Router {
    let procs = Processes::load(state);
    Router::new()
        .route("/v1/processes", get(list).post(start))
        .route("/v1/processes/{id}", get(show).delete(remove))
        .route("/v1/processes/{id}/kill", post(kill))
        .route("/v1/processes/{id}/stdin", post(stdin))
        .route("/v1/processes/{id}/logs", get(logs))
        .route("/v1/processes/{id}/wait/log", post(wait_log))
        .route("/v1/processes/{id}/wait/port", post(wait_port))
        .route("/v1/processes/{id}/wait/exit", post(wait_exit))
        .with_state(procs)
}

type J<T> = axum::Json<T>;

async fn start(
    State(p): State<Processes>,
    Json(req): Json<ProcessStart>,
) -> Result<(StatusCode, J<ProcessInfo>), AgentError> {
    Ok((StatusCode::CREATED, axum::Json(p.start(req)?)))
}

async fn list(State(p): State<Processes>) -> J<ProcessList> {
    axum::Json(ProcessList {
        processes: p.list(),
    })
}

async fn show(
    State(p): State<Processes>,
    Path(id): Path<String>,
) -> Result<J<ProcessInfo>, AgentError> {
    Ok(axum::Json(p.get(&id)?.info()))
}

async fn remove(
    State(p): State<Processes>,
    Path(id): Path<String>,
) -> Result<StatusCode, AgentError> {
    p.remove(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(p): State<Processes>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<J<ProcessInfo>, AgentError> {
    let body: KillRequest = optional_json(&body)?;
    let name = body.signal.unwrap_or_else(|| "TERM".into());
    let sig = crate::proctree::parse_signal(&name)
        .ok_or_else(|| AgentError::invalid(format!("unknown signal {name:?}")))?;
    Ok(axum::Json(p.kill(&id, sig)?))
}

async fn stdin(
    State(p): State<Processes>,
    Path(id): Path<String>,
    Json(req): Json<StdinWrite>,
) -> Result<StatusCode, AgentError> {
    let bytes = Data {
        data: req.data,
        encoding: req.encoding,
    }
    .decode()
    .map_err(|e| AgentError::invalid(format!("data is not valid base64: {e}")))?;
    p.write_stdin(&id, &bytes, req.eof).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LogsQuery {
    since: Option<u64>,
}

async fn logs(
    State(p): State<Processes>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let proc_ = p.get(&id)?;
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let since = q.since.or(last_event).unwrap_or(0);
    let end = proc_.logs.end();
    if since > end {
        return Err(AgentError::invalid(format!(
            "since={since} is past the end of the output ({end})"
        )));
    }
    if crate::sse::wants_sse(&headers) {
        return Ok(crate::sse::response(log_stream(proc_, since)));
    }
    // A status read before the output, so the output is complete when the status says ended.
    let status = proc_.status();
    let r = proc_
        .logs
        .read(since, u64::MAX)
        .map_err(|e| AgentError::internal(format!("read log: {e}")))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for c in &r.chunks {
        match c.stream {
            Stream::Stdout => out.extend_from_slice(&c.data),
            Stream::Stderr => err.extend_from_slice(&c.data),
        }
    }
    Ok(axum::Json(ProcessLogs {
        stdout: Data::encode(&out),
        stderr: Data::encode(&err),
        dropped_bytes: r.dropped,
        cursor: r.next,
        status,
    })
    .into_response())
}

/// The SSE stream of a process's output from `since`, ending with `exit` once the process
/// ended and everything was sent.
fn log_stream(
    p: Arc<Proc>,
    since: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        p: Arc<Proc>,
        cursor: u64,
        pending: VecDeque<Bytes>,
        done: bool,
        ends: tokio::sync::watch::Receiver<u64>,
        changed: tokio::sync::watch::Receiver<u64>,
    }
    let st = St {
        ends: p.logs.subscribe(),
        changed: p.subscribe(),
        p,
        cursor: since,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok(b), st));
            }
            if st.done {
                return None;
            }
            st.ends.borrow_and_update();
            st.changed.borrow_and_update();
            let ended = st.p.status() != ProcessStatus::Running;
            let r = match st.p.logs.read(st.cursor, SSE_READ) {
                Ok(r) => r,
                Err(e) => {
                    st.done = true;
                    let e = bothy_api::ApiError::internal(format!("read log: {e}"));
                    return Some((Ok(crate::sse::event("error", &e)), st));
                }
            };
            if r.dropped > 0 {
                let cursor = st.cursor + r.dropped;
                st.pending.push_back(crate::sse::event_with_id(
                    "truncated",
                    &cursor.to_string(),
                    &LogTruncatedEvent {
                        dropped_bytes: r.dropped,
                        cursor,
                    },
                ));
            }
            let got = !r.chunks.is_empty();
            for c in r.chunks {
                let d = Data::encode(&c.data);
                st.pending.push_back(crate::sse::event_with_id(
                    c.stream.name(),
                    &c.cursor.to_string(),
                    &LogChunkEvent {
                        data: d.data,
                        encoding: d.encoding,
                        cursor: c.cursor,
                    },
                ));
            }
            st.cursor = r.next;
            if got || r.dropped > 0 {
                continue;
            }
            if ended {
                let i = st.p.info();
                st.pending.push_back(crate::sse::event_with_id(
                    "exit",
                    &st.cursor.to_string(),
                    &LogExitEvent {
                        status: i.status,
                        exit_code: i.exit_code,
                        signal: i.signal,
                        reason: i.reason,
                        cursor: st.cursor,
                    },
                ));
                st.done = true;
                continue;
            }
            let woke = tokio::time::timeout(KEEPALIVE, async {
                tokio::select! {
                    _ = st.ends.changed() => {}
                    _ = st.changed.changed() => {}
                }
            })
            .await;
            if woke.is_err() {
                return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
            }
        }
    })
}

async fn wait_log(
    State(p): State<Processes>,
    Path(id): Path<String>,
    Json(req): Json<WaitLog>,
) -> Result<J<WaitLogResult>, AgentError> {
    let proc_ = p.get(&id)?;
    Ok(axum::Json(
        wait::log(proc_, &req.pattern, req.stream, req.timeout_ms).await?,
    ))
}

async fn wait_port(
    State(p): State<Processes>,
    Path(id): Path<String>,
    Json(req): Json<WaitPort>,
) -> Result<J<WaitPortResult>, AgentError> {
    let proc_ = p.get(&id)?;
    let check = wait::PortCheck {
        port: req.port,
        http: req.http.map(|h| (h.path, h.status_min, h.status_max)),
        interval: Duration::from_millis(req.interval_ms.unwrap_or(100).clamp(10, 10_000)),
    };
    Ok(axum::Json(wait::port(proc_, check, req.timeout_ms).await?))
}

async fn wait_exit(
    State(p): State<Processes>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<J<ProcessInfo>, AgentError> {
    let proc_ = p.get(&id)?;
    let timeout = optional_json::<WaitExit>(&body)?.timeout_ms;
    Ok(axum::Json(wait::exit(proc_, timeout).await?))
}

/// A JSON body that may be absent (empty means all defaults).
fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        AgentError::new(
            bothy_api::ErrorCode::MalformedJson,
            format!("malformed JSON body: {e}"),
        )
    })
}
