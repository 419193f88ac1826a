//! Agent-side latency of `exec true`: starts the agent on a unix socket in this process and
//! sends `POST /v1/exec {"argv":["true"]}` over one kept-alive connection.
//!
//! `cargo run --release -p bothy-agent --example exec_latency -- [requests]` (default 200).
//!
//! With `-- N SOCKET PATH` it measures a server that is already running instead, e.g. through
//! the daemon: `-- 200 /var/lib/bothy/bothy.sock /v1/sandboxes/demo/exec`.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bothy_agent::server::Listen;
use bothy_api::agent::AgentConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let (sock, exec_path) = match (args.get(2), args.get(3)) {
        (Some(sock), Some(path)) => (std::path::PathBuf::from(sock), path.clone()),
        _ => (start_agent(), "/v1/exec".to_string()),
    };
    let mut conn = loop {
        if let Ok(c) = UnixStream::connect(&sock) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let body = r#"{"argv":["true"]}"#;
    let req = format!(
        "POST {exec_path} HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut times = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..n + 20 {
        let t = Instant::now();
        conn.write_all(req.as_bytes()).unwrap();
        read_response(&mut conn, &mut buf);
        if i >= 20 {
            times.push(t.elapsed()); // the first 20 warm up
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "exec true x{n}: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, min {:.3} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.0)
    );
}

/// Serves an agent on a socket in a temp dir, from a thread of this process.
fn start_agent() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bothy-exec-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let config = AgentConfig {
        name: "bench".into(),
        env: Default::default(),
        state_dir: dir.join("state").to_string_lossy().into(),
    };
    let listen = Listen::Path(sock.clone());
    std::thread::spawn(move || bothy_agent::run(config, listen));
    sock
}

fn read_response(conn: &mut UnixStream, buf: &mut [u8]) {
    let mut got = Vec::new();
    loop {
        let n = conn.read(buf).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("content-length");
        if got.len() >= h + 4 + len {
            return;
        }
    }
}
