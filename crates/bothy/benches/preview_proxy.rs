//! Benchmark: the preview proxy against the same server reached directly, in the same run.
//!
//! Starts a real daemon (release build, TCP listener), a sandbox, and an HTTP server inside it
//! (node if the sandbox has it, else python's http.server), exposes the port, then measures
//! the same client against two paths:
//! - **direct**: from a thread that entered the sandbox's network namespace, to
//!   `127.0.0.1:PORT` (what a process inside the sandbox would see);
//! - **proxy**: to the daemon's TCP port with the preview `Host`.
//!
//! Reported: median latency of a request on a new connection and on a kept-alive one,
//! requests/s with 16 kept-alive connections, and MB/s of a large download. Run with
//! `bench/preview-proxy` (needs root; `BENCH_UPSTREAM=python` to use python's http.server).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bothy_api::preview::ExposeRequest;
use bothy_api::process::{ProcessStart, WaitPort};
use bothy_api::sandbox::CreateSandbox;
use bothy_testkit::{Options, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PORT: u16 = 8123;
const BIG: usize = 64 << 20;

#[derive(Clone)]
struct Target {
    addr: String,
    host: String,
}

/// Sends one GET and reads the whole response (Content-Length framed); returns body size.
async fn request(s: &mut TcpStream, t: &Target, path: &str, buf: &mut Vec<u8>) -> usize {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", t.host);
    s.write_all(req.as_bytes()).await.expect("write request");
    buf.clear();
    let mut chunk = vec![0u8; 256 * 1024];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..i])
                .expect("ascii head")
                .to_ascii_lowercase();
            assert!(
                head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
                "{head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            break (i + 4, len);
        }
    };
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        have += n;
    }
    len
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(Clone, Copy)]
enum Metric {
    /// Median µs of a request on a new connection.
    NewConn,
    /// Median µs of a request on a kept-alive connection.
    KeepAlive,
    /// Requests per second over 16 kept-alive connections.
    Rps,
    /// MB/s of a 64 MiB download.
    Download,
}

async fn connect(t: &Target) -> TcpStream {
    let s = TcpStream::connect(&t.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

async fn measure(t: Target, m: Metric) -> f64 {
    let mut buf = Vec::new();
    match m {
        Metric::NewConn => {
            let mut lat = Vec::new();
            for _ in 0..300 {
                let start = Instant::now();
                let mut s = connect(&t).await;
                request(&mut s, &t, "/", &mut buf).await;
                lat.push(start.elapsed().as_secs_f64() * 1e6);
            }
            median(lat)
        }
        Metric::KeepAlive => {
            let mut s = connect(&t).await;
            let mut lat = Vec::new();
            for _ in 0..1000 {
                let start = Instant::now();
                request(&mut s, &t, "/", &mut buf).await;
                lat.push(start.elapsed().as_secs_f64() * 1e6);
            }
            median(lat)
        }
        Metric::Rps => {
            let stop = Instant::now() + Duration::from_secs(2);
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let t = t.clone();
                tasks.push(tokio::spawn(async move {
                    let mut s = connect(&t).await;
                    let mut buf = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        request(&mut s, &t, "/", &mut buf).await;
                        n += 1;
                    }
                    n
                }));
            }
            let start = Instant::now();
            let mut total = 0;
            for h in tasks {
                total += h.await.unwrap();
            }
            total as f64 / start.elapsed().as_secs_f64()
        }
        Metric::Download => {
            let mut s = connect(&t).await;
            let mut rates = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                let n = request(&mut s, &t, "/big", &mut buf).await;
                rates.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
            }
            median(rates)
        }
    }
}

/// Pid of the `bothy serve` whose data directory is `dir`.
fn find_daemon(dir: &std::path::Path) -> i32 {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("serve") && c.contains(dir.as_str())
            })
        })
        .expect("the daemon's pid")
}

/// User + system CPU seconds used by `pid` so far.
fn daemon_cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from the state field (3).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf with a valid name has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Runs `measure` on a thread that entered the sandbox's network namespace.
fn measure_in_netns(netns: std::fs::File, t: Target, m: Metric) -> f64 {
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("enter the sandbox's network namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure(t, m))
    })
    .join()
    .unwrap()
}

fn measure_here(t: Target, m: Metric) -> f64 {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure(t, m))
    })
    .join()
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(d) = TestDaemon::start_with(
        env!("CARGO_BIN_EXE_bothy"),
        Options {
            tcp_token: Some("bench".into()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let c = &d.client;
    let info = c
        .put_sandbox(
            "bench",
            &CreateSandbox {
                keep_alive: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let has_node = c
        .exec(
            "bench",
            &bothy_api::exec::ExecRequest {
                shell: Some("command -v node".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .exit_code
        == Some(0);
    // BENCH_UPSTREAM=python measures against python's http.server even where node exists.
    let has_node = has_node && std::env::var("BENCH_UPSTREAM").as_deref() != Ok("python");
    let (server, argv): (&str, Vec<String>) = if has_node {
        c.write_file(
            "bench",
            "/workspace/server.js",
            None,
            bothy_client::full(include_str!("preview_proxy.js")),
        )
        .await
        .unwrap();
        (
            "node http",
            vec![
                "node".into(),
                "server.js".into(),
                PORT.to_string(),
                BIG.to_string(),
            ],
        )
    } else {
        c.write_file(
            "bench",
            "/workspace/big",
            None,
            bothy_client::full(vec![b'x'; BIG]),
        )
        .await
        .unwrap();
        c.write_file(
            "bench",
            "/workspace/index.html",
            None,
            bothy_client::full("hello"),
        )
        .await
        .unwrap();
        (
            "python3 http.server",
            [
                "python3",
                "-m",
                "http.server",
                &PORT.to_string(),
                "--bind",
                "127.0.0.1",
                "--protocol",
                "HTTP/1.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
    };
    c.start_process(
        "bench",
        &ProcessStart {
            id: Some("server".into()),
            argv: Some(argv),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.wait_port(
        "bench",
        "server",
        &WaitPort {
            port: PORT,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let port = c
        .expose_port(
            "bench",
            &ExposeRequest {
                port: PORT,
                rotate: false,
            },
        )
        .await
        .unwrap();
    let host = port
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let pid = info.pid.expect("running sandbox has a pid");
    let direct = Target {
        addr: format!("127.0.0.1:{PORT}"),
        host: format!("127.0.0.1:{PORT}"),
    };
    let proxy = Target {
        addr: d.tcp_addr.clone().unwrap(),
        host,
    };
    // Warm both paths up, then alternate them round by round, so that load changing on the
    // machine during the run hits both alike.
    let daemon_pid = find_daemon(d.data_dir());
    let netns = || std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    measure_in_netns(netns(), direct.clone(), Metric::NewConn);
    measure_here(proxy.clone(), Metric::NewConn);
    let rounds = 5;
    println!("preview proxy vs direct (upstream: {server} in the sandbox; median of {rounds} alternating rounds)");
    println!(
        "{:<32} {:>12} {:>12} {:>16}",
        "", "direct", "proxy", "difference"
    );
    for (m, name, unit, as_ratio) in [
        (Metric::NewConn, "latency, new connection", "µs", false),
        (
            Metric::KeepAlive,
            "latency, kept-alive connection",
            "µs",
            false,
        ),
        (Metric::Rps, "requests/s, 16 connections", "/s", true),
        (Metric::Download, "download of 64 MiB", "MB/s", true),
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut cpu_per_req = Vec::new();
        for _ in 0..rounds {
            a.push(measure_in_netns(netns(), direct.clone(), m));
            let (cpu0, t0) = (daemon_cpu_secs(daemon_pid), Instant::now());
            let v = measure_here(proxy.clone(), m);
            if matches!(m, Metric::Rps) {
                let requests = v * t0.elapsed().as_secs_f64();
                cpu_per_req.push((daemon_cpu_secs(daemon_pid) - cpu0) / requests * 1e6);
            }
            b.push(v);
        }
        let (a, b) = (median(a), median(b));
        let diff = if as_ratio {
            format!("{:.0}% of direct", b / a * 100.0)
        } else {
            format!("+{:.0} µs", b - a)
        };
        println!("{name:<32} {a:>7.0} {unit:<4} {b:>7.0} {unit:<4} {diff:>16}");
        if !cpu_per_req.is_empty() {
            println!(
                "{:<32} daemon CPU per proxied request: {:.1} µs",
                "",
                median(cpu_per_req)
            );
        }
    }
}
