//! End to end: snapshots, forks, restores, layer GC and flattening, through a real daemon.

use std::time::Duration;

use bothy_api::exec::ExecRequest;
use bothy_api::process::ProcessStart;
use bothy_api::sandbox::{CreateSandbox, SandboxState};
use bothy_api::snapshot::ForkRequest;
use bothy_api::ErrorCode;
use bothy_testkit::{Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        timeout_ms: Some(120_000),
        ..Default::default()
    }
}

async fn run(d: &TestDaemon, name: &str, cmd: &str) -> String {
    let r = d.client.exec(name, &sh(cmd)).await.expect("exec");
    assert_eq!(
        r.exit_code,
        Some(0),
        "{name}: {cmd}: {r:?}\n{}",
        d.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8(r.stdout_bytes()).unwrap()
}

/// A hash of a tree: every path (with type), and the contents of every file and link.
async fn tree_hash(d: &TestDaemon, name: &str, dir: &str) -> String {
    let cmd = format!(
        "cd {dir} && {{ find . -printf '%y %p %m\\n' | LC_ALL=C sort; \
         find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum; }} | sha256sum"
    );
    run(d, name, &cmd).await.trim().to_string()
}

const LIST: &str = "cd /workspace/proj && { find . -printf '%y %p %m %s\\n'; find . -type f -print0 | xargs -0 -r sha256sum; } | LC_ALL=C sort";

fn code(e: bothy_client::ClientError) -> Option<ErrorCode> {
    e.code()
}

/// Builds a "dependency" tarball on the host: 40 packages of 25 files each.
fn deps_tarball() -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("node_modules");
    for p in 0..40 {
        let pkg = root.join(format!("pkg-{p}/lib"));
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(
            root.join(format!("pkg-{p}/package.json")),
            format!("{{\"name\":\"pkg-{p}\",\"version\":\"1.{p}.0\"}}"),
        )
        .unwrap();
        for f in 0..24 {
            std::fs::write(
                pkg.join(format!("m{f}.js")),
                format!("module.exports = {};\n", p * 100 + f).repeat(f + 1),
            )
            .unwrap();
        }
    }
    let out = t.path().join("deps.tgz");
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(t.path())
        .arg("node_modules")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_snapshot_fork_four_diverge() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("src", &CreateSandbox::default())
        .await
        .unwrap();
    // A git repository with 3000 files, and dependencies installed from an archive.
    run(
        &d,
        "src",
        "mkdir -p proj && cd proj && git init -q && \
         for d in $(seq 1 30); do mkdir -p src/d$d; for f in $(seq 1 100); do \
           echo \"file $d/$f\" > src/d$d/f$f.txt; done; done && \
         git -c user.email=t@e -c user.name=t add -A && \
         git -c user.email=t@e -c user.name=t commit -qm init && git log --oneline | wc -l",
    )
    .await;
    let tgz = deps_tarball();
    d.client
        .write_file(
            "src",
            "/tmp/deps.tgz",
            None,
            bothy_client::full(tgz.clone()),
        )
        .await
        .unwrap();
    run(&d, "src", "cd proj && tar xzf /tmp/deps.tgz").await;
    let n: usize = run(&d, "src", "find proj -type f | wc -l")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(n > 3000 + 1000, "{n} files");
    let h0 = tree_hash(&d, "src", "/workspace/proj").await;
    let l0 = run(&d, "src", LIST).await;

    let snap = d.client.create_snapshot("src", Some("base")).await.unwrap();
    assert_eq!(snap.name.as_deref(), Some("base"));
    assert_eq!(snap.sandbox, "src");
    assert_eq!(snap.layers.len(), 1);
    assert!(snap.size_bytes > 100_000, "{snap:?}");
    // The source keeps running, untouched.
    let info = d.client.get_sandbox("src").await.unwrap();
    assert_eq!(info.state, SandboxState::Running);

    let forks = d
        .client
        .fork_many(
            "base",
            &ForkRequest {
                prefix: Some("f".into()),
                count: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<_> = forks.sandboxes.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["f-1", "f-2", "f-3", "f-4"]);
    for f in &names {
        assert_eq!(tree_hash(&d, f, "/workspace/proj").await, h0, "fork {f}");
    }
    // Diverge: a write and deletes in f-1, a change in f-2; invisible everywhere else.
    run(
        &d,
        "f-1",
        "cd proj && echo new > NEW && rm -r src/d1 node_modules/pkg-3 && git add -A",
    )
    .await;
    run(&d, "f-2", "cd proj && echo changed >> src/d2/f2.txt").await;
    run(&d, "src", "echo after > proj/AFTER").await;
    let h1 = tree_hash(&d, "f-1", "/workspace/proj").await;
    let h2 = tree_hash(&d, "f-2", "/workspace/proj").await;
    assert_ne!(h1, h0);
    assert_ne!(h2, h0);
    assert_ne!(h1, h2);
    for f in ["f-3", "f-4"] {
        if tree_hash(&d, f, "/workspace/proj").await != h0 {
            let l = run(&d, f, LIST).await;
            let a: std::collections::BTreeSet<_> = l0.lines().collect();
            let b: std::collections::BTreeSet<_> = l.lines().collect();
            panic!(
                "{f} changed: only before {:?}; only after {:?}",
                a.difference(&b).collect::<Vec<_>>(),
                b.difference(&a).collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(
        run(&d, "f-2", "ls proj/NEW proj/AFTER 2>/dev/null | wc -l")
            .await
            .trim(),
        "0"
    );
    assert_eq!(
        run(
            &d,
            "src",
            "ls proj/src/d1 | wc -l; test -e proj/NEW || echo no-new"
        )
        .await,
        "100\nno-new\n"
    );
    // The repository works in a fork (git rewrites its index, so this comes after the hashes).
    assert_eq!(
        run(&d, "f-4", "cd proj && git log --oneline | wc -l && git status --porcelain -- src | wc -l && git fsck --no-progress 2>&1 && echo ok").await,
        "1\n0\nok\n"
    );
    // A fork survives sleep and wake with its own changes.
    d.client.sleep_sandbox("f-1").await.unwrap();
    assert_eq!(tree_hash(&d, "f-1", "/workspace/proj").await, h1);

    // One more fork through PUT, and the snapshot is listed everywhere it should be.
    let solo = d.client.fork_snapshot(&snap.id, "solo").await.unwrap();
    assert_eq!(solo.created, Some(true));
    assert_eq!(tree_hash(&d, "solo", "/workspace/proj").await, h0);
    let all = d.client.list_snapshots().await.unwrap();
    assert_eq!(all.snapshots.len(), 1);
    let of_src = d.client.sandbox_snapshots("src").await.unwrap();
    assert_eq!(of_src.snapshots[0].id, snap.id);
    assert_eq!(d.client.get_snapshot("base").await.unwrap(), snap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_while_a_process_writes() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("w", &CreateSandbox::default())
        .await
        .unwrap();
    // Each step writes N into file N mod 1000, then appends N to the log: in a consistent
    // snapshot whose log ends at n, the files hold the values n-998..n (the file of n+1 may be
    // mid-write). A bounded set of files keeps every copy small however fast the writer runs.
    d.client
        .start_process(
            "w",
            &ProcessStart {
                id: Some("writer".into()),
                shell: Some(
                    "mkdir -p /workspace/out; i=0; while true; do i=$((i+1)); \
                     echo $i > /workspace/out/$((i % 1000)); echo $i >> /workspace/log; done"
                        .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut snaps = Vec::new();
    for _ in 0..3 {
        snaps.push(d.client.create_snapshot("w", None).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sandbox kept running and the writer kept writing.
    let before: u64 = run(&d, "w", "tail -n1 /workspace/log")
        .await
        .trim()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: u64 = run(&d, "w", "tail -n1 /workspace/log")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(after > before, "writer stopped: {before} -> {after}");
    let info = d.client.get_sandbox("w").await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    d.client
        .kill_process("w", "writer", Some("KILL"))
        .await
        .unwrap();

    // Each snapshot is consistent and mountable.
    for (i, s) in snaps.iter().enumerate() {
        let f = format!("wf-{i}");
        d.client.fork_snapshot(&s.id, &f).await.unwrap();
        let out = run(
            &d,
            &f,
            "n=$(tail -n1 /workspace/log); wrong=0; lo=$((n > 998 ? n - 998 : 1)); \
             for i in $(seq $lo $n); do v=; read v < /workspace/out/$((i % 1000)); \
             [ \"$v\" = \"$i\" ] || wrong=$((wrong+1)); done; echo $n $wrong",
        )
        .await;
        let mut it = out.split_whitespace();
        let n: u64 = it.next().unwrap().parse().unwrap();
        let wrong: u64 = it.next().unwrap().parse().unwrap();
        assert!(n > 0, "snapshot {i} saw no writes");
        assert_eq!(
            wrong, 0,
            "snapshot {i}: {wrong} of the files behind log entry {n} do not hold their values"
        );
    }
}

/// Abuse: while its snapshot is copied, a sandbox keeps swapping entries for symlinks to `/`
/// and `/dev/zero` (which, seen from the host, are the host's). The copy must neither follow
/// them (copying the host, or reading forever) nor fail; the snapshot holds the symlinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_cannot_steer_the_snapshot_copy_out_of_its_layer() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("evil", &CreateSandbox::default())
        .await
        .unwrap();
    run(
        &d,
        "evil",
        "mkdir -p /workspace/t && for i in $(seq 1 300); do echo $i > /workspace/t/f$i; done",
    )
    .await;
    d.client
        .start_process(
            "evil",
            &ProcessStart {
                id: Some("swapper".into()),
                shell: Some(
                    "cd /workspace/t; while true; do for i in $(seq 1 300); do                      rm -rf f$i; ln -s / f$i; rm -f f$i; ln -s /dev/zero f$i; rm -f f$i;                      mkdir f$i; rmdir f$i; echo $i > f$i; done; done"
                        .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let s = tokio::time::timeout(
            Duration::from_secs(60),
            d.client.create_snapshot("evil", None),
        )
        .await
        .expect("snapshot did not finish: the copy followed a symlink")
        .unwrap();
        assert!(
            s.size_bytes < 10 << 20,
            "{} bytes copied: host files got in",
            s.size_bytes
        );
        assert!(t.elapsed() < Duration::from_secs(30));
        // Whatever each entry was at the freeze, it is that in the layer: no host content.
        let layer = d
            .data_dir()
            .join("layers")
            .join(&s.id)
            .join("root/workspace/t");
        for e in std::fs::read_dir(&layer).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_file() {
                assert!(md.len() < 8, "{:?} has {} bytes", e.path(), md.len());
            } else if md.is_dir() {
                assert_eq!(std::fs::read_dir(e.path()).unwrap().count(), 0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sleep_wake_snapshot_cycles_lose_nothing() {
    // A small depth so that flattening happens several times along the way.
    let Some(d) = TestDaemon::start_with(
        BIN,
        Options {
            extra_args: vec!["--max-layer-depth".into(), "3".into()],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    d.client
        .put_sandbox("cyc", &CreateSandbox::default())
        .await
        .unwrap();
    // Deletions of image files (whiteouts in the `/` and `/usr` overlays) must survive.
    let etc_victim = run(&d, "cyc", "ls /etc/*.conf | head -n1").await;
    let usr_victim = run(&d, "cyc", "find /usr/share -type f | head -n1").await;
    let (etc_victim, usr_victim) = (etc_victim.trim(), usr_victim.trim());
    assert!(!etc_victim.is_empty() && !usr_victim.is_empty());
    run(
        &d,
        "cyc",
        &format!("rm {etc_victim} {usr_victim} && mkdir -p /workspace/c && echo base > /workspace/c/base"),
    )
    .await;
    let mut last = None;
    for i in 1..=20 {
        run(
            &d,
            "cyc",
            &format!(
                "echo {i} > /workspace/c/cycle-{i} && dd if=/dev/urandom of=/workspace/c/blob-{i} bs=4k count=4 2>/dev/null && \
                 echo {i} >> /workspace/c/base && rm -f /workspace/c/blob-{}",
                i - 1
            ),
        )
        .await;
        if i % 5 == 0 {
            // A running snapshot in between.
            d.client.create_snapshot("cyc", None).await.unwrap();
        }
        let expect = tree_hash(&d, "cyc", "/workspace/c").await;
        d.client.sleep_sandbox("cyc").await.unwrap();
        let s = d.client.create_snapshot("cyc", None).await.unwrap();
        assert!(s.layers.len() <= 3, "cycle {i}: chain {:?}", s.layers);
        d.client.wake_sandbox("cyc").await.unwrap();
        assert_eq!(
            tree_hash(&d, "cyc", "/workspace/c").await,
            expect,
            "cycle {i}"
        );
        let gone = run(
            &d,
            "cyc",
            &format!("ls {etc_victim} {usr_victim} 2>/dev/null | wc -l"),
        )
        .await;
        assert_eq!(
            gone.trim(),
            "0",
            "cycle {i}: a deleted image file came back"
        );
        last = Some((s, expect));
    }
    let (s, expect) = last.unwrap();
    let files = run(
        &d,
        "cyc",
        "ls /workspace/c | wc -l; wc -l < /workspace/c/base",
    )
    .await;
    assert_eq!(
        files, "22\n21\n",
        "20 cycle files + base + last blob; 21 lines"
    );
    // A fork of the last snapshot has the same state and the same deletions.
    d.client.fork_snapshot(&s.id, "cyc-fork").await.unwrap();
    assert_eq!(tree_hash(&d, "cyc-fork", "/workspace/c").await, expect);
    let gone = run(
        &d,
        "cyc-fork",
        &format!("ls {etc_victim} {usr_victim} 2>/dev/null | wc -l"),
    )
    .await;
    assert_eq!(gone.trim(), "0");
    // Flattening left no unused layer behind: every layer on disk is used by a record.
    let mut used = std::collections::HashSet::new();
    for s in d.client.list_snapshots().await.unwrap().snapshots {
        used.extend(s.layers);
    }
    let on_disk: Vec<String> = std::fs::read_dir(d.data_dir().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("snap-") || n.starts_with(".snap-"))
        .collect();
    for l in &on_disk {
        assert!(used.contains(l), "layer {l} is on disk but unused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_gc_restore_and_bad_input() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let spec = CreateSandbox {
        env: Some([("KEEP".to_string(), "me".to_string())].into()),
        ..Default::default()
    };
    d.client.put_sandbox("g", &spec).await.unwrap();
    run(&d, "g", "echo one > a").await;

    // Deleting a snapshot a fork uses: record gone, fork fine, layer kept until the fork goes.
    let s = d.client.create_snapshot("g", Some("gs")).await.unwrap();
    d.client.fork_snapshot("gs", "gf").await.unwrap();
    d.client.delete_snapshot("gs").await.unwrap();
    let e = d.client.get_snapshot("gs").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
    let e = d.client.delete_snapshot(&s.id).await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
    let layer = d.data_dir().join("layers").join(&s.id);
    assert!(layer.is_dir());
    d.client.sleep_sandbox("gf").await.unwrap();
    assert_eq!(run(&d, "gf", "cat a").await, "one\n");
    assert!(layer.is_dir(), "layer removed while a fork uses it");
    d.client.delete_sandbox("gf").await.unwrap();
    assert!(!layer.exists(), "unused layer not collected");

    // Restore: back to the snapshot's state, same name and env, running again.
    let s1 = d.client.create_snapshot("g", Some("g1")).await.unwrap();
    run(&d, "g", "echo two > a && echo b > b && rm -f /etc/hostname").await;
    let info = d.client.restore_sandbox("g", "g1").await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    assert_eq!(info.env.get("KEEP").map(String::as_str), Some("me"));
    assert_eq!(
        run(&d, "g", "cat a; ls b 2>/dev/null | wc -l; echo $KEEP").await,
        "one\n0\nme\n"
    );
    // A sleeping sandbox can be restored too, and a later snapshot stacks on the restored one.
    run(&d, "g", "echo three > a").await;
    d.client.sleep_sandbox("g").await.unwrap();
    let s2 = d.client.create_snapshot("g", None).await.unwrap();
    assert_eq!(s2.parent.as_deref(), Some(s1.id.as_str()));
    assert_eq!(s2.layers.len(), 2);
    d.client.restore_sandbox("g", &s1.id).await.unwrap();
    assert_eq!(run(&d, "g", "cat a").await, "one\n");
    d.client.restore_sandbox("g", &s2.id).await.unwrap();
    assert_eq!(run(&d, "g", "cat a").await, "three\n");

    // Bad input.
    let e = d.client.create_snapshot("nope", None).await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SandboxNotFound));
    for bad in ["Bad!", "snap-1", ""] {
        let e = d.client.create_snapshot("g", Some(bad)).await.unwrap_err();
        assert_eq!(code(e), Some(ErrorCode::InvalidName), "{bad:?}");
    }
    let e = d.client.create_snapshot("g", Some("g1")).await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Conflict));
    let e = d
        .client
        .get_snapshot("snap-0000000000000000")
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
    let e = d.client.fork_snapshot("missing", "x1").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
    let e = d.client.fork_snapshot("g1", "g").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Conflict));
    let e = d.client.fork_snapshot("g1", "Bad_Name").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::InvalidName));
    let many = |names: Vec<&str>| ForkRequest {
        names: Some(names.into_iter().map(String::from).collect()),
        ..Default::default()
    };
    // One taken name: 409 and none of the others is created.
    let e = d
        .client
        .fork_many("g1", &many(vec!["n1", "g"]))
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Conflict));
    let e = d.client.get_sandbox("n1").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SandboxNotFound));
    let e = d
        .client
        .fork_many("g1", &many(vec!["ok", "No!"]))
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::InvalidName));
    let e = d
        .client
        .fork_many(
            "g1",
            &ForkRequest {
                names: Some(vec!["a1".into()]),
                prefix: Some("a".into()),
                count: Some(2),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::InvalidRequest));
    let e = d
        .client
        .fork_many(
            "g1",
            &ForkRequest {
                prefix: Some("z".into()),
                count: Some(100_000),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::InvalidRequest));
    let e = d.client.restore_sandbox("g", "missing").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
    let e = d.client.restore_sandbox("nope", "g1").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SandboxNotFound));
    // Unknown fields are refused, not ignored.
    let e = d
        .client
        .json::<serde_json::Value>(
            bothy_client::http::Method::POST,
            "/v1/sandboxes/g/snapshots",
            Some(&serde_json::json!({"nam": "x"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            code(e),
            Some(ErrorCode::InvalidRequest | ErrorCode::MalformedJson)
        ),
        "unknown field accepted"
    );
    // Snapshots outlive their sandbox.
    d.client.delete_sandbox("g").await.unwrap();
    assert_eq!(
        d.client
            .sandbox_snapshots("g")
            .await
            .unwrap()
            .snapshots
            .len(),
        2
    );
    d.client.fork_snapshot("g1", "g-again").await.unwrap();
    assert_eq!(run(&d, "g-again", "cat a").await, "one\n");
    // The CLI: ls, info, rm.
    let out = d.cli().args(["snapshot", "ls"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("g1"));
    let out = d.cli().args(["snapshot", "rm", "g1"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let e = d.client.get_snapshot("g1").await.unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::SnapshotNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_snapshot_fork_restore() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("c", &CreateSandbox::default())
        .await
        .unwrap();
    run(&d, "c", "echo v1 > f").await;
    let out = d
        .cli()
        .args(["snapshot", "c", "--name", "cs"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = d
        .cli()
        .args(["fork", "cs", "cf", "--count", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for f in ["cf-1", "cf-2"] {
        assert_eq!(run(&d, f, "cat f").await, "v1\n");
    }
    let out = d.cli().args(["fork", "cs", "one"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(run(&d, "one", "cat f").await, "v1\n");
    run(&d, "c", "echo v2 > f").await;
    let out = d.cli().args(["restore", "c", "cs"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(run(&d, "c", "cat f").await, "v1\n");
    let out = d
        .cli()
        .args(["snapshot", "info", "cs", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "cs");
    let out = d.cli().args(["fork", "nope", "x"]).output().unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_snapshot_leaves_nothing_half_made() {
    let Some(mut d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("k", &CreateSandbox::default())
        .await
        .unwrap();
    run(
        &d,
        "k",
        "mkdir -p small && for i in $(seq 1 500); do echo $i > small/$i; done && \
         dd if=/dev/zero of=big bs=1M count=600 2>/dev/null",
    )
    .await;
    let before = tree_hash(&d, "k", "/workspace/small").await;
    let c = d.client.clone();
    let snap = tokio::spawn(async move { c.create_snapshot("k", Some("half")).await });
    // Kill while the copy runs (the sandbox is frozen then).
    let tmp_seen = bothy_testkit::wait_until(Duration::from_secs(10), || {
        let layers = d.data_dir().join("layers");
        async move {
            std::fs::read_dir(layers)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(".snap-"))
                })
                .unwrap_or(false)
        }
    })
    .await;
    assert!(tmp_seen, "the snapshot never started");
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.kill9();
    let _ = snap.await;
    d.restart().await;
    // No snapshot, no half-built layer, and the sandbox runs (thawed) with its files.
    assert!(
        d.client
            .list_snapshots()
            .await
            .unwrap()
            .snapshots
            .is_empty()
            || d.client.get_snapshot("half").await.is_ok()
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.data_dir().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".snap-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let info = d.client.get_sandbox("k").await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    let r = d
        .client
        .exec(
            "k",
            &ExecRequest {
                shell: Some("stat -c %s big".into()),
                timeout_ms: Some(5000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "sandbox frozen or broken: {r:?}");
    assert_eq!(String::from_utf8(r.stdout_bytes()).unwrap(), "629145600\n");
    assert_eq!(tree_hash(&d, "k", "/workspace/small").await, before);
    // And snapshots work again.
    d.client.create_snapshot("k", None).await.unwrap();
    d.client.delete_sandbox("k").await.unwrap();
}
