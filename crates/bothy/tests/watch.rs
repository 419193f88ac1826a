//! End to end: file watching through the daemon, with changes made inside the sandbox, plus
//! `bothy watch`.

use std::collections::HashSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_api::watch::{WatchEvent, WatchEventKind as K};
use bothy_api::ErrorCode;
use bothy_client::watch::{WatchOptions, WatchStream};
use bothy_client::Client;
use bothy_testkit::{sh_ok, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

async fn next(s: &mut WatchStream, wait: Duration) -> Option<WatchEvent> {
    tokio::time::timeout(wait, s.next())
        .await
        .ok()
        .and_then(|r| r.unwrap())
}

/// Events until nothing comes for `quiet`.
async fn drain(s: &mut WatchStream, quiet: Duration) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while let Some(e) = next(s, quiet).await {
        out.push(e);
    }
    out
}

async fn open(c: &Client, name: &str, opts: WatchOptions) -> (WatchStream, WatchEvent) {
    let mut s = c.watch(name, &opts).await.unwrap();
    let ready = next(&mut s, Duration::from_secs(20)).await.expect("ready");
    assert_eq!(ready.kind, K::Ready, "{ready:?}");
    (s, ready)
}

fn at(path: &str) -> WatchOptions {
    WatchOptions {
        path: Some(path.into()),
        ..Default::default()
    }
}

fn has(ev: &[WatchEvent], kind: K, path: &str) -> bool {
    ev.iter().any(|e| e.kind == kind && e.path == path)
}

const QUIET: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_changes_made_inside_the_sandbox() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("w", &CreateSandbox::default()).await.unwrap();
    sh_ok(c, "w", "mkdir -p /workspace/p").await;
    let (mut s, ready) = open(c, "w", at("p")).await;
    assert_eq!(ready.path, "/workspace/p");

    // Types, a tree at once, a rename within and out of the tree, close-after-write.
    sh_ok(
        c,
        "w",
        "cd /workspace/p && echo one > a && mkdir -p t/u/v && touch t/u/v/f \
         && mv a b && mv b /tmp/b && chmod 600 t/u/v/f && rm t/u/v/f",
    )
    .await;
    let ev = drain(&mut s, QUIET).await;
    let w = |r: &str| format!("/workspace/p/{r}");
    assert!(
        has(&ev, K::Create, &w("a")) && has(&ev, K::Modify, &w("a")),
        "{ev:#?}"
    );
    for dir in ["t", "t/u", "t/u/v"] {
        assert!(
            ev.iter()
                .any(|e| e.kind == K::Create && e.path == w(dir) && e.is_dir),
            "{dir}: {ev:#?}"
        );
    }
    assert!(has(&ev, K::Create, &w("t/u/v/f")), "{ev:#?}");
    let mv = ev.iter().find(|e| e.kind == K::Move).expect("move");
    assert_eq!(
        (mv.from.as_deref(), mv.path.as_str()),
        (Some(w("a").as_str()), w("b").as_str())
    );
    assert!(has(&ev, K::Delete, &w("b")), "moved out: {ev:#?}");
    assert!(has(&ev, K::Attrib, &w("t/u/v/f")), "{ev:#?}");
    assert!(has(&ev, K::Delete, &w("t/u/v/f")), "{ev:#?}");

    // Resume by cursor: what happens while disconnected is replayed.
    let cursor = ev.last().unwrap().cursor.clone();
    drop(s);
    sh_ok(c, "w", "touch /workspace/p/missed1 /workspace/p/missed2").await;
    let (mut s, ready) = open(
        c,
        "w",
        WatchOptions {
            cursor: Some(cursor.clone()),
            ..at("p")
        },
    )
    .await;
    assert_eq!(ready.resumed, Some(true));
    let ev = drain(&mut s, QUIET).await;
    assert!(has(&ev, K::Create, &w("missed1")) && has(&ev, K::Create, &w("missed2")));

    // Polling form, from the same cursor.
    let ch = c
        .watch_changes(
            "w",
            &WatchOptions {
                cursor: Some(cursor),
                events: vec![K::Create],
                ..at("p")
            },
            None,
            None,
        )
        .await
        .unwrap();
    let paths: Vec<&str> = ch.events.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec![w("missed1"), w("missed2")]);

    // Stopped when the directory goes; the stream ends.
    sh_ok(c, "w", "rm -rf /workspace/p").await;
    let ev = drain(&mut s, Duration::from_secs(3)).await;
    let last = ev.last().expect("events");
    assert_eq!(
        (last.kind, last.reason.as_deref()),
        (K::Stopped, Some("deleted"))
    );
    assert!(
        s.next().await.unwrap().is_none(),
        "stream ends after stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_50000_creations_inside_the_sandbox() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("burst", &CreateSandbox::default())
        .await
        .unwrap();
    sh_ok(c, "burst", "mkdir -p /workspace/b").await;
    let (mut s, _) = open(
        c,
        "burst",
        WatchOptions {
            events: vec![K::Create],
            ..at("b")
        },
    )
    .await;
    const N: usize = 50_000;
    let c2 = c.clone();
    let writer = tokio::spawn(async move {
        sh_ok(
            &c2,
            "burst",
            "cd /workspace/b && i=0; while [ $i -lt 50000 ]; do : > f$i; i=$((i+1)); done",
        )
        .await;
    });
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut overflows = 0;
    while seen.len() < N {
        let Some(e) = next(&mut s, Duration::from_secs(30)).await else {
            break;
        };
        match e.kind {
            K::Create => {
                seen.insert(e.path);
            }
            K::Overflow => overflows += 1,
            k => panic!("unexpected {k:?}"),
        }
    }
    writer.await.unwrap();
    eprintln!(
        "e2e burst: {} of {N} creations reported, {overflows} overflows, {:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(
        seen.len() == N || overflows > 0,
        "{} of {N} reported without an overflow",
        seen.len()
    );
    if overflows == 0 {
        for i in 0..N {
            assert!(seen.contains(&format!("/workspace/b/f{i}")), "f{i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_filters_and_no_view_of_the_host() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("f", &CreateSandbox::default()).await.unwrap();
    sh_ok(c, "f", "mkdir -p /workspace/r/src && touch /workspace/file").await;
    let err = |opts: WatchOptions| async move { c.watch("f", &opts).await.err().unwrap() };
    assert_eq!(err(at("nope")).await.code(), Some(ErrorCode::FileNotFound));
    assert_eq!(err(at("file")).await.code(), Some(ErrorCode::NotADirectory));
    assert_eq!(
        err(at("../../../..")).await.code(),
        Some(ErrorCode::PathEscape)
    );
    // A directory that exists on the host (not in the sandbox) is not found: the agent only
    // sees the sandbox's own tree.
    let host = tempfile::tempdir().unwrap();
    let host_path = host.path().to_string_lossy().into_owned();
    assert_eq!(
        err(at(&host_path)).await.code(),
        Some(ErrorCode::FileNotFound)
    );

    let (mut only_rs, _) = open(
        c,
        "f",
        WatchOptions {
            include: vec!["*.rs".into()],
            ..at("r")
        },
    )
    .await;
    let (mut everything, _) = open(
        c,
        "f",
        WatchOptions {
            exclude: Some(vec![]),
            ..at("r")
        },
    )
    .await;
    sh_ok(
        c,
        "f",
        "cd /workspace/r && touch src/main.rs src/x.c && mkdir -p .git node_modules/m && touch .git/HEAD node_modules/m/i.js",
    )
    .await;
    let ev = drain(&mut only_rs, QUIET).await;
    assert!(
        ev.iter().all(|e| e.path == "/workspace/r/src/main.rs"),
        "{ev:#?}"
    );
    assert!(has(&ev, K::Create, "/workspace/r/src/main.rs"));
    let ev = drain(&mut everything, QUIET).await;
    for p in ["src/x.c", ".git/HEAD", "node_modules/m/i.js"] {
        assert!(
            has(&ev, K::Create, &format!("/workspace/r/{p}")),
            "{p}: {ev:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_prints_changes() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("cli", &CreateSandbox::default())
        .await
        .unwrap();
    sh_ok(c, "cli", "mkdir -p /workspace/d").await;
    let mut child = d
        .cli()
        .args(["watch", "cli", "d", "--json", "--exclude", ""])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(recv(&mut rx).await.kind, K::Ready);
    sh_ok(c, "cli", "mkdir /workspace/d/.git && rm -rf /workspace/d").await;
    let mut kinds = Vec::new();
    loop {
        let e = recv(&mut rx).await;
        kinds.push((e.kind, e.path.clone()));
        if e.kind == K::Stopped {
            break;
        }
    }
    assert!(
        kinds.contains(&(K::Create, "/workspace/d/.git".to_string())),
        "--exclude '' watches .git: {kinds:?}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "bothy watch exits 0 after stopped");

    // A bad path is a clear error and exit 1.
    let out = d.cli().args(["watch", "cli", "/nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file_not_found"), "{err}");
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> WatchEvent {
    let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a line in time")
        .expect("cli still running");
    serde_json::from_str::<WatchEvent>(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_ends_the_watch_and_resuming_after_it_gets_resync() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("s", &CreateSandbox::default()).await.unwrap();
    sh_ok(c, "s", "mkdir -p /workspace/d").await;
    let (mut s, _) = open(c, "s", at("d")).await;
    sh_ok(c, "s", "touch /workspace/d/before").await;
    let ev = drain(&mut s, QUIET).await;
    let cursor = ev.last().expect("events").cursor.clone();

    // The CLI too: it ends instead of waking the sandbox again.
    let mut cli = d
        .cli()
        .args(["watch", "s", "d", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cli.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    assert_eq!(recv(&mut rx).await.kind, K::Ready);

    c.sleep_sandbox("s").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = s.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends when the sandbox sleeps");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = cli.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "bothy watch did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let info = c.get_sandbox("s").await.unwrap();
    assert_eq!(
        info.state.as_str(),
        "sleeping",
        "bothy watch did not wake it"
    );

    // The watch lived in the agent's memory: a cursor from before is answered with resync.
    let (mut s, ready) = open(
        c,
        "s",
        WatchOptions {
            cursor: Some(cursor),
            ..at("d")
        },
    )
    .await;
    assert_eq!(ready.resumed, Some(false));
    let r = next(&mut s, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (r.kind, r.reason.as_deref()),
        (K::Resync, Some("unknown_cursor"))
    );
    sh_ok(c, "s", "touch /workspace/d/after").await;
    let ev = drain(&mut s, QUIET).await;
    assert!(has(&ev, K::Create, "/workspace/d/after"), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_is_reported_file_by_file() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    c.put_sandbox("g", &CreateSandbox::default()).await.unwrap();
    let has_git = c
        .exec(
            "g",
            &ExecRequest {
                shell: Some("command -v git".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .exit_code
        == Some(0);
    if !has_git {
        eprintln!("SKIPPED git_clone_is_reported_file_by_file: no git in the sandbox image");
        return;
    }
    sh_ok(
        c,
        "g",
        "mkdir -p /tmp/src/a/b /workspace/c && cd /tmp/src && git init -q \
         && for i in $(seq 1 60); do echo $i > a/b/f$i; done && echo top > top \
         && git add . && git -c user.email=t@t -c user.name=t commit -qm init",
    )
    .await;
    let (mut s, _) = open(c, "g", at("c")).await;
    sh_ok(c, "g", "git clone -q /tmp/src /workspace/c/repo").await;
    let ev = drain(&mut s, QUIET).await;
    let mut expected = vec![
        "repo".to_string(),
        "repo/a".into(),
        "repo/a/b".into(),
        "repo/top".into(),
    ];
    expected.extend((1..=60).map(|i| format!("repo/a/b/f{i}")));
    for rel in &expected {
        assert!(
            has(&ev, K::Create, &format!("/workspace/c/{rel}")),
            "{rel} not reported: {} events",
            ev.len()
        );
    }
    assert!(
        ev.iter().all(|e| !e.path.contains("/.git")),
        ".git is excluded by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_keeps_the_sandbox_awake() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    let spec = CreateSandbox {
        sleep_after: Some(1),
        ..Default::default()
    };
    c.put_sandbox("awake", &spec).await.unwrap();
    c.put_sandbox("idle", &spec).await.unwrap();
    let (mut s, _) = open(c, "awake", at("/workspace")).await;
    let c2 = c.clone();
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(15), || {
            let c = c2.clone();
            async move { c.get_sandbox("idle").await.unwrap().state.as_str() == "sleeping" }
        })
        .await,
        "the sandbox without a watch falls asleep"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.get_sandbox("awake").await.unwrap().state.as_str(),
        "running",
        "an open watch is activity"
    );
    // Still delivering.
    sh_ok(c, "awake", "touch /workspace/still").await;
    let ev = drain(&mut s, QUIET).await;
    assert!(has(&ev, K::Create, "/workspace/still"));
    drop(s);
    let c2 = c.clone();
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(15), || {
            let c = c2.clone();
            async move { c.get_sandbox("awake").await.unwrap().state.as_str() == "sleeping" }
        })
        .await,
        "closing the watch lets it sleep"
    );
}
