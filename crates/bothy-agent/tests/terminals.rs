//! Terminals through a real agent on a unix socket, with real ptys and shells, and real
//! WebSocket clients.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bothy_api::agent::AgentConfig;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(10);

/// One agent for the whole test binary (it reaps with waitpid(-1), so one is enough).
fn agent() -> PathBuf {
    static SOCK: OnceLock<PathBuf> = OnceLock::new();
    SOCK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let sock = dir.join("agent.sock");
        let config = AgentConfig {
            name: "term-test".into(),
            env: Default::default(),
            state_dir: dir.join("state").to_string_lossy().into(),
        };
        let s = sock.clone();
        std::thread::spawn(move || bothy_agent::run(config, bothy_agent::server::Listen::Path(s)));
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sock
    })
    .clone()
}

async fn request(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let stream = UnixStream::connect(agent()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "agent")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

/// A shell with a fixed prompt and no rc files, so output is predictable.
async fn shell(extra: Value) -> String {
    let mut body = json!({
        "command": ["/bin/bash", "--norc", "--noprofile", "-i"],
        "cwd": "/tmp",
        "env": {"PS1": "$ "},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (status, v) = request("POST", "/v1/terminals", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

type Ws = WebSocketStream<UnixStream>;

async fn connect(id: &str, query: &str) -> Ws {
    let stream = UnixStream::connect(agent()).await.unwrap();
    let url = format!("ws://agent/v1/terminals/{id}/ws?{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws
}

/// What a client has received.
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
}

/// Reads frames until `done` holds (or panics after a timeout).
async fn read_until(ws: &mut Ws, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !done(seen) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!("timed out; seen so far: {:?} {}", seen.frames, seen.text())
            });
        match msg {
            Some(Ok(Message::Binary(b))) => seen.output.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => seen.frames.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                seen.closed = true;
                if !done(seen) {
                    panic!("closed early; seen: {:?} {}", seen.frames, seen.text());
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn type_line(ws: &mut Ws, line: &str) {
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn two_clients_see_the_same_output_and_the_exit() {
    let id = shell(json!({})).await;
    let mut a = connect(&id, "").await;
    let mut b = connect(&id, "protocol=cursor").await;
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    read_until(&mut a, &mut sa, |s| s.frame("ready").is_some()).await;
    read_until(&mut b, &mut sb, |s| s.frame("ready").is_some()).await;

    type_line(&mut a, "echo from-a-$((6*7))").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("from-a-42")).await;
    read_until(&mut b, &mut sb, |s| s.text().contains("from-a-42")).await;
    type_line(&mut b, "echo from-b-$((6*8))").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("from-b-48")).await;
    read_until(&mut b, &mut sb, |s| s.text().contains("from-b-48")).await;

    let (_, info) = request("GET", &format!("/v1/terminals/{id}"), None).await;
    assert_eq!(info["clients"], 2);
    assert_eq!(info["status"], "running");

    type_line(&mut a, "exit 3").await;
    read_until(&mut a, &mut sa, |s| s.closed).await;
    read_until(&mut b, &mut sb, |s| s.closed).await;
    let exit_a = sa.frame("exit").expect("exit frame (stable)");
    assert_eq!(exit_a["code"], 3);
    let exit_b = sb.frame("exit").expect("exit frame (cursor)");
    assert_eq!(exit_b["exit"]["code"], 3);
    // Both clients saw the same bytes.
    let (_, info) = request("GET", &format!("/v1/terminals/{id}"), None).await;
    assert_eq!(info["status"], "exited");
    assert_eq!(info["exit_code"], 3);
    assert_eq!(exit_b["cursor"], info["cursor"]);
    assert_eq!(sa.output, sb.output);
    assert_eq!(
        sa.output.len().to_string(),
        info["cursor"].as_str().unwrap()
    );

    // A client attaching after the exit gets the replay, ready, then the exit.
    let mut c = connect(&id, "").await;
    let mut sc = Seen::default();
    read_until(&mut c, &mut sc, |s| s.closed).await;
    assert_eq!(sc.output, sa.output);
    assert_eq!(sc.frame("exit").unwrap()["code"], 3);
}

#[tokio::test]
async fn reconnect_with_a_cursor_gets_exactly_the_missed_bytes() {
    let id = shell(json!({})).await;
    let mut a = connect(&id, "protocol=cursor").await;
    let mut sa = Seen::default();
    type_line(&mut a, "echo first-$((1+1))").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("first-2")).await;
    // Let the prompt land, then remember the cursor of the last chunk.
    tokio::time::sleep(Duration::from_millis(200)).await;
    read_until(&mut a, &mut sa, |s| s.text().ends_with("$ ")).await;
    let cursor: u64 = sa
        .frames
        .iter()
        .rev()
        .find(|f| f["type"] == "chunk")
        .unwrap()["cursor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cursor, sa.output.len() as u64);
    // Every chunk frame announces the binary frame that follows.
    let total: u64 = sa
        .frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["byteLength"].as_u64().unwrap())
        .sum();
    assert_eq!(total, sa.output.len() as u64);
    drop(a);

    // Output produced while this client is away (another client types).
    let mut other = connect(&id, &format!("cursor={cursor}")).await;
    let mut so = Seen::default();
    read_until(&mut other, &mut so, |s| s.frame("ready").is_some()).await;
    assert!(so.output.is_empty(), "nothing missed yet: {:?}", so.text());
    type_line(&mut other, "echo missed-$((2+3))").await;
    read_until(&mut other, &mut so, |s| s.text().contains("missed-5")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(other);

    for query in [
        format!("cursor={cursor}"),
        format!("protocol=cursor&cursor={cursor}"),
    ] {
        let mut b = connect(&id, &query).await;
        let mut sb = Seen::default();
        read_until(&mut b, &mut sb, |s| s.frame("ready").is_some()).await;
        let (_, info) = request("GET", &format!("/v1/terminals/{id}"), None).await;
        let end: u64 = info["cursor"].as_str().unwrap().parse().unwrap();
        assert_eq!(sb.output.len() as u64, end - cursor, "{query}");
        let text = sb.text();
        assert!(text.contains("missed-5"), "{text:?}");
        assert!(!text.contains("first-2"), "old bytes replayed: {text:?}");
        assert_eq!(sb.frame("ready").unwrap()["cursor"], info["cursor"]);
        assert!(sb.frame("truncated").is_none());
    }
}

#[tokio::test]
async fn output_that_fell_out_of_the_buffer_is_reported_as_truncated() {
    let id = shell(json!({"buffer_bytes": 262144})).await;
    let mut a = connect(&id, "").await;
    let mut sa = Seen::default();
    // 400 000 bytes of output: more than the 256 KiB buffer.
    type_line(
        &mut a,
        "head -c 400000 /dev/zero | tr '\\0' x; echo; echo done-$((9*9))",
    )
    .await;
    read_until(&mut a, &mut sa, |s| s.text().contains("done-81")).await;
    drop(a);
    let mut b = connect(&id, "cursor=0&protocol=cursor").await;
    let mut sb = Seen::default();
    read_until(&mut b, &mut sb, |s| s.frame("ready").is_some()).await;
    let t = sb.frame("truncated").expect("truncated frame");
    let start: u64 = t["cursor"].as_str().unwrap().parse().unwrap();
    assert!(start > 0);
    assert_eq!(sb.output.len(), 262144);
    assert!(sb.text().contains("done-81"));
}

#[tokio::test]
async fn resize_changes_stty_size() {
    let id = shell(json!({"cols": 100, "rows": 30})).await;
    let mut a = connect(&id, "").await;
    let mut sa = Seen::default();
    type_line(&mut a, "stty size").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("30 100")).await;

    a.send(Message::Text(
        r#"{"type":"resize","cols":120,"rows":40}"#.into(),
    ))
    .await
    .unwrap();
    type_line(&mut a, "stty size").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("40 120")).await;

    let (status, info) = request(
        "POST",
        &format!("/v1/terminals/{id}/resize"),
        Some(json!({"cols": 57, "rows": 13})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (info["cols"].as_u64(), info["rows"].as_u64()),
        (Some(57), Some(13))
    );
    type_line(&mut a, "stty size").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("13 57")).await;

    // Attaching with a size resizes too.
    let mut b = connect(&id, "cols=77&rows=22").await;
    let mut sb = Seen::default();
    read_until(&mut b, &mut sb, |s| s.frame("ready").is_some()).await;
    type_line(&mut b, "stty size").await;
    read_until(&mut b, &mut sb, |s| s.text().contains("22 77")).await;

    let (status, err) = request(
        "POST",
        &format!("/v1/terminals/{id}/resize"),
        Some(json!({"cols": 0, "rows": 13})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "invalid_request");
}

#[tokio::test]
async fn malformed_control_messages_get_an_error_frame_and_the_connection_stays() {
    let id = shell(json!({})).await;
    for proto in ["stable", "cursor"] {
        let mut a = connect(&id, &format!("protocol={proto}")).await;
        let mut sa = Seen::default();
        read_until(&mut a, &mut sa, |s| s.frame("ready").is_some()).await;
        for bad in [
            "not json",
            r#"{"type":"resize","cols":-1,"rows":5}"#,
            r#"{"type":"resize","cols":0,"rows":5}"#,
            r#"{"type":"launch-missiles"}"#,
            r#"[1,2,3]"#,
        ] {
            a.send(Message::Text(bad.into())).await.unwrap();
            let before = sa.frames.iter().filter(|f| f["type"] == "error").count();
            read_until(&mut a, &mut sa, |s| {
                s.frames.iter().filter(|f| f["type"] == "error").count() > before
            })
            .await;
        }
        let errors: Vec<_> = sa.frames.iter().filter(|f| f["type"] == "error").collect();
        assert_eq!(errors.len(), 5);
        assert!(errors
            .iter()
            .all(|e| e["code"] == "invalid_request" && e["message"].is_string()));
        // Still attached and working.
        type_line(&mut a, &format!("echo still-{proto}-$((1+2))")).await;
        read_until(&mut a, &mut sa, |s| {
            s.text().contains(&format!("still-{proto}-3"))
        })
        .await;
    }
}

#[tokio::test]
async fn interrupt_terminate_and_kill() {
    let id = shell(json!({})).await;
    let mut a = connect(&id, "protocol=cursor").await;
    let mut sa = Seen::default();
    // Interrupt only once the list runs (a fixed pause lost the race on a loaded machine: the
    // interrupt reached bash before it started the sleep).
    type_line(
        &mut a,
        "echo started-$((1+1)); sleep 100; echo after-$((5+5))",
    )
    .await;
    read_until(&mut a, &mut sa, |s| s.text().contains("started-2")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(Message::Text(r#"{"type":"interrupt"}"#.into()))
        .await
        .unwrap();
    // The interrupted sleep ends the whole list (bash drops it on SIGINT): a fresh prompt.
    type_line(&mut a, "echo alive-$((3+4))").await;
    read_until(&mut a, &mut sa, |s| s.text().contains("alive-7")).await;
    assert!(!sa.text().contains("after-10"));

    a.send(Message::Text(r#"{"type":"terminate"}"#.into()))
        .await
        .unwrap();
    read_until(&mut a, &mut sa, |s| s.closed).await;
    let exit = sa.frame("exit").unwrap();
    assert_eq!(exit["exit"]["signal"], libc::SIGHUP);

    // POST kill with an explicit signal.
    let id = shell(json!({})).await;
    let (status, _) = request(
        "POST",
        &format!("/v1/terminals/{id}/kill"),
        Some(json!({"signal": "KILL"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut info = Value::Null;
    for _ in 0..100 {
        info = request("GET", &format!("/v1/terminals/{id}"), None).await.1;
        if info["status"] == "exited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["signal"], libc::SIGKILL);
    assert_eq!(info["exit_code"], Value::Null);

    // DELETE forgets it.
    let (status, _) = request("DELETE", &format!("/v1/terminals/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, err) = request("GET", &format!("/v1/terminals/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "not_found");
}

#[tokio::test]
async fn terminals_have_their_own_cwd_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let a = shell(json!({"cwd": dir.path(), "env": {"WHO": "alpha"}})).await;
    let b = shell(json!({"env": {"WHO": "beta"}})).await;
    let mut wa = connect(&a, "").await;
    let mut wb = connect(&b, "").await;
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    type_line(&mut wa, "echo \"[$WHO:$PWD]\"").await;
    type_line(&mut wb, "echo \"[$WHO:$PWD]\"").await;
    let want = format!("[alpha:{}]", dir.path().display());
    read_until(&mut wa, &mut sa, |s| s.text().contains(&want)).await;
    read_until(&mut wb, &mut sb, |s| s.text().contains("[beta:/tmp]")).await;
    let (_, list) = request("GET", "/v1/terminals", None).await;
    let ids: Vec<_> = list["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&a) && ids.contains(&b));
}

#[tokio::test]
async fn bad_requests_are_refused_with_api_errors() {
    let (s, e) = request("POST", "/v1/terminals", Some(json!({"command": []}))).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
    let (s, e) = request("POST", "/v1/terminals", Some(json!({"cols": 0}))).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
    let (s, e) = request(
        "POST",
        "/v1/terminals",
        Some(json!({"cwd": "/nonexistent-dir"})),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("file_not_found")));
    let (s, e) = request(
        "POST",
        "/v1/terminals",
        Some(json!({"command": ["/no/such/program"]})),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
    let (s, e) = request("POST", "/v1/terminals", Some(json!({"bogus": 1}))).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("malformed_json")));
    let (s, e) = request("GET", "/v1/terminals/nope", None).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));

    let id = shell(json!({})).await;
    for q in [
        "cursor=abc",
        "cursor=999999999",
        "protocol=telnet",
        "cols=10",
        "cols=0&rows=3",
    ] {
        let (s, e) = request("GET", &format!("/v1/terminals/{id}/ws?{q}"), None).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("invalid_request")),
            "{q}"
        );
    }
    // Not a WebSocket upgrade.
    let (s, e) = request("GET", &format!("/v1/terminals/{id}/ws"), None).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn the_default_command_is_a_login_shell() {
    let (status, info) = request("POST", "/v1/terminals", Some(json!({"cwd": "/tmp"}))).await;
    assert_eq!(status, 201);
    let cmd: Vec<String> = serde_json::from_value(info["command"].clone()).unwrap();
    assert!(
        cmd[0].ends_with("bash") || cmd[0].ends_with("sh"),
        "{cmd:?}"
    );
    assert_eq!(cmd[1], "-l");
    let id = info["id"].as_str().unwrap();
    let mut a = connect(id, "").await;
    let mut sa = Seen::default();
    type_line(&mut a, "shopt -q login_shell && echo login-$((2*2)); tty").await;
    read_until(&mut a, &mut sa, |s| {
        s.text().contains("login-4") && s.text().contains("/dev/pts/")
    })
    .await;
    request("DELETE", &format!("/v1/terminals/{id}"), None).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_up_nobody() {
    let id = shell(json!({"buffer_bytes": 262144})).await;
    // Attached, never reads: its socket buffers fill up and its sends block.
    let stalled = connect(&id, "protocol=cursor").await;
    let mut a = connect(&id, "").await;
    let mut sa = Seen::default();
    type_line(
        &mut a,
        "head -c 4000000 /dev/zero | tr '\\0' y; echo; echo flood-$((2*5))",
    )
    .await;
    read_until(&mut a, &mut sa, |s| s.text().contains("flood-10")).await;
    // The reader got everything, or (when even it fell more than the buffer behind the
    // flood) was told what it lost; never a silent gap.
    assert!(sa.output.len() > 4_000_000 || sa.frame("truncated").is_some());
    let (_, info) = request("GET", &format!("/v1/terminals/{id}"), None).await;
    assert_eq!(info["clients"], 2);
    drop(stalled);
}
