//! `POST /v1/git/checkout`: `git clone` inside the sandbox, progress streamed as it comes.
//!
//! git runs as an ordinary command of the sandbox (through [`crate::exec::Running`], so it is
//! reaped, and killed with its whole tree if the client goes away). Its network traffic takes
//! the sandbox's route: in `proxy` mode through the daemon's egress proxy, where a rule can add
//! the git host's credentials. Nothing here ever sees a credential.
//!
//! Hardening: the URL and branch may not start with `-` (no option injection; the URL also
//! comes after `--`), `GIT_ALLOW_PROTOCOL` limits transports to http, https, ssh and git (no
//! `ext::` command transport, no `file://` into other paths), and `GIT_TERMINAL_PROMPT=0` makes
//! a missing credential fail at once instead of waiting for a prompt nobody answers.

mod classify;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bothy_api::git::{default_dir, CheckoutDone, CheckoutRequest};
use bothy_api::{ApiError, Data, ErrorCode};
use bytes::Bytes;
use futures_util::Stream;

use crate::error::{AgentError, Json};
use crate::exec::{Event, Running, Spec};
use crate::server::AgentState;
use crate::sse;

/// How much of git's output is kept to explain a failure.
const TAIL_BYTES: usize = 8 * 1024;

pub fn routes(state: &AgentState) -> Router {
    Router::new()
        .route("/v1/git/checkout", post(checkout))
        .with_state(state.clone())
}

async fn checkout(
    State(state): State<AgentState>,
    headers: http::HeaderMap,
    Json(req): Json<CheckoutRequest>,
) -> Result<Response, AgentError> {
    let plan = Plan::new(&req)?;
    let env = crate::env::merged([&state.sandbox_env()]);
    if !on_path("git", env.get("PATH").map(String::as_str).unwrap_or("")) {
        return Err(AgentError::new(
            ErrorCode::RuntimeNotFound,
            "git is not installed in this sandbox (no `git` on its PATH)",
        ));
    }
    let mut env = env;
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    env.insert("GIT_ALLOW_PROTOCOL".into(), "http:https:ssh:git".into());
    // No credential helper of the image: credentials come from the proxy, or not at all.
    env.insert("GIT_CONFIG_NOSYSTEM".into(), "1".into());
    let running = Running::start(Spec {
        argv: plan.argv(),
        env: env.clone(),
        cwd: plan.cwd.clone(),
        stdin: None,
        timeout: None,
    })?;
    let stream = run(running, plan, env);
    if sse::wants_sse(&headers) {
        Ok(sse::response(stream))
    } else {
        // One JSON reply: the last event decides.
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(stream_outcomes(stream));
        let mut last = None;
        while let Some(o) = stream.next().await {
            last = Some(o);
        }
        match last {
            Some(Ok(done)) => Ok(axum::Json(done).into_response()),
            Some(Err(e)) => Err(AgentError(e)),
            None => Err(AgentError::internal("git produced no result")),
        }
    }
}

/// What to run, checked.
struct Plan {
    url: String,
    branch: Option<String>,
    depth: Option<u32>,
    /// Absolute target directory.
    dir: String,
    cwd: String,
}

impl Plan {
    fn new(req: &CheckoutRequest) -> Result<Self, AgentError> {
        let url = req.url.trim();
        if url.is_empty() {
            return Err(AgentError::invalid("url is required"));
        }
        if url.starts_with('-') || url.contains(['\0', '\n']) {
            return Err(AgentError::invalid(format!(
                "{url:?} is not a repository URL"
            )));
        }
        let lower = url.to_ascii_lowercase();
        let scheme_ok = ["https://", "http://", "ssh://", "git://"]
            .iter()
            .any(|s| lower.starts_with(s))
            || (!lower.contains("://") && url.contains('@') && url.contains(':'));
        if !scheme_ok {
            return Err(AgentError::invalid(format!(
                "{url:?}: only https://, http://, ssh://, git:// and user@host:path URLs can be cloned"
            )));
        }
        if let Some(b) = &req.branch {
            if b.is_empty() || b.starts_with('-') || b.contains(['\0', '\n', ' ']) {
                return Err(AgentError::invalid(format!("{b:?} is not a branch name")));
            }
        }
        if req.depth == Some(0) {
            return Err(AgentError::invalid("depth must be at least 1"));
        }
        let dir = match &req.dir {
            Some(d) => d.clone(),
            None => default_dir(url).ok_or_else(|| {
                AgentError::invalid(format!(
                    "cannot tell a directory name from {url:?}; give `dir`"
                ))
            })?,
        };
        let dir = bothy_api::path::normalize(&dir)?;
        if dir == "/" {
            return Err(AgentError::invalid("refusing to clone into /"));
        }
        match std::fs::read_dir(&dir) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(AgentError::new(
                        ErrorCode::AlreadyExists,
                        format!("{dir} exists and is not empty"),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(AgentError::new(
                    ErrorCode::AlreadyExists,
                    format!("{dir} exists and is not a directory"),
                ));
            }
            Err(e) => return Err(AgentError::io(&dir, &e)),
        }
        let cwd = if std::path::Path::new(bothy_api::WORKSPACE).is_dir() {
            bothy_api::WORKSPACE.to_string()
        } else {
            "/".to_string()
        };
        Ok(Self {
            url: url.to_string(),
            branch: req.branch.clone(),
            depth: req.depth,
            dir,
            cwd,
        })
    }

    fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["git".into(), "clone".into(), "--progress".into()];
        if let Some(b) = &self.branch {
            a.push("--branch".into());
            a.push(b.clone());
        }
        if let Some(d) = self.depth {
            a.push("--depth".into());
            a.push(d.to_string());
        }
        a.push("--".into());
        a.push(self.url.clone());
        a.push(self.dir.clone());
        a
    }
}

/// The SSE stream of a running clone: `progress` events, then `done` or `error`.
fn run(
    mut running: Running,
    plan: Plan,
    env: std::collections::BTreeMap<String, String>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    async_stream(move |tx| async move {
        let mut tail: Vec<u8> = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut exit = None;
        while let Some(ev) = running.next().await {
            match ev {
                Event::Stdout(b) | Event::Stderr(b) => {
                    tail.extend_from_slice(&b);
                    if tail.len() > TAIL_BYTES {
                        tail.drain(..tail.len() - TAIL_BYTES);
                    }
                    pending.extend_from_slice(&b);
                    let cut = bothy_api::data::split_incomplete_utf8(&pending);
                    let data = Data::encode(&pending[..cut]);
                    let rest = pending[cut..].to_vec();
                    if tx
                        .send(sse::event("progress", &serde_json::json!({ "data": data })))
                        .await
                        .is_err()
                    {
                        return; // client gone: dropping `running` kills git
                    }
                    pending = rest;
                }
                Event::Error(e) => {
                    let _ = tx.send(sse::event("error", &e)).await;
                    return;
                }
                Event::Exit(x) => exit = Some(x),
            }
        }
        let ok = exit.as_ref().is_some_and(|x| x.exit_code == Some(0));
        let ev = if ok {
            match finish(&plan, &env).await {
                Ok(done) => sse::event("done", &done),
                Err(e) => sse::event("error", &e),
            }
        } else {
            sse::event("error", &classify::failure(&plan.url, &tail))
        };
        let _ = tx.send(ev).await;
    })
}

/// After a successful clone: which commit and branch were checked out.
async fn finish(
    plan: &Plan,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<CheckoutDone, ApiError> {
    let commit = git_output(&plan.dir, &["rev-parse", "--verify", "-q", "HEAD"], env)
        .await
        .unwrap_or_default();
    let branch = git_output(&plan.dir, &["symbolic-ref", "-q", "--short", "HEAD"], env)
        .await
        .filter(|b| !b.is_empty());
    Ok(CheckoutDone {
        dir: plan.dir.clone(),
        commit,
        branch,
    })
}

/// The trimmed stdout of `git -C dir ARGS`, if it exits 0.
async fn git_output(
    dir: &str,
    args: &[&str],
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let mut argv: Vec<String> = vec!["git".into(), "-C".into(), dir.into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut r = Running::start(Spec {
        argv,
        env: env.clone(),
        cwd: dir.to_string(),
        stdin: None,
        timeout: Some(std::time::Duration::from_secs(30)),
    })
    .ok()?;
    let mut out = Vec::new();
    let mut code = None;
    while let Some(ev) = r.next().await {
        match ev {
            Event::Stdout(b) => out.extend_from_slice(&b),
            Event::Exit(x) => code = x.exit_code,
            _ => {}
        }
    }
    (code == Some(0)).then(|| String::from_utf8_lossy(&out).trim().to_string())
}

/// Turns the SSE stream back into outcomes (for the plain JSON reply).
fn stream_outcomes(
    s: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> impl Stream<Item = Result<CheckoutDone, ApiError>> {
    use futures_util::StreamExt;
    s.filter_map(|chunk| async move {
        let chunk = chunk.ok()?;
        let text = std::str::from_utf8(&chunk).ok()?;
        let name = text.strip_prefix("event: ")?.split('\n').next()?;
        let data = text.split("\ndata: ").nth(1)?.trim_end();
        match name {
            "done" => serde_json::from_str(data).ok().map(Ok),
            "error" => serde_json::from_str(data).ok().map(Err),
            _ => None,
        }
    })
}

/// A stream fed by a task through a small channel (backpressure: git's output is read no
/// faster than the client takes it).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// Whether `prog` is an executable file in one of `path`'s directories.
fn on_path(prog: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').filter(|d| !d.is_empty()).any(|d| {
        std::fs::metadata(std::path::Path::new(d).join(prog))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str) -> CheckoutRequest {
        CheckoutRequest {
            url: url.into(),
            dir: Some("/tmp/bothy-git-plan-test-does-not-exist".into()),
            ..Default::default()
        }
    }

    #[test]
    fn plans_refuse_dangerous_input() {
        assert!(Plan::new(&req("https://h/r.git")).is_ok());
        assert!(Plan::new(&req("git@h:o/r.git")).is_ok());
        for bad in [
            "",
            "--upload-pack=sh",
            "ext::sh -c x",
            "file:///etc",
            "/etc/passwd",
        ] {
            assert!(Plan::new(&req(bad)).is_err(), "{bad}");
        }
        let mut r = req("https://h/r.git");
        r.branch = Some("--foo".into());
        assert!(Plan::new(&r).is_err());
        r.branch = None;
        r.depth = Some(0);
        assert!(Plan::new(&r).is_err());
        let mut r = req("https://h/r.git");
        r.dir = Some("/".into());
        assert!(Plan::new(&r).is_err());
    }

    #[test]
    fn argv_ends_with_url_after_dashdash() {
        let mut r = req("https://h/r.git");
        r.branch = Some("main".into());
        r.depth = Some(1);
        let a = Plan::new(&r).unwrap().argv();
        assert_eq!(
            a[..],
            [
                "git",
                "clone",
                "--progress",
                "--branch",
                "main",
                "--depth",
                "1",
                "--",
                "https://h/r.git",
                "/tmp/bothy-git-plan-test-does-not-exist"
            ]
        );
    }
}
