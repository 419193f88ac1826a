//! End to end: exec (JSON and SSE) and files through the daemon, plus `bothy cp`/`bothy exec`.

use std::time::{Duration, Instant};

use bothy_api::exec::ExecRequest;
use bothy_api::files::{FileType, MkdirRequest, MoveRequest};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_testkit::TestDaemon;

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_byte_exact_and_kills_on_timeout() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("x", &CreateSandbox::default())
        .await
        .unwrap();
    let r = d
        .client
        .exec("x", &sh(r"printf '\377\000a'; printf err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(r.stdout_bytes(), b"\xff\x00a");
    assert_eq!(r.stderr_bytes(), b"err");
    assert_eq!(r.exit_code, Some(3));
    let r = d.client.exec("x", &sh("printf a")).await.unwrap();
    assert_eq!(r.stdout, "a", "no newline added or lost");

    // argv form, no shell: `$HOME` stays literal.
    let r = d
        .client
        .exec(
            "x",
            &ExecRequest {
                argv: Some(vec!["echo".into(), "$HOME".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "$HOME\n");

    // stdin
    let r = d
        .client
        .exec(
            "x",
            &ExecRequest {
                shell: Some("wc -c".into()),
                stdin: Some("12345".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout.trim(), "5");

    // A timeout kills the whole tree, including a daemonized grandchild.
    let started = Instant::now();
    let r = d
        .client
        .exec(
            "x",
            &ExecRequest {
                shell: Some("setsid sh -c 'sleep 1000' & sleep 1000".into()),
                timeout_ms: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.timed_out);
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps = d
        .client
        .exec("x", &sh("ps -eo args | grep -c '^sleep 1000' || true"))
        .await
        .unwrap();
    assert_eq!(ps.stdout.trim(), "0", "no sleep survived the timeout");

    // A client that disconnects kills the command.
    let c = d.client.clone();
    let t = tokio::spawn(async move { c.exec("x", &sh("echo $$ > /tmp/pid; sleep 1000")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.abort();
    let gone = bothy_testkit::wait_until(Duration::from_secs(5), || {
        let c = d.client.clone();
        async move {
            let r = c
                .exec(
                    "x",
                    &sh("kill -0 $(cat /tmp/pid) 2>/dev/null && echo alive || echo gone"),
                )
                .await
                .unwrap();
            r.stdout.trim() == "gone"
        }
    })
    .await;
    assert!(gone, "disconnect killed the command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_events_in_order() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("s", &CreateSandbox::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut st = d
        .client
        .exec_stream("s", &sh("echo one; sleep 1; echo two >&2; exit 4"))
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut first_output_at = None;
    while let Some(ev) = st.next().await.unwrap() {
        if ev.event == "stdout" && first_output_at.is_none() {
            first_output_at = Some(started.elapsed());
        }
        events.push((ev.event.clone(), ev.data.clone()));
    }
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["start", "stdout", "stderr", "exit"], "{events:?}");
    assert!(
        first_output_at.unwrap() < Duration::from_millis(900),
        "stdout arrived before the sleep ended"
    );
    let exit: serde_json::Value = serde_json::from_str(&events[3].1).unwrap();
    assert_eq!(exit["exit_code"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_and_errors() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("f", &CreateSandbox::default()).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let w = c
        .write_file(
            "f",
            "deep/dir/data.bin",
            Some(0o600),
            bothy_client::full(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(w.path, "/workspace/deep/dir/data.bin");
    assert_eq!(w.bytes_written, data.len() as u64);
    assert_eq!(
        c.read_file_bytes("f", "/workspace/deep/dir/data.bin")
            .await
            .unwrap(),
        data
    );
    let st = c.stat_file("f", "deep/dir/data.bin").await.unwrap();
    assert_eq!(
        (st.file_type, st.size, st.mode & 0o777),
        (FileType::File, data.len() as u64, 0o600)
    );
    // The sandbox sees the same bytes.
    let r = c
        .exec("f", &sh("cmp -s deep/dir/data.bin /dev/stdin && echo same"))
        .await;
    assert!(r.is_ok());
    c.mkdir(
        "f",
        &MkdirRequest {
            path: "a/b/c".into(),
            mode: None,
        },
    )
    .await
    .unwrap();
    assert!(c.file_exists("f", "a/b/c").await.unwrap());
    let list = c.list_files("f", "/workspace", true).await.unwrap();
    let paths: Vec<&str> = list.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"/workspace/a/b/c") && paths.contains(&"/workspace/deep/dir/data.bin"),
        "{paths:?}"
    );
    c.move_file(
        "f",
        &MoveRequest {
            from: "deep/dir/data.bin".into(),
            to: "moved.bin".into(),
            overwrite: false,
        },
    )
    .await
    .unwrap();
    assert!(!c.file_exists("f", "deep/dir/data.bin").await.unwrap());
    c.remove_file("f", "a", true).await.unwrap();
    assert!(!c.file_exists("f", "a").await.unwrap());

    // Errors: not found, escape, directory as file, non-empty dir, move onto existing.
    assert_eq!(
        c.read_file_bytes("f", "nope").await.unwrap_err().code(),
        Some(ErrorCode::FileNotFound)
    );
    assert_eq!(
        c.read_file_bytes("f", "../../../etc/passwd")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::PathEscape)
    );
    assert_eq!(
        c.read_file_bytes("f", "/workspace")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::IsADirectory)
    );
    c.mkdir(
        "f",
        &MkdirRequest {
            path: "full/x".into(),
            mode: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.remove_file("f", "full", false).await.unwrap_err().code(),
        Some(ErrorCode::DirectoryNotEmpty)
    );
    c.write_file("f", "other", None, bothy_client::full("x"))
        .await
        .unwrap();
    let e = c
        .move_file(
            "f",
            &MoveRequest {
                from: "other".into(),
                to: "moved.bin".into(),
                overwrite: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyExists));

    // Symlinks resolve inside the sandbox: a link to / reads the sandbox's /etc, not the host's.
    c.exec("f", &sh("ln -s / /workspace/root-link"))
        .await
        .unwrap();
    let shadow = c
        .read_file_bytes("f", "root-link/etc/shadow")
        .await
        .unwrap_err();
    assert_eq!(
        shadow.code(),
        Some(ErrorCode::FileNotFound),
        "the host image has no /etc/shadow"
    );
    let host_only = c
        .read_file_bytes("f", "root-link/work/main/Cargo.toml")
        .await
        .unwrap_err();
    assert_eq!(host_only.code(), Some(ErrorCode::FileNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exec_and_cp() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let out = d.cli().args(["get", "cli"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // exec: output, exit code, stdin forwarding.
    let out = d
        .cli()
        .args([
            "exec",
            "cli",
            "--",
            "sh",
            "-c",
            "cat; echo to-err >&2; exit 7",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b"from-stdin\n")?;
            ch.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"from-stdin\n");
    assert_eq!(out.stderr, b"to-err\n");

    // cp host -> sandbox -> host, a file and a directory.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("tree/sub")).unwrap();
    std::fs::write(tmp.path().join("tree/sub/f.txt"), b"hello cp").unwrap();
    let st = d
        .cli()
        .args([
            "cp",
            tmp.path().join("tree").to_str().unwrap(),
            "cli:/workspace/tree",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let back = tmp.path().join("back");
    let st = d
        .cli()
        .args(["cp", "cli:/workspace/tree", back.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(back.join("sub/f.txt")).unwrap(), b"hello cp");

    // ls --json and info --json print data; rm without --force refuses without a terminal.
    let out = d.cli().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sandboxes"][0]["name"], "cli");
    let out = d
        .cli()
        .args(["rm", "cli"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = d.cli().args(["rm", "cli", "--force"]).output().unwrap();
    assert!(out.status.success());
}
