//! Shared helpers: the real agent router driven in-process.
#![allow(dead_code)]

use std::collections::BTreeMap;

use axum::body::Body;
use axum::Router;
use bothy_agent::{router, AgentState};
use bothy_api::agent::AgentConfig;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

/// The agent's router with the given sandbox environment. Starts the reaper on this test's
/// runtime (every child must be reaped by it).
pub fn app_with_env(env: BTreeMap<String, String>) -> Router {
    bothy_agent::reaper::start().expect("start the reaper");
    router(AgentState::new(AgentConfig {
        name: "test".into(),
        env,
        state_dir: std::env::temp_dir()
            .join("bothy-agent-test-state")
            .to_string_lossy()
            .into(),
    }))
}

pub fn app() -> Router {
    app_with_env(BTreeMap::new())
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// Sends a JSON request and parses the JSON reply (an empty reply is `null`).
pub async fn json(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, bytes) = send(app, req).await;
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, v)
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (status, _, bytes) = get(app, uri).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Percent-encodes a path for a query string.
pub fn q(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `pid` is gone or a zombie (dead, waiting for whoever reaps it).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')),
    }
}

/// Polls `cond` until it holds or `ms` milliseconds pass.
pub async fn wait_until(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub fn read_pid(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// An agent with a state directory of its own (in `dir`, which it outlives only as long as the
/// directory does), and the sandbox environment `SANDBOX_VAR=sv`.
pub struct Agent {
    pub app: Router,
    pub dir: tempfile::TempDir,
}

/// An agent whose state lives under `dir` (pass the directory of an earlier agent to see what
/// survives a restart).
pub fn agent_in(dir: tempfile::TempDir) -> Agent {
    let cfg = AgentConfig {
        name: "t".into(),
        env: [("SANDBOX_VAR".to_string(), "sv".to_string())].into(),
        state_dir: dir.path().join("state").to_string_lossy().into_owned(),
    };
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    Agent {
        app: router(AgentState::new(cfg)),
        dir,
    }
}

/// A fresh agent (and the reaper on this test's runtime).
pub fn agent() -> Agent {
    bothy_agent::reaper::start().unwrap();
    agent_in(tempfile::tempdir().unwrap())
}

impl Agent {
    /// Sends a request with an optional JSON body and parses the JSON reply (empty is `null`).
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        let (status, _, bytes) = send(&self.app, req).await;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, v)
    }
}
