//! `POST /v1/exec` against real processes, through the real router in-process.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use bothy_api::exec::ExecResult;
use bothy_api::Encoding;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

async fn exec(app: &axum::Router, body: Value) -> ExecResult {
    let (status, v) = json(app, "POST", "/v1/exec", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {v}");
    serde_json::from_value(v).expect("an ExecResult")
}

async fn exec_err(app: &axum::Router, body: Value) -> (StatusCode, String, String) {
    let (status, v) = json(app, "POST", "/v1/exec", body).await;
    (
        status,
        v["code"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn output_is_byte_exact() {
    let app = app();
    let r = exec(&app, json!({"argv": ["printf", "\\377\\000a"]})).await;
    assert_eq!(r.stdout_encoding, Encoding::Base64);
    assert_eq!(r.stdout_bytes(), [0xff, 0x00, b'a']);
    assert_eq!(r.exit_code, Some(0));

    let r = exec(&app, json!({"argv": ["printf", "a"]})).await;
    assert_eq!(
        (r.stdout.as_str(), r.stdout_encoding),
        ("a", Encoding::Utf8)
    );
    let r = exec(&app, json!({"argv": ["echo", "a"]})).await;
    assert_eq!(r.stdout, "a\n");
    let r = exec(&app, json!({"shell": "printf 'h\\303\\251\\n\\n'"})).await;
    assert_eq!(r.stdout, "hé\n\n");
}

#[tokio::test]
async fn stderr_is_separate() {
    let app = app();
    let r = exec(&app, json!({"shell": "echo out; echo err >&2; echo out2"})).await;
    assert_eq!(r.stdout, "out\nout2\n");
    assert_eq!(r.stderr, "err\n");
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let app = app();
    let r = exec(&app, json!({"shell": "exit 3"})).await;
    assert_eq!((r.exit_code, r.signal, r.timed_out), (Some(3), None, false));
    let r = exec(&app, json!({"argv": ["false"]})).await;
    assert_eq!(r.exit_code, Some(1));
    let r = exec(&app, json!({"shell": "kill -TERM $$"})).await;
    assert_eq!((r.exit_code, r.signal), (None, Some(libc::SIGTERM)));
}

#[tokio::test]
async fn stdin_text_binary_and_large() {
    let app = app();
    let r = exec(&app, json!({"argv": ["cat"], "stdin": "hello\n"})).await;
    assert_eq!(r.stdout, "hello\n");
    let r = exec(
        &app,
        json!({"argv": ["cat"], "stdin": "/wABYQ==", "stdin_encoding": "base64"}),
    )
    .await;
    assert_eq!(r.stdout_bytes(), [0xff, 0x00, 0x01, b'a']);
    // Without stdin the command reads end of file at once (it does not hang).
    let r = exec(&app, json!({"argv": ["cat"]})).await;
    assert_eq!((r.stdout.as_str(), r.exit_code), ("", Some(0)));
    // Bigger than any pipe buffer both ways: stdin is written while output is read.
    let big = "x".repeat(4 << 20);
    let r = exec(&app, json!({"argv": ["cat"], "stdin": big})).await;
    assert_eq!(r.stdout.len(), 4 << 20);
    assert!(!r.stdout_truncated);
    // A command that does not read its stdin is fine too.
    let r = exec(
        &app,
        json!({"argv": ["true"], "stdin": "y".repeat(1 << 20)}),
    )
    .await;
    assert_eq!(r.exit_code, Some(0));
}

#[tokio::test]
async fn environment_is_layered_on_a_clean_base() {
    let sandbox: BTreeMap<String, String> =
        [("A", "sandbox"), ("B", "sandbox"), ("HOME", "/home/x")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    let app = app_with_env(sandbox);
    let r = exec(
        &app,
        json!({"shell": "echo $A $B $C $HOME $LANG", "env": {"B": "request", "C": "c"}}),
    )
    .await;
    assert_eq!(r.stdout, "sandbox request c /home/x C.UTF-8\n");
    // Nothing leaks from the agent's own environment.
    std::env::var("CARGO_PKG_NAME").expect("cargo sets this for tests");
    let r = exec(&app, json!({"argv": ["env"]})).await;
    assert!(!r.stdout.contains("CARGO"), "{}", r.stdout);
    assert!(r.stdout.contains("PATH=/usr/local/sbin:"), "{}", r.stdout);
    // PATH from the layers is the one programs are looked up in.
    let (status, code, _) = exec_err(
        &app,
        json!({"argv": ["ls"], "env": {"PATH": "/nonexistent"}}),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "file_not_found")
    );

    let (status, code, _) = exec_err(&app, json!({"argv": ["true"], "env": {"A=B": "x"}})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test]
async fn cwd_absolute_relative_missing_and_not_a_directory() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let r = exec(&app, json!({"argv": ["pwd"], "cwd": d})).await;
    assert_eq!(r.stdout, format!("{d}\n"));
    // Relative paths are under /workspace: "../tmp" is /tmp.
    let r = exec(&app, json!({"argv": ["pwd"], "cwd": "../tmp"})).await;
    assert_eq!(r.stdout, "/tmp\n");

    let missing = format!("{d}/nope");
    let (status, code, msg) = exec_err(&app, json!({"argv": ["pwd"], "cwd": missing})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "file_not_found")
    );
    assert!(msg.contains(&missing) && msg.contains("cwd"), "{msg}");

    let file = format!("{d}/f");
    std::fs::write(&file, "x").unwrap();
    let (status, code, msg) = exec_err(&app, json!({"argv": ["pwd"], "cwd": file})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "not_a_directory")
    );
    assert!(msg.contains(&file), "{msg}");

    let (status, code, _) = exec_err(&app, json!({"argv": ["pwd"], "cwd": "../../../.."})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "path_escape")
    );
}

#[tokio::test]
async fn bad_programs_and_requests_are_4xx() {
    let app = app();
    let (status, code, msg) = exec_err(&app, json!({"argv": ["no-such-program-xyz"]})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "file_not_found")
    );
    assert!(msg.contains("no-such-program-xyz"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    let plain = plain.to_str().unwrap();
    let (status, code, msg) = exec_err(&app, json!({"argv": [plain]})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );
    assert!(msg.contains(plain), "{msg}");
    let (status, code, _) = exec_err(&app, json!({"argv": [dir.path()]})).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );

    for (body, want) in [
        (
            json!({"argv": ["true"], "shell": "true"}),
            "invalid_request",
        ),
        (json!({}), "invalid_request"),
        (json!({"argv": []}), "invalid_request"),
        (json!({"argv": ["a\u{0}b"]}), "invalid_request"),
        (json!({"argv": ["true"], "bogus": 1}), "malformed_json"),
        (json!({"argv": "true"}), "malformed_json"),
        (
            json!({"argv": ["cat"], "stdin": "!!", "stdin_encoding": "base64"}),
            "invalid_request",
        ),
    ] {
        let (status, code, _) = exec_err(&app, body.clone()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, want),
            "{body}"
        );
    }
    let req = Request::post("/v1/exec")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, bytes) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["code"], "malformed_json");
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A background child, and a daemon that double-forked into its own session.
    let script = format!(
        "echo $$ > {d}/main; sleep 100 & echo $! > {d}/bg; \
         (setsid sh -c 'echo $$ > {d}/daemon; exec sleep 100' &); \
         while [ ! -s {d}/daemon ]; do sleep 0.01; done; sleep 100"
    );
    let t = Instant::now();
    let r = exec(&app, json!({"shell": script, "timeout_ms": 500})).await;
    let took = t.elapsed();
    assert!(r.timed_out);
    assert_eq!((r.exit_code, r.signal), (None, Some(libc::SIGKILL)));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(r.duration_ms >= 500, "{}", r.duration_ms);
    for name in ["main", "bg", "daemon"] {
        let pid = read_pid(&dir.path().join(name));
        assert!(
            wait_until(2000, || dead(pid)).await,
            "{name} ({pid}) survived the timeout"
        );
    }
}

#[tokio::test]
async fn background_process_does_not_hold_the_reply() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let bg = dir.path().join("bg");
    let t = Instant::now();
    let r = exec(
        &app,
        json!({"shell": format!("sleep 30 & echo $! > {}; echo done", bg.display())}),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!((r.stdout.as_str(), r.exit_code), ("done\n", Some(0)));
    // It was left running (the command's business), then we clean up.
    let pid = read_pid(&bg);
    assert!(!dead(pid));
    bothy_agent::proctree::kill_tree(pid, libc::SIGKILL);
}

/// Reads an SSE body, returning (event, data, time since start) in order.
async fn sse_events(app: &axum::Router, body: Value) -> Vec<(String, Value, Duration)> {
    let req = Request::post("/v1/exec")
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let t = Instant::now();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.push_str(std::str::from_utf8(data).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = Value::Null;
            for line in ev.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            out.push((name, data, t.elapsed()));
        }
    }
    out
}

fn stream_bytes(events: &[(String, Value, Duration)], which: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, _) in events {
        if name == which {
            let d: bothy_api::Data = serde_json::from_value(data.clone()).unwrap();
            out.extend(d.decode().unwrap());
        }
    }
    out
}

#[tokio::test]
async fn sse_streams_in_order_as_produced() {
    let app = app();
    let evs = sse_events(
        &app,
        json!({"shell": "echo 1; echo e >&2; sleep 0.4; echo 2; exit 4"}),
    )
    .await;
    let names: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"exit"));
    assert!(evs[0].1["pid"].as_i64().unwrap() > 0);
    let first_out = evs.iter().find(|e| e.0 == "stdout").unwrap();
    assert_eq!(first_out.1["data"], "1\n");
    assert!(
        first_out.2 < Duration::from_millis(350),
        "first chunk at {:?}",
        first_out.2
    );
    assert_eq!(stream_bytes(&evs, "stdout"), b"1\n2\n");
    assert_eq!(stream_bytes(&evs, "stderr"), b"e\n");
    let exit = &evs.last().unwrap().1;
    assert_eq!(exit["exit_code"], 4);
    assert_eq!(exit["timed_out"], false);
    assert!(exit["duration_ms"].as_u64().unwrap() >= 400);
}

#[tokio::test]
async fn sse_keeps_split_characters_as_text_and_binary_exact() {
    let app = app();
    let evs = sse_events(
        &app,
        json!({"shell": "printf '\\342\\202'; sleep 0.2; printf '\\254!'"}),
    )
    .await;
    for (name, data, _) in &evs {
        if name == "stdout" {
            assert_eq!(data["encoding"], "utf-8", "{data}");
        }
    }
    assert_eq!(stream_bytes(&evs, "stdout"), "€!".as_bytes());
    let evs = sse_events(&app, json!({"argv": ["printf", "\\377\\000a"]})).await;
    assert_eq!(stream_bytes(&evs, "stdout"), [0xff, 0, b'a']);
}

#[tokio::test]
async fn sse_timeout_says_so() {
    let app = app();
    let evs = sse_events(
        &app,
        json!({"shell": "echo a; sleep 100", "timeout_ms": 200}),
    )
    .await;
    let exit = &evs.last().unwrap();
    assert_eq!(exit.0, "exit");
    assert_eq!(exit.1["timed_out"], true);
    assert_eq!(exit.1["signal"], libc::SIGKILL);
}

#[tokio::test]
async fn dropping_the_stream_kills_the_tree() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let req = Request::post("/v1/exec")
        .header("accept", "text/event-stream")
        .body(Body::from(
            json!({"shell": format!("sleep 100 & echo $! > {d}/bg; echo $$ > {d}/main; echo ready; wait")})
                .to_string(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("ready") {
        let f = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(f.data_ref().unwrap()).unwrap());
    }
    let (main, bg) = (
        read_pid(&dir.path().join("main")),
        read_pid(&dir.path().join("bg")),
    );
    assert!(!dead(main) && !dead(bg));
    drop(body);
    assert!(
        wait_until(2000, || dead(main) && dead(bg)).await,
        "tree survived the drop"
    );
}

#[tokio::test]
async fn dropping_the_json_request_kills_the_tree() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main");
    let req = Request::post("/v1/exec")
        .body(Body::from(
            json!({"shell": format!("echo $$ > {}; exec sleep 100", main.display())}).to_string(),
        ))
        .unwrap();
    let fut = app.clone().oneshot(req);
    // Poll the request until the command is running, then drop it.
    let r = tokio::time::timeout(Duration::from_millis(500), fut).await;
    assert!(r.is_err(), "the command should still be running");
    let pid = read_pid(&main);
    assert!(
        wait_until(2000, || dead(pid)).await,
        "command survived the dropped request"
    );
}

#[tokio::test]
async fn large_output_is_complete_both_ways() {
    let app = app();
    let r = exec(
        &app,
        json!({"shell": "head -c 5000000 /dev/zero | tr '\\0' x; echo -n e >&2"}),
    )
    .await;
    assert_eq!((r.stdout.len(), r.stderr.as_str()), (5_000_000, "e"));
    assert!(r.stdout.bytes().all(|b| b == b'x'));
    let evs = sse_events(
        &app,
        json!({"argv": ["head", "-c", "3000000", "/dev/urandom"]}),
    )
    .await;
    assert_eq!(stream_bytes(&evs, "stdout").len(), 3_000_000);
}

/// A flood of output neither starves the timeout nor grows the JSON reply past its cap.
#[tokio::test]
async fn flood_is_capped_and_still_times_out() {
    let _app = app(); // starts the reaper
    let spec = bothy_agent::exec::Spec::from_request(
        &serde_json::from_value(json!({"argv": ["yes"], "timeout_ms": 300})).unwrap(),
        &BTreeMap::new(),
    )
    .unwrap();
    let running = bothy_agent::exec::Running::start(spec).unwrap();
    let t = Instant::now();
    let r = bothy_agent::exec::output::collect(running, 1 << 20).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(r.timed_out);
    assert!(r.stdout_truncated && !r.stderr_truncated);
    assert_eq!(r.stdout.len(), 1 << 20);
}

/// A background process that keeps writing after the main process exited cannot hold the
/// reply open past the drain bound.
#[tokio::test]
async fn chatty_background_process_is_cut_off_after_exit() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let bg = dir.path().join("bg");
    let t = Instant::now();
    let r = exec(
        &app,
        json!({"shell": format!("(while :; do echo tick; sleep 0.01; done) & echo $! > {}; echo main", bg.display())}),
    )
    .await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(
        r.stdout.starts_with("main\n") || r.stdout.contains("main\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.exit_code, Some(0));
    bothy_agent::proctree::kill_tree(read_pid(&bg), libc::SIGKILL);
}
