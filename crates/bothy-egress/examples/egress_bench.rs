//! Benchmark of the egress proxy on loopback: per-request latency and download throughput of
//! HTTPS through the proxy (TLS terminated with bothy's CA, policy, header injection from a
//! secret, re-encrypted to an upstream verified against its own test CA) against the same
//! client talking to the same upstream directly — in the same run, side by side.
//!
//! `bench/egress` runs it (release build). Options: `--requests N` (default 3000),
//! `--download-mib N` (default 1024), `--rounds N` (throughput rounds, default 3).
//!
//! `--serve-upstream DIR` only runs the upstream (for `bench/egress-sandbox`): it writes its
//! test CA to `DIR/ca.pem`, prints its port and serves until killed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_api::network::{EgressPolicy, HeaderValue, HostRule, PolicyAction};
use bothy_egress::Ca;
use common::*;
use http_body_util::BodyExt;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn latencies(c: &mut Sender, host: &str, n: usize) -> Vec<Duration> {
    for _ in 0..200 {
        send(c, get(host, "/warm")).await;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (st, _) = send(c, get(host, &format!("/r/{i}"))).await;
        out.push(t.elapsed());
        assert_eq!(st, 200);
    }
    out.sort();
    out
}

async fn download(c: &mut Sender, host: &str, bytes: u64) -> f64 {
    c.ready().await.unwrap();
    let t = Instant::now();
    let resp = c
        .send_request(get(host, &format!("/big/{bytes}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, bytes);
    (got * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
}

async fn serve_upstream(dir: &str) {
    let test_ca = TestCa::new();
    std::fs::write(format!("{dir}/ca.pem"), test_ca.cert.pem()).unwrap();
    let up = Upstream::start(Some(
        test_ca.server_config(&["127.0.0.1", "api.example.test"]),
    ))
    .await;
    println!("{}", up.addr.port());
    std::future::pending::<()>().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-upstream") {
        return serve_upstream(&args[i + 1]).await;
    }
    let n = arg("--requests", 3000) as usize;
    let dl = arg("--download-mib", 1024) << 20;
    let rounds = arg("--rounds", 3);

    let test_ca = TestCa::new();
    let upstream = Upstream::start(Some(
        test_ca.server_config(&["127.0.0.1", "api.example.test"]),
    ))
    .await;
    let mut rule = HostRule {
        host: "api.example.test".into(),
        headers: BTreeMap::new(),
        upstream: Some(format!("https://127.0.0.1:{}", upstream.addr.port())),
    };
    rule.headers.insert(
        "authorization".into(),
        HeaderValue {
            secret: Some("tok".into()),
            value: None,
            format: Some("Bearer {secret}".into()),
        },
    );
    let dir = TestDir::new(EgressPolicy {
        deny: vec!["*.evil.test".into()],
        rules: vec![rule],
        default: PolicyAction::Deny,
        ..Default::default()
    });
    dir.secrets
        .lock()
        .unwrap()
        .insert("tok".into(), "bench-secret".into());
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let dst: SocketAddr = "203.0.113.7:443".parse().unwrap();
    let (proxy, _t) = start_proxy(dir.clone(), ca.clone(), dst, vec![test_ca.der()]).await;

    let direct_cfg = client_config(&[test_ca.der()]);
    let proxy_cfg = client_config(&[ca.cert_der().unwrap()]);
    let mut direct = https_client(upstream.addr, "api.example.test", direct_cfg)
        .await
        .unwrap();
    let mut via = https_client(proxy, "api.example.test", proxy_cfg)
        .await
        .unwrap();

    // Interleave the two series in chunks so that machine load hits both alike.
    let (mut d_lat, mut p_lat) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        d_lat.extend(latencies(&mut direct, "api.example.test", n / 5).await);
        p_lat.extend(latencies(&mut via, "api.example.test", n / 5).await);
    }
    d_lat.sort();
    p_lat.sort();
    let (mut d_tp, mut p_tp) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        d_tp.push(download(&mut direct, "api.example.test", dl).await);
        p_tp.push(download(&mut via, "api.example.test", dl).await);
    }
    d_tp.sort_by(f64::total_cmp);
    p_tp.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v[v.len() / 2];
    let added = pct(&p_lat, 0.5).saturating_sub(pct(&d_lat, 0.5));

    println!("| metric | through the egress proxy | direct | difference | target | met |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| HTTPS GET, kept-alive, p50 (n={}) | {} | {} | +{} | ≤ +0.5 ms | {} |",
        p_lat.len(),
        ms(pct(&p_lat, 0.5)),
        ms(pct(&d_lat, 0.5)),
        ms(added),
        if added <= Duration::from_micros(500) {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "| HTTPS GET, kept-alive, p90 | {} | {} | +{} | – | – |",
        ms(pct(&p_lat, 0.9)),
        ms(pct(&d_lat, 0.9)),
        ms(pct(&p_lat, 0.9).saturating_sub(pct(&d_lat, 0.9)))
    );
    println!(
        "| HTTPS download {} MiB, median of {} | {:.2} Gbit/s | {:.2} Gbit/s | {:.0}% of direct | ≥ 1 Gbit/s | {} |",
        dl >> 20,
        rounds,
        med(&p_tp),
        med(&d_tp),
        med(&p_tp) / med(&d_tp) * 100.0,
        if med(&p_tp) >= 1.0 { "yes" } else { "no" }
    );
    let seen = upstream.seen.requests.lock().unwrap();
    let injected = seen
        .iter()
        .filter(|r| r.get("authorization").map(String::as_str) == Some("Bearer bench-secret"))
        .count();
    println!(
        "\n(the upstream saw the injected header on {injected} of the {} requests it echoed: every proxied one, no direct one; the egress log holds the last {} entries)",
        seen.len(),
        dir.log().len()
    );
}
