//! Sessions through the agent's router: state carried between execs, byte-exact output,
//! `exit` not ending the session, killable commands, persistence.

use std::time::{Duration, Instant};

use axum::body::Body;
use bothy_api::exec::ExecResult;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::{agent, agent_in, Agent};

impl Agent {
    async fn exec(&self, session: &str, body: Value) -> ExecResult {
        let mut body = body;
        body["session"] = json!(session);
        let (s, v) = self.call("POST", "/v1/exec", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn sh(&self, session: &str, line: &str) -> ExecResult {
        self.exec(session, json!({"shell": line})).await
    }

    async fn create(&self, body: Value) -> Value {
        let (s, v) = self.call("POST", "/v1/sessions", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

#[tokio::test]
async fn cd_export_and_exit_code_carry_over() {
    let a = agent();
    let root = a.dir.path().to_string_lossy().into_owned();
    std::fs::create_dir_all(a.dir.path().join("sub dir")).unwrap();
    let s = a
        .create(json!({"id": "dev", "cwd": root, "env": {"GREETING": "hi"}}))
        .await;
    assert_eq!(s["cwd"], root);
    let r = a
        .sh(
            "dev",
            "cd 'sub dir' && export FOO='a b' && echo \"$GREETING $SANDBOX_VAR\"",
        )
        .await;
    assert_eq!((r.stdout.as_str(), r.exit_code), ("hi sv\n", Some(0)));
    let r = a.sh("dev", "pwd; echo \"$FOO\"").await;
    assert_eq!(r.stdout, format!("{root}/sub dir\na b\n"));
    // `exit 3` ends the command, not the session; `$?` carries to the next command.
    let r = a.sh("dev", "echo before; exit 3; echo after").await;
    assert_eq!((r.stdout.as_str(), r.exit_code), ("before\n", Some(3)));
    let r = a.sh("dev", "echo $?; echo \"$FOO\"").await;
    assert_eq!(r.stdout, "3\na b\n");
    let r = a.sh("dev", "unset GREETING SANDBOX_VAR; false").await;
    assert_eq!(r.exit_code, Some(1));
    let r = a
        .sh(
            "dev",
            "echo \"$?[${GREETING-unset}][${SANDBOX_VAR-unset}]\"",
        )
        .await;
    assert_eq!(r.stdout, "1[unset][unset]\n");
    let (_, info) = a.call("GET", "/v1/sessions/dev", None).await;
    assert_eq!(info["env"]["FOO"], "a b");
    assert_eq!(info["unset"], json!(["SANDBOX_VAR"]));
    assert_eq!(info["last_exit_code"], 0);
    // argv form runs in the session's directory with its environment.
    let r = a
        .exec("dev", json!({"argv": ["sh", "-c", "pwd; echo $FOO"]}))
        .await;
    assert_eq!(r.stdout, format!("{root}/sub dir\na b\n"));
}

#[tokio::test]
async fn output_is_byte_exact_and_one_shot_options_do_not_stick() {
    let a = agent();
    let root = a.dir.path().to_string_lossy().into_owned();
    a.create(json!({"id": "s", "cwd": root})).await;
    let r = a
        .sh("s", "printf 'no newline'; printf '\\377\\000x' >&2")
        .await;
    assert_eq!(r.stdout_bytes(), b"no newline");
    assert_eq!(r.stderr_bytes(), b"\xff\x00x");
    let r = a
        .exec("s", json!({"shell": "echo $ONCE; pwd; cat", "env": {"ONCE": "1"}, "cwd": "/", "stdin": "in"}))
        .await;
    assert_eq!(r.stdout, "1\n/\nin");
    let r = a.sh("s", "echo \"[${ONCE-}]\"; pwd").await;
    assert_eq!(r.stdout, format!("[]\n{root}\n"));
    // A one-shot cwd that does not exist is an error, as in a plain exec.
    let (st, v) = a
        .call(
            "POST",
            "/v1/exec",
            Some(json!({"session": "s", "shell": "true", "cwd": "/no/such"})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str().unwrap()),
        (404, "file_not_found")
    );
}

#[tokio::test]
async fn sandbox_env_changes_reach_sessions() {
    let a = agent();
    a.create(json!({"id": "s", "cwd": a.dir.path()})).await;
    a.sh("s", "export MINE=1").await;
    let (st, _) = a
        .call(
            "PUT",
            "/v1/env",
            Some(json!({"env": {"SANDBOX_VAR": "new", "OTHER": "o"}})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = a.sh("s", "echo $SANDBOX_VAR $OTHER $MINE").await;
    assert_eq!(r.stdout, "new o 1\n");
}

#[tokio::test]
async fn a_killed_command_takes_its_children_and_the_session_goes_on() {
    let a = agent();
    a.create(json!({"id": "s", "cwd": a.dir.path()})).await;
    a.sh("s", "export KEEP=yes").await;
    let t = Instant::now();
    let r = a
        .exec(
            "s",
            json!({"shell": "sleep 100 & sleep 100; echo never", "timeout_ms": 300}),
        )
        .await;
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = a.sh("s", "echo $? $KEEP").await;
    assert_eq!(r.stdout, "137 yes\n");
    // Hostile commands cannot break the recording: shadowed builtins, set -eu, odd IFS.
    let r = a
        .sh(
            "s",
            "printf() { :; }; compgen() { :; }; set -eu; IFS=x; export Z=9; cd /; false",
        )
        .await;
    assert_eq!(r.exit_code, Some(1));
    let r = a.sh("s", "echo $Z; pwd").await;
    assert_eq!(r.stdout, "9\n/\n");
}

#[tokio::test]
async fn commands_in_a_session_run_one_at_a_time() {
    let a = agent();
    a.create(json!({"id": "s", "cwd": a.dir.path()})).await;
    let app = a.app.clone();
    let first = tokio::spawn(async move {
        let req = Request::post("/v1/exec")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"session": "s", "shell": "sleep 0.4; export N=1"}).to_string(),
            ))
            .unwrap();
        app.oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, info) = a.call("GET", "/v1/sessions/s", None).await;
    assert_eq!(info["busy"], true);
    // Waits for the first command, and sees what it did.
    let r = a.sh("s", "echo ${N-unset}").await;
    assert_eq!(r.stdout, "1\n");
    first.await.unwrap();
}

#[tokio::test]
async fn sessions_are_managed_and_persist() {
    let dir = {
        let a = agent();
        let s = a.create(json!({"cwd": a.dir.path()})).await;
        assert_eq!(s["id"].as_str().unwrap().len(), 12);
        a.create(json!({"id": "keep", "cwd": a.dir.path()})).await;
        a.sh("keep", "export P=persisted; cd ..").await;
        let (st, v) = a
            .call("POST", "/v1/sessions", Some(json!({"id": "keep"})))
            .await;
        assert_eq!(
            (st.as_u16(), v["code"].as_str().unwrap()),
            (409, "already_exists")
        );
        let (st, _) = a
            .call("POST", "/v1/sessions", Some(json!({"id": "Not A Label"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = a
            .call("POST", "/v1/sessions", Some(json!({"cwd": "/../.."})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, v) = a
            .call(
                "DELETE",
                &format!("/v1/sessions/{}", s["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
        let (st, _) = a.call("DELETE", "/v1/sessions/nope", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, v) = a
            .call(
                "POST",
                "/v1/exec",
                Some(json!({"session": "nope", "shell": "true"})),
            )
            .await;
        assert_eq!(
            (st.as_u16(), v["code"].as_str().unwrap()),
            (404, "not_found")
        );
        a.dir
    };
    // A new agent (the sandbox woke) finds the session as it was.
    let a = agent_in(dir);
    let (_, v) = a.call("GET", "/v1/sessions", None).await;
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["keep"]);
    let r = a.sh("keep", "echo $P; pwd").await;
    let parent = a
        .dir
        .path()
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(r.stdout, format!("persisted\n{parent}\n"));
    // A background process started in the session gets its directory and environment.
    let (st, p) = a
        .call(
            "POST",
            "/v1/processes",
            Some(json!({"session": "keep", "shell": "echo $P; pwd"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap();
    a.call("POST", &format!("/v1/processes/{id}/wait/exit"), None)
        .await;
    let (_, logs) = a
        .call("GET", &format!("/v1/processes/{id}/logs"), None)
        .await;
    assert_eq!(logs["stdout"]["data"], format!("persisted\n{parent}\n"));
}

#[tokio::test]
async fn state_recording_never_touches_the_output() {
    let a = agent();
    a.create(json!({"id": "s", "cwd": a.dir.path()})).await;
    // The state file cannot be written: the command's stderr must still be exactly its own.
    std::fs::remove_dir_all(a.dir.path().join("state/sessions")).unwrap();
    let r = a.sh("s", "echo out; echo err >&2").await;
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
}
