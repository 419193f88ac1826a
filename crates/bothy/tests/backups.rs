//! Directory backups end to end, through a running daemon: back up, restore into another
//! sandbox, durability across sleep/wake and daemon restarts, TTL expiry, corrupted archives,
//! path escapes, unknown names, and a real S3-compatible server.

use std::time::Duration;

use bothy_api::backup::{Backup, CreateBackup, RestoreBackup, RestoreResult, Ttl};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_client::{Client, ClientError};
use bothy_testkit::{sh_ok, Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().unwrap_or_else(|| panic!("not an API error: {e}")),
    }
}

fn message<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// A project: a git repository with 300 source files, an executable, links (one inside, one
/// pointing out of the sandbox's tree), `node_modules`, build output and logs that
/// `.gitignore` ignores, and a nested `.gitignore`.
const PROJECT: &str = r#"
set -e
mkdir -p /workspace/proj && cd /workspace/proj
mkdir -p src/lib node_modules/left-pad build docs/tmp
for i in $(seq 1 300); do echo "line $i of the project" > src/f$i.txt; done
printf '#!/bin/sh\necho built\n' > build.sh && chmod 755 build.sh
chmod 600 src/f1.txt
echo 'module.exports = 1' > node_modules/left-pad/index.js
printf 'build/\n*.log\n' > .gitignore
echo 'scratch' > docs/tmp/notes.txt
echo '*' > docs/tmp/.gitignore
echo obj > build/out.o
echo noise > debug.log
echo noise > src/lib/trace.log
echo 'pub fn lib() {}' > src/lib/mod.rs
ln -s src/f2.txt link-in
ln -s /etc link-out
git init -q .
git add -A
git -c user.email=t@example.com -c user.name=t commit -qm init
"#;

/// Every entry under `dir` with its type, mode and (for files) content hash, sorted; links
/// with their targets.
const LISTING: &str = r#"cd "$1" && find . -mindepth 1 \( -type l -printf 'l %P -> %l\n' \) -o \( -type d -printf 'd %m %P\n' \) -o \( -type f -printf 'f %m %P ' -exec sh -c 'sha256sum < "$1" | cut -c1-64' _ {} \; \) | sort"#;

async fn listing(c: &Client, name: &str, dir: &str) -> Vec<String> {
    sh_ok(
        c,
        name,
        &format!("sh -c '{}' _ {dir}", LISTING.replace('\'', r"'\''")),
    )
    .await
    .lines()
    .map(str::to_string)
    .collect()
}

/// The path of a listing line.
fn entry_path(line: &str) -> &str {
    let rest = line.splitn(3, ' ').nth(2).unwrap_or("");
    if let Some(link) = line.strip_prefix("l ") {
        link.split(" -> ").next().unwrap_or("")
    } else {
        rest.split(' ').next().unwrap_or("")
    }
}

/// Asserts two listings are equal, printing only the lines that differ.
fn same(got: &[String], want: &[String], what: &str) {
    if got != want {
        let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
        panic!("{what}: listings differ\nmissing: {missing:#?}\nextra: {extra:#?}");
    }
}

/// What a backup of PROJECT with `--exclude node_modules --gitignore` must hold.
fn expected(source: &[String]) -> Vec<String> {
    source
        .iter()
        .filter(|l| {
            let p = entry_path(l);
            !(p == "node_modules"
                || p.starts_with("node_modules/")
                || p == "build"
                || p.starts_with("build/")
                || p.ends_with(".log")
                || p.starts_with("docs/tmp/"))
        })
        .cloned()
        .collect()
}

async fn sandbox(c: &Client, name: &str) {
    c.put_sandbox(name, &CreateSandbox::default())
        .await
        .unwrap();
}

fn backup_req(path: &str) -> CreateBackup {
    CreateBackup {
        path: path.into(),
        exclude: vec!["node_modules".into()],
        gitignore: true,
        ttl: Some(Ttl::Text("1h".into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restores_into_another_sandbox_and_survives_sleep_and_restarts() {
    let Some(mut d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = d.client.clone();
    sandbox(&c, "src").await;
    sandbox(&c, "dst").await;
    sh_ok(&c, "src", PROJECT).await;
    let source = listing(&c, "src", "/workspace/proj").await;
    let want = expected(&source);
    assert!(want.len() > 300 && want.len() < source.len(), "{want:?}");
    assert!(
        want.iter()
            .any(|l| l.starts_with("d ") && l.ends_with(" .git")),
        "the repository is kept"
    );
    assert!(want.contains(&"l link-out -> /etc".to_string()));

    // Through the CLI, as a person would.
    let out = d
        .cli()
        .args([
            "backup",
            "src",
            "proj",
            "--exclude",
            "node_modules",
            "--gitignore",
            "--ttl",
            "1h",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backing up src:proj"));
    let b: Backup = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (b.sandbox.as_str(), b.path.as_str()),
        ("src", "/workspace/proj")
    );
    assert_eq!(b.sha256.len(), 64);
    assert!(b.size_bytes > 0);
    let ls = d.cli().args(["backup", "ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&b.id));

    let out = d
        .cli()
        .args(["restore-backup", &b.id, "dst", "/workspace/copy", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: RestoreResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r.sandbox.as_str(), r.path.as_str(), r.replaced),
        ("dst", "/workspace/copy", false)
    );
    same(
        &listing(&c, "dst", "/workspace/copy").await,
        &want,
        "restored",
    );
    // The restored repository works: the only difference git sees is the excluded
    // node_modules (committed, then left out of the backup).
    let log = sh_ok(
        &c,
        "dst",
        "cd /workspace/copy && git log --oneline | wc -l && git status --porcelain",
    )
    .await;
    assert_eq!(log, "1\n D node_modules/left-pad/index.js\n");
    // (git status refreshed .git/index: that is the state to keep from here.)
    let restored = listing(&c, "dst", "/workspace/copy").await;

    // Durable: it is the sandbox's own disk now.
    c.sleep_sandbox("dst").await.unwrap();
    c.wake_sandbox("dst").await.unwrap();
    same(
        &listing(&c, "dst", "/workspace/copy").await,
        &restored,
        "after sleep/wake",
    );
    d.restart().await;
    let c = d.client.clone();
    same(
        &listing(&c, "dst", "/workspace/copy").await,
        &restored,
        "after a daemon restart",
    );

    // The backup itself survives the restart and the destruction of its sandbox.
    c.delete_sandbox("src").await.unwrap();
    assert_eq!(c.get_backup(&b.id).await.unwrap(), b);
    // (The streamed form: progress events, then the reply.)
    let mut events = Vec::new();
    let r = c
        .restore_backup_progress(
            &b.id,
            &RestoreBackup {
                sandbox: "dst".into(),
                path: Some("again".into()),
            },
            |p| events.push(p.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.path, "/workspace/again");
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|p| p.total == Some(b.size_bytes)),
        "{events:?}"
    );
    same(
        &listing(&c, "dst", "/workspace/again").await,
        &want,
        "restored again",
    );

    // Restoring over a changed copy gives back exactly the backup.
    sh_ok(
        &c,
        "dst",
        "cd /workspace/copy && rm -rf src/lib && echo new > new.txt && echo x >> src/f3.txt",
    )
    .await;
    let r = c
        .restore_backup(
            &b.id,
            &RestoreBackup {
                sandbox: "dst".into(),
                path: Some("/workspace/copy".into()),
            },
        )
        .await
        .unwrap();
    assert!(r.replaced);
    same(
        &listing(&c, "dst", "/workspace/copy").await,
        &want,
        "restored",
    );

    // Deleted: gone for good.
    let out = d.cli().args(["backup", "rm", &b.id]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(code(c.get_backup(&b.id).await), ErrorCode::BackupNotFound);
    assert!(c.list_backups().await.unwrap().backups.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_expire_and_are_swept() {
    let Some(d) = TestDaemon::start_with(
        BIN,
        Options {
            extra_args: vec!["--backup-gc-ms".into(), "200".into()],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let c = &d.client;
    sandbox(c, "a").await;
    sh_ok(
        c,
        "a",
        "mkdir -p /workspace/p && echo hi > /workspace/p/a.txt",
    )
    .await;
    let short = c
        .create_backup(
            "a",
            &CreateBackup {
                path: "p".into(),
                ttl: Some(Ttl::Secs(2)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let long = c
        .create_backup(
            "a",
            &CreateBackup {
                path: "p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let objects = d.data_dir().join("blobs/backups");
    let count = || std::fs::read_dir(&objects).map(|r| r.count()).unwrap_or(0);
    assert_eq!(count(), 4, "two archives and two manifests");
    c.get_backup(&short.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let m = message(c.get_backup(&short.id).await);
    assert!(m.contains("expired"), "{m}");
    let r = c
        .restore_backup(
            &short.id,
            &RestoreBackup {
                sandbox: "a".into(),
                path: Some("q".into()),
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::BackupNotFound);
    let ids: Vec<String> = c
        .list_backups()
        .await
        .unwrap()
        .backups
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&long.id));
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(5), || async { count() == 2 }).await,
        "the expired backup's objects were not removed"
    );
    assert!(objects.join(format!("{}.tar.gz", long.id)).exists());
    let m = message(c.get_backup(&short.id).await);
    assert!(m.contains("expired"), "still says so once swept: {m}");
    let bad = c
        .create_backup(
            "a",
            &CreateBackup {
                path: "p".into(),
                ttl: Some(Ttl::Text("soon".into())),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code(bad), ErrorCode::InvalidRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_missing_archive_is_refused_with_nothing_written() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    sandbox(c, "a").await;
    sh_ok(c, "a", "mkdir -p /workspace/p && for i in $(seq 1 50); do head -c 2000 /dev/urandom > /workspace/p/f$i; done").await;
    sh_ok(
        c,
        "a",
        "mkdir -p /workspace/target && echo precious > /workspace/target/keep.txt",
    )
    .await;
    let b = c
        .create_backup(
            "a",
            &CreateBackup {
                path: "p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let archive = d.data_dir().join(format!("blobs/backups/{}.tar.gz", b.id));
    let good = std::fs::read(&archive).unwrap();
    assert_eq!(good.len() as u64, b.size_bytes);
    let before = listing(c, "a", "/workspace").await;
    let target = RestoreBackup {
        sandbox: "a".into(),
        path: Some("target".into()),
    };
    let restore = || c.restore_backup(&b.id, &target);

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    for (what, bytes) in [
        ("one byte flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&archive, &bytes).unwrap();
        let r = restore().await;
        let m = message(restore().await);
        let streamed = c.restore_backup_progress(&b.id, &target, |_| {}).await;
        assert_eq!(
            code(streamed),
            ErrorCode::CorruptBlob,
            "{what}: streamed form"
        );
        assert_eq!(code(r), ErrorCode::CorruptBlob, "{what}");
        assert!(m.contains("nothing was restored"), "{what}: {m}");
        assert_eq!(
            listing(c, "a", "/workspace").await,
            before,
            "{what}: something was written"
        );
    }
    std::fs::remove_file(&archive).unwrap();
    assert_eq!(code(restore().await), ErrorCode::CorruptBlob, "missing");
    assert_eq!(listing(c, "a", "/workspace").await, before);

    std::fs::write(&archive, &good).unwrap();
    let r = restore().await.unwrap();
    assert!(r.replaced);
    assert_eq!(
        listing(c, "a", "/workspace/target").await,
        listing(c, "a", "/workspace/p").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_are_refused_or_contained_and_unknown_names_are_404() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = &d.client;
    sandbox(c, "a").await;
    let req = |path: &str| CreateBackup {
        path: path.into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.create_backup("a", &req("../..")).await),
        ErrorCode::PathEscape
    );
    assert_eq!(
        code(c.create_backup("a", &req("/")).await),
        ErrorCode::InvalidPath
    );
    assert_eq!(
        code(c.create_backup("a", &req("nope")).await),
        ErrorCode::FileNotFound
    );
    assert_eq!(
        code(c.create_backup("ghost", &req("p")).await),
        ErrorCode::SandboxNotFound
    );
    assert_eq!(
        code(
            c.create_backup(
                "a",
                &CreateBackup {
                    exclude: vec!["a[".into()],
                    ..req("/workspace")
                }
            )
            .await
        ),
        ErrorCode::InvalidRequest
    );

    // A link pointing out of the directory is kept as a link: the backup does not follow it,
    // and on restore it resolves inside the restoring sandbox, like any path there.
    sh_ok(c, "a", "mkdir -p /workspace/p && echo ok > /workspace/p/a && ln -s /etc /workspace/p/etc-link && ln -s ../../.. /workspace/p/up").await;
    let b = c.create_backup("a", &req("p")).await.unwrap();
    assert!(
        b.size_bytes < 4096,
        "no /etc contents in the archive: {} bytes",
        b.size_bytes
    );
    sandbox(c, "b").await;
    c.restore_backup(
        &b.id,
        &RestoreBackup {
            sandbox: "b".into(),
            path: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sh_ok(
            c,
            "b",
            "readlink /workspace/p/etc-link; readlink /workspace/p/up; cat /workspace/p/a"
        )
        .await,
        "/etc\n../../..\nok\n"
    );

    let to = |sandbox: &str, path: Option<&str>| RestoreBackup {
        sandbox: sandbox.into(),
        path: path.map(str::to_string),
    };
    assert_eq!(
        code(c.restore_backup(&b.id, &to("b", Some("/"))).await),
        ErrorCode::InvalidPath
    );
    assert_eq!(
        code(c.restore_backup(&b.id, &to("b", Some("../../x"))).await),
        ErrorCode::PathEscape
    );
    assert_eq!(
        code(c.restore_backup(&b.id, &to("ghost", None)).await),
        ErrorCode::SandboxNotFound
    );
    assert_eq!(
        code(c.restore_backup(&b.id, &to("Bad_Name", None)).await),
        ErrorCode::InvalidName
    );
    for id in ["bk-0000000000000000", "nope", "..%2F..%2Fetc"] {
        assert_eq!(
            code(c.get_backup(id).await),
            ErrorCode::BackupNotFound,
            "{id}"
        );
        assert_eq!(
            code(c.delete_backup(id).await),
            ErrorCode::BackupNotFound,
            "{id}"
        );
        assert_eq!(
            code(c.restore_backup(id, &to("b", None)).await),
            ErrorCode::BackupNotFound,
            "{id}"
        );
    }

    // A crafted archive sent straight to the data plane: the entry climbing out is refused and
    // nothing lands outside (or inside) the target.
    sh_ok(c, "b", "mkdir -p /workspace/t /workspace/outside && printf 'import io,tarfile,gzip\\nb=io.BytesIO()\\nt=tarfile.open(fileobj=b,mode=\"w\")\\ni=tarfile.TarInfo(\"../outside/evil\");d=b\"x\";i.size=1\\nt.addfile(i,io.BytesIO(d));t.close()\\nopen(\"/tmp/evil.tgz\",\"wb\").write(gzip.compress(b.getvalue()))\\n' > /tmp/mk.py && python3 /tmp/mk.py").await;
    let evil = c.read_file_bytes("b", "/tmp/evil.tgz").await.unwrap();
    let req = c
        .request(
            http::Method::PUT,
            "/v1/sandboxes/b/archive?path=/workspace/t",
        )
        .body(bothy_client::full(evil))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        sh_ok(
            c,
            "b",
            "ls -A /workspace/t /workspace/outside | grep -v ':$' | grep -c . || true"
        )
        .await
        .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_on_a_real_s3_server() {
    if !bothy_testkit::require_root("s3 backup test") {
        return;
    }
    let Some(s3) = bothy_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("backups");
    for (k, v) in s3.env() {
        // The daemon started below inherits them (its S3 credentials).
        std::env::set_var(k, v);
    }
    let Some(d) = TestDaemon::start_with(
        BIN,
        Options {
            extra_args: vec!["--backup-store".into(), s3.store_url("backups")],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let c = d.client.clone();
    sandbox(&c, "src").await;
    sandbox(&c, "dst").await;
    sh_ok(&c, "src", PROJECT).await;
    let want = expected(&listing(&c, "src", "/workspace/proj").await);
    let b = c.create_backup("src", &backup_req("proj")).await.unwrap();
    assert!(
        !d.data_dir().join("blobs/backups").exists(),
        "stored in S3, not locally"
    );
    c.restore_backup(
        &b.id,
        &RestoreBackup {
            sandbox: "dst".into(),
            path: None,
        },
    )
    .await
    .unwrap();
    same(
        &listing(&c, "dst", "/workspace/proj").await,
        &want,
        "restored from S3",
    );
    c.delete_backup(&b.id).await.unwrap();
    assert_eq!(code(c.get_backup(&b.id).await), ErrorCode::BackupNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_daemon_during_a_restore_leaves_the_target_intact() {
    let Some(mut d) = TestDaemon::start(BIN).await else {
        return;
    };
    let c = d.client.clone();
    sandbox(&c, "a").await;
    // 48 MiB that does not compress: the transfer takes long enough to be cut.
    sh_ok(
        &c,
        "a",
        "mkdir -p /workspace/big /workspace/target && for i in $(seq 1 12); do head -c 4194304 /dev/urandom > /workspace/big/f$i; done && echo precious > /workspace/target/keep.txt",
    )
    .await;
    let b = c
        .create_backup(
            "a",
            &CreateBackup {
                path: "big".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let before = listing(&c, "a", "/workspace/target").await;
    let staging = "ls -A /workspace | grep -c '^\\.target\\.bothy-' || true";
    let restore = {
        let c = c.clone();
        let id = b.id.clone();
        tokio::spawn(async move {
            c.restore_backup(
                &id,
                &RestoreBackup {
                    sandbox: "a".into(),
                    path: Some("target".into()),
                },
            )
            .await
        })
    };
    let started = bothy_testkit::wait_until(Duration::from_secs(30), || async {
        sh_ok(&c, "a", staging).await.trim() != "0"
    })
    .await;
    assert!(started, "the restore never started unpacking");
    d.kill9();
    assert!(restore.await.unwrap().is_err(), "the restore was cut");
    d.restart().await;
    let c = d.client.clone();
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(10), || async {
            sh_ok(&c, "a", staging).await.trim() == "0"
        })
        .await,
        "the staging directory was not removed"
    );
    same(
        &listing(&c, "a", "/workspace/target").await,
        &before,
        "target after the cut restore",
    );
    // And the backup still restores whole.
    let r = c
        .restore_backup(
            &b.id,
            &RestoreBackup {
                sandbox: "a".into(),
                path: Some("target".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.entries, 13);
    same(
        &listing(&c, "a", "/workspace/target").await,
        &listing(&c, "a", "/workspace/big").await,
        "restored after all",
    );
}
