//! End to end through a real daemon: sessions, background processes, readiness waits, logs
//! resumed from a cursor, records across daemon restarts and sleep, preview URLs (HTTP and
//! WebSocket, wake on request, errors) and the CLI.

use std::time::{Duration, Instant};

use bothy_api::exec::ExecRequest;
use bothy_api::preview::ExposeRequest;
use bothy_api::process::{
    HttpCheck, ProcessStart, ProcessStatus, RestartPolicy, WaitExit, WaitLog, WaitPort,
};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::session::SessionCreate;
use bothy_api::ErrorCode;
use bothy_client::Client;
use bothy_testkit::{Options, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

async fn daemon() -> Option<TestDaemon> {
    TestDaemon::start_with(
        BIN,
        Options {
            tcp_token: Some("secret-token".into()),
            ..Default::default()
        },
    )
    .await
}

async fn sandbox(d: &TestDaemon, name: &str) {
    d.client
        .put_sandbox(name, &CreateSandbox::default())
        .await
        .unwrap();
}

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        ..Default::default()
    }
}

fn in_session(session: &str, cmd: &str) -> ExecRequest {
    ExecRequest {
        session: Some(session.into()),
        ..sh(cmd)
    }
}

fn argv(a: &[&str]) -> Option<Vec<String>> {
    Some(a.iter().map(|s| s.to_string()).collect())
}

/// One HTTP/1.1 request with `host` to the daemon's TCP address; returns (status, body).
async fn http_get(tcp: &str, host: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut resp))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Starts `python3 -m http.server 8000` (plus `extra` arguments) as process `srv` of sandbox
/// `name`, on its loopback, and waits until the port accepts.
async fn serve_http(c: &Client, name: &str, extra: &[&str]) {
    let mut a = vec![
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "127.0.0.1",
    ];
    a.extend_from_slice(extra);
    c.start_process(
        name,
        &ProcessStart {
            id: Some("srv".into()),
            argv: argv(&a),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.wait_port(
        name,
        "srv",
        &WaitPort {
            port: 8000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_state_and_exit_does_not_end_them() {
    let Some(d) = daemon().await else { return };
    sandbox(&d, "s").await;
    let c = &d.client;
    c.create_session(
        "s",
        &SessionCreate {
            id: Some("dev".into()),
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = c
        .exec(
            "s",
            &in_session(
                "dev",
                "mkdir -p app && cd app && export FOO=bar; printf '%s' \"$GREETING\"",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "hi", "byte-exact, no newline added");
    let r = c
        .exec("s", &in_session("dev", "echo before; exit 3"))
        .await
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("before\n", Some(3)));
    let r = c
        .exec("s", &in_session("dev", "echo $? $FOO; pwd"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "3 bar\n/workspace/app\n");
    // A killed foreground command takes its children with it; the session goes on. (The
    // count is first shown to see such processes, on a background process that has them.)
    let count = "n=0; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '[b]othymarker' && n=$((n+1)); done; echo $n";
    c.start_process(
        "s",
        &ProcessStart {
            id: Some("probe".into()),
            shell: Some("(sleep 1000; : bothymarker) & sleep 1000; : bothymarker".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let seen = c.exec("s", &sh(count)).await.unwrap();
    assert_ne!(seen.stdout, "0\n", "the probe's processes are visible");
    c.kill_process("s", "probe", None).await.unwrap();
    c.wait_exit("s", "probe", &WaitExit::default())
        .await
        .unwrap();
    assert_eq!(
        c.exec("s", &sh(count)).await.unwrap().stdout,
        "0\n",
        "kill took the tree"
    );
    let r = c
        .exec(
            "s",
            &ExecRequest {
                timeout_ms: Some(500),
                ..in_session(
                    "dev",
                    "(sleep 1000; : bothymarker) & sleep 1000; : bothymarker",
                )
            },
        )
        .await
        .unwrap();
    assert!(r.timed_out);
    let r = c.exec("s", &sh(count)).await.unwrap();
    assert_eq!(r.stdout, "0\n", "children of the killed command survived");
    let r = c
        .exec("s", &in_session("dev", "echo $? $FOO"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "137 bar\n");
    // The CLI sees the session.
    let out = d
        .cli()
        .args(["session", "ls", "s", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"][0]["id"], "dev");
    assert_eq!(v["sessions"][0]["cwd"], "/workspace/app");
    let out = d
        .cli()
        .args(["exec", "s", "--session", "dev", "--sh", "echo $FOO"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_server_is_waited_for_exposed_and_served() {
    let Some(d) = daemon().await else { return };
    sandbox(&d, "web").await;
    let c = &d.client;
    let tcp = d.tcp_addr.clone().unwrap();
    let p = c
        .start_process(
            "web",
            &ProcessStart {
                id: Some("http".into()),
                argv: argv(&[
                    "python3",
                    "-u",
                    "-m",
                    "http.server",
                    "8000",
                    "--bind",
                    "127.0.0.1",
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.status, ProcessStatus::Running);
    let r = c
        .wait_log(
            "web",
            "http",
            &WaitLog {
                pattern: r"Serving HTTP on \S+ port 8000".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.line.data.starts_with("Serving HTTP"));
    let r = c
        .wait_port(
            "web",
            "http",
            &WaitPort {
                port: 8000,
                http: Some(HttpCheck::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.status, Some(200));
    c.write_file(
        "web",
        "/workspace/hello.txt",
        None,
        bothy_client::full("hello from the sandbox"),
    )
    .await
    .unwrap();
    let port = c
        .expose_port(
            "web",
            &ExposeRequest {
                port: 8000,
                rotate: false,
            },
        )
        .await
        .unwrap();
    assert!(port.url.starts_with("http://8000-web-"), "{}", port.url);
    assert_eq!(port.token.len(), 16);
    let host = host_of(&port.url);
    // Served with no bearer token: the URL's token is the credential.
    let (status, body) = http_get(&tcp, &host, "/hello.txt").await;
    assert_eq!((status, body.as_str()), (200, "hello from the sandbox"));
    // The same exposure again keeps its URL; rotating changes it and revokes the old one.
    let again = c
        .expose_port(
            "web",
            &ExposeRequest {
                port: 8000,
                rotate: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.url, port.url);
    let rotated = c
        .expose_port(
            "web",
            &ExposeRequest {
                port: 8000,
                rotate: true,
            },
        )
        .await
        .unwrap();
    assert_ne!(rotated.url, port.url);
    let (status, body) = http_get(&tcp, &host, "/hello.txt").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"));
    let host = host_of(&rotated.url);
    assert_eq!(http_get(&tcp, &host, "/hello.txt").await.0, 200);
    // A wrong token, an unexposed port, an unknown sandbox: 404, the same answer for each.
    let token = &rotated.token;
    let wrong = host.replace(token.as_str(), "aaaaaaaaaaaaaaaa");
    for h in [
        wrong,
        host.replacen("8000-", "8001-", 1),
        host.replace("-web-", "-nosuch-"),
    ] {
        let (status, body) = http_get(&tcp, &h, "/").await;
        assert_eq!(status, 404, "{h}: {body}");
    }
    // Exposed but nothing listening: 502 with a clear body.
    let dead = c
        .expose_port(
            "web",
            &ExposeRequest {
                port: 9999,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let (status, body) = http_get(&tcp, &host_of(&dead.url), "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("nothing is listening on port 9999"), "{body}");
    // Listed, then revoked.
    let list = c.list_ports("web").await.unwrap();
    assert_eq!(
        list.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [8000, 9999]
    );
    c.unexpose_port("web", 8000).await.unwrap();
    assert_eq!(http_get(&tcp, &host, "/").await.0, 404);
    let e = c.unexpose_port("web", 8000).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    // The request log on stderr is there too.
    let logs = c.process_logs("web", "http", 0).await.unwrap();
    assert!(
        logs.stderr.data.contains("\"GET /hello.txt HTTP/1.1\" 200"),
        "{logs:?}"
    );
    // Requests to the API on the same port still need the bearer token.
    let (status, _) = http_get(&tcp, &tcp, "/v1/sandboxes").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_go_through_the_preview() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(d) = daemon().await else { return };
    sandbox(&d, "ws").await;
    let c = &d.client;
    let script = include_str!("fixtures/ws_echo.py");
    c.write_file(
        "ws",
        "/workspace/ws_echo.py",
        None,
        bothy_client::full(script),
    )
    .await
    .unwrap();
    c.start_process(
        "ws",
        &ProcessStart {
            id: Some("echo".into()),
            argv: argv(&["python3", "ws_echo.py", "8765"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.wait_port(
        "ws",
        "echo",
        &WaitPort {
            port: 8765,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let port = c
        .expose_port(
            "ws",
            &ExposeRequest {
                port: 8765,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(d.tcp_addr.as_ref().unwrap())
        .await
        .unwrap();
    let url = port.url.replace("http://", "ws://");
    let (mut ws, resp) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for msg in ["hello", "wörld", &"x".repeat(70_000)] {
        ws.send(Message::text(msg)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), msg);
    }
    ws.send(Message::binary(vec![0u8, 255, 1])).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got.into_data().as_ref(), &[0u8, 255, 1]);
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_resume_from_a_cursor_and_records_survive_a_daemon_restart() {
    let Some(mut d) = daemon().await else { return };
    sandbox(&d, "logs").await;
    let p = d
        .client
        .start_process(
            "logs",
            &ProcessStart {
                id: Some("ticker".into()),
                shell: Some("for i in $(seq 1 20); do printf 'tick %s\\n' $i; sleep 0.05; done; printf 'no newline'".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Read a few events, then drop the stream (a client that disconnects).
    let mut got = Vec::new();
    let mut cursor = 0;
    {
        let mut s = d.client.stream_logs("logs", "ticker", 0).await.unwrap();
        while got.len() < 15 {
            let ev = s.next().await.unwrap().unwrap();
            if ev.event == "stdout" {
                let chunk: bothy_api::process::LogChunkEvent = ev.json().unwrap();
                assert_eq!(ev.id.as_deref(), Some(chunk.cursor.to_string().as_str()));
                got.extend_from_slice(chunk.data.as_bytes());
                cursor = chunk.cursor;
                if got.len() >= 15 {
                    break;
                }
            }
        }
    }
    // Reconnect from the cursor: the rest, exactly, then the exit.
    let mut s = d
        .client
        .stream_logs("logs", "ticker", cursor)
        .await
        .unwrap();
    let mut exit = None;
    while let Some(ev) = s.next().await.unwrap() {
        match ev.event.as_str() {
            "stdout" => got.extend_from_slice(
                ev.json::<bothy_api::process::LogChunkEvent>()
                    .unwrap()
                    .data
                    .as_bytes(),
            ),
            "exit" => exit = Some(ev.json::<bothy_api::process::LogExitEvent>().unwrap()),
            other => panic!("unexpected event {other}"),
        }
    }
    let expected: String =
        (1..=20).map(|i| format!("tick {i}\n")).collect::<String>() + "no newline";
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    let exit = exit.expect("an exit event");
    assert_eq!(
        (exit.status, exit.exit_code),
        (ProcessStatus::Exited, Some(0))
    );
    assert_eq!(exit.cursor, expected.len() as u64);

    // A long-running process and its record survive a daemon restart (kill -9).
    let long = d
        .client
        .start_process(
            "logs",
            &ProcessStart {
                id: Some("long".into()),
                shell: Some("echo up; sleep 1000".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    d.client
        .wait_log(
            "logs",
            "long",
            &WaitLog {
                pattern: "up".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    d.restart().await;
    let again = d.client.get_process("logs", "long").await.unwrap();
    assert_eq!(
        (again.status, again.pid),
        (ProcessStatus::Running, long.pid)
    );
    let done = d.client.get_process("logs", "ticker").await.unwrap();
    assert_eq!((done.status, done.pid), (ProcessStatus::Exited, p.pid));
    assert_eq!(
        d.client
            .process_logs("logs", "ticker", 0)
            .await
            .unwrap()
            .stdout
            .data,
        expected
    );
    let killed = d
        .client
        .kill_process("logs", "long", Some("KILL"))
        .await
        .unwrap();
    assert_eq!(killed.id, "long");
    let ended = d
        .client
        .wait_exit(
            "logs",
            "long",
            &WaitExit {
                timeout_ms: Some(10_000),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (ended.status, ended.signal),
        (ProcessStatus::Killed, Some(9))
    );
    // Waits on an ended process fail at once with process_exited.
    let e = d
        .client
        .wait_port(
            "logs",
            "long",
            &WaitPort {
                port: 1234,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProcessExited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_request_wakes_a_sleeping_sandbox_and_its_service() {
    let Some(d) = daemon().await else { return };
    sandbox(&d, "sleepy").await;
    let c = &d.client;
    c.write_file(
        "sleepy",
        "/workspace/index.html",
        None,
        bothy_client::full("awake"),
    )
    .await
    .unwrap();
    c.start_process(
        "sleepy",
        &ProcessStart {
            id: Some("svc".into()),
            argv: argv(&[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "127.0.0.1",
            ]),
            restart: RestartPolicy::OnWake,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.start_process(
        "sleepy",
        &ProcessStart {
            id: Some("oneoff".into()),
            argv: argv(&["sleep", "1000"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.wait_port(
        "sleepy",
        "svc",
        &WaitPort {
            port: 8080,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let port = c
        .expose_port(
            "sleepy",
            &ExposeRequest {
                port: 8080,
                rotate: false,
            },
        )
        .await
        .unwrap();
    c.sleep_sandbox("sleepy").await.unwrap();
    // Asleep: the preview request wakes it, its on-wake service starts, the request is served.
    let t = Instant::now();
    let (status, body) = http_get(
        d.tcp_addr.as_ref().unwrap(),
        &host_of(&port.url),
        "/index.html",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "awake"));
    eprintln!("woken and served in {:?}", t.elapsed());
    let info = c.get_sandbox("sleepy").await.unwrap();
    assert_eq!(info.state.as_str(), "running");
    let svc = c.get_process("sleepy", "svc").await.unwrap();
    assert_eq!((svc.status, svc.restarts), (ProcessStatus::Running, 1));
    let oneoff = c.get_process("sleepy", "oneoff").await.unwrap();
    assert_eq!(oneoff.status, ProcessStatus::Killed);
    assert_eq!(oneoff.reason.as_deref(), Some("sandbox slept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_lists_follows_kills_and_exposes() {
    let Some(d) = daemon().await else { return };
    sandbox(&d, "cli").await;
    let run = |args: &[&str]| {
        let out = d.cli().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "start",
        "cli",
        "--id",
        "job",
        "--",
        "sh",
        "-c",
        "echo one; echo two >&2; exit 4",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "job\n"), "{err}");
    let (code, out, err) = run(&["logs", "cli", "job", "-f"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(4), "one\n", "two\n")
    );
    let (_, out, _) = run(&["ps", "cli", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["processes"][0]["exit_code"], 4);
    let (_, out, _) = run(&["ps", "cli"]);
    assert!(
        out.starts_with("ID") && out.contains("job") && out.contains("exited"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "start",
        "cli",
        "--id",
        "srv",
        "--restart",
        "on-wake",
        "--sh",
        "sleep 1000",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "srv\n"));
    let (code, _, err) = run(&["kill", "cli", "srv", "--signal", "INT"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, _) = run(&["wait", "cli", "srv", "--exit"]);
    assert_eq!(code, Some(130));
    let (code, out, _) = run(&["expose", "cli", "3000"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("http://3000-cli-")
            && out.trim_end().ends_with(&format!(
                ".localhost:{}/",
                d.tcp_addr.as_ref().unwrap().rsplit(':').next().unwrap()
            )),
        "{out}"
    );
    let (code, _, err) = run(&["kill", "cli", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no process named"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_api_refuses_bad_input() {
    let Some(d) = daemon().await else { return };
    let c: &Client = &d.client;
    let e = c
        .expose_port(
            "nosuch",
            &ExposeRequest {
                port: 80,
                rotate: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SandboxNotFound));
    sandbox(&d, "p").await;
    let e = c
        .expose_port(
            "p",
            &ExposeRequest {
                port: 0,
                rotate: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    let v: Result<serde_json::Value, _> = c
        .json(
            bothy_client::http::Method::GET,
            "/v1/sandboxes/p/ports/70000",
            None::<&()>,
        )
        .await;
    assert_eq!(v.unwrap_err().code(), Some(ErrorCode::InvalidRequest));
    // Exposures go with their sandbox.
    c.expose_port(
        "p",
        &ExposeRequest {
            port: 80,
            rotate: false,
        },
    )
    .await
    .unwrap();
    c.delete_sandbox("p").await.unwrap();
    sandbox(&d, "p").await;
    assert!(c.list_ports("p").await.unwrap().ports.is_empty());
}

/// Abuse: a preview URL reaches only the exposed port of its own sandbox — not the host's
/// loopback, not another sandbox, not with another sandbox's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_reach_only_their_own_sandbox() {
    let Some(d) = daemon().await else { return };
    let tcp = d.tcp_addr.clone().unwrap();
    // A service on the host's loopback that a preview must never reach.
    let host_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let reached = reached.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = host_listener.accept().await {
                reached.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nhost")
                    .await;
            }
        });
    }
    sandbox(&d, "a").await;
    sandbox(&d, "b").await;
    let c = &d.client;
    let exposed = c
        .expose_port(
            "a",
            &ExposeRequest {
                port: host_port,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let (status, body) = http_get(&tcp, &host_of(&exposed.url), "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "a preview reached the host"
    );
    // Sandbox b serves on a port; a's token does not open it, nor does b's name with a's URL.
    serve_http(c, "b", &[]).await;
    let a8000 = c
        .expose_port(
            "a",
            &ExposeRequest {
                port: 8000,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let (status, _) = http_get(&tcp, &host_of(&a8000.url), "/").await;
    assert_eq!(
        status, 502,
        "a's port 8000 is a's own loopback, where nothing listens"
    );
    let forged = host_of(&a8000.url).replacen("-a-", "-b-", 1);
    let (status, _) = http_get(&tcp, &forged, "/").await;
    assert_eq!(
        status, 404,
        "b's port is not exposed; a's token must not open it"
    );
    let b8000 = c
        .expose_port(
            "b",
            &ExposeRequest {
                port: 8000,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let forged = host_of(&b8000.url).replace(b8000.token.as_str(), a8000.token.as_str());
    assert_eq!(http_get(&tcp, &forged, "/").await.0, 404);
    assert_eq!(http_get(&tcp, &host_of(&b8000.url), "/").await.0, 200);
    // Ids that would be paths are refused.
    let e = c
        .start_process(
            "a",
            &ProcessStart {
                id: Some("../../evil".into()),
                shell: Some("true".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    let e = c
        .create_session(
            "a",
            &SessionCreate {
                id: Some("../x".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
}

/// Sends a keep-alive GET on `s` and reads one Content-Length framed response; returns
/// (status, body). The connection stays open.
async fn keepalive_get(s: &mut tokio::net::TcpStream, host: &str) -> (u16, String) {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if body.len() >= len {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
            return (status, body.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_connections_are_capped_per_sandbox() {
    let Some(d) = TestDaemon::start_with(
        BIN,
        Options {
            tcp_token: Some("secret-token".into()),
            extra_args: vec!["--preview-max-connections".into(), "3".into()],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let tcp = d.tcp_addr.clone().unwrap();
    let c = &d.client;
    sandbox(&d, "busy").await;
    sandbox(&d, "calm").await;
    serve_http(c, "busy", &["--protocol", "HTTP/1.1"]).await;
    let expose = |name: &'static str| async move {
        host_of(
            &c.expose_port(
                name,
                &ExposeRequest {
                    port: 8000,
                    rotate: false,
                },
            )
            .await
            .unwrap()
            .url,
        )
    };
    let busy = expose("busy").await;
    let calm = expose("calm").await;
    // Three open (kept-alive) connections are the most "busy" may have.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&tcp).await.unwrap();
        let (status, body) = keepalive_get(&mut s, &busy).await;
        assert_eq!(status, 200, "{body}");
        open.push(s);
    }
    let (status, body) = http_get(&tcp, &busy, "/").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "resource_exhausted", "{body}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("--preview-max-connections"),
        "{body}"
    );
    // Another sandbox is not held back by it (nothing listens there: 502, not 503).
    let (status, body) = http_get(&tcp, &calm, "/").await;
    assert_eq!(status, 502, "{body}");
    // The kept connections still work, and closing one lets a new one in.
    let (status, _) = keepalive_get(&mut open[0], &busy).await;
    assert_eq!(status, 200);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&tcp, &busy, "/").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted after one closed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
