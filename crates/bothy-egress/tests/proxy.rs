//! The egress proxy standalone on loopback: real TLS clients trusting bothy's CA, an HTTPS
//! upstream with its own test CA (verified, not skipped), policy, header injection, streaming,
//! upgrades, raw TCP and the egress log.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bothy_api::egress::EgressDecision;
use bothy_api::network::{EgressPolicy, HeaderValue, HostRule, PolicyAction};
use bothy_egress::Ca;
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rule(host: &str, upstream: Option<String>) -> HostRule {
    HostRule {
        host: host.into(),
        headers: BTreeMap::new(),
        upstream,
    }
}

fn auth_rule(host: &str, upstream: String) -> HostRule {
    let mut r = rule(host, Some(upstream));
    r.headers.insert(
        "authorization".into(),
        HeaderValue {
            secret: Some("api_token".into()),
            value: None,
            format: Some("Bearer {secret}".into()),
        },
    );
    r
}

struct World {
    ca: Arc<Ca>,
    test_ca: TestCa,
    upstream: Upstream,
    dir: Arc<TestDir>,
    proxy: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

async fn world(policy: impl FnOnce(&Upstream) -> EgressPolicy) -> World {
    let test_ca = TestCa::new();
    let upstream = Upstream::start(Some(test_ca.server_config(&["127.0.0.1", "localhost"]))).await;
    let dir = TestDir::new(policy(&upstream));
    dir.secrets
        .lock()
        .unwrap()
        .insert("api_token".into(), "s3cret-value-42".into());
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let (proxy, _t) = start_proxy(
        dir.clone(),
        ca.clone(),
        "203.0.113.7:443".parse().unwrap(),
        vec![test_ca.der()],
    )
    .await;
    let client = client_config(&[ca.cert_der().unwrap()]);
    World {
        ca,
        test_ca,
        upstream,
        dir,
        proxy,
        client,
    }
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not json: {}", String::from_utf8_lossy(b)))
}

#[tokio::test]
async fn routed_https_gets_the_secret_header_and_the_sandbox_sent_none() {
    let w = world(|u| EgressPolicy {
        rules: vec![auth_rule(
            "api.example.test",
            format!("https://127.0.0.1:{}", u.addr.port()),
        )],
        default: PolicyAction::Deny,
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "api.example.test", w.client.clone())
        .await
        .unwrap();
    let (st, body) = send(&mut c, get("api.example.test", "/v1/things?x=1")).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let seen = json(&body);
    assert_eq!(seen["authorization"], "Bearer s3cret-value-42");
    assert_eq!(seen["host"], "api.example.test");
    assert_eq!(seen["path"], "/v1/things?x=1");

    // A header the sandbox sets itself is replaced, not duplicated.
    let mut req = get("api.example.test", "/again");
    req.headers_mut()
        .insert("authorization", "Bearer forged".parse().unwrap());
    let (st, body) = send(&mut c, req).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["authorization"], "Bearer s3cret-value-42");

    let log = w.dir.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].host, "api.example.test");
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/v1/things?x=1");
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[0].rule, "rules[0] api.example.test");
    assert_eq!(log[0].decision, EgressDecision::Allowed);
    assert!(log[0].bytes_down > 0);
    let printed = serde_json::to_string(&log).unwrap();
    assert!(
        !printed.contains("s3cret"),
        "the log must not hold the secret"
    );
    assert!(w.dir.touches.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    drop((w.ca, w.test_ca));
}

#[tokio::test]
async fn denied_host_completes_the_handshake_and_gets_403() {
    let w = world(|_| EgressPolicy {
        deny: vec!["*.evil.test".into()],
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "x.evil.test", w.client.clone())
        .await
        .expect("TLS handshake with a denied host completes");
    let (st, body) = send(&mut c, get("x.evil.test", "/")).await;
    assert_eq!(st, 403);
    let err = json(&body);
    assert_eq!(err["code"], "egress_denied");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("x.evil.test") && msg.contains("deny[0] *.evil.test"),
        "{msg}"
    );
    let log = w.dir.log();
    assert_eq!(log[0].decision, EgressDecision::Denied);
    assert_eq!(log[0].status, Some(403));
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request_on_the_same_connection() {
    let w = world(|u| EgressPolicy {
        rules: vec![rule(
            "api.example.test",
            Some(format!("https://127.0.0.1:{}", u.addr.port())),
        )],
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "api.example.test", w.client.clone())
        .await
        .unwrap();
    assert_eq!(send(&mut c, get("api.example.test", "/1")).await.0, 200);
    let mut p = (*w.dir.lookup_policy()).clone();
    p.deny = vec!["api.example.test".into()];
    w.dir.set_policy(Some(p));
    assert_eq!(send(&mut c, get("api.example.test", "/2")).await.0, 403);
    // No egress at all any more (mode none): new connections are closed.
    w.dir.set_policy(None);
    assert!(https_client(w.proxy, "api.example.test", w.client.clone())
        .await
        .is_err());
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_refused() {
    // The upstream's CA is not among the proxy's roots: verification fails, nothing is sent.
    let other = TestCa::new();
    let rogue = Upstream::start(Some(other.server_config(&["127.0.0.1"]))).await;
    let port = rogue.addr.port();
    let w = world(move |_| EgressPolicy {
        rules: vec![auth_rule(
            "api.example.test",
            format!("https://127.0.0.1:{port}"),
        )],
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "api.example.test", w.client.clone())
        .await
        .unwrap();
    let (st, body) = send(&mut c, get("api.example.test", "/")).await;
    assert_eq!(st, 502, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["code"], "bad_gateway");
    assert!(rogue.seen.requests.lock().unwrap().is_empty());
    assert_eq!(w.dir.log()[0].decision, EgressDecision::Error);
}

#[tokio::test]
async fn hosts_named_by_the_sandbox_never_reach_loopback() {
    // `localhost` allowed by policy, but without an operator's upstream the proxy refuses to
    // connect to a non-public address (the host's own services).
    let w = world(|_| EgressPolicy::default()).await;
    let mut c = https_client(w.proxy, "localhost", w.client.clone())
        .await
        .unwrap();
    let (st, body) = send(&mut c, get("localhost", "/")).await;
    assert_eq!(st, 502);
    let msg = json(&body)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("non-public"), "{msg}");
    assert!(w.upstream.seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_secret_fails_the_request_clearly() {
    let w = world(|u| EgressPolicy {
        rules: vec![auth_rule(
            "api.example.test",
            format!("https://127.0.0.1:{}", u.addr.port()),
        )],
        ..Default::default()
    })
    .await;
    w.dir.secrets.lock().unwrap().clear();
    let mut c = https_client(w.proxy, "api.example.test", w.client.clone())
        .await
        .unwrap();
    let (st, body) = send(&mut c, get("api.example.test", "/")).await;
    assert_eq!(st, 502);
    assert_eq!(json(&body)["code"], "secret_not_found");
    assert!(w.upstream.seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn large_downloads_and_uploads_stream() {
    let w = world(|u| EgressPolicy {
        rules: vec![rule(
            "dl.example.test",
            Some(format!("https://127.0.0.1:{}", u.addr.port())),
        )],
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "dl.example.test", w.client.clone())
        .await
        .unwrap();
    let n: u64 = 256 << 20;
    c.ready().await.unwrap();
    let resp = c
        .send_request(get("dl.example.test", &format!("/big/{n}")))
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
    assert_eq!(got, n);

    let up = vec![7u8; 3 << 20];
    let req = hyper::Request::post("/upload")
        .header("host", "dl.example.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(up)))
        .unwrap();
    let (st, body) = send(&mut c, req).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["body_len"], (3 << 20).to_string());
    let log = w.dir.log();
    assert_eq!(log[0].bytes_down, n);
    assert_eq!(log[1].bytes_up, 3 << 20);
}

#[tokio::test]
async fn upgrades_pass_through() {
    let w = world(|u| EgressPolicy {
        rules: vec![rule(
            "ws.example.test",
            Some(format!("https://127.0.0.1:{}", u.addr.port())),
        )],
        ..Default::default()
    })
    .await;
    let mut c = https_client(w.proxy, "ws.example.test", w.client.clone())
        .await
        .unwrap();
    let req = hyper::Request::get("/upgrade")
        .header("host", "ws.example.test")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let up = hyper::upgrade::on(resp).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(up);
    io.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
}

#[tokio::test]
async fn plain_http_is_proxied_per_request_host() {
    let plain = Upstream::start(None).await;
    let port = plain.addr.port();
    let dir = TestDir::new(EgressPolicy {
        rules: vec![rule(
            "internal.test",
            Some(format!("http://127.0.0.1:{port}")),
        )],
        default: PolicyAction::Deny,
        ..Default::default()
    });
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let (proxy, _t) = start_proxy(dir.clone(), ca, "203.0.113.7:80".parse().unwrap(), vec![]).await;
    let mut c = http_client(proxy).await;
    let (st, body) = send(&mut c, get("internal.test", "/p")).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["path"], "/p");
    let (st, body) = send(&mut c, get("other.test", "/p")).await;
    assert_eq!(st, 403);
    assert_eq!(json(&body)["code"], "egress_denied");
    assert_eq!(dir.log()[0].scheme, "http");
}

#[tokio::test]
async fn raw_tcp_only_where_host_and_port_are_named() {
    // An echo server standing in for a database.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dst: std::net::SocketAddr = "203.0.113.9:5432".parse().unwrap();
    let dir = TestDir::new(EgressPolicy {
        rules: vec![rule("db.test:5432", Some(format!("127.0.0.1:{echo_port}")))],
        ..Default::default()
    });
    dir.hosts.lock().unwrap().insert(dst.ip(), "db.test".into());
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let (proxy, _t) = start_proxy(dir.clone(), ca, dst, vec![]).await;

    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"hello db").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello db");
    drop(s);
    wait_for_log(&dir, 1).await;

    // Same port, a host the policy does not name (default allow covers 80/443 only): closed.
    dir.hosts
        .lock()
        .unwrap()
        .insert(dst.ip(), "other.test".into());
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let _ = s.write_all(b"hello").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("a refused connection is closed, not left hanging");
    assert!(matches!(n, Ok(0) | Err(_)));
    wait_for_log(&dir, 2).await;
    let log = dir.log();
    assert_eq!(log[0].scheme, "tcp");
    assert_eq!(log[0].decision, EgressDecision::Allowed);
    assert_eq!((log[0].bytes_up, log[0].bytes_down), (8, 8));
    assert_eq!(log[1].decision, EgressDecision::Denied);
    assert_eq!(log[1].host, "other.test");
}

/// Waits until the directory holds `n` log entries (they are recorded when connections end).
async fn wait_for_log(dir: &TestDir, n: usize) {
    for _ in 0..200 {
        if dir.log().len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("log has {} entries, want {n}", dir.log().len());
}

#[tokio::test]
async fn http2_clients_are_served_and_forwarded() {
    let w = world(|u| EgressPolicy {
        deny: vec!["*.evil.test".into()],
        rules: vec![auth_rule(
            "api.example.test",
            format!("https://127.0.0.1:{}", u.addr.port()),
        )],
        ..Default::default()
    })
    .await;
    let mut cfg = (*w.client).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(w.proxy).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("api.example.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = |uri: &str| {
        hyper::Request::get(uri)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    // Two concurrent streams on the one connection.
    let (a, b) = tokio::join!(
        h2.send_request(req("https://api.example.test/h2/a")),
        h2.clone()
            .send_request(req("https://api.example.test/h2/b"))
    );
    for (r, path) in [(a.unwrap(), "/h2/a"), (b.unwrap(), "/h2/b")] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), hyper::Version::HTTP_2);
        let seen = json(&r.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(seen["path"], path);
        assert_eq!(seen["host"], "api.example.test");
        assert_eq!(seen["authorization"], "Bearer s3cret-value-42");
    }
    // A request for another host on this connection is refused (the connection is for its SNI).
    let r = h2.send_request(req("https://x.evil.test/")).await.unwrap();
    assert_eq!(r.status(), 421);
}

/// With the proxy capped at `per_sandbox` connections per sandbox and `total` in all (the test
/// directory puts every connection in one sandbox), two connections fit, a third is closed,
/// and room comes back when one closes.
async fn two_connections_fit_then_the_cap_holds(per_sandbox: usize, total: usize) {
    let dir = TestDir::new(EgressPolicy::default());
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let client = client_config(&[ca.cert_der().unwrap()]);
    let (proxy, _t) = start_proxy_with(
        dir.clone(),
        ca,
        bothy_egress::ProxyOptions {
            dst: bothy_egress::DstSource::Fixed("203.0.113.7:443".parse().unwrap()),
            max_connections_per_sandbox: per_sandbox,
            max_connections: total,
            ..Default::default()
        },
    )
    .await;
    let a = https_client(proxy, "a.example.test", client.clone())
        .await
        .unwrap();
    let _b = https_client(proxy, "b.example.test", client.clone())
        .await
        .unwrap();
    assert!(
        https_client(proxy, "c.example.test", client.clone())
            .await
            .is_err(),
        "a third connection is closed"
    );
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        if https_client(proxy, "d.example.test", client.clone())
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "room comes back when a connection closes");
}

#[tokio::test]
async fn a_sandbox_cannot_hold_more_connections_than_its_share() {
    two_connections_fit_then_the_cap_holds(2, 1000).await;
}

#[tokio::test]
async fn all_sandboxes_together_cannot_hold_more_than_the_total() {
    // The sandbox's own share is not what stops the third connection here: the total is.
    two_connections_fit_then_the_cap_holds(10, 2).await;
}
