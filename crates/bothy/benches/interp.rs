//! Benchmark of code interpreter contexts through a real daemon and sandbox (needs root):
//! creation of a context and the warm round trip of `1+1`, per language, with the issue's
//! targets beside them. Run: `cargo bench -p bothy --bench interp` (or `bench/interp.sh`).
//! `BENCH_N` sets the number of round trips (default 200; creations are N/10).

use std::time::{Duration, Instant};

use bothy_api::interp::{CreateContextRequest, Language, RunRequest};
use bothy_api::sandbox::CreateSandbox;
use bothy_testkit::TestDaemon;

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9) / 10]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of tests
    }
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else {
        eprintln!("skipping: the benchmark starts a daemon and needs root");
        return;
    };
    let c = &d.client;
    c.put_sandbox("bench", &CreateSandbox::default())
        .await
        .expect("create sandbox");
    println!(
        "interpreter contexts, through the daemon's unix socket ({n} round trips, {} creations)",
        (n / 10).max(5)
    );
    println!(
        "{:<11} {:>17} {:>17} {:>17} {:>17}",
        "language", "create median", "create p90", "1+1 median", "1+1 p90"
    );
    for lang in Language::ALL {
        let mut creates = Vec::new();
        for _ in 0..(n / 10).max(5) {
            let t = Instant::now();
            let ctx = c
                .create_context(
                    "bench",
                    &CreateContextRequest {
                        language: lang,
                        cwd: None,
                        env: Default::default(),
                    },
                )
                .await
                .expect("create context");
            creates.push(t.elapsed());
            c.delete_context("bench", &ctx.id).await.expect("delete");
        }
        let ctx = c
            .create_context(
                "bench",
                &CreateContextRequest {
                    language: lang,
                    cwd: None,
                    env: Default::default(),
                },
            )
            .await
            .expect("create context");
        let req = RunRequest {
            code: "1+1".into(),
            context: Some(ctx.id.clone()),
            ..Default::default()
        };
        for _ in 0..10 {
            c.run_code("bench", &req).await.expect("warm up");
        }
        let mut runs = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let r = c.run_code("bench", &req).await.expect("run");
            runs.push(t.elapsed());
            assert_eq!(r.results[0].text.as_deref(), Some("2"));
        }
        let (cm, cp) = stats(creates);
        let (rm, rp) = stats(runs);
        println!(
            "{:<11} {:>14.1} ms {:>14.1} ms {:>14.2} ms {:>14.2} ms",
            lang.as_str(),
            cm,
            cp,
            rm,
            rp
        );
    }
    println!("targets (issue 6): python creation <= 150 ms median; warm 1+1 <= 5 ms median");
}
