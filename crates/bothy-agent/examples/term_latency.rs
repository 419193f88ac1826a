//! Keystroke-to-echo latency of a terminal over WebSocket (issue 5: target ≤ 2 ms p50 on
//! loopback).
//!
//! Starts an agent on a temporary unix socket (or uses `--socket PATH`, e.g. a daemon's socket
//! together with `--prefix /v1/sandboxes/NAME`), creates a terminal running `cat` in cooked
//! mode (the kernel's line discipline echoes every key), and measures, for each keystroke, the
//! time from sending one binary frame to receiving its echo. As a floor it also measures the
//! same echo on a bare pty with no WebSocket and no agent in between.
//!
//! `cargo run --release -p bothy-agent --example term_latency -- [--n 2000] [--socket PATH --prefix P]`

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    n: usize,
    socket: Option<PathBuf>,
    prefix: String,
    token: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        n: 2000,
        socket: None,
        prefix: "/v1".into(),
        token: std::env::var("BOTHY_TOKEN").ok(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--n" => a.n = v.parse().expect("--n N"),
            "--socket" => a.socket = Some(v.into()),
            "--prefix" => a.prefix = v.trim_end_matches('/').to_string(),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<30} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  max={:>8.1} µs",
        v.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v.last().unwrap().as_secs_f64() * 1e6
    );
    (p50, p99)
}

/// The floor: one key written to a bare pty master (`cat` on the slave), echo read back.
fn bare_pty(n: usize) -> Vec<Duration> {
    let (master, slave) = bothy_agent::terminals::pty::open(80, 24).unwrap();
    let mut cmd = std::process::Command::new("cat");
    let (_child, _exit) = bothy_agent::terminals::pty::spawn(&mut cmd, &slave).unwrap();
    drop(slave);
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 200 == 199 {
            f.write_all(b"\r").unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let _ = f.read(&mut buf);
            continue;
        }
        let t = Instant::now();
        f.write_all(b"x").unwrap();
        let mut got = 0;
        while got == 0 {
            got = f.read(&mut buf).unwrap();
        }
        out.push(t.elapsed());
    }
    out
}

async fn create_terminal(sock: &PathBuf, prefix: &str, token: Option<&str>) -> String {
    let stream = UnixStream::connect(sock).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = r#"{"command":["cat"],"cwd":"/"}"#;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{prefix}/terminals"))
        .header("host", "bench")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn websocket(a: &Args, sock: &PathBuf, protocol: &str) -> Vec<Duration> {
    let id = create_terminal(sock, &a.prefix, a.token.as_deref()).await;
    let stream = UnixStream::connect(sock).await.unwrap();
    let url = format!(
        "ws://bench{}/terminals/{id}/ws?protocol={protocol}",
        a.prefix
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    if let Some(t) = &a.token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    // Up to `ready`.
    while let Some(Ok(m)) = ws.next().await {
        if matches!(&m, Message::Text(t) if t.contains("\"ready\"")) {
            break;
        }
    }
    let mut out = Vec::with_capacity(a.n);
    for i in 0..a.n {
        if i % 200 == 199 {
            ws.send(Message::Binary(b"\r".to_vec().into()))
                .await
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
            while let Ok(Some(_)) = tokio::time::timeout_at(deadline, ws.next()).await {}
            continue;
        }
        let t = Instant::now();
        ws.send(Message::Binary(b"x".to_vec().into()))
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.contains(&b'x') => break,
                Some(Ok(_)) => continue,
                other => panic!("terminal went away: {other:?}"),
            }
        }
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let floor = rt.block_on(async {
        bothy_agent::reaper::start().unwrap();
        bare_pty(a.n.min(2000))
    });
    let (sock, own_agent) = match &a.socket {
        Some(s) => (s.clone(), false),
        None => {
            let dir = std::env::temp_dir().join(format!("bothy-term-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let sock = dir.join("agent.sock");
            let config = bothy_api::agent::AgentConfig {
                name: "bench".into(),
                env: Default::default(),
                state_dir: dir.join("state").to_string_lossy().into(),
            };
            let s = sock.clone();
            std::thread::spawn(move || {
                bothy_agent::run(config, bothy_agent::server::Listen::Path(s))
            });
            while std::os::unix::net::UnixStream::connect(&sock).is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
            (sock, true)
        }
    };
    let where_ = if own_agent {
        "agent"
    } else if a.prefix.starts_with("/v1/sandboxes/") {
        "daemon"
    } else {
        "socket"
    };
    let stable = rt.block_on(websocket(&a, &sock, "stable"));
    let cursor = rt.block_on(websocket(&a, &sock, "cursor"));
    println!("keystroke-to-echo latency (target: p50 <= 2000 µs on loopback)");
    report("bare pty (floor)", floor);
    report(&format!("{where_} ws, stable framing"), stable);
    let (p50, _) = report(&format!("{where_} ws, cursor framing"), cursor);
    if p50 > Duration::from_millis(2) {
        println!("p50 above the 2 ms target");
        std::process::exit(1);
    }
}
