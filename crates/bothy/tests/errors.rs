//! End to end: bad input gets a clear 4xx with a stable code; auth on TCP.

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_client::http::Method;
use bothy_testkit::{Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

async fn raw(
    d: &TestDaemon,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let req = d
        .client
        .request(method, path)
        .body(bothy_client::full(body))
        .unwrap();
    let resp = d.client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_stable_codes() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    for bad in ["Upper", "-x", "x-", "a_b", &"a".repeat(64)] {
        let (s, v) = raw(&d, Method::PUT, &format!("/v1/sandboxes/{bad}"), b"").await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_name")),
            "{bad}"
        );
    }
    let (s, v) = raw(&d, Method::GET, "/v1/sandboxes/nope", b"").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("sandbox_not_found")));
    let (s, v) = raw(
        &d,
        Method::POST,
        "/v1/sandboxes/nope/exec",
        br#"{"argv":["true"]}"#,
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("sandbox_not_found")));
    let (s, v) = raw(&d, Method::PUT, "/v1/sandboxes/ok", b"{not json").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("malformed_json")));
    let (s, v) = raw(&d, Method::PUT, "/v1/sandboxes/ok", br#"{"imaje":"host"}"#).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("malformed_json")),
        "unknown fields are refused"
    );
    let (s, v) = raw(&d, Method::PUT, "/v1/sandboxes/ok", br#"{"image":"nope"}"#).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("image_not_found")));
    let (s, v) = raw(&d, Method::PUT, "/v1/sandboxes/ok", br#"{"sleep_after":0}"#).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let big: &'static [u8] = Box::leak(vec![b' '; 9 * 1024 * 1024].into_boxed_slice());
    let (s, v) = raw(&d, Method::PUT, "/v1/sandboxes/ok", big).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("body_too_large")));
    let (s, v) = raw(&d, Method::GET, "/v1/nothing-here", b"").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let (s, v) = raw(&d, Method::PATCH, "/v1/sandboxes", b"").await;
    assert_eq!((s, v["code"].as_str()), (405, Some("method_not_allowed")));

    // Exec-level errors come from the agent in the same shape.
    d.client
        .put_sandbox("ok", &CreateSandbox::default())
        .await
        .unwrap();
    let (s, v) = raw(&d, Method::POST, "/v1/sandboxes/ok/exec", br#"{"argv":[]}"#).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let (s, v) = raw(
        &d,
        Method::POST,
        "/v1/sandboxes/ok/exec",
        br#"{"argv":["x"],"shell":"y"}"#,
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let (s, _) = raw(&d, Method::POST, "/v1/sandboxes/ok/exec", br#"[1,2"#).await;
    assert_eq!(s, 400);
    let e = d
        .client
        .exec(
            "ok",
            &ExecRequest {
                argv: Some(vec!["/no/such/program".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FileNotFound), "{e}");
    let e = d
        .client
        .exec(
            "ok",
            &ExecRequest {
                shell: Some("true".into()),
                cwd: Some("/no/such/dir".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FileNotFound), "{e}");
    let (s, v) = raw(
        &d,
        Method::GET,
        "/v1/sandboxes/ok/files?path=/../../etc/passwd",
        b"",
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("path_escape")));
    // The daemon never panicked: still healthy.
    let (s, _) = raw(&d, Method::GET, "/v1/health", b"").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_requires_the_token() {
    let opts = Options {
        tcp_token: Some("s3cret-token".into()),
        ..Default::default()
    };
    let Some(d) = TestDaemon::start_with(BIN, opts).await else {
        return;
    };
    let anon = d.tcp_client(None);
    assert_eq!(
        anon.list_sandboxes().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    let wrong = d.tcp_client(Some("nope"));
    assert_eq!(
        wrong.list_sandboxes().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    let ok = d.tcp_client(Some("s3cret-token"));
    ok.put_sandbox("tcp", &CreateSandbox::default())
        .await
        .unwrap();
    let r = ok
        .exec(
            "tcp",
            &ExecRequest {
                shell: Some("echo via tcp".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "via tcp\n");
    // The unix socket is root-only.
    let mode = std::fs::metadata(d.data_dir().join("bothy.sock")).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
}

/// The TCP port is public (preview URLs share it): a flood of idle connections is capped
/// (`--max-connections`) so it cannot take the daemon's file descriptors; past the cap new
/// connections are closed on arrival, the unix socket keeps working, and room comes back as
/// connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_capped() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;
    let opts = Options {
        tcp_token: Some("s3cret-token".into()),
        extra_args: vec!["--max-connections".into(), "4".into()],
        ..Default::default()
    };
    let Some(d) = TestDaemon::start_with(BIN, opts).await else {
        return;
    };
    let addr = d.tcp_addr.clone().unwrap();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Let the daemon accept (and count) them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the connection past the cap is closed at once, not left hanging");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the connection past the cap was served: {r:?}"
    );
    // The local API is untouched.
    d.client.list_sandboxes().await.unwrap();
    // An idle connection still open is one of the counted ones: close them and TCP works again.
    drop(idle);
    let tcp = d.tcp_client(Some("s3cret-token"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tcp.list_sandboxes().await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "TCP did not come back after the idle connections closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
