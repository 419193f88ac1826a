//! End to end through a real daemon: secrets (API and CLI; never returned, stored privately),
//! the egress CA (created once, key private, certificate trusted inside sandboxes by the
//! system bundle and the usual variables), and the egress-log route.

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_client::http::Method;
use bothy_client::ClientError;
use bothy_testkit::TestDaemon;

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        ..Default::default()
    }
}

fn code(e: ClientError) -> ErrorCode {
    e.code()
        .unwrap_or_else(|| panic!("expected an API error, got {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_set_listed_without_values_and_deleted() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let value = "tok-9f8e7d6c5b4a-never-shown";
    let info = d.client.set_secret("GH_TOKEN", value).await.unwrap();
    assert_eq!(info.name, "GH_TOKEN");
    let again = d.client.set_secret("GH_TOKEN", "v2-value").await.unwrap();
    assert_eq!(again.created_at, info.created_at);

    // The CLI: from stdin (one trailing newline dropped) and listed without values.
    let mut child = d
        .cli()
        .args(["secret", "set", "NPM_TOKEN"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"npm-secret-value\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let out = d.cli().args(["secret", "ls"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("GH_TOKEN") && text.contains("NPM_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("v2-value") && !text.contains("npm-secret-value"));

    let raw = d
        .client
        .json_bytes(Method::GET, "/v1/secrets", None::<&()>)
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("GH_TOKEN"));
    assert!(
        !raw.contains("v2-value") && !raw.contains("npm-secret-value") && !raw.contains(value),
        "{raw}"
    );
    // There is no route that reads a value back.
    let e = d
        .client
        .json_bytes(Method::GET, "/v1/secrets/GH_TOKEN", None::<&()>)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::MethodNotAllowed);

    // Bad input: clear 4xx.
    assert_eq!(
        code(d.client.set_secret("bad name", "x").await.unwrap_err()),
        ErrorCode::InvalidName
    );
    assert_eq!(
        code(d.client.set_secret("EMPTY", "").await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(d.client.set_secret("NL", "a\nb").await.unwrap_err()),
        ErrorCode::InvalidRequest
    );

    // Deleted once; the second time it is not found.
    let out = d
        .cli()
        .args(["secret", "rm", "NPM_TOKEN"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        code(d.client.delete_secret("NPM_TOKEN").await.unwrap_err()),
        ErrorCode::SecretNotFound
    );
    let list = d.client.list_secrets().await.unwrap();
    assert_eq!(list.secrets.len(), 1);

    // Stored in a database only root can read, and kept across a restart.
    let db = d.data_dir().join("state.db");
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o077, 0);
    let mut d = d;
    d.restart().await;
    assert_eq!(
        d.client.list_secrets().await.unwrap().secrets[0].name,
        "GH_TOKEN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_trust_the_egress_ca_but_never_see_its_key() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let ca_dir = d.data_dir().join("egress/ca");
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let key_meta = std::fs::metadata(ca_dir.join("ca.key")).unwrap();
    assert_eq!(key_meta.mode() & 0o777, 0o600);
    d.client
        .put_sandbox("t1", &CreateSandbox::default())
        .await
        .unwrap();

    // The certificate, the bundle and the variables.
    let r = d
        .client
        .exec(
            "t1",
            &sh("cat /etc/bothy/ca.pem; echo @@@; env | grep -E '^(SSL_CERT_FILE|NODE_EXTRA_CA_CERTS|REQUESTS_CA_BUNDLE|GIT_SSL_CAINFO|CURL_CA_BUNDLE)=' | sort; \
                 tail -c 2000 /etc/ssl/certs/ca-certificates.crt | grep -c 'bothy egress CA'"),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr);
    let (cert, rest) = r.stdout.split_once("@@@\n").unwrap();
    assert_eq!(cert, ca_pem);
    assert_eq!(
        rest,
        "CURL_CA_BUNDLE=/etc/bothy/ca-bundle.pem\nGIT_SSL_CAINFO=/etc/bothy/ca-bundle.pem\n\
         NODE_EXTRA_CA_CERTS=/etc/bothy/ca.pem\nREQUESTS_CA_BUNDLE=/etc/bothy/ca-bundle.pem\n\
         SSL_CERT_FILE=/etc/bothy/ca-bundle.pem\n1\n"
    );

    // A server inside the sandbox with a certificate issued by the CA (minted here, on the
    // host, with the key the sandbox never gets) is trusted by curl — with the variables and,
    // through the system bundle, without them.
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("openssl on the host");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = ca_dir.join("ca.key");
    let ca_crt = ca_dir.join("ca.pem");
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "leaf.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "leaf.key",
        "-subj",
        "/CN=inside.test",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(tmp.path().join("ext"), "subjectAltName=DNS:inside.test\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        ca_crt.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "leaf.pem",
    ]);
    for f in ["leaf.pem", "leaf.key"] {
        let bytes = std::fs::read(tmp.path().join(f)).unwrap();
        d.client
            .write_file("t1", &format!("/tmp/{f}"), None, bothy_client::full(bytes))
            .await
            .unwrap();
    }
    let r = d
        .client
        .exec(
            "t1",
            &ExecRequest {
                timeout_ms: Some(30_000),
                ..sh("cd /tmp && (openssl s_server -quiet -accept 127.0.0.1:8443 -cert leaf.pem -key leaf.key -www >/dev/null 2>&1 &) ; \
                      for i in $(seq 50); do curl -s -o /dev/null --resolve inside.test:8443:127.0.0.1 https://inside.test:8443/ && break; sleep 0.1; done; \
                      curl -sS -o /dev/null -w 'env:%{http_code}\\n' --resolve inside.test:8443:127.0.0.1 https://inside.test:8443/; \
                      env -i /usr/bin/curl -sS -o /dev/null -w 'system:%{http_code}\\n' --resolve inside.test:8443:127.0.0.1 https://inside.test:8443/; \
                      pkill -f 's_server' ; true")
            },
        )
        .await
        .unwrap();
    assert!(
        r.stdout.contains("env:200") && r.stdout.contains("system:200"),
        "stdout {} stderr {}",
        r.stdout,
        r.stderr
    );

    // The key is nowhere in the sandbox's view of the filesystem.
    let key_pem = std::fs::read_to_string(&ca_key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    let r = d
        .client
        .exec(
            "t1",
            &sh(&format!(
                "grep -rslF '{key_line}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=usr 2>/dev/null; echo done"
            )),
        )
        .await
        .unwrap();
    assert_eq!(
        r.stdout, "done\n",
        "the CA key is visible inside: {}",
        r.stdout
    );

    // A restart keeps the same CA.
    let mut d = d;
    d.restart().await;
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap(),
        ca_pem
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_log_route_and_cli() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("t1", &CreateSandbox::default())
        .await
        .unwrap();
    let log = d.client.egress_log("t1", None).await.unwrap();
    assert!(log.entries.is_empty());
    assert_eq!(
        code(d.client.egress_log("nope", None).await.unwrap_err()),
        ErrorCode::SandboxNotFound
    );
    let out = d
        .cli()
        .args(["egress-log", "t1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------------
// Through a sandbox: the network plumbing, the proxy and the daemon's secrets together.

/// An HTTPS server on host loopback with its own test CA (made with the openssl CLI). It
/// answers every GET with JSON: the path, the names of the headers it got, and the SHA-256 of
/// the `Authorization` value — never the value itself, so nothing in the sandbox ever holds it.
struct TestUpstream {
    child: std::process::Child,
    port: u16,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ECHO_SERVER: &str = r#"
import hashlib, http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        auth = self.headers.get("authorization")
        body = json.dumps({
            "path": self.path,
            "host": self.headers.get("host"),
            "header_names": sorted(k.lower() for k in self.headers.keys()),
            "auth_sha256": hashlib.sha256(auth.encode()).hexdigest() if auth else None,
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on the host");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_upstream() -> TestUpstream {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    openssl(
        p,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=egress test upstream CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        p,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "srv.key",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-new",
            "-key",
            "srv.key",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "srv.csr",
        ],
    );
    std::fs::write(p.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "srv.pem",
        ],
    );
    std::fs::write(p.join("echo.py"), ECHO_SERVER).unwrap();
    let mut child = std::process::Command::new("python3")
        .args(["echo.py", "srv.pem", "srv.key"])
        .current_dir(p)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 on the host");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the upstream prints its port");
    TestUpstream {
        child,
        port,
        ca_file: p.join("ca.pem"),
        _dir: dir,
    }
}

fn sha256_hex(s: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn policy_json(upstream_port: u16, extra_deny: &[&str]) -> bothy_api::network::NetworkConfig {
    let mut deny = vec!["*.evil.test".to_string()];
    deny.extend(extra_deny.iter().map(|s| s.to_string()));
    serde_json::from_value(serde_json::json!({
        "mode": "proxy",
        "policy": {
            "deny": deny,
            "rules": [{
                "host": "api.example.test",
                "headers": {"authorization": {"secret": "api_token", "format": "Bearer {secret}"}},
                "upstream": format!("https://127.0.0.1:{upstream_port}"),
            }],
            "default": "allow",
        }
    }))
    .unwrap()
}

/// Python run inside the sandbox: looks for a needle (given hex-encoded, so that no command
/// line or request holds it) in every process's environment, its readable memory, and files.
const SEARCH: &str = r#"
import os, sys
needle = bytes.fromhex(sys.argv[1])
me = os.getpid()
found, scanned, unreadable, pids = [], 0, [], 0
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    if int(pid) == me:
        continue
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if needle in f.read():
                found.append(f"environ:{pid}")
        with open(f"/proc/{pid}/maps") as m, open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for line in m:
                addr, perms = line.split()[:2]
                if not perms.startswith("r"):
                    continue
                lo, hi = (int(x, 16) for x in addr.split("-"))
                if hi - lo > 512 << 20:
                    continue
                try:
                    mem.seek(lo)
                    if needle in mem.read(hi - lo):
                        found.append(f"mem:{pid}:{line.strip()}")
                    scanned += 1
                except OSError:
                    pass
        pids += 1
    except OSError:
        unreadable.append(pid)
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev", "/usr")]
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if needle in f.read(64 << 20):
                    found.append(f"file:{path}")
        except OSError:
            pass
print(f"found={found} regions={scanned} processes={pids} unreadable={unreadable}")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_reaches_a_routed_upstream_with_a_secret_it_never_sees() {
    let upstream = start_upstream();
    let Some(mut d) = TestDaemon::start_with(
        BIN,
        bothy_testkit::Options {
            extra_args: vec![
                "--egress-extra-ca".into(),
                upstream.ca_file.display().to_string(),
            ],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let secret = format!("sk-e2e-{:016x}{:08x}", rand_u64(), std::process::id());
    d.client.set_secret("api_token", &secret).await.unwrap();
    d.client
        .put_sandbox("t1", &CreateSandbox::default())
        .await
        .unwrap();
    let net = d
        .client
        .put_network("t1", &policy_json(upstream.port, &[]))
        .await
        .unwrap();
    if net.address.is_none() {
        bothy_testkit::skip("proxy networking is unavailable on this machine");
        return;
    }

    // curl inside the sandbox, with no credential of its own.
    let r = d
        .client
        .exec(
            "t1",
            &ExecRequest {
                timeout_ms: Some(60_000),
                ..sh("curl -sS -v --max-time 20 'https://api.example.test/v1/hello?x=1'")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        r.exit_code,
        Some(0),
        "stdout {} stderr {}",
        r.stdout,
        r.stderr
    );
    let seen: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(seen["path"], "/v1/hello?x=1");
    assert_eq!(seen["host"], "api.example.test");
    assert_eq!(
        seen["auth_sha256"],
        sha256_hex(&format!("Bearer {secret}")),
        "the upstream got the injected Authorization"
    );
    let sent: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("> ")).collect();
    assert!(!sent.is_empty(), "curl -v shows its request: {}", r.stderr);
    assert!(
        !sent
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("> authorization")),
        "the sandbox sent no Authorization: {sent:?}"
    );
    // curl verified the proxy's certificate for api.example.test (no -k): the sandbox trusts
    // the egress CA.

    // A denied host: the TLS handshake completes, the answer is a clear 403.
    let r = d
        .client
        .exec(
            "t1",
            &sh("curl -sS --max-time 20 -w '\\nstatus=%{http_code}' https://x.evil.test/"),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr);
    assert!(r.stdout.ends_with("status=403"), "{}", r.stdout);
    assert!(
        r.stdout.contains("egress_denied") && r.stdout.contains("x.evil.test"),
        "{}",
        r.stdout
    );

    // The secret is nowhere in the sandbox: environment, process memory, files.
    d.client
        .write_file("t1", "/tmp/search.py", None, bothy_client::full(SEARCH))
        .await
        .unwrap();
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let r = d
        .client
        .exec(
            "t1",
            &ExecRequest {
                timeout_ms: Some(120_000),
                ..sh(&format!("python3 /tmp/search.py {hex}"))
            },
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr);
    eprintln!("secret search in the sandbox: {}", r.stdout.trim());
    assert!(
        r.stdout.starts_with("found=[] "),
        "secret found in the sandbox: {}",
        r.stdout
    );
    let regions: u64 = r
        .stdout
        .split("regions=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        regions > 10,
        "the memory search read too little: {}",
        r.stdout
    );
    // And the search does find a value that is there (it can fail).
    let r = d
        .client
        .exec(
            "t1",
            &ExecRequest {
                env: [("PROBE".to_string(), "probe-value-314159".to_string())].into(),
                ..sh(&format!(
                    "python3 /tmp/search.py {}",
                    "probe-value-314159"
                        .bytes()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ))
            },
        )
        .await
        .unwrap();
    assert!(r.stdout.contains("environ:"), "{}", r.stdout);

    // A policy change applies to the next request.
    d.client
        .put_network("t1", &policy_json(upstream.port, &["api.example.test"]))
        .await
        .unwrap();
    let r = d
        .client
        .exec(
            "t1",
            &sh("curl -sS --max-time 20 -o /dev/null -w '%{http_code}' https://api.example.test/v1/after"),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "403", "{}", r.stderr);

    // The egress log shows the requests, without the secret.
    let log = d.client.egress_log("t1", None).await.unwrap();
    let hosts: Vec<(&str, Option<u16>, &str)> = log
        .entries
        .iter()
        .map(|e| (e.host.as_str(), e.status, e.rule.as_str()))
        .collect();
    assert!(
        hosts.contains(&("api.example.test", Some(200), "rules[0] api.example.test")),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&("x.evil.test", Some(403), "deny[0] *.evil.test")),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&("api.example.test", Some(403), "deny[1] api.example.test")),
        "{hosts:?}"
    );
    let ok = log.entries.iter().find(|e| e.status == Some(200)).unwrap();
    assert_eq!(
        (ok.method.as_str(), ok.path.as_str()),
        ("GET", "/v1/hello?x=1")
    );
    assert!(ok.bytes_down > 0);
    let out = d.cli().args(["egress-log", "t1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("https://api.example.test:443/v1/hello?x=1"),
        "{text}"
    );
    let raw = serde_json::to_string(&log).unwrap();
    assert!(!raw.contains(&secret));
    assert!(
        !d.log().contains(&secret),
        "the daemon's log holds the secret"
    );

    // The log is kept in the metadata store: a daemon killed and started again still has it.
    d.restart().await;
    let again = d.client.egress_log("t1", None).await.unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&log).unwrap(),
        "the egress log after a restart"
    );

    // A new sandbox under the same name starts with an empty log.
    d.client.delete_sandbox("t1").await.unwrap();
    d.client
        .put_sandbox("t1", &CreateSandbox::default())
        .await
        .unwrap();
    assert!(d
        .client
        .egress_log("t1", None)
        .await
        .unwrap()
        .entries
        .is_empty());
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut b)
        })
        .unwrap();
    u64::from_le_bytes(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_never_takes_a_sandbox_to_the_host_or_metadata() {
    let Some(d) = TestDaemon::start_with(
        BIN,
        bothy_testkit::Options {
            tcp_token: Some("tok".into()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    d.client
        .put_sandbox("t1", &CreateSandbox::default())
        .await
        .unwrap();
    let net = d.client.get_network("t1").await.unwrap();
    let Some(gateway) = net.gateway.clone() else {
        bothy_testkit::skip("proxy networking is unavailable on this machine");
        return;
    };
    let api_port = d
        .tcp_addr
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    // Default policy: every host allowed. Still, none of these may reach the host.
    let cmd = format!(
        "for u in http://{gateway}/ http://169.254.169.254/latest/meta-data/ https://{gateway}/; do \
           printf '%s ' \"$u\"; curl -ksS --max-time 10 -o /dev/null -w '%{{http_code}}\\n' \"$u\" 2>/dev/null || true; done; \
         printf 'host-header '; curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}\\n' -H 'Host: 127.0.0.1:{api_port}' http://203.0.113.1/v1/health 2>/dev/null || true; \
         printf 'api-port '; curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://{gateway}:{api_port}/v1/health 2>/dev/null || true"
    );
    let r = d
        .client
        .exec(
            "t1",
            &ExecRequest {
                timeout_ms: Some(90_000),
                ..sh(&cmd)
            },
        )
        .await
        .unwrap();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}\n{}", r.stdout, r.stderr);
    for l in &lines[..4] {
        assert!(l.ends_with(" 502"), "expected the proxy's 502: {l}");
    }
    // A port other than 80/443 that no entry names: the connection is closed, no HTTP at all.
    assert_eq!(lines[4], "api-port 000");
    let log = d.client.egress_log("t1", None).await.unwrap();
    let errors: Vec<String> = log.entries.iter().filter_map(|e| e.error.clone()).collect();
    assert!(
        errors.iter().filter(|e| e.contains("non-public")).count() >= 4,
        "{errors:?}"
    );
    assert!(log
        .entries
        .iter()
        .any(|e| e.scheme == "tcp" && e.decision == bothy_api::egress::EgressDecision::Denied));
}
