//! Watch benchmark (issue 7), through a real daemon and sandbox (needs root):
//! - latency from a file creation inside the sandbox to its `create` event at the client
//!   (p50/p99), writes spaced out so each is an isolated change;
//! - sustained events per second while a process in the sandbox creates files as fast as it can.
//!
//! Run with `bench/watch` (release build). Options: `--n N` (latency samples, default 500),
//! `--interval-ms MS` (between samples, default 5), `--burst N` (files, default 50000).
//! Both clocks are CLOCK_REALTIME of the same kernel (the sandbox has no time namespace).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_api::watch::WatchEventKind as K;
use bothy_client::watch::WatchOptions;
use bothy_client::Client;
use bothy_testkit::TestDaemon;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn sh(c: &Client, script: &str) -> anyhow::Result<String> {
    let r = c
        .exec(
            "bench",
            &ExecRequest {
                shell: Some(script.into()),
                ..Default::default()
            },
        )
        .await?;
    anyhow::ensure!(r.exit_code == Some(0), "{script}: {}", r.stderr);
    Ok(r.stdout)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

const WRITER: &str = r#"
import os, sys, time
n, iv = int(sys.argv[1]), float(sys.argv[2]) / 1000.0
out = []
for i in range(n):
    t = time.time_ns()
    os.close(os.open("/workspace/lat/f%d" % i, os.O_CREAT | os.O_WRONLY, 0o644))
    out.append("%d %d" % (i, t))
    time.sleep(iv)
print("\n".join(out))
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = arg("--n", 500) as usize;
    let interval = arg("--interval-ms", 5);
    let burst = arg("--burst", 50_000) as usize;
    let bin = match std::env::var_os("BOTHY_BIN") {
        Some(b) => std::path::PathBuf::from(b),
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("bothy"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate the bothy binary; set BOTHY_BIN"))?,
    };
    let Some(d) = TestDaemon::start(&bin).await else {
        eprintln!("skipping the watch benchmark: needs root");
        return Ok(());
    };
    let c = d.client.clone();
    c.put_sandbox("bench", &CreateSandbox::default()).await?;
    sh(&c, "mkdir -p /workspace/lat /workspace/burst").await?;

    // Latency: isolated creations, each timed inside the sandbox just before open(2).
    let mut s = c
        .watch(
            "bench",
            &WatchOptions {
                path: Some("lat".into()),
                events: vec![K::Create],
                ..Default::default()
            },
        )
        .await?;
    anyhow::ensure!(s.next().await?.map(|e| e.kind) == Some(K::Ready));
    let reader = tokio::spawn(async move {
        let mut arrived: HashMap<String, u128> = HashMap::new();
        while arrived.len() < n {
            match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                Ok(Ok(Some(e))) if e.kind == K::Create => {
                    arrived.insert(e.path, now_ns());
                }
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
        }
        arrived
    });
    let script = WRITER.replace('\'', r"'\''");
    let out = sh(
        &c,
        &format!("/usr/bin/python3 -c '{script}' {n} {interval}"),
    )
    .await?;
    let arrived = reader.await?;
    let mut lat: Vec<f64> = Vec::new();
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let (Some(i), Some(t)) = (it.next(), it.next()) else {
            continue;
        };
        let t: u128 = t.parse()?;
        if let Some(a) = arrived.get(&format!("/workspace/lat/f{i}")) {
            lat.push((*a as f64 - t as f64) / 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    let missing = n - lat.len();

    // Throughput: one process creates `burst` files as fast as it can; count every event.
    let mut s = c
        .watch(
            "bench",
            &WatchOptions {
                path: Some("burst".into()),
                ..Default::default()
            },
        )
        .await?;
    anyhow::ensure!(s.next().await?.map(|e| e.kind) == Some(K::Ready));
    let expected = burst * 2; // create + modify (close after write) per file
    let reader = tokio::spawn(async move {
        let (mut count, mut overflows) = (0usize, 0usize);
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while count < expected {
            match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                Ok(Ok(Some(e))) => {
                    if e.kind == K::Overflow {
                        overflows += 1;
                        continue;
                    }
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    count += 1;
                }
                _ => break,
            }
        }
        (count, overflows, first.map(|f| last - f))
    });
    let started = Instant::now();
    sh(
        &c,
        &format!(
            "/usr/bin/python3 -c 'import os\nfor i in range({burst}):\n    os.close(os.open(\"/workspace/burst/f%d\" % i, os.O_CREAT | os.O_WRONLY, 0o644))'"
        ),
    )
    .await?;
    let write_time = started.elapsed();
    let (count, overflows, span) = reader.await?;
    let span = span.unwrap_or_default().max(Duration::from_micros(1));

    println!("watch benchmark (through the daemon; coalescing: 2 ms quiet, 10 ms max)");
    println!(
        "{:<44} {:>10} {:>10} {:>14}",
        "metric", "p50", "p99", "target"
    );
    println!(
        "{:<44} {:>8.2}ms {:>8.2}ms {:>14}",
        format!("create in sandbox -> event at client (n={})", lat.len()),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        "p50 <= 15 ms"
    );
    println!("{:<44} {:>10}", "latency samples without an event", missing);
    println!(
        "{:<44} {:>10.0} events/s ({count} of {expected} events, {overflows} overflows, in {:.2}s; the writer took {:.2}s)",
        "sustained events at the client",
        count as f64 / span.as_secs_f64(),
        span.as_secs_f64(),
        write_time.as_secs_f64()
    );
    println!(
        "{{\"bench\":\"watch\",\"latency_p50_ms\":{:.3},\"latency_p99_ms\":{:.3},\"events_per_s\":{:.0},\"events\":{count},\"expected\":{expected},\"overflows\":{overflows}}}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        count as f64 / span.as_secs_f64()
    );
    Ok(())
}
