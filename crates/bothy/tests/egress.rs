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
