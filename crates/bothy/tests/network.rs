//! Sandbox networking end to end, all on this machine: modes, isolation in `proxy` mode, DNS,
//! routed HTTP(S) through the egress proxy, runtime mode and policy switches, and `git clone`
//! from a local `git http-backend` through the proxy with an injected token.
//!
//! No test sends anything to an address outside this machine: upstreams are on the host's
//! loopback, reached through routing rules; names are `*.test`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bothy_api::git::{CheckoutDone, CheckoutRequest};
use bothy_api::network::{
    EgressPolicy, HeaderValue, HostRule, NetworkConfig, NetworkMode, PolicyAction,
};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::{ApiError, ErrorCode};
use bothy_testkit::{sh_fails, sh_status, Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn mode(m: NetworkMode) -> CreateSandbox {
    CreateSandbox {
        network: Some(NetworkConfig {
            mode: m,
            policy: EgressPolicy::default(),
        }),
        ..Default::default()
    }
}

fn rule(host: &str, upstream: &str, headers: &[(&str, &str)]) -> HostRule {
    HostRule {
        host: host.into(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    HeaderValue {
                        secret: None,
                        value: Some(v.to_string()),
                        format: None,
                    },
                )
            })
            .collect(),
        upstream: Some(upstream.into()),
    }
}

/// A host TCP listener that counts the connections it accepts (and closes them).
fn counting_listener(addr: &str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind(addr).unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            n2.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, n)
}

/// A tiny HTTP/1.1 upstream on the host's loopback: answers every request with a fixed body
/// and records the request heads it saw.
fn http_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let mut s = s;
                while let Some((head, _body)) = read_request(&mut s) {
                    seen.lock().unwrap().push(head.to_ascii_lowercase());
                    let body = b"hello from upstream\n";
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                }
            });
        }
    });
    (port, seen)
}

/// Reads one HTTP/1.1 request (head and a Content-Length or chunked body).
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        s.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte).ok()?;
                line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&line).trim().split(';').next()?, 16)
                    .ok()?;
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some((head, body))
}

/// `git http-backend` behind a minimal CGI bridge on the host's loopback; every request must
/// carry `Authorization: Bearer {token}`, else 401.
fn git_server(root: PathBuf, token: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || git_cgi(s, &root, token));
        }
    });
    port
}

fn git_cgi(mut s: TcpStream, root: &Path, token: &str) {
    let Some((head, body)) = read_request(&mut s) else {
        return;
    };
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("GET").to_string();
    let target = first.next().unwrap_or("/").to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("authorization").as_deref() != Some(&format!("Bearer {token}")) {
        let _ = s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"git\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = std::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    if let Some(ct) = header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    if let Some(gp) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", gp);
    }
    let mut child = cmd.spawn().expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let _ = writer.join();
    let _ = child.wait();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else { return };
    let cgi_head = String::from_utf8_lossy(&out[..at]).into_owned();
    let payload = &out[at + sep..];
    let mut status = "200 OK".to_string();
    let mut resp = String::new();
    for line in cgi_head.lines() {
        if let Some(st) = line.strip_prefix("Status:") {
            status = st.trim().to_string();
        } else if !line.trim().is_empty() {
            resp.push_str(line.trim_end());
            resp.push_str("\r\n");
        }
    }
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\n{resp}content-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    let _ = s.write_all(payload);
}

/// A bare repository `repo.git` under a new directory, with one commit; returns the
/// directory and the commit id.
fn make_repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let git = |args: &[&str], cwd: &Path| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .expect("git on the host");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    std::fs::create_dir(&work).unwrap();
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join("README"), "hello through the proxy\n").unwrap();
    git(&["add", "README"], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    let commit = git(&["rev-parse", "HEAD"], &work);
    git(&["clone", "-q", "--bare", "work", "repo.git"], dir.path());
    (dir, commit)
}

async fn checkout(
    d: &TestDaemon,
    name: &str,
    req: &CheckoutRequest,
) -> Result<CheckoutDone, ApiError> {
    let mut s = d
        .client
        .git_checkout(name, req)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("request failed: {e}")))?;
    while let Some(ev) = s.next().await.expect("sse") {
        match ev.event.as_str() {
            "done" => return Ok(ev.json().unwrap()),
            "error" => return Err(ev.json().unwrap()),
            _ => {}
        }
    }
    panic!("stream ended without done or error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_has_no_route() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("lo", &mode(NetworkMode::None))
        .await
        .unwrap();
    let info = d.client.get_network("lo").await.unwrap();
    assert_eq!(info.mode, NetworkMode::None);
    assert_eq!(info.address, None);
    let (_, ifaces) = sh_status(
        &d.client,
        "lo",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(ifaces.trim(), "lo");
    let t = Instant::now();
    let out = sh_fails(&d.client, "lo", "bash -c 'echo > /dev/tcp/10.88.0.1/80'").await;
    assert!(out.contains("unreachable"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "connect must fail at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_reaches_nothing_of_the_host_or_other_sandboxes() {
    let opts = Options {
        tcp_token: Some("tok".into()),
        ..Default::default()
    };
    let Some(d) = TestDaemon::start_with(BIN, opts).await else {
        return;
    };
    let api_port = d
        .tcp_addr
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    d.client
        .put_sandbox("a", &mode(NetworkMode::Proxy))
        .await
        .unwrap();
    d.client
        .put_sandbox("b", &mode(NetworkMode::Proxy))
        .await
        .unwrap();
    let a = d.client.get_network("a").await.unwrap();
    let b = d.client.get_network("b").await.unwrap();
    let (a_addr, b_addr) = (a.address.unwrap(), b.address.unwrap());
    let gw = a.gateway.unwrap();
    assert_ne!(a_addr, b_addr);
    let (_, ifaces) = sh_status(
        &d.client,
        "a",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort",
    )
    .await;
    assert_eq!(
        ifaces.split_whitespace().collect::<Vec<_>>(),
        ["eth0", "lo"]
    );

    // Host services: one on loopback, one on every address (so also on the gateway's).
    let (lo_port, lo_hits) = counting_listener("127.0.0.1:0");
    let (any_port, any_hits) = counting_listener("0.0.0.0:0");
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let udp_port = udp.local_addr().unwrap().port();

    // Another sandbox serving on its own address.
    sh_status(
        &d.client,
        "b",
        "nohup python3 -m http.server 8111 --bind 0.0.0.0 >/dev/null 2>&1 &",
    )
    .await;
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(10), || async {
            sh_status(&d.client, "b", "grep -q ':1FAF ' /proc/net/tcp")
                .await
                .0
                == 0
        })
        .await
    );

    let targets = [
        format!("http://{b_addr}:8111/"),
        format!("http://127.0.0.1:{api_port}/v1/sandboxes"),
        format!("http://{gw}:{api_port}/v1/sandboxes"),
        format!("http://127.0.0.1:{lo_port}/"),
        format!("http://{gw}:{any_port}/"),
        format!("http://{gw}:{lo_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://{a_addr}:8111/"),
    ];
    for t in &targets {
        let out = sh_fails(
            &d.client,
            "a",
            &format!("curl -sSf -m 5 -H 'Authorization: Bearer tok' {t}"),
        )
        .await;
        assert!(!out.contains("Directory listing"), "{t}: {out}");
        assert!(!out.contains("sandboxes"), "{t}: {out}");
    }
    // Raw TCP (not HTTP) to the same places.
    for (host, port) in [
        (b_addr.as_str(), "8111".to_string()),
        (gw.as_str(), api_port.clone()),
        (gw.as_str(), any_port.to_string()),
        ("169.254.169.254", "80".to_string()),
    ] {
        let (_, out) = sh_status(
            &d.client,
            "a",
            &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"),
        )
        .await;
        assert!(!out.contains("HTTP/1.0 200"), "{host}:{port}: {out}");
    }
    // UDP to a host service: dropped.
    sh_status(
        &d.client,
        "a",
        &format!("python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('{gw}', {udp_port}))\""),
    )
    .await;
    let mut buf = [0u8; 16];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a UDP datagram reached the host"
    );
    assert_eq!(lo_hits.load(Ordering::SeqCst), 0);
    assert_eq!(any_hits.load(Ordering::SeqCst), 0);
    // The sandbox cannot change its address (no CAP_NET_ADMIN) to pass for another one.
    sh_fails(
        &d.client,
        "a",
        &format!("python3 -c \"import fcntl,socket,struct; s=socket.socket(); fcntl.ioctl(s, 0x8916, struct.pack('16sH2s4s8s', b'eth0', socket.AF_INET, b'', socket.inet_aton('{b_addr}'), b''))\""),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_routing_policy_and_mode_switch_at_runtime() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let (up, seen) = http_upstream();
    let policy = EgressPolicy {
        deny: vec!["*.evil.test".into()],
        rules: vec![rule(
            "api.example.test",
            &format!("http://127.0.0.1:{up}"),
            &[("x-injected", "from-the-proxy")],
        )],
        ..Default::default()
    };
    let spec = CreateSandbox {
        network: Some(NetworkConfig {
            mode: NetworkMode::Proxy,
            policy: policy.clone(),
        }),
        ..Default::default()
    };
    d.client.put_sandbox("s", &spec).await.unwrap();

    // DNS: routed and denied names get synthetic addresses; single labels do not resolve.
    let (code, out) = sh_status(&d.client, "s", "getent hosts api.example.test").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("198.18."), "{out}");
    let (code, out) = sh_status(&d.client, "s", "getent hosts x.evil.test").await;
    assert_eq!(code, 0, "{out}");
    sh_fails(&d.client, "s", "getent hosts nosuchlabel").await;
    let (_, resolv) = sh_status(&d.client, "s", "cat /etc/resolv.conf").await;
    assert!(resolv.contains("nameserver 10.88.0.1"), "{resolv}");

    // HTTP through the routing rule, with the header added on the way.
    let (code, out) = sh_status(
        &d.client,
        "s",
        "curl -sSf -m 10 http://api.example.test/hello",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hello from upstream\n"));
    {
        let seen = seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert!(last.starts_with("get /hello"), "{last}");
        assert!(last.contains("x-injected: from-the-proxy"), "{last}");
    }
    // HTTPS: intercepted with the installation's CA, which the sandbox trusts by default.
    let (code, out) = sh_status(
        &d.client,
        "s",
        "curl -sSf -m 10 https://api.example.test/secure",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hello from upstream\n"));
    // A denied host fails clearly.
    let out = sh_fails(&d.client, "s", "curl -sSf -m 10 http://x.evil.test/").await;
    assert!(out.contains("403"), "{out}");

    // A policy change applies to the next request, without a restart.
    let mut denied = policy.clone();
    denied.deny.push("api.example.test".into());
    let pid_before = d.client.get_sandbox("s").await.unwrap().pid;
    d.client
        .put_network(
            "s",
            &NetworkConfig {
                mode: NetworkMode::Proxy,
                policy: denied,
            },
        )
        .await
        .unwrap();
    let out = sh_fails(&d.client, "s", "curl -sSf -m 10 http://api.example.test/").await;
    assert!(out.contains("403"), "{out}");

    // proxy → none at runtime: the link goes away, connections fail at once.
    let info = d
        .client
        .put_network(
            "s",
            &NetworkConfig {
                mode: NetworkMode::None,
                policy: policy.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.address, None);
    let (_, ifaces) = sh_status(
        &d.client,
        "s",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(ifaces.trim(), "lo");
    let t = Instant::now();
    sh_fails(&d.client, "s", "curl -sSf -m 10 http://api.example.test/").await;
    assert!(t.elapsed() < Duration::from_secs(3));

    // none → proxy at runtime: back, same process (no restart).
    let info = d
        .client
        .put_network(
            "s",
            &NetworkConfig {
                mode: NetworkMode::Proxy,
                policy: policy.clone(),
            },
        )
        .await
        .unwrap();
    assert!(info.address.is_some());
    let (code, out) = sh_status(
        &d.client,
        "s",
        "curl -sSf -m 10 http://api.example.test/again",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hello from upstream\n"));
    assert_eq!(d.client.get_sandbox("s").await.unwrap().pid, pid_before);

    // Sleep and wake: the link is set up again on wake.
    d.client.sleep_sandbox("s").await.unwrap();
    let (code, out) = sh_status(
        &d.client,
        "s",
        "curl -sSf -m 10 http://api.example.test/woken",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hello from upstream\n"));

    // Bad input is refused clearly.
    let err = d
        .client
        .put_network(
            "s",
            &NetworkConfig {
                mode: NetworkMode::Proxy,
                policy: EgressPolicy {
                    allow: vec!["bad host".into()],
                    default: PolicyAction::Deny,
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("host glob"), "{err}");
    assert!(d.client.get_network("nosuch").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_through_the_proxy_with_an_injected_token() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let (repos, commit) = make_repo();
    let port = git_server(repos.path().to_path_buf(), "s3cret-token");
    let upstream = format!("http://127.0.0.1:{port}");
    let policy = EgressPolicy {
        rules: vec![
            HostRule {
                host: "git.example.test".into(),
                headers: [(
                    "authorization".to_string(),
                    HeaderValue {
                        secret: Some("git-token".into()),
                        value: None,
                        format: Some("Bearer {secret}".into()),
                    },
                )]
                .into(),
                upstream: Some(upstream.clone()),
            },
            // The same server without the token: authentication fails.
            rule("nokey.example.test", &upstream, &[]),
        ],
        ..Default::default()
    };
    let spec = CreateSandbox {
        network: Some(NetworkConfig {
            mode: NetworkMode::Proxy,
            policy,
        }),
        ..Default::default()
    };
    d.client
        .set_secret("git-token", "s3cret-token")
        .await
        .unwrap();
    d.client.put_sandbox("g", &spec).await.unwrap();

    let done = checkout(
        &d,
        "g",
        &CheckoutRequest {
            url: "http://git.example.test/repo.git".into(),
            ..Default::default()
        },
    )
    .await
    .expect("clone");
    assert_eq!(done.dir, "/workspace/repo");
    assert_eq!(done.commit, commit);
    assert_eq!(done.branch.as_deref(), Some("main"));
    let (_, readme) = sh_status(&d.client, "g", "cat /workspace/repo/README").await;
    assert_eq!(readme, "hello through the proxy\n");
    // The token never entered the sandbox.
    let (_, grep) = sh_status(&d.client, "g", "grep -rl s3cret-token /workspace /root /etc 2>/dev/null; cat /proc/*/environ 2>/dev/null | grep -c s3cret-token").await;
    assert_eq!(grep.trim(), "0", "{grep}");

    // HTTPS (intercepted; the sandbox trusts the installation's CA by default), shallow,
    // into a chosen directory.
    let done = checkout(
        &d,
        "g",
        &CheckoutRequest {
            url: "https://git.example.test/repo.git".into(),
            depth: Some(1),
            branch: Some("main".into()),
            dir: Some("over-tls".into()),
        },
    )
    .await
    .expect("clone over https");
    assert_eq!(done.dir, "/workspace/over-tls");
    assert_eq!(done.commit, commit);

    // Clear errors.
    let e = checkout(
        &d,
        "g",
        &CheckoutRequest {
            url: "http://nokey.example.test/repo.git".into(),
            dir: Some("nokey".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthenticationFailed, "{e:?}");
    let e = checkout(
        &d,
        "g",
        &CheckoutRequest {
            url: "http://git.example.test/missing.git".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::RepositoryNotFound, "{e:?}");
    // Into a directory that is not empty: refused before git runs.
    let e = d
        .client
        .git_checkout(
            "g",
            &CheckoutRequest {
                url: "http://git.example.test/repo.git".into(),
                ..Default::default()
            },
        )
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not empty"), "{e}");
    // Option injection and dangerous transports are refused.
    for url in [
        "--upload-pack=touch /tmp/x",
        "ext::sh -c touch% /tmp/x",
        "file:///etc",
    ] {
        let e = d
            .client
            .git_checkout(
                "g",
                &CheckoutRequest {
                    url: url.into(),
                    dir: Some("x".into()),
                    ..Default::default()
                },
            )
            .await
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("URL") || e.to_string().contains("url"),
            "{e}"
        );
    }

    // The CLI.
    let out = d
        .cli()
        .args([
            "git",
            "clone",
            "g",
            "http://git.example.test/repo.git",
            "cli-clone",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&commit));
    let out = d
        .cli()
        .args([
            "git",
            "clone",
            "g",
            "http://git.example.test/missing.git",
            "m2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("repository_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_cli_shows_and_sets() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("c", &CreateSandbox::default())
        .await
        .unwrap();
    let out = d.cli().args(["net", "c"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode       proxy"), "{text}");
    let out = d
        .cli()
        .args([
            "net",
            "set",
            "c",
            "--mode",
            "none",
            "--deny",
            "*.evil.test",
            "--default",
            "deny",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = d.client.get_network("c").await.unwrap();
    assert_eq!(info.mode, NetworkMode::None);
    assert_eq!(info.policy.deny, ["*.evil.test"]);
    assert_eq!(info.policy.default, PolicyAction::Deny);
    let listed = d.client.get_sandbox("c").await.unwrap();
    assert_eq!(listed.network.unwrap().mode, NetworkMode::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_survive_daemon_restarts() {
    let Some(mut d) = TestDaemon::start(BIN).await else {
        return;
    };
    let (up, _) = http_upstream();
    let spec = CreateSandbox {
        network: Some(NetworkConfig {
            mode: NetworkMode::Proxy,
            policy: EgressPolicy {
                rules: vec![rule(
                    "api.example.test",
                    &format!("http://127.0.0.1:{up}"),
                    &[],
                )],
                ..Default::default()
            },
        }),
        keep_alive: Some(true),
        ..Default::default()
    };
    d.client.put_sandbox("r", &spec).await.unwrap();
    let before = d.client.get_network("r").await.unwrap().address;
    let pid = d.client.get_sandbox("r").await.unwrap().pid;
    let curl = "curl -sSf -m 10 http://api.example.test/x";
    assert_eq!(
        sh_status(&d.client, "r", curl).await,
        (0, "hello from upstream\n".into())
    );

    // Graceful stop (the firewall table is closed, not removed: the sandbox outlives the
    // daemon) and start: the sandbox keeps running, the new daemon finds its link again.
    assert_eq!(d.terminate(), Some(0));
    d.restart().await;
    assert_eq!(d.client.get_sandbox("r").await.unwrap().pid, pid);
    assert_eq!(d.client.get_network("r").await.unwrap().address, before);
    assert_eq!(
        sh_status(&d.client, "r", curl).await,
        (0, "hello from upstream\n".into())
    );

    // kill -9: same, and the firewall table left behind is replaced.
    d.kill9();
    d.restart().await;
    assert_eq!(d.client.get_sandbox("r").await.unwrap().pid, pid);
    assert_eq!(
        sh_status(&d.client, "r", curl).await,
        (0, "hello from upstream\n".into())
    );
}
