//! End to end through a running daemon into a real sandbox, the parts of exec and files that
//! `exec_files.rs` does not cover: sandbox environment layering, a client going away through
//! the daemon's proxy, a streamed 20 MiB upload, and a symlink climbing above the root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bothy_api::exec::ExecRequest;
use bothy_api::files::{FileType, MoveRequest};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_client::ClientError;
use bothy_testkit::TestDaemon;
use bytes::Bytes;

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn sh(line: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(line.into()),
        ..Default::default()
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_files_through_the_daemon() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    let env: BTreeMap<String, String> = [("FROM_SANDBOX".to_string(), "yes".to_string())].into();
    c.put_sandbox(
        "e2e",
        &CreateSandbox {
            env: Some(env),
            ..Default::default()
        },
    )
    .await
    .expect("create sandbox");

    // Exec: byte-exact output, exit code, environment, default cwd.
    let r = c
        .exec(
            "e2e",
            &ExecRequest {
                argv: Some(vec!["printf".into(), "\\377\\000a".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout_bytes(), [0xff, 0, b'a']);
    let r = c
        .exec("e2e", &sh("echo $FROM_SANDBOX $X; pwd; echo e >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "yes\n/workspace\n");
    assert_eq!((r.stderr.as_str(), r.exit_code), ("e\n", Some(7)));
    assert_eq!(
        code(
            c.exec("e2e", &sh("true")).await.map(|_| ()).and(
                c.exec(
                    "e2e",
                    &ExecRequest {
                        argv: Some(vec!["no-such-program".into()]),
                        ..Default::default()
                    },
                )
                .await
            )
        ),
        Some(ErrorCode::FileNotFound)
    );

    // Timeout kills the whole tree inside the sandbox.
    let r = c
        .exec(
            "e2e",
            &ExecRequest {
                timeout_ms: Some(300),
                ..sh("sleep 101 & sleep 101")
            },
        )
        .await
        .unwrap();
    assert!(r.timed_out);
    let r = c
        .exec("e2e", &sh("ps -e -o cmd | grep -c '^sleep 10[1]'"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "0\n", "sleeps survived the timeout");

    // A client that goes away takes its command with it, through the daemon's proxy.
    let gone =
        tokio::time::timeout(Duration::from_millis(500), c.exec("e2e", &sh("sleep 102"))).await;
    assert!(gone.is_err());
    let mut left = String::new();
    for _ in 0..50 {
        left = c
            .exec("e2e", &sh("ps -e -o cmd | grep -c '^sleep 10[2]'"))
            .await
            .unwrap()
            .stdout;
        if left == "0\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, "0\n", "command survived its client");

    // SSE: the first chunk before the command ends.
    let t = Instant::now();
    let mut s = c
        .exec_stream("e2e", &sh("echo 1; sleep 0.4; echo 2"))
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut first_stdout = None;
    while let Some(ev) = s.next().await.unwrap() {
        if ev.event == "stdout" && first_stdout.is_none() {
            first_stdout = Some(t.elapsed());
        }
        names.push(ev.event);
    }
    assert_eq!(names, ["start", "stdout", "stdout", "exit"]);
    assert!(first_stdout.unwrap() < Duration::from_millis(350));

    // Files: a streamed 20 MiB binary round trip.
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        futures_util::stream::iter(chunks),
    ));
    let w = c
        .write_file("e2e", "big/data.bin", Some(0o600), body)
        .await
        .unwrap();
    assert_eq!(
        (w.path.as_str(), w.bytes_written),
        ("/workspace/big/data.bin", 20 << 20)
    );
    let back = c.read_file_bytes("e2e", "big/data.bin").await.unwrap();
    assert!(back == data[..], "content differs");
    let st = c.stat_file("e2e", "/workspace/big/data.bin").await.unwrap();
    assert_eq!(
        (st.file_type, st.size, st.mode),
        (FileType::File, 20 << 20, 0o600)
    );
    let l = c.list_files("e2e", "/workspace", true).await.unwrap();
    assert!(l
        .entries
        .iter()
        .any(|e| e.path == "/workspace/big/data.bin"));
    c.move_file(
        "e2e",
        &MoveRequest {
            from: "big/data.bin".into(),
            to: "big/moved.bin".into(),
            overwrite: false,
        },
    )
    .await
    .unwrap();
    assert!(c.file_exists("e2e", "big/moved.bin").await.unwrap());
    assert_eq!(
        code(c.remove_file("e2e", "big", false).await),
        Some(ErrorCode::DirectoryNotEmpty)
    );
    c.remove_file("e2e", "big", true).await.unwrap();
    assert_eq!(
        code(c.read_file_bytes("e2e", "big/moved.bin").await),
        Some(ErrorCode::FileNotFound)
    );
    assert_eq!(
        code(c.read_file_bytes("e2e", "/workspace").await),
        Some(ErrorCode::IsADirectory)
    );
    assert_eq!(
        code(c.read_file_bytes("e2e", "/../etc/passwd").await),
        Some(ErrorCode::PathEscape)
    );

    // Abuse: a symlink climbing above the root stays in the sandbox's root.
    let marker = format!("/tmp/bothy-e2e-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    c.exec("e2e", &sh("ln -s /../../.. /workspace/up"))
        .await
        .unwrap();
    let through = c
        .read_file_bytes("e2e", &format!("/workspace/up{marker}"))
        .await;
    let _ = std::fs::remove_file(&marker);
    assert_eq!(code(through), Some(ErrorCode::FileNotFound));

    c.delete_sandbox("e2e").await.unwrap();
}
