//! The agent as a real server on a unix socket: driven with curl and with raw connections.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bothy_agent::server::Listen;
use bothy_api::agent::AgentConfig;

/// One agent for the whole test binary, serving on a socket in a temp dir.
fn agent() -> &'static Path {
    static SOCK: OnceLock<PathBuf> = OnceLock::new();
    SOCK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let sock = dir.join("agent.sock");
        let config = AgentConfig {
            name: "socket-test".into(),
            env: Default::default(),
            state_dir: dir.join("state").to_string_lossy().into(),
        };
        let listen = Listen::Path(sock.clone());
        std::thread::spawn(move || bothy_agent::run(config, listen));
        let end = Instant::now() + Duration::from_secs(5);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < end, "agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        sock
    })
}

fn have_curl() -> bool {
    Path::new("/usr/bin/curl").exists() || Path::new("/usr/local/bin/curl").exists()
}

/// Runs curl against the agent. It is started through the agent's reaper: the agent running
/// in this process reaps every child with `waitpid(-1)`, so `Command::output` would race it.
fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--unix-socket",
        agent().to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ])
    .args(args)
    .stdout(std::process::Stdio::piped());
    let (mut child, mut exit) = bothy_agent::reaper::spawn(&mut cmd).expect("run curl");
    let mut body = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut body).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(exit.wait());
    assert_eq!(status.code, Some(0), "curl failed");
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8(body.split_off(nl))
        .unwrap()
        .trim()
        .to_string();
    (code, body)
}

#[test]
fn curl_exec_and_files() {
    if !have_curl() {
        bothy_testkit::skip("curl is not installed");
        return;
    }
    let (code, body) = curl(&["http://agent/v1/health"]);
    assert_eq!(code, "200");
    assert!(String::from_utf8_lossy(&body).contains("socket-test"));

    let (code, body) = curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"shell": "printf 'a\\nb'; echo err >&2; exit 2"}"#,
        "http://agent/v1/exec",
    ]);
    assert_eq!(code, "200");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["stderr"].as_str(),
            v["exit_code"].as_i64()
        ),
        (Some("a\nb"), Some("err\n"), Some(2))
    );

    let (code, body) = curl(&[
        "-N",
        "-H",
        "accept: text/event-stream",
        "-d",
        r#"{"argv": ["echo", "hi"]}"#,
        "http://agent/v1/exec",
    ]);
    assert_eq!(code, "200");
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("event: start\ndata: {\"pid\":"), "{text}");
    assert!(
        text.contains("event: stdout\ndata: {\"data\":\"hi\\n\",\"encoding\":\"utf-8\"}\n\n"),
        "{text}"
    );
    assert!(
        text.contains("event: exit\ndata: {\"exit_code\":0,"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let dst = format!("{}/sub/dst.bin", dir.path().display());
    let (code, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", src.display()),
        &format!("http://agent/v1/files?path={dst}&mode=640"),
    ]);
    assert_eq!(code, "200", "{}", String::from_utf8_lossy(&body));
    let back = dir.path().join("back.bin");
    let (code, _) = curl(&[
        "-o",
        back.to_str().unwrap(),
        &format!("http://agent/v1/files?path={dst}"),
    ]);
    assert_eq!(code, "200");
    assert!(std::fs::read(&back).unwrap() == data);

    let (code, body) = curl(&["http://agent/v1/files?path=/../x"]);
    assert_eq!(code, "400");
    assert!(String::from_utf8_lossy(&body).contains("path_escape"));
}

/// A client that closes its connection while a JSON exec runs takes the command with it:
/// hyper drops the handler's future on the connection's end of file.
#[test]
fn json_client_going_away_kills_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let body = serde_json::json!({"shell": format!("sleep 100 & echo $! > {0}.bg; echo $$ > {0}; wait", pidfile.display())}).to_string();
    let mut conn = UnixStream::connect(agent()).unwrap();
    write!(
        conn,
        "POST /v1/exec HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&pidfile)
        .map(|s| s.trim().is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < end, "command did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let bg: i32 = loop {
        if let Ok(s) = std::fs::read_to_string(format!("{}.bg", pidfile.display())) {
            if let Ok(p) = s.trim().parse() {
                break p;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!dead(pid));
    drop(conn);
    let end = Instant::now() + Duration::from_secs(3);
    while !(dead(pid) && dead(bg)) {
        assert!(
            Instant::now() < end,
            "command {pid} or its child {bg} survived the client"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Keep-alive works and a finished exec leaves nothing behind on the connection.
#[test]
fn keep_alive_runs_many_execs() {
    let mut conn = UnixStream::connect(agent()).unwrap();
    let body = r#"{"argv":["true"]}"#;
    for _ in 0..20 {
        write!(
            conn,
            "POST /v1/exec HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let reply = read_response(&mut conn);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"exit_code\":0"), "{reply}");
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(conn: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = conn.read(&mut byte).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&byte[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(h) = text.find("\r\n\r\n") {
            let len: usize = text[..h]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= h + 4 + len {
                return text;
            }
        }
    }
}

fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')),
    }
}
