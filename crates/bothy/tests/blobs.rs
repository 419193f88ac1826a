//! Export, import, evict and persist end to end: real daemons, real sandboxes, a real
//! S3-compatible server (moto over HTTP) as the blob store.

use std::time::Duration;

use bothy_api::blob::{EvictRequest, ExportRequest, ExportResult, ImportRequest, TransferProgress};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::ErrorCode;
use bothy_client::http::Method;
use bothy_testkit::{sh_ok, Options, S3Server, TestDaemon};
use serde_json::{json, Value};

const BUCKET: &str = "bothy";

async fn daemon(s3: &S3Server) -> Option<TestDaemon> {
    TestDaemon::start_with(
        env!("CARGO_BIN_EXE_bothy"),
        Options {
            extra_args: vec!["--blob-store".into(), s3.store_url(BUCKET)],
            env: s3.env(),
            ..Default::default()
        },
    )
    .await
}

fn s3_store(s3: &S3Server) -> std::sync::Arc<dyn bothy_blob::BlobStore> {
    let env = s3.env();
    bothy_blob::StoreLocation::parse(&s3.store_url(BUCKET))
        .unwrap()
        .open_with_env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap()
}

/// A project-like tree: many small files, a hardlink, a symlink, a deleted image file (a
/// whiteout in the layer), an owner other than root, and `mib` MiB of random data.
async fn build_state(d: &TestDaemon, name: &str, mib: u32) {
    sh_ok(
        &d.client,
        name,
        &format!(
            "set -e; mkdir -p proj/src && cd proj && git init -q . 2>/dev/null || true; \
             for i in $(seq 1 300); do echo \"file $i\" > src/f$i.txt; done; \
             ln src/f1.txt hard; ln -s src/f2.txt soft; \
             mkdir owned && chown 1234:1234 owned && echo x > owned/y && chown 1234:1234 owned/y; \
             rm -f /etc/motd /etc/issue.net; \
             head -c {}M /dev/urandom > blob.bin",
            mib
        ),
    )
    .await;
}

/// Hashes and owners of everything the state put down.
async fn fingerprint(d: &TestDaemon, name: &str) -> String {
    sh_ok(
        &d.client,
        name,
        "cd /workspace/proj && find . -type f -exec sha256sum {} + | sort; \
         stat -c '%n %u %g %a %h' hard owned owned/y soft | sort; readlink soft; \
         ls /etc/motd /etc/issue.net 2>&1 | sort",
    )
    .await
}

async fn snapshot(d: &TestDaemon, name: &str) -> String {
    let v: Value = d
        .client
        .json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/snapshots"),
            Some(&json!({})),
        )
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Starts sandbox `name` from snapshot `id`.
async fn fork_into(d: &TestDaemon, id: &str, name: &str) {
    d.client
        .put_sandbox(
            name,
            &CreateSandbox {
                from_snapshot: Some(id.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

async fn export(d: &TestDaemon, id: &str) -> ExportResult {
    d.client
        .export_snapshot(id, &ExportRequest::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_into_another_daemon_and_fork() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(a) = daemon(&s3).await else { return };
    a.client
        .put_sandbox("src", &CreateSandbox::default())
        .await
        .unwrap();
    build_state(&a, "src", 20).await;
    let want = fingerprint(&a, "src").await;
    assert!(want.contains("1234 1234"), "{want}");
    let id = snapshot(&a, "src").await;

    // The CLI streams progress (plain lines off a terminal) and prints the manifest digest.
    let out = a.cli().args(["export", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(manifest.starts_with("sha256:"), "{manifest}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("upload"), "no progress lines: {progress}");

    // Again: every layer is in the store already; nothing is uploaded.
    let again = export(&a, &id).await;
    assert_eq!(again.manifest, manifest);
    assert_eq!(again.uploaded_bytes, 0);
    assert!(again.skipped_bytes > 20 << 20, "{again:?}");

    // Another daemon (its own data dir) imports it and forks from it.
    let Some(b) = daemon(&s3).await else { return };
    let out = b.cli().args(["import", &manifest]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
    let snaps: Value = b
        .client
        .json(Method::GET, "/v1/snapshots", None::<&()>)
        .await
        .unwrap();
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 1);
    for name in ["dst1", "dst2"] {
        fork_into(&b, &id, name).await;
        assert_eq!(fingerprint(&b, name).await, want, "fork {name} differs");
    }
    // Forks diverge independently.
    sh_ok(&b.client, "dst1", "echo changed > proj/src/f1.txt").await;
    assert_eq!(fingerprint(&b, "dst2").await, want);

    // Importing again is a no-op.
    let r = b
        .client
        .import_snapshot(&ImportRequest {
            store: None,
            manifest: manifest.clone(),
        })
        .await
        .unwrap();
    assert!(r.already_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blobs_are_refused_and_nothing_is_registered() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(a) = daemon(&s3).await else { return };
    a.client
        .put_sandbox("src", &CreateSandbox::default())
        .await
        .unwrap();
    build_state(&a, "src", 12).await;
    let id = snapshot(&a, "src").await;
    let exported = export(&a, &id).await;
    let Some(b) = daemon(&s3).await else { return };
    let store = s3_store(&s3);

    let import = |m: String| {
        let c = b.client.clone();
        async move {
            c.import_snapshot(&ImportRequest {
                store: None,
                manifest: m,
            })
            .await
        }
    };
    let assert_nothing_registered = |b: &TestDaemon| {
        let layers: Vec<_> = std::fs::read_dir(b.data_dir().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap-") || n.starts_with('.'))
            .collect();
        assert!(layers.is_empty(), "layers left: {layers:?}");
        let tmp = std::fs::read_dir(b.data_dir().join("blobtmp"))
            .unwrap()
            .count();
        assert_eq!(tmp, 0, "work files left");
    };

    // One byte flipped in one chunk of the layer.
    let chunks = store.list("chunks").await.unwrap();
    assert!(chunks.len() > 1);
    let victim = &chunks[chunks.len() / 2].key;
    let good = store.get_bytes(victim).await.unwrap();
    let mut bad = good.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    store.put_bytes(victim, bad.into()).await.unwrap();
    let err = import(exported.manifest.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CorruptBlob), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_nothing_registered(&b);
    let snaps: Value = b
        .client
        .json(Method::GET, "/v1/snapshots", None::<&()>)
        .await
        .unwrap();
    assert!(snaps["snapshots"].as_array().unwrap().is_empty());

    // A truncated chunk.
    store
        .put_bytes(victim, good.slice(..good.len() - 100))
        .await
        .unwrap();
    let err = import(exported.manifest.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CorruptBlob), "{err}");
    assert_nothing_registered(&b);

    // A tampered manifest.
    store.put_bytes(victim, good).await.unwrap();
    let mkey =
        bothy_blob::manifest::manifest_key(&bothy_blob::Digest::parse(&exported.manifest).unwrap());
    let m = store.get_bytes(&mkey).await.unwrap();
    let tampered = String::from_utf8(m.to_vec())
        .unwrap()
        .replace("\"size\"", "\"size\" ");
    store.put_bytes(&mkey, tampered.into()).await.unwrap();
    let err = import(exported.manifest.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CorruptBlob), "{err}");
    assert_nothing_registered(&b);

    // Repaired: the import goes through.
    store.put_bytes(&mkey, m).await.unwrap();
    import(exported.manifest.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_and_wake_pulls_the_disk_back() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(d) = daemon(&s3).await else { return };
    d.client
        .put_sandbox("ev", &CreateSandbox::default())
        .await
        .unwrap();
    build_state(&d, "ev", 10).await;
    sh_ok(
        &d.client,
        "ev",
        "echo remembered > /root/note; mkdir -p /opt/x && echo y > /opt/x/z",
    )
    .await;
    let want = fingerprint(&d, "ev").await;

    // Evicting a running sandbox puts it to sleep first.
    let out = d.cli().args(["evict", "ev"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = d.client.get_sandbox("ev").await.unwrap();
    assert!(info.evicted, "{info:?}");
    assert_eq!(info.state, bothy_api::sandbox::SandboxState::Sleeping);
    let disk = d.data_dir().join("sandboxes/ev/disk");
    assert!(!disk.exists(), "local disk still there");

    // The first request wakes it and pulls the disk back.
    assert_eq!(fingerprint(&d, "ev").await, want);
    assert_eq!(
        sh_ok(&d.client, "ev", "cat /root/note /opt/x/z").await,
        "remembered\ny\n"
    );
    assert!(!d.client.get_sandbox("ev").await.unwrap().evicted);

    // Evict again, restart the daemon (kill -9), then wake: still intact.
    d.client
        .evict("ev", &EvictRequest::default())
        .await
        .unwrap();
    let mut d = d;
    d.restart().await;
    assert!(d.client.get_sandbox("ev").await.unwrap().evicted);
    assert_eq!(fingerprint(&d, "ev").await, want);

    // A snapshot of an evicted sandbox pulls its disk back first: a fork from it has it all.
    d.client
        .evict("ev", &EvictRequest::default())
        .await
        .unwrap();
    let id = snapshot(&d, "ev").await;
    assert!(!d.client.get_sandbox("ev").await.unwrap().evicted);
    fork_into(&d, &id, "evf").await;
    assert_eq!(fingerprint(&d, "evf").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_pushes_on_sleep() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(d) = daemon(&s3).await else { return };
    d.client
        .put_sandbox(
            "keep",
            &CreateSandbox {
                persist: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(d.client.get_sandbox("keep").await.unwrap().persist);
    sh_ok(&d.client, "keep", "head -c 3M /dev/urandom > data").await;
    let store = s3_store(&s3);
    assert!(store.list("layers").await.unwrap().is_empty());
    d.client.sleep_sandbox("keep").await.unwrap();
    assert_eq!(store.list("layers").await.unwrap().len(), 1);
    // Its disk is in the store already: evicting uploads nothing.
    let r = d
        .client
        .evict("keep", &EvictRequest::default())
        .await
        .unwrap();
    assert_eq!(r.uploaded_bytes, 0, "{r:?}");
    sh_ok(&d.client, "keep", "test $(stat -c %s data) = 3145728").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_export_then_rerun_completes() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(mut a) = daemon(&s3).await else {
        return;
    };
    a.client
        .put_sandbox("src", &CreateSandbox::default())
        .await
        .unwrap();
    build_state(&a, "src", 96).await;
    let want = fingerprint(&a, "src").await;
    let id = snapshot(&a, "src").await;

    // Start an export and kill the daemon once some chunks are up.
    let cut = kill_during(
        &mut a,
        format!("/v1/snapshots/{id}/export"),
        json!({}),
        "upload",
    )
    .await;
    let store = s3_store(&s3);
    // The manifest is written last: none unless the export got to its end.
    assert_eq!(
        store.list("manifests").await.unwrap().len(),
        usize::from(!cut),
        "manifests after an export that was cut short: {cut}"
    );
    a.restart().await;
    // Nothing half-made is visible, the snapshot and the sandbox are intact.
    let snaps: Value = a
        .client
        .json(Method::GET, "/v1/snapshots", None::<&()>)
        .await
        .unwrap();
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(fingerprint(&a, "src").await, want);
    // Re-run: only the missing chunks go up.
    let r = export(&a, &id).await;
    assert!(r.skipped_bytes > 0, "nothing was resumed: {r:?}");
    let total: u64 = r.layers.iter().map(|l| l.size_bytes).sum();
    assert!(r.uploaded_bytes < total, "{r:?}");
    // And it imports into a fresh daemon.
    let Some(b) = daemon(&s3).await else { return };
    b.client
        .import_snapshot(&ImportRequest {
            store: None,
            manifest: r.manifest,
        })
        .await
        .unwrap();
    fork_into(&b, &id, "dst").await;
    assert_eq!(fingerprint(&b, "dst").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_the_operators_choice() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(d) = daemon(&s3).await else { return };
    d.client
        .put_sandbox("t", &CreateSandbox::default())
        .await
        .unwrap();
    let id = snapshot(&d, "t").await;
    let evil = tempfile::tempdir().unwrap();
    let target = evil.path().join("planted");
    // A store the daemon was not configured with: refused, nothing written there.
    for store in [
        target.display().to_string(),
        "s3://other?endpoint=http://127.0.0.1:1".to_string(),
    ] {
        let err = d
            .client
            .export_snapshot(
                &id,
                &ExportRequest {
                    store: Some(store.clone()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidRequest),
            "{store}: {err}"
        );
        let err = d
            .client
            .evict(
                "t",
                &EvictRequest {
                    store: Some(store.clone()),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidRequest),
            "{store}: {err}"
        );
    }
    assert!(!target.exists());
    // Manifests are digests, never paths or keys.
    for m in ["../../etc/passwd", "manifests/x", "sha256:zz", ""] {
        let err = d
            .client
            .import_snapshot(&ImportRequest {
                store: None,
                manifest: m.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{m}: {err}");
    }
    // A digest that is not in the store: not found.
    let err = d
        .client
        .import_snapshot(&ImportRequest {
            store: None,
            manifest: bothy_blob::Digest::of(b"nothing").to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    // Unknown snapshot and sandbox.
    let err = d
        .client
        .export_snapshot("snap-0000000000000000", &ExportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SnapshotNotFound), "{err}");
    let err = d
        .client
        .evict("nope", &EvictRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SandboxNotFound), "{err}");
}

/// Runs a transfer over SSE and kills the daemon once it is part-way through `phase`.
/// Returns whether the kill cut it short (on a loaded machine the daemon may finish the last
/// chunks before the client has read the progress event that triggers the kill).
async fn kill_during(d: &mut TestDaemon, path: String, body: Value, phase: &str) -> bool {
    let client = d.client.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TransferProgress>();
    let task = tokio::spawn(async move {
        client
            .transfer::<Value>(&path, &body, |p| {
                let _ = tx.send(p.clone());
            })
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {phase} progress"))
            .unwrap_or_else(|| panic!("transfer ended before any {phase}"));
        if p.phase == phase && p.done > 0 && p.done < p.total {
            break;
        }
    }
    d.kill9();
    let cut = task.await.unwrap().is_err();
    eprintln!("kill -9 during {phase}: transfer cut short: {cut}");
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_import_and_evict_leaves_nothing_half_made() {
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(a) = daemon(&s3).await else { return };
    a.client
        .put_sandbox("src", &CreateSandbox::default())
        .await
        .unwrap();
    build_state(&a, "src", 96).await;
    let want = fingerprint(&a, "src").await;
    let id = snapshot(&a, "src").await;
    let manifest = export(&a, &id).await.manifest;

    // Import cut short: after a restart no snapshot, no layer, no work file; a re-run works.
    let Some(mut b) = daemon(&s3).await else {
        return;
    };
    let cut = kill_during(
        &mut b,
        "/v1/snapshots/import".into(),
        json!({ "manifest": manifest }),
        "download",
    )
    .await;
    b.restart().await;
    let snaps: Value = b
        .client
        .json(Method::GET, "/v1/snapshots", None::<&()>)
        .await
        .unwrap();
    let layers = std::fs::read_dir(b.data_dir().join("layers"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with("snap-")
        })
        .count();
    // Cut short: no snapshot and no layer; finished: both.
    let n = usize::from(!cut);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), n, "{snaps}");
    assert_eq!(layers, n);
    assert_eq!(
        std::fs::read_dir(b.data_dir().join("blobtmp"))
            .unwrap()
            .count(),
        0
    );
    b.client
        .import_snapshot(&ImportRequest {
            store: None,
            manifest,
        })
        .await
        .unwrap();

    // Evict cut short (or not): a re-run works and the content survives the round trip.
    let mut a = a;
    let cut = kill_during(
        &mut a,
        "/v1/sandboxes/src/evict".into(),
        json!({}),
        "upload",
    )
    .await;
    a.restart().await;
    // Cut short: the disk is here and not marked evicted; finished: evicted, disk gone.
    // Either way the content comes back whole.
    let info = a.client.get_sandbox("src").await.unwrap();
    assert_eq!(info.evicted, !cut, "{info:?}");
    assert_eq!(a.data_dir().join("sandboxes/src/disk").exists(), cut);
    assert_eq!(fingerprint(&a, "src").await, want);
    a.client
        .evict("src", &EvictRequest::default())
        .await
        .unwrap();
    assert_eq!(fingerprint(&a, "src").await, want);
}

/// Runs a shell line with the image's `/bin/sh` (an imported image has no `/bin/bash` or
/// coreutils); returns stdout.
async fn image_sh(d: &TestDaemon, name: &str, line: &str) -> String {
    let r = d
        .client
        .exec(
            name,
            &bothy_api::exec::ExecRequest {
                argv: Some(vec!["/bin/sh".into(), "-c".into(), line.into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{line}: {}", r.stderr);
    r.stdout
}

/// Forks snapshot `id` into `name` and reads a file of the image and one of the snapshot.
async fn fork_reads(d: &TestDaemon, id: &str, name: &str) -> String {
    fork_into(d, id, name).await;
    image_sh(
        d,
        name,
        "read a < /hello.txt; read b < /state.txt; echo \"$a|$b\"",
    )
    .await
}

/// A snapshot of a sandbox of an imported image carries the image's layers: a daemon that
/// lacks the image gets it with the import, one that has the same image reuses it, and one
/// with a different image of that name refuses the import (nothing registered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_image_travels_with_its_snapshot() {
    use bothy_api::sandbox::ImportImage;
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let Some(a) = daemon(&s3).await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    bothy_testkit::minimal_rootfs(&root);
    let import_image = |d: &TestDaemon, path: std::path::PathBuf| {
        let c = d.client.clone();
        async move {
            c.import_image(&ImportImage {
                name: "mini".into(),
                path: path.to_string_lossy().into(),
            })
            .await
            .unwrap()
        }
    };
    import_image(&a, root.clone()).await;
    a.client
        .put_sandbox(
            "m",
            &CreateSandbox {
                image: Some("mini".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    image_sh(&a, "m", "echo mine > /state.txt").await;
    let id = snapshot(&a, "m").await;
    let r = export(&a, &id).await;
    assert_eq!(
        r.layers.len(),
        2,
        "the image's layer and the snapshot's: {r:?}"
    );
    let import = |d: &TestDaemon| {
        let (c, manifest) = (d.client.clone(), r.manifest.clone());
        async move {
            c.import_snapshot(&ImportRequest {
                store: None,
                manifest,
            })
            .await
        }
    };
    // A daemon without the image: it comes with the snapshot.
    let Some(b) = daemon(&s3).await else { return };
    import(&b).await.unwrap();
    let images = b.client.list_images().await.unwrap().images;
    let mini = images
        .iter()
        .find(|i| i.name == "mini")
        .expect("image imported");
    assert_eq!(mini.kind, "imported");
    assert_eq!(fork_reads(&b, &id, "f").await, "from the image|mine\n");

    // A daemon with the same image (imported from the same tree): reused.
    let Some(c) = daemon(&s3).await else { return };
    import_image(&c, root.clone()).await;
    import(&c).await.unwrap();
    assert_eq!(fork_reads(&c, &id, "f").await, "from the image|mine\n");

    // A daemon with another image of that name: refused, and nothing registered.
    let Some(e) = daemon(&s3).await else { return };
    let other = tmp.path().join("other");
    bothy_testkit::minimal_rootfs(&other);
    std::fs::write(other.join("hello.txt"), "another image\n").unwrap();
    import_image(&e, other).await;
    let err = import(&e).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict), "{err}");
    assert!(err.to_string().contains("mini"), "{err}");
    let snaps: Value = e
        .client
        .json(Method::GET, "/v1/snapshots", None::<&()>)
        .await
        .unwrap();
    assert!(snaps["snapshots"].as_array().unwrap().is_empty(), "{snaps}");

    // A manifest whose image names a layer outside the layers directory, or is no image name
    // at all, is refused before anything is fetched.
    let store = s3_store(&s3);
    let digest = bothy_blob::Digest::parse(&r.manifest).unwrap();
    let good = bothy_blob::manifest::get_snapshot_manifest(store.as_ref(), &digest)
        .await
        .unwrap();
    for (i, (image_name, layer_id)) in [("mini", "../../etc"), ("Not An Image!", "sha256-x")]
        .into_iter()
        .enumerate()
    {
        let mut m = good.clone();
        m.snapshot.id = format!("snap-{i:032x}");
        m.image.name = image_name.into();
        m.image.layers[0]
            .labels
            .insert("id".into(), layer_id.into());
        let d = bothy_blob::manifest::put_manifest(store.as_ref(), &m)
            .await
            .unwrap();
        let err = e
            .client
            .import_snapshot(&ImportRequest {
                store: None,
                manifest: d.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::CorruptBlob), "{err}");
    }
    let layers: Vec<_> = std::fs::read_dir(e.data_dir().join("layers"))
        .unwrap()
        .map(|x| x.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(layers.iter().all(|l| !l.contains("..")), "{layers:?}");
}
