//! File watching: `GET /v1/watch` (SSE) and `GET /v1/watch/changes` (polling).
//!
//! inotify inside the sandbox, one instance per agent ([`hub`]); every watch keeps a numbered
//! event log ([`log`]) that clients follow by cursor, so a client can reconnect and resume, and
//! a client that falls behind is told (`overflow`) instead of silently losing events. Wire types
//! are in [`bothy_api::watch`].
//!
//! Lifetime of server-side state: a watch (its inotify watches and its log of the last
//! [`log::LOG_CAPACITY`] events) lives while a stream is open on it and for [`hub::IDLE_TTL`]
//! after the last stream closed or the last poll. A cursor resumes exactly while its watch lives
//! and its events are still in the log; otherwise the client gets `resync`. The log lives in
//! memory: it does not survive sleep (the agent restarts), and a cursor from before gets
//! `resync` with reason `unknown_cursor`.

pub mod filter;
pub mod hub;
pub mod log;
mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bothy_api::watch::{WatchChanges, WatchEvent, WatchEventKind, DEFAULT_EXCLUDES};
use bothy_api::ErrorCode;

use crate::error::AgentError;
use crate::server::AgentState;
use filter::{ClientFilter, Globs};
use hub::{Hub, HubError};
use log::{message_for, Cursor, Reader, Watch, WatchKey};

/// Default and largest `limit` of a poll.
const POLL_LIMIT: usize = 1_000;
const POLL_LIMIT_MAX: usize = 10_000;
/// Longest long-poll.
const POLL_WAIT_MAX: Duration = Duration::from_secs(60);

/// The routes of this module.
pub fn routes(_state: &AgentState) -> Router {
    let svc = Arc::new(WatchService::default());
    Router::new()
        .route("/v1/watch", get(watch_stream))
        .route("/v1/watch/changes", get(watch_changes))
        .with_state(svc)
}

/// Starts the hub on first use (no inotify instance for agents that never watch).
#[derive(Default)]
pub struct WatchService {
    hub: Mutex<Option<Arc<Hub>>>,
}

impl WatchService {
    fn hub(&self) -> Result<Arc<Hub>, AgentError> {
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hub.as_ref().filter(|h| h.is_alive()) {
            return Ok(h.clone());
        }
        let h = Arc::new(Hub::start().map_err(hub_error)?);
        *hub = Some(h.clone());
        Ok(h)
    }

    /// Opens or resumes the watch a request names: the reader to follow, and the events that
    /// come first (`ready`, then `resync` when the cursor cannot be honoured).
    async fn attach(&self, p: &Params) -> Result<(Reader, Vec<WatchEvent>), AgentError> {
        let hub = self.hub()?;
        let client = ClientFilter::new(&p.include, p.events.as_deref())
            .map_err(|e| AgentError::invalid(e.to_string()))?;
        let excludes = Globs::new(&p.exclude).map_err(|e| AgentError::invalid(e.to_string()))?;
        let lexical = bothy_api::path::normalize(&p.path)?;

        let cursor = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
                AgentError::invalid(format!(
                    "malformed cursor {c:?}: give back a cursor a previous event carried"
                ))
            })?),
        };
        let key_matches = |w: &Watch, root: &std::path::Path| {
            w.key.root == root && w.key.recursive == p.recursive && w.key.excludes == p.exclude
        };

        // Resume: by id, even if the directory is gone (the client still gets what it missed,
        // up to `stopped`).
        if let Some(c) = &cursor {
            if let Some(w) = hub.acquire_id(&c.watch_id) {
                let root = std::fs::canonicalize(&lexical)
                    .unwrap_or_else(|_| std::path::PathBuf::from(&lexical));
                if key_matches(&w, &root) || key_matches(&w, std::path::Path::new(&lexical)) {
                    if w.holds_after(c.seq) {
                        let mut ready = w.control(WatchEventKind::Ready, c.seq, None, None);
                        ready.resumed = Some(true);
                        return Ok((Reader::new(w, c.seq, client), vec![ready]));
                    }
                    let head = w.head();
                    let mut ready = w.control(WatchEventKind::Ready, head, None, None);
                    ready.resumed = Some(false);
                    let resync = w.control(
                        WatchEventKind::Resync,
                        head,
                        Some("expired"),
                        Some(message_for("expired")),
                    );
                    return Ok((Reader::new(w, head, client), vec![ready, resync]));
                }
                // Not this watch's cursor: release it and open the right one.
                drop(Reader::new(w, 0, client.clone()));
            }
        }

        let root = resolve_dir(&lexical)?;
        let key = WatchKey {
            root,
            recursive: p.recursive,
            excludes: p.exclude.clone(),
        };
        let w = hub.open(key, excludes).await.map_err(hub_error)?;
        let head = w.head();
        let mut ready = w.control(WatchEventKind::Ready, head, None, None);
        ready.resumed = Some(false);
        let mut first = vec![ready];
        if cursor.is_some() {
            first.push(w.control(
                WatchEventKind::Resync,
                head,
                Some("unknown_cursor"),
                Some(message_for("unknown_cursor")),
            ));
        }
        Ok((Reader::new(w, head, client), first))
    }
}

/// The watched directory: canonical, existing, a directory.
fn resolve_dir(lexical: &str) -> Result<std::path::PathBuf, AgentError> {
    let root = std::fs::canonicalize(lexical).map_err(|e| AgentError::io(lexical, &e))?;
    let meta = std::fs::metadata(&root).map_err(|e| AgentError::io(lexical, &e))?;
    if !meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::NotADirectory,
            format!("{lexical}: not a directory (watch a directory; its files are reported)"),
        ));
    }
    Ok(root)
}

fn hub_error(e: HubError) -> AgentError {
    match &e {
        HubError::Root { path, source } => {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                AgentError::new(
                    ErrorCode::SandboxUnavailable,
                    format!("cannot watch {path}: the inotify watch limit is reached"),
                )
            } else {
                AgentError::io(path, source)
            }
        }
        HubError::Start(source) => AgentError::new(
            ErrorCode::SandboxUnavailable,
            format!("cannot start file watching: {source} (inotify instances exhausted?)"),
        ),
        HubError::TooMany => AgentError::new(ErrorCode::SandboxUnavailable, e.to_string()),
        HubError::Gone => AgentError::internal(e.to_string()),
    }
}

/// Query parameters of both endpoints.
#[derive(Debug, Clone)]
struct Params {
    path: String,
    recursive: bool,
    include: Vec<String>,
    /// Sorted; the defaults unless the client gave `exclude` (an empty value disables them).
    exclude: Vec<String>,
    events: Option<String>,
    cursor: Option<String>,
    limit: usize,
    wait: Duration,
}

impl Params {
    fn parse(uri: &http::Uri, headers: &http::HeaderMap) -> Result<Self, AgentError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map_err(|e| AgentError::invalid(format!("malformed query: {e}")))?;
        let mut p = Params {
            path: bothy_api::WORKSPACE.to_string(),
            recursive: true,
            include: Vec::new(),
            exclude: Vec::new(),
            events: None,
            cursor: None,
            limit: POLL_LIMIT,
            wait: Duration::ZERO,
        };
        let mut exclude_given = false;
        let bool_of = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(AgentError::invalid(format!(
                "{k} must be true or false, not {v:?}"
            ))),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "path" => p.path = v,
                "recursive" => p.recursive = bool_of(&k, &v)?,
                "include" => p.include.push(v),
                "exclude" => {
                    exclude_given = true;
                    if !v.is_empty() {
                        p.exclude.push(v);
                    }
                }
                "events" => p.events = Some(v),
                "cursor" => p.cursor = Some(v),
                "limit" => {
                    p.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=POLL_LIMIT_MAX).contains(n))
                        .ok_or_else(|| {
                            AgentError::invalid(format!("limit must be 1..={POLL_LIMIT_MAX}"))
                        })?
                }
                "wait_ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        AgentError::invalid("wait_ms must be a number of milliseconds")
                    })?;
                    p.wait = Duration::from_millis(ms).min(POLL_WAIT_MAX);
                }
                other => {
                    return Err(AgentError::invalid(format!(
                        "unknown parameter {other:?} (path, recursive, include, exclude, events, cursor, limit, wait_ms)"
                    )))
                }
            }
        }
        if !exclude_given {
            p.exclude = DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect();
        }
        p.exclude.sort();
        p.exclude.dedup();
        if p.cursor.is_none() {
            p.cursor = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        Ok(p)
    }
}

async fn watch_stream(
    State(svc): State<Arc<WatchService>>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Result<Response, AgentError> {
    let p = Params::parse(&uri, &headers)?;
    let (reader, first) = svc.attach(&p).await?;
    Ok(stream::sse(reader, first))
}

async fn watch_changes(
    State(svc): State<Arc<WatchService>>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Result<Response, AgentError> {
    let p = Params::parse(&uri, &headers)?;
    let resuming = p.cursor.is_some();
    let (mut reader, first) = svc.attach(&p).await?;
    // A poll that resumes normally starts with the events; `ready` is for the first poll.
    let mut events: Vec<WatchEvent> = if resuming && first.len() == 1 {
        Vec::new()
    } else {
        first
    };
    let mut rx = reader.watch.subscribe();
    rx.borrow_and_update();
    events.extend(reader.read(p.limit.saturating_sub(events.len()).max(1)));
    if events.is_empty() && !p.wait.is_zero() && !reader.done {
        let deadline = tokio::time::Instant::now() + p.wait;
        while events.is_empty() && !reader.done {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
            rx.borrow_and_update();
            events.extend(reader.read(p.limit));
        }
    }
    let reply = WatchChanges {
        cursor: reader.watch.cursor(reader.pos),
        more: !reader.done && reader.behind(),
        events,
    };
    Ok(axum::Json(reply).into_response())
}
