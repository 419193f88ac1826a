//! Background processes through the agent's router, with real processes.

use std::time::{Duration, Instant};

use axum::body::Body;
use bothy_api::process::{ProcessInfo, ProcessLogs, ProcessStatus};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::{agent, agent_in, Agent};

impl Agent {
    async fn start(&self, body: Value) -> ProcessInfo {
        let (s, v) = self.call("POST", "/v1/processes", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn wait_exit(&self, id: &str) -> ProcessInfo {
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/processes/{id}/wait/exit"),
                Some(json!({"timeout_ms": 10000})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn logs(&self, id: &str, since: u64) -> ProcessLogs {
        let (s, v) = self
            .call(
                "GET",
                &format!("/v1/processes/{id}/logs?since={since}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }

    /// Reads an SSE stream to its end (or `limit` events); returns (event, id, data) triples.
    async fn sse(&self, uri: &str, limit: usize) -> Vec<(String, String, Value)> {
        let req = Request::get(uri)
            .header("accept", "text/event-stream")
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut buf = String::new();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("stream stalled")
            else {
                break;
            };
            let frame = frame.unwrap();
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.push_str(std::str::from_utf8(data).unwrap());
            while let Some(pos) = buf.find("\n\n") {
                let ev: String = buf[..pos].to_string();
                buf.drain(..pos + 2);
                let (mut name, mut id, mut data) = (String::new(), String::new(), Value::Null);
                for line in ev.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.into();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.into();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                if !name.is_empty() {
                    out.push((name, id, data));
                }
            }
        }
        out
    }
}

fn text(d: &bothy_api::Data) -> Vec<u8> {
    d.decode().unwrap()
}

#[tokio::test]
async fn runs_records_and_logs_byte_exact() {
    let a = agent();
    let cwd = a.dir.path().to_string_lossy().into_owned();
    let p = a
        .start(json!({"id": "job", "shell": "printf 'out'; printf '\\377err' >&2; echo \"$SANDBOX_VAR $MINE\"; exit 3",
                      "cwd": cwd, "env": {"MINE": "m"}}))
        .await;
    assert_eq!(p.id, "job");
    assert!(p.pid.unwrap() > 0);
    let done = a.wait_exit("job").await;
    assert_eq!(done.status, ProcessStatus::Exited);
    assert_eq!(done.exit_code, Some(3));
    assert!(done.ended_at.is_some());
    let logs = a.logs("job", 0).await;
    assert_eq!(text(&logs.stdout), b"outsv m\n");
    assert_eq!(text(&logs.stderr), b"\xfferr");
    assert_eq!(logs.dropped_bytes, 0);
    assert_eq!(logs.cursor, 12);
    // Reading from a cursor gives only what follows.
    let tail = a.logs("job", 3).await;
    assert_eq!(text(&tail.stdout), b"sv m\n");
    let (s, v) = a.call("GET", "/v1/processes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["processes"][0]["id"], "job");
    // Argv form, and a program that does not exist is a failed record.
    let p = a
        .start(json!({"argv": ["/bin/echo", "a b"], "cwd": cwd}))
        .await;
    a.wait_exit(&p.id).await;
    assert_eq!(text(&a.logs(&p.id, 0).await.stdout), b"a b\n");
    let p = a
        .start(json!({"argv": ["/no/such/program"], "cwd": cwd}))
        .await;
    assert_eq!(p.status, ProcessStatus::Failed);
    assert!(p.reason.unwrap().contains("/no/such/program"));
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let a = agent();
    let cwd = a.dir.path().to_string_lossy().into_owned();
    let cases = [
        (
            json!({"id": "Bad_Id", "shell": "true"}),
            400,
            "invalid_request",
        ),
        (
            json!({"shell": "true", "argv": ["x"]}),
            400,
            "invalid_request",
        ),
        (json!({"argv": []}), 400, "invalid_request"),
        (
            json!({"shell": "true", "cwd": "/no/such/dir"}),
            404,
            "file_not_found",
        ),
        (
            json!({"shell": "true", "session": "nope"}),
            404,
            "not_found",
        ),
        (
            json!({"shell": "true", "log_limit": 10}),
            400,
            "invalid_request",
        ),
        (
            json!({"shell": "true", "restart": "always"}),
            400,
            "malformed_json",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = a.call("POST", "/v1/processes", Some(body.clone())).await;
        assert_eq!(
            (s.as_u16(), v["code"].as_str().unwrap()),
            (status, code),
            "{body}: {v}"
        );
    }
    a.start(json!({"id": "busy", "argv": ["sleep", "30"], "cwd": cwd}))
        .await;
    let (s, v) = a
        .call(
            "POST",
            "/v1/processes",
            Some(json!({"id": "busy", "shell": "true", "cwd": cwd})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str().unwrap()), (409, "conflict"));
    let (s, v) = a
        .call(
            "POST",
            "/v1/processes/busy/kill",
            Some(json!({"signal": "NOPE"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (400, "invalid_request")
    );
    let (s, _) = a.call("GET", "/v1/processes/missing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = a
        .call("GET", "/v1/processes/busy/logs?since=999", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = a.call("DELETE", "/v1/processes/busy", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = a
        .call(
            "POST",
            "/v1/processes/busy/kill",
            Some(json!({"signal": "KILL"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let done = a.wait_exit("busy").await;
    assert_eq!(done.status, ProcessStatus::Killed);
    assert_eq!(done.signal, Some(9));
    // An ended id may be reused; deleting removes it.
    a.start(json!({"id": "busy", "shell": "true", "cwd": cwd}))
        .await;
    a.wait_exit("busy").await;
    let (s, _) = a.call("DELETE", "/v1/processes/busy", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = a.call("POST", "/v1/processes/busy/kill", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn kill_takes_the_whole_tree() {
    let a = agent();
    let marker = format!("bothy-kill-tree-{}", std::process::id());
    let p = a
        .start(
            json!({"shell": format!("sh -c 'sleep 1000; : {marker}' & sleep 1000; : {marker}"),
                      "cwd": a.dir.path()}),
        )
        .await;
    let pid = p.pid.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bothy_agent::proctree::tree(pid).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members = bothy_agent::proctree::tree(pid);
    assert!(members.len() >= 3, "{members:?}");
    let (s, v) = a
        .call("POST", &format!("/v1/processes/{}/kill", p.id), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = a.wait_exit(&p.id).await;
    assert_eq!(done.status, ProcessStatus::Killed);
    assert_eq!(done.reason.as_deref(), Some("killed with SIGTERM"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for m in members {
        let alive =
            std::fs::read_to_string(format!("/proc/{m}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "pid {m} survived");
    }
    let (s, v) = a
        .call("POST", &format!("/v1/processes/{}/kill", p.id), None)
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (409, "process_exited")
    );
}

#[tokio::test]
async fn stream_resumes_from_a_cursor() {
    let a = agent();
    let p = a
        .start(json!({"shell": "printf 'one\\n'; sleep 0.3; printf 'two\\n' >&2; sleep 0.3; printf 'three\\n'",
                      "cwd": a.dir.path()}))
        .await;
    let uri = format!("/v1/processes/{}/logs", p.id);
    // A client that reads the first event then disconnects.
    let first = a.sse(&uri, 1).await;
    assert_eq!(first[0].0, "stdout");
    assert_eq!(first[0].2["data"], "one\n");
    assert_eq!(first[0].1, "4");
    assert_eq!(first[0].2["cursor"], 4);
    // It reconnects from the cursor it saw and gets exactly the rest.
    let rest = a.sse(&format!("{uri}?since={}", first[0].1), 100).await;
    let names: Vec<&str> = rest.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["stderr", "stdout", "exit"], "{rest:?}");
    assert_eq!(rest[0].2["data"], "two\n");
    assert_eq!(rest[1].2["data"], "three\n");
    assert_eq!(rest[2].2["status"], "exited");
    assert_eq!(rest[2].2["exit_code"], 0);
    assert_eq!(rest[2].1, "14");
    // Last-Event-ID works the same, and a stream of an ended process replays then ends.
    let req = Request::get(&uri)
        .header("accept", "text/event-stream")
        .header("last-event-id", "8")
        .body(Body::empty())
        .unwrap();
    let resp = a.app.clone().oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.starts_with("id: 14\nevent: stdout\n"), "{body}");
    assert!(body.contains("event: exit"));
}

#[tokio::test]
async fn log_cap_drops_oldest_and_tells_the_reader() {
    let a = agent();
    let p = a
        .start(
            json!({"shell": "i=0; while [ $i -lt 2000 ]; do echo \"line $i\"; i=$((i+1)); done",
                      "log_limit": 8192, "cwd": a.dir.path()}),
        )
        .await;
    a.wait_exit(&p.id).await;
    let logs = a.logs(&p.id, 0).await;
    let out = text(&logs.stdout);
    assert!(logs.dropped_bytes > 0);
    assert!(out.len() <= 8192 && out.len() >= 4096, "{}", out.len());
    assert!(out.ends_with(b"line 1999\n"));
    assert_eq!(logs.dropped_bytes + out.len() as u64, logs.cursor);
    let events = a.sse(&format!("/v1/processes/{}/logs", p.id), 1000).await;
    assert_eq!(events[0].0, "truncated");
    assert_eq!(events[0].2["dropped_bytes"], logs.dropped_bytes);
    assert_eq!(events.last().unwrap().0, "exit");
    let files = std::fs::read_dir(a.dir.path().join("state/processes").join(&p.id))
        .unwrap()
        .count();
    assert!(files <= 3, "{files} files (record + 2 segments at most)");
}

#[tokio::test]
async fn stdin_write_and_close() {
    let a = agent();
    let p = a.start(json!({"argv": ["cat"], "cwd": a.dir.path()})).await;
    let uri = format!("/v1/processes/{}/stdin", p.id);
    let (s, _) = a.call("POST", &uri, Some(json!({"data": "hello "}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = a
        .call(
            "POST",
            &uri,
            Some(json!({"data": "/w==", "encoding": "base64", "eof": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let done = a.wait_exit(&p.id).await;
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(text(&a.logs(&p.id, 0).await.stdout), b"hello \xff");
    let (s, v) = a.call("POST", &uri, Some(json!({"data": "x"}))).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (409, "process_exited")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn waits_for_log_port_and_http() {
    let a = agent();
    let port = free_port();
    let p = a
        .start(json!({"argv": ["/usr/bin/python3", "-u", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1"],
                      "cwd": a.dir.path()}))
        .await;
    let base = format!("/v1/processes/{}", p.id);
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/log"),
            Some(json!({"pattern": "Serving HTTP on \\S+ port (\\d+)", "timeout_ms": 10000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["line"]["data"]
        .as_str()
        .unwrap()
        .starts_with("Serving HTTP on 127.0.0.1"));
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/port"),
            Some(json!({"port": port, "timeout_ms": 10000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/port"),
            Some(json!({"port": port, "http": {"path": "/"}, "timeout_ms": 10000})),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_u64()),
        (StatusCode::OK, Some(200)),
        "{v}"
    );
    // A status range the server never answers with times out.
    let (s, v) = a
        .call("POST", &format!("{base}/wait/port"),
              Some(json!({"port": port, "http": {"path": "/missing", "status_min": 200, "status_max": 299}, "timeout_ms": 300})))
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (408, "timeout"),
        "{v}"
    );
    // The request log (on stderr) is matched as output to come.
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/log"),
            Some(json!({"pattern": "GET /missing", "stream": "stderr"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = a
        .call(
            "POST",
            &format!("{base}/wait/log"),
            Some(json!({"pattern": "("})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    a.call("POST", &format!("{base}/kill"), None).await;
}

#[tokio::test]
async fn waits_fail_at_once_when_the_process_exits() {
    let a = agent();
    let p = a
        .start(json!({"shell": "sleep 0.2; echo bye; exit 4", "cwd": a.dir.path()}))
        .await;
    let base = format!("/v1/processes/{}", p.id);
    let t = Instant::now();
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/port"),
            Some(json!({"port": free_port(), "timeout_ms": 20000})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (409, "process_exited"),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("exit code 4"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    let (s, v) = a
        .call(
            "POST",
            &format!("{base}/wait/log"),
            Some(json!({"pattern": "never", "timeout_ms": 20000})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str().unwrap()),
        (409, "process_exited"),
        "{v}"
    );
    // A match in the output of an ended process is still found.
    let (s, _) = a
        .call(
            "POST",
            &format!("{base}/wait/log"),
            Some(json!({"pattern": "^bye$"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let p = a
        .start(json!({"argv": ["sleep", "5"], "cwd": a.dir.path()}))
        .await;
    let (s, v) = a
        .call(
            "POST",
            &format!("/v1/processes/{}/wait/exit", p.id),
            Some(json!({"timeout_ms": 100})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str().unwrap()), (408, "timeout"));
    a.call(
        "POST",
        &format!("/v1/processes/{}/kill", p.id),
        Some(json!({"signal": "9"})),
    )
    .await;
}

/// An agent restart (the sandbox slept and woke): running records become `killed`, on-wake
/// services start again under their id and their log continues.
#[test]
fn records_survive_restart_and_services_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (svc_pid, job_pid, a) = rt.block_on(async {
        bothy_agent::reaper::start().unwrap();
        let a = agent_in(dir);
        let svc = a
            .start(json!({"id": "svc", "shell": "echo started; exec sleep 1000", "restart": "on-wake", "cwd": path}))
            .await;
        let job = a.start(json!({"id": "job", "argv": ["sleep", "1000"], "cwd": path})).await;
        a.start(json!({"id": "done", "shell": "echo finished", "cwd": path})).await;
        a.wait_exit("done").await;
        let (s, _) = a.call("POST", "/v1/processes/svc/wait/log", Some(json!({"pattern": "started"}))).await;
        assert_eq!(s, StatusCode::OK);
        (svc.pid.unwrap(), job.pid.unwrap(), a)
    });
    // The old agent dies with its supervisors; then its processes are killed (sleep).
    let dir = a.dir;
    drop(a.app);
    drop(rt);
    bothy_agent::proctree::kill_tree(svc_pid, libc::SIGKILL);
    bothy_agent::proctree::kill_tree(job_pid, libc::SIGKILL);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        bothy_agent::reaper::start().unwrap();
        let a = agent_in(dir);
        let (_, v) = a.call("GET", "/v1/processes/job", None).await;
        assert_eq!(v["status"], "killed");
        assert_eq!(v["reason"], "sandbox slept");
        let (_, v) = a.call("GET", "/v1/processes/done", None).await;
        assert_eq!(v["status"], "exited");
        assert_eq!(text(&a.logs("done", 0).await.stdout), b"finished\n");
        let (_, v) = a.call("GET", "/v1/processes/svc", None).await;
        assert_eq!(v["status"], "running", "{v}");
        assert_eq!(v["restarts"], 1);
        assert_ne!(v["pid"].as_i64().unwrap(), svc_pid as i64);
        // Its log continues: the second "started" comes after the first.
        let (s, v) = a
            .call(
                "POST",
                "/v1/processes/svc/wait/log",
                Some(json!({"pattern": "started", "timeout_ms": 5000})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = a.logs("svc", 0).await;
            if text(&logs.stdout) == b"started\nstarted\n" {
                break;
            }
            assert!(Instant::now() < deadline, "{logs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.call(
            "POST",
            "/v1/processes/svc/kill",
            Some(json!({"signal": "KILL"})),
        )
        .await;
        a.wait_exit("svc").await;
    });
}
