//! `/v1/archive` against real temp directories, through the real router in-process.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use serde_json::Value;

/// One entry of a tree as compared by the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Link {
        target: String,
    },
    Fifo {
        mode: u32,
    },
}

/// Everything below `root` (relative paths), symlinks not followed.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let node = if m.file_type().is_symlink() {
                Node::Link {
                    target: std::fs::read_link(&p).unwrap().display().to_string(),
                }
            } else if m.is_dir() {
                walk(root, &p, out);
                Node::Dir {
                    mode,
                    mtime: m.mtime(),
                }
            } else if m.is_file() {
                Node::File {
                    mode,
                    mtime: m.mtime(),
                    data: std::fs::read(&p).unwrap(),
                }
            } else {
                Node::Fifo { mode }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(path: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A project: sources, an executable, a setuid file, symlinks (one inside, one pointing out),
/// a fifo, an empty directory, logs, node_modules, and a .gitignore.
fn project(root: &Path) {
    write(&root.join("src/main.rs"), "fn main() {}\n", 0o644);
    write(&root.join("src/lib/deep/a.txt"), "deep\n", 0o600);
    write(&root.join("run.sh"), "#!/bin/sh\necho hi\n", 0o755);
    write(&root.join("suid"), "x", 0o4755);
    write(&root.join("debug.log"), "noise", 0o644);
    write(&root.join("src/trace.log"), "noise", 0o644);
    write(
        &root.join("node_modules/left-pad/index.js"),
        "module.exports=1",
        0o644,
    );
    write(
        &root.join(".gitignore"),
        "build/\n*.tmp\n!keep.tmp\n",
        0o644,
    );
    write(&root.join("build/out.o"), "obj", 0o644);
    write(&root.join("x.tmp"), "tmp", 0o644);
    write(&root.join("keep.tmp"), "kept", 0o644);
    write(&root.join(".hidden"), "dot", 0o644);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o710)).unwrap();
    std::os::unix::fs::symlink("src/main.rs", root.join("link-in")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("link-out")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if rustix::process::geteuid().is_root() {
        for p in ["run.sh", "link-in"] {
            std::os::unix::fs::lchown(root.join(p), Some(1234), Some(5678)).unwrap();
        }
    }
    for (i, p) in [
        "src/main.rs",
        "run.sh",
        "src/lib/deep/a.txt",
        "src/lib/deep",
        "src",
        "empty",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64 * 1000);
    }
}

async fn get_archive(app: &axum::Router, query: &str) -> (StatusCode, Vec<u8>) {
    let (status, _, body) = get(app, &format!("/v1/archive?{query}")).await;
    (status, body)
}

async fn put_archive(app: &axum::Router, query: &str, body: Body) -> (StatusCode, Value) {
    let req = Request::put(format!("/v1/archive?{query}"))
        .body(body)
        .unwrap();
    let (status, _, bytes) = send(app, req).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("<none>")
}

/// Scratch directories the agent left next to `target` (the old contents of a replaced
/// directory are removed in the background: given 5 s).
fn leftovers(target: &Path) -> Vec<String> {
    let list = || -> Vec<String> {
        std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".bothy-"))
            .collect()
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let l = list();
        if l.is_empty() || std::time::Instant::now() > end {
            return l;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn round_trip_keeps_modes_links_mtimes_and_leaves_out_excluded_and_ignored() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("proj");
    project(&src);
    let (status, archive) = get_archive(
        &app,
        &format!(
            "path={}&exclude=*.log&exclude=node_modules&gitignore=true",
            q(&src.display().to_string())
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&archive)
    );
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "gzip");

    let dst = tmp.path().join("restored/here");
    let (status, v) = put_archive(
        &app,
        &format!("path={}", q(&dst.display().to_string())),
        Body::from(archive),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["replaced"], false);
    assert_eq!(v["path"], dst.display().to_string());

    let mut want = tree(&src);
    for gone in [
        "debug.log",
        "src/trace.log",
        "node_modules",
        "node_modules/left-pad",
        "node_modules/left-pad/index.js",
        "build",
        "build/out.o",
        "x.tmp",
    ] {
        assert!(want.remove(gone).is_some(), "{gone} was in the source");
    }
    let got = tree(&dst);
    assert_eq!(got, want);
    assert!(
        got.contains_key("keep.tmp"),
        "negated gitignore rule kept it"
    );
    assert_eq!(
        got["link-out"],
        Node::Link {
            target: "/etc".into()
        },
        "a link out is stored as a link, not followed"
    );
    assert_eq!(
        std::fs::symlink_metadata(dst.join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
        std::fs::metadata(&src).unwrap().permissions().mode() & 0o777
    );
    if rustix::process::geteuid().is_root() {
        let m = std::fs::symlink_metadata(dst.join("run.sh")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "owner restored");
        let m = std::fs::symlink_metadata(dst.join("link-in")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (1234, 5678),
            "a link's own owner restored"
        );
    }
    assert!(leftovers(&dst).is_empty(), "{:?}", leftovers(&dst));
}

#[tokio::test]
async fn without_gitignore_ignored_files_are_kept() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("proj");
    project(&src);
    let (status, archive) =
        get_archive(&app, &format!("path={}", q(&src.display().to_string()))).await;
    assert_eq!(status, StatusCode::OK);
    let dst = tmp.path().join("copy");
    let (status, v) = put_archive(
        &app,
        &format!("path={}", q(&dst.display().to_string())),
        Body::from(archive),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(tree(&dst), tree(&src));
}

#[tokio::test]
async fn restore_replaces_contents_and_keeps_the_directory() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("proj");
    project(&src);
    let (_, archive) = get_archive(&app, &format!("path={}", q(&src.display().to_string()))).await;
    let dst = tmp.path().join("dst");
    write(&dst.join("old.txt"), "old", 0o644);
    write(&dst.join("src/main.rs"), "changed", 0o644);
    let inode = std::fs::metadata(&dst).unwrap().ino();
    let (status, v) = put_archive(
        &app,
        &format!("path={}", q(&dst.display().to_string())),
        Body::from(archive),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["replaced"], true);
    assert_eq!(tree(&dst), tree(&src));
    assert_eq!(
        std::fs::metadata(&dst).unwrap().ino(),
        inode,
        "same directory"
    );
    assert!(leftovers(&dst).is_empty(), "{:?}", leftovers(&dst));
}

/// A target holding one file, to check that failures leave it alone.
fn existing_target(tmp: &Path) -> std::path::PathBuf {
    let dst = tmp.join("dst");
    write(&dst.join("precious.txt"), "keep me", 0o644);
    dst
}

async fn small_archive(app: &axum::Router, tmp: &Path) -> Vec<u8> {
    let src = tmp.join("small");
    for i in 0..50 {
        // Incompressible enough that cutting the archive cuts file data.
        let data: String = (0..2000)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8))
            .collect();
        write(&src.join(format!("f{i}.txt")), &data, 0o644);
    }
    let (status, archive) = get_archive(
        app,
        &format!("path={}&level=0", q(&src.display().to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    archive
}

#[tokio::test]
async fn truncated_and_corrupted_archives_leave_the_target_unchanged() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(&app, tmp.path()).await;
    let dst = existing_target(tmp.path());
    let before = tree(&dst);
    let query = format!("path={}", q(&dst.display().to_string()));

    for cut in [archive.len() / 2, archive.len() - 4] {
        let (status, v) = put_archive(&app, &query, Body::from(archive[..cut].to_vec())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cut at {cut}: {v}"
        );
        assert_eq!(code(&v), "corrupt_blob");
        assert_eq!(tree(&dst), before);
        assert!(leftovers(&dst).is_empty());
    }
    let mut flipped = archive.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let (status, v) = put_archive(&app, &query, Body::from(flipped)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_blob"),
        "{v}"
    );
    assert_eq!(tree(&dst), before);

    let mut trailing = archive.clone();
    trailing.extend_from_slice(b"junk");
    let (status, v) = put_archive(&app, &query, Body::from(trailing)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_blob"),
        "{v}"
    );

    let (status, v) = put_archive(&app, &query, Body::from("not an archive")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    assert_eq!(tree(&dst), before);
    assert!(leftovers(&dst).is_empty());

    // And the intact archive still restores.
    let (status, v) = put_archive(&app, &query, Body::from(archive)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(!dst.join("precious.txt").exists());
}

#[tokio::test]
async fn an_upload_cut_off_mid_body_leaves_the_target_unchanged() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(&app, tmp.path()).await;
    let dst = existing_target(tmp.path());
    let before = tree(&dst);
    let first = Bytes::copy_from_slice(&archive[..archive.len() / 2]);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(first), Err(std::io::Error::other("connection reset"))];
    let (status, v) = put_archive(
        &app,
        &format!("path={}", q(&dst.display().to_string())),
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(tree(&dst), before);
    assert!(leftovers(&dst).is_empty());
}

/// A gzip-compressed tar made by hand: (name, type, data, link name) per entry. Names are
/// written raw into the header, so they can be anything (`..`, absolute).
type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

fn raw_archive(entries: &[RawEntry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn entries_escaping_the_target_are_refused_and_nothing_is_written() {
    use tar::EntryType::{Block, Char, Directory, Link, Regular, Symlink};
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let dst = existing_target(tmp.path());
    let before = tree(&dst);
    let query = format!("path={}", q(&dst.display().to_string()));
    let out = outside.display().to_string();
    let abs = format!("{out}/abs.txt");
    let cases: Vec<(&str, Vec<RawEntry>, &str)> = vec![
        (
            "dot-dot",
            vec![("../../outside/evil", Regular, b"x", "")],
            "path_escape",
        ),
        (
            "nested dot-dot",
            vec![("a/../../x", Regular, b"x", "")],
            "path_escape",
        ),
        (
            "absolute",
            vec![(abs.as_str(), Regular, b"x", "")],
            "path_escape",
        ),
        (
            "write through a symlink",
            vec![
                ("esc", Symlink, b"", out.as_str()),
                ("esc/evil", Regular, b"x", ""),
            ],
            "path_escape",
        ),
        (
            "directory through a symlink",
            vec![
                ("esc", Symlink, b"", out.as_str()),
                ("esc/sub", Directory, b"", ""),
            ],
            "path_escape",
        ),
        (
            "directory over a symlink",
            vec![
                ("esc", Symlink, b"", out.as_str()),
                ("esc", Directory, b"", ""),
            ],
            "path_escape",
        ),
        (
            "hard link out",
            vec![("h", Link, b"", "../../outside/x")],
            "path_escape",
        ),
        (
            "hard link absolute",
            vec![("h", Link, b"", "/etc/passwd")],
            "path_escape",
        ),
        (
            "char device",
            vec![("null", Char, b"", "")],
            "invalid_request",
        ),
        (
            "block device",
            vec![("sda", Block, b"", "")],
            "invalid_request",
        ),
    ];
    for (what, entries, want) in cases {
        let (status, v) = put_archive(&app, &query, Body::from(raw_archive(&entries))).await;
        assert_eq!(code(&v), want, "{what}: {v}");
        assert!(status.is_client_error(), "{what}: {status}");
        assert_eq!(tree(&dst), before, "{what}: target changed");
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{what}: something was written outside"
        );
        assert!(leftovers(&dst).is_empty(), "{what}");
    }
    // A symlink pointing out is fine as long as nothing goes through it: it is restored as a
    // link (it resolves inside the sandbox, like any other).
    let (status, v) = put_archive(
        &app,
        &query,
        Body::from(raw_archive(&[
            ("esc", Symlink, b"", "/etc"),
            ("f", Regular, b"ok", ""),
            ("h", Link, b"", "f"),
        ])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        std::fs::read_link(dst.join("esc")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(std::fs::read(dst.join("h")).unwrap(), b"ok");
}

#[tokio::test]
async fn limits_on_entries_and_bytes() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(&app, tmp.path()).await;
    let dst = existing_target(tmp.path());
    let before = tree(&dst);
    let path = q(&dst.display().to_string());
    let (status, v) = put_archive(
        &app,
        &format!("path={path}&max_entries=10"),
        Body::from(archive.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("max_entries"));
    let (status, v) = put_archive(
        &app,
        &format!("path={path}&max_bytes=5000"),
        Body::from(archive),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("max_bytes"));
    assert_eq!(tree(&dst), before);
    assert!(leftovers(&dst).is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    write(&file, "x", 0o644);
    let f = q(&file.display().to_string());
    let missing = q(&tmp.path().join("nope").display().to_string());
    let dir = q(&tmp.path().display().to_string());
    for (query, want) in [
        ("".to_string(), "invalid_request"),
        (format!("path={missing}"), "file_not_found"),
        (format!("path={f}"), "not_a_directory"),
        ("path=/".to_string(), "invalid_path"),
        ("path=/..".to_string(), "path_escape"),
        (format!("path={dir}&exclude=a["), "invalid_request"),
        (format!("path={dir}&exclude="), "invalid_request"),
        (format!("path={dir}&unknown=1"), "invalid_request"),
    ] {
        let (status, body) = get_archive(&app, &query).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(code(&v), want, "GET {query}: {v}");
        assert!(status.is_client_error());
    }
    for (query, want) in [
        (format!("path={f}"), "not_a_directory"),
        ("path=/".to_string(), "invalid_path"),
    ] {
        let (status, v) = put_archive(&app, &query, Body::empty()).await;
        assert_eq!(code(&v), want, "PUT {query}: {v}");
        assert!(status.is_client_error());
    }
}

#[tokio::test]
async fn a_symlinked_directory_is_archived_and_restored_through_its_link() {
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    write(&real.join("a.txt"), "a", 0o644);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (status, archive) =
        get_archive(&app, &format!("path={}", q(&link.display().to_string()))).await;
    assert_eq!(status, StatusCode::OK);
    let real2 = tmp.path().join("real2");
    std::fs::create_dir(&real2).unwrap();
    let link2 = tmp.path().join("link2");
    std::os::unix::fs::symlink(&real2, &link2).unwrap();
    let (status, v) = put_archive(
        &app,
        &format!("path={}", q(&link2.display().to_string())),
        Body::from(archive),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["path"], real2.display().to_string());
    assert!(std::fs::symlink_metadata(&link2)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(real2.join("a.txt")).unwrap(), b"a");
}

#[tokio::test]
async fn a_refused_upload_is_read_before_the_error_is_sent() {
    // A sender still writing when the agent refuses would otherwise see a broken pipe instead
    // of the error (the daemon streams restores).
    let app = app();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    write(&file, "x", 0o644);
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pulled.clone();
    use futures_util::StreamExt;
    let chunks = futures_util::stream::iter(0..64).map(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 64 * 1024]))
    });
    let query = format!("path={}", q(&file.display().to_string()));
    let (status, v) = put_archive(&app, &query, Body::from_stream(chunks)).await;
    assert_eq!(code(&v), "not_a_directory", "{v}");
    assert!(status.is_client_error());
    assert_eq!(
        pulled.load(std::sync::atomic::Ordering::SeqCst),
        64,
        "the whole upload was read before the reply"
    );
}
