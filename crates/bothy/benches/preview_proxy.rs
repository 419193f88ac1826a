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
//! requests/s with 16 kept-alive connections (with the CPU time the client, the upstream and
//! the daemon spent per request), and MB/s of a large download. Everything is measured twice:
//! with all parties free to run on any CPU, then with the daemon pinned to a CPU of its own
//! and the client and upstream to the others (skipped on a 1-CPU machine). Run with
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
/// Downloads of `BIG` bytes per round of the download metric (their median rate is kept).
const DOWNLOADS: usize = 8;

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
    /// MB/s of a 64 MiB download (median of `DOWNLOADS`).
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
            for _ in 0..DOWNLOADS {
                let start = Instant::now();
                let n = request(&mut s, &t, "/big", &mut buf).await;
                rates.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
            }
            median(rates)
        }
    }
}

/// Pid of the first process whose command line (its arguments, split) satisfies `matches`.
fn find_process(what: &str, matches: impl Fn(&[&[u8]]) -> bool) -> i32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                matches(&args)
            })
        })
        .unwrap_or_else(|| panic!("the pid of {what}"))
}

/// Pid of the `bothy serve` whose data directory is `dir`.
fn find_daemon(dir: &std::path::Path) -> i32 {
    let dir = dir.to_string_lossy().into_owned();
    find_process("the daemon", |args| {
        args.contains(&b"serve".as_slice())
            && args
                .iter()
                .any(|a| String::from_utf8_lossy(a).contains(dir.as_str()))
    })
}

/// User + system CPU seconds used so far by process `pid` (all its threads).
fn process_cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from the state field (3).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf with a valid name has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds used by the calling thread so far.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Host pid of the upstream server (its command line names the benchmark port).
fn find_upstream() -> i32 {
    let port = PORT.to_string();
    find_process("the upstream server", |args| {
        args.contains(&port.as_bytes())
            && args
                .iter()
                .any(|a| *a == b"server.js" || *a == b"http.server")
    })
}

/// Where the parties of a measurement may run.
#[derive(Clone)]
struct Placement {
    /// CPUs for the client threads (`None`: anywhere).
    client: Option<Vec<usize>>,
}

fn cpu_set(cpus: &[usize]) -> rustix::thread::CpuSet {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    set
}

/// Pins every thread of process `pid` to `cpus` (threads it starts later inherit it).
fn pin_process(pid: i32, cpus: &[usize]) {
    let set = cpu_set(cpus);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        // A thread that exited meanwhile is no loss.
        let _ = rustix::thread::sched_setaffinity(Some(tid), &set);
    }
}

/// One measurement: its value, and the measuring thread's CPU seconds.
struct Sample {
    value: f64,
    client_cpu: f64,
}

/// Runs `measure` on a thread of its own (placed per `p`), entering `netns` first if given.
fn measure_on_thread(netns: Option<std::fs::File>, p: &Placement, t: Target, m: Metric) -> Sample {
    let cpus = p.client.clone();
    std::thread::spawn(move || {
        if let Some(cpus) = cpus {
            rustix::thread::sched_setaffinity(None, &cpu_set(&cpus)).expect("pin the client");
        }
        if let Some(netns) = netns {
            rustix::thread::move_into_link_name_space(
                netns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the sandbox's network namespace");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu0 = thread_cpu_secs();
        let value = rt.block_on(measure(t, m));
        Sample {
            value,
            client_cpu: thread_cpu_secs() - cpu0,
        }
    })
    .join()
    .unwrap()
}

/// CPU microseconds per unit of work (a request, or a megabyte) of each party, from the CPU
/// seconds they used over `units`.
#[derive(Default)]
struct CpuPerUnit {
    client: Vec<f64>,
    upstream: Vec<f64>,
    daemon: Vec<f64>,
}

impl CpuPerUnit {
    fn push(&mut self, units: f64, client: f64, upstream: f64, daemon: f64) {
        self.client.push(client / units * 1e6);
        self.upstream.push(upstream / units * 1e6);
        self.daemon.push(daemon / units * 1e6);
    }
}

struct Paths {
    direct: Target,
    proxy: Target,
    sandbox_pid: i32,
    daemon_pid: i32,
    upstream_pid: i32,
}

/// Alternates direct and proxied rounds of every metric and prints the medians.
fn compare(paths: &Paths, p: &Placement, rounds: usize) {
    let netns =
        || Some(std::fs::File::open(format!("/proc/{}/ns/net", paths.sandbox_pid)).unwrap());
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
        let (mut cpu_direct, mut cpu_proxy) = (CpuPerUnit::default(), CpuPerUnit::default());
        for _ in 0..rounds {
            for (via_proxy, out, cpu) in [
                (false, &mut a, &mut cpu_direct),
                (true, &mut b, &mut cpu_proxy),
            ] {
                let (d0, u0, t0) = (
                    process_cpu_secs(paths.daemon_pid),
                    process_cpu_secs(paths.upstream_pid),
                    Instant::now(),
                );
                let s = if via_proxy {
                    measure_on_thread(None, p, paths.proxy.clone(), m)
                } else {
                    measure_on_thread(netns(), p, paths.direct.clone(), m)
                };
                if matches!(m, Metric::Rps | Metric::Download) {
                    let units = match m {
                        Metric::Download => (DOWNLOADS * BIG) as f64 / 1e6,
                        _ => s.value * t0.elapsed().as_secs_f64(),
                    };
                    cpu.push(
                        units,
                        s.client_cpu,
                        process_cpu_secs(paths.upstream_pid) - u0,
                        process_cpu_secs(paths.daemon_pid) - d0,
                    );
                }
                out.push(s.value);
            }
        }
        let (a, b) = (median(a), median(b));
        let diff = if as_ratio {
            format!("{:.0}% of direct", b / a * 100.0)
        } else {
            format!("+{:.0} µs", b - a)
        };
        println!("{name:<32} {a:>7.0} {unit:<4} {b:>7.0} {unit:<4} {diff:>16}");
        if !cpu_proxy.daemon.is_empty() {
            let per = if matches!(m, Metric::Rps) {
                "request"
            } else {
                "MB"
            };
            let row = |name: &str, d: Vec<f64>, p: Vec<f64>| {
                println!(
                    "{:<32} {:>7.1} µs  {:>7.1} µs",
                    format!("  CPU per {per}, {name}"),
                    median(d),
                    median(p)
                )
            };
            row("client", cpu_direct.client, cpu_proxy.client);
            row("upstream", cpu_direct.upstream, cpu_proxy.upstream);
            row("daemon", cpu_direct.daemon, cpu_proxy.daemon);
        }
    }
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
    let paths = Paths {
        direct: Target {
            addr: format!("127.0.0.1:{PORT}"),
            host: format!("127.0.0.1:{PORT}"),
        },
        proxy: Target {
            addr: d.tcp_addr.clone().unwrap(),
            host,
        },
        sandbox_pid: info.pid.expect("running sandbox has a pid"),
        daemon_pid: find_daemon(d.data_dir()),
        upstream_pid: find_upstream(),
    };
    // Warm both paths up, then alternate them round by round, so that load changing on the
    // machine during the run hits both alike.
    let anywhere = Placement { client: None };
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", paths.sandbox_pid)).unwrap();
    measure_on_thread(
        Some(netns),
        &anywhere,
        paths.direct.clone(),
        Metric::NewConn,
    );
    measure_on_thread(None, &anywhere, paths.proxy.clone(), Metric::NewConn);
    let rounds = 5;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("preview proxy vs direct (upstream: {server} in the sandbox; median of {rounds} alternating rounds)");
    println!();
    println!("1. shared CPUs: client, upstream and daemon on any of the {cpus} CPUs");
    compare(&paths, &anywhere, rounds);
    println!();
    if cpus < 2 {
        println!("2. daemon on a CPU of its own: skipped, this machine has 1 CPU");
        return;
    }
    // The daemon gets the last CPU; the client and the upstream share the others, as on a
    // host where the daemon is not competing with the sandbox for the same cores.
    let rest: Vec<usize> = (0..cpus - 1).collect();
    pin_process(paths.daemon_pid, &[cpus - 1]);
    pin_process(paths.upstream_pid, &rest);
    let pinned = Placement {
        client: Some(rest.clone()),
    };
    println!(
        "2. daemon on a CPU of its own: daemon on CPU {}, client and upstream on CPU {}",
        cpus - 1,
        if rest.len() == 1 {
            "0".to_string()
        } else {
            format!("0-{}", rest.len() - 1)
        }
    );
    compare(&paths, &pinned, rounds);
}
