//! Terminals end to end: a real daemon, real sandboxes, WebSocket clients through the daemon's
//! proxy, `bothy shell` driven in tmux, and the console's auth on TCP.

use std::process::Command;
use std::time::Duration;

use bothy_api::sandbox::CreateSandbox;
use bothy_api::terminal::{CreateTerminal, Protocol};
use bothy_client::terminals::{AttachOptions, TerminalSocket};
use bothy_testkit::{wait_until, Options, TestDaemon};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

#[derive(Default, Debug)]
struct Seen {
    output: Vec<u8>,
    frames: Vec<Value>,
    closed: bool,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
    fn frame(&self, ty: &str) -> Option<&Value> {
        self.frames.iter().find(|f| f["type"] == ty)
    }
    fn count(&self, ty: &str) -> usize {
        self.frames.iter().filter(|f| f["type"] == ty).count()
    }
    fn last_chunk_cursor(&self) -> String {
        self.frames
            .iter()
            .rev()
            .find(|f| f["type"] == "chunk")
            .and_then(|f| f["cursor"].as_str())
            .expect("a chunk frame")
            .to_string()
    }
}

async fn read_until(ws: &mut TerminalSocket, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !done(seen) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out: {:?} {:?}", seen.frames, seen.text()));
        match msg {
            Some(Ok(Message::Binary(b))) => seen.output.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => seen.frames.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                seen.closed = true;
                assert!(
                    done(seen),
                    "closed early: {:?} {:?}",
                    seen.frames,
                    seen.text()
                );
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn type_line(ws: &mut TerminalSocket, line: &str) {
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .unwrap();
}

/// A predictable shell: no rc files, prompt `$ `.
fn plain_shell() -> CreateTerminal {
    CreateTerminal {
        command: Some(vec![
            "bash".into(),
            "--norc".into(),
            "--noprofile".into(),
            "-i".into(),
        ]),
        env: [("PS1".to_string(), "$ ".to_string())].into(),
        ..Default::default()
    }
}

fn opts(protocol: Protocol, cursor: Option<String>) -> AttachOptions {
    AttachOptions {
        protocol,
        cursor,
        size: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_through_the_daemon() {
    let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("term1", &Default::default()).await.unwrap();
    let id = c.create_terminal("term1", &plain_shell()).await.unwrap().id;

    // Two clients on one terminal, one per framing: both see everything either types.
    let mut a = c
        .attach_terminal("term1", &id, &opts(Protocol::Stable, None))
        .await
        .unwrap();
    let mut b = c
        .attach_terminal("term1", &id, &opts(Protocol::Cursor, None))
        .await
        .unwrap();
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    read_until(&mut a, &mut sa, |s| s.frame("ready").is_some()).await;
    read_until(&mut b, &mut sb, |s| s.frame("ready").is_some()).await;
    type_line(&mut a, "echo a-$((6*7))").await;
    type_line(&mut b, "echo b-$((6*8))").await;
    for (ws, s) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
        read_until(ws, s, |s| {
            s.text().contains("a-42") && s.text().contains("b-48")
        })
        .await;
    }
    // `tty` inside the sandbox: the sandbox's own devpts.
    type_line(&mut a, "tty; stty size").await;
    read_until(&mut a, &mut sa, |s| {
        s.text().contains("/dev/pts/") && s.text().contains("24 80")
    })
    .await;

    // Resize by message changes `stty size`.
    a.send(Message::Text(
        r#"{"type":"resize","cols":123,"rows":45}"#.into(),
    ))
    .await
    .unwrap();
    type_line(&mut a, "stty size").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("45 123")).await;

    // Malformed control messages: an error frame, and the connection stays.
    for bad in [
        "not json",
        r#"{"type":"resize","cols":0,"rows":1}"#,
        r#"{"type":"x"}"#,
    ] {
        let before = sb.count("error");
        b.send(Message::Text(bad.into())).await.unwrap();
        read_until(&mut b, &mut sb, |s| s.count("error") > before).await;
    }
    type_line(&mut b, "echo still-$((1+1))").await;
    read_until(&mut b, &mut sb, |s| s.text().contains("still-2")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // B leaves; A produces output; B comes back with its cursor and gets exactly what it
    // missed.
    let mut drain = Seen::default();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), b.next()).await {
        if let Message::Binary(x) = m {
            sb.output.extend_from_slice(&x);
        } else if let Message::Text(t) = m {
            sb.frames.push(serde_json::from_str(&t).unwrap());
        }
    }
    let cursor = sb.last_chunk_cursor();
    assert_eq!(cursor, sb.output.len().to_string());
    drop(b);
    type_line(&mut a, "echo missed-$((2+3))").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("missed-5")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = c
        .attach_terminal("term1", &id, &opts(Protocol::Cursor, Some(cursor.clone())))
        .await
        .unwrap();
    read_until(&mut b, &mut drain, |s| s.frame("ready").is_some()).await;
    let info = c.get_terminal("term1", &id).await.unwrap();
    let (from, to): (usize, usize) = (cursor.parse().unwrap(), info.cursor.parse().unwrap());
    assert_eq!(drain.output.len(), to - from);
    assert!(drain.text().contains("missed-5"), "{:?}", drain.text());
    assert!(
        !drain.text().contains("a-42"),
        "replayed old output: {:?}",
        drain.text()
    );
    sb.output.extend_from_slice(&drain.output);
    sb.frames.append(&mut drain.frames);

    // The exit reaches both clients and the record.
    type_line(&mut a, "exit 3").await;
    read_until(&mut a, &mut sa, |s| s.closed).await;
    read_until(&mut b, &mut sb, |s| s.closed).await;
    assert_eq!(sa.frame("exit").unwrap()["code"], 3);
    assert_eq!(sb.frame("exit").unwrap()["exit"]["code"], 3);
    let info = c.get_terminal("term1", &id).await.unwrap();
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(sa.output, sb.output, "both clients saw the same bytes");

    // Refusals come back as API errors through the proxy.
    let err = c
        .attach_terminal("term1", "nope", &opts(Protocol::Cursor, None))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(bothy_api::ErrorCode::NotFound));
    let err = c
        .attach_terminal(
            "term1",
            &id,
            &opts(Protocol::Cursor, Some("99999999".into())),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(bothy_api::ErrorCode::InvalidRequest));
    let err = c
        .attach_terminal("ghost", &id, &opts(Protocol::Cursor, None))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(bothy_api::ErrorCode::SandboxNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_terminal_keeps_the_sandbox_awake_and_dies_with_its_sleep() {
    let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else {
        return;
    };
    let c = &d.client;
    let spec = CreateSandbox {
        sleep_after: Some(1),
        ..Default::default()
    };
    c.put_sandbox("awake", &spec).await.unwrap();
    let id = c.create_terminal("awake", &plain_shell()).await.unwrap().id;
    let mut ws = c
        .attach_terminal("awake", &id, &opts(Protocol::Cursor, None))
        .await
        .unwrap();
    let mut seen = Seen::default();
    // Idle for 3 s with sleep_after = 1 s, but attached.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        type_line(&mut ws, &format!("echo tick-{i}-$((i=1))")).await;
    }
    read_until(&mut ws, &mut seen, |s| s.text().contains("tick-5-1")).await;
    let info = c.get_sandbox("awake").await.unwrap();
    assert_eq!(info.state.as_str(), "running");

    // Once nobody is attached the sandbox sleeps, and the terminal goes with it.
    drop(ws);
    let slept = wait_until(Duration::from_secs(10), || async {
        c.get_sandbox("awake")
            .await
            .map(|s| s.state.as_str() == "sleeping")
            .unwrap_or(false)
    })
    .await;
    assert!(slept, "sandbox did not fall asleep after the client left");
    let err = c.get_terminal("awake", &id).await.unwrap_err();
    assert_eq!(err.code(), Some(bothy_api::ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_public_and_everything_else_needs_the_token() {
    let Some(d) = TestDaemon::start_with(
        env!("CARGO_BIN_EXE_bothy"),
        Options {
            tcp_token: Some("tok3n".into()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    d.client
        .put_sandbox("web", &Default::default())
        .await
        .unwrap();
    let id = d
        .client
        .create_terminal("web", &plain_shell())
        .await
        .unwrap()
        .id;
    let addr = d.tcp_addr.clone().unwrap();
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&[&format!("http://{addr}/ui/")]), "200");
    assert_eq!(curl(&[&format!("http://{addr}/ui/app.js")]), "200");
    assert_eq!(curl(&[&format!("http://{addr}/v1/sandboxes")]), "401");
    // Only GETs of assets are public.
    assert_eq!(curl(&["-X", "POST", &format!("http://{addr}/ui/")]), "401");

    // A browser-style WebSocket upgrade with the token as a subprotocol.
    let ws_url = format!("ws://{addr}/v1/sandboxes/web/terminals/{id}/ws?protocol=cursor");
    let connect = |protocols: Option<&str>| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                ws_url.as_str(),
            )
            .unwrap();
        if let Some(p) = protocols {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let (mut ws, resp) = connect(Some("bothy, bothy.token.tok3n")).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "bothy");
    let mut seen = Seen::default();
    ws.send(Message::Binary(b"echo via-tcp-$((3*3))\r".to_vec().into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while !seen.text().contains("via-tcp-9") {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("output")
        {
            Some(Ok(Message::Binary(b))) => seen.output.extend_from_slice(&b),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    for bad in [None, Some("bothy, bothy.token.wrong"), Some("bothy")] {
        match connect(bad).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 401, "{bad:?}")
            }
            other => panic!("{bad:?} was let in: {:?}", other.map(|x| x.1)),
        }
    }
}

/// `bothy shell` in a real terminal (tmux): a command, a resize, detach, re-attach, exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bothy_shell_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        bothy_testkit::skip("needs tmux");
        return;
    }
    let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else {
        return;
    };
    d.client
        .put_sandbox("sh1", &Default::default())
        .await
        .unwrap();
    let session = format!("bothy-test-{}", std::process::id());
    let sock = d.data_dir().join("tmux.sock");
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]);
    let wait_screen = |want: String| {
        let screen = &screen;
        async move {
            let ok = wait_until(T, || async { screen().contains(&want) }).await;
            assert!(ok, "screen never showed {want:?}:\n{}", screen());
        }
    };
    let bin = env!("CARGO_BIN_EXE_bothy");
    let shell_cmd = |extra: &str| {
        format!(
            "env BOTHY_URL={} {bin} shell sh1 {extra}; echo BOTHY-EXIT=$?; sleep 600",
            d.url
        )
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &shell_cmd("--env 'PS1=$ ' -- bash --norc --noprofile -i"),
    ]);
    wait_screen("$".into()).await;
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "echo hello-$((6*7)); stty size",
        "Enter",
    ]);
    wait_screen("hello-42".into()).await;
    wait_screen("30 100".into()).await;

    // The window changes size: SIGWINCH reaches the shell in the sandbox.
    tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
    // (SIGWINCH is asynchronous: on a loaded machine it may land after the keys, so ask again.)
    let mut resized = false;
    for _ in 0..10 {
        tmux(&["send-keys", "-t", &session, "clear; stty size", "Enter"]);
        if wait_until(Duration::from_secs(2), || async {
            screen().contains("40 120")
        })
        .await
        {
            resized = true;
            break;
        }
    }
    assert!(resized, "the resize never reached the shell:\n{}", screen());

    // Detach: the shell keeps running, `bothy shell` exits 0 and says how to come back.
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "export MARK=kept-$((1+1))",
        "Enter",
    ]);
    tmux(&["send-keys", "-t", &session, "C-]", "d"]);
    wait_screen("BOTHY-EXIT=0".into()).await;
    let text = screen();
    let id = text
        .split("--terminal ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("detach message names the terminal")
        .trim()
        .to_string();
    // The local terminal was restored: cooked mode, echo on.
    let tty = tmux(&["display", "-p", "-t", &session, "#{pane_tty}"]);
    let stty = Command::new("stty")
        .args(["-F", tty.trim(), "-a"])
        .output()
        .unwrap();
    let stty = String::from_utf8_lossy(&stty.stdout);
    assert!(
        stty.contains(" icanon") && stty.contains(" echo "),
        "{stty}"
    );
    tmux(&["kill-session", "-t", &session]);

    // Re-attach with --terminal: the shell still has its state; exit code propagates.
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &shell_cmd(&format!("--terminal {id}")),
    ]);
    wait_screen("$".into()).await;
    tmux(&["send-keys", "-t", &session, "echo mark=$MARK", "Enter"]);
    wait_screen("mark=kept-2".into()).await;
    tmux(&["send-keys", "-t", &session, "exit 7", "Enter"]);
    wait_screen("BOTHY-EXIT=7".into()).await;
    tmux(&["kill-server"]);
}

/// Without a terminal on stdin (a pipe), `bothy shell` still forwards input and the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bothy_shell_with_piped_input() {
    let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else {
        return;
    };
    d.client
        .put_sandbox("pipe1", &Default::default())
        .await
        .unwrap();
    let mut cmd = d.cli();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd
            .args(["shell", "pipe1", "--", "sh"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo piped-$((2+2)); exit 4\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("piped-4"), "{stdout}");
}
