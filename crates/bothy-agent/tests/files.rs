//! `/v1/files*` against a real temp directory, through the real router in-process.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use axum::body::Body;
use bothy_api::files::{FileEntry, FileList, FileType, WriteResult};
use bytes::Bytes;
use common::*;
use futures_util::StreamExt as _;
use http::{Request, StatusCode};
use serde_json::{json, Value};

async fn put(app: &axum::Router, path: &str, extra: &str, body: Body) -> (StatusCode, Value) {
    let req = Request::put(format!("/v1/files?path={}{extra}", q(path)))
        .body(body)
        .unwrap();
    let (status, _, bytes) = send(app, req).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn delete(app: &axum::Router, path: &str, extra: &str) -> (StatusCode, Value) {
    let req = Request::delete(format!("/v1/files?path={}{extra}", q(path)))
        .body(Body::empty())
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

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn big_binary_round_trip_is_streamed_and_exact() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let path = format!("{}/big.bin", dir.path().display());
    let data = Bytes::from(pseudo_random(20 << 20));
    // Streamed in 1 MiB chunks: far over the 8 MiB limit of buffered bodies.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (status, v) = put(
        &app,
        &path,
        "",
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let w: WriteResult = serde_json::from_value(v).unwrap();
    assert_eq!(
        (w.path.as_str(), w.bytes_written),
        (path.as_str(), 20 << 20)
    );

    let (status, headers, body) = get(&app, &format!("/v1/files?path={}", q(&path))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-length"],
        (20u64 << 20).to_string().as_str()
    );
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert!(body == data[..], "content differs");
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["big.bin"]);

    // Empty files and overwrites.
    let (status, _) = put(&app, &path, "", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get(&app, &format!("/v1/files?path={}", q(&path))).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn write_mode_parents_and_errors() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let deep = format!("{d}/a/b/c/file.txt");
    let (status, v) = put(&app, &deep, "", Body::from("hello")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(std::fs::read_to_string(&deep).unwrap(), "hello");
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&deep), 0o644);

    let script = format!("{d}/run.sh");
    let (status, _) = put(&app, &script, "&mode=0755", Body::from("#!/bin/sh\n")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mode(&script), 0o755);
    let (status, _) = put(&app, &script, "&mode=600", Body::from("x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mode(&script), 0o600);

    let (status, v) = put(&app, &script, "&mode=999", Body::from("x")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (status, v) = put(&app, &d, "", Body::from("x")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "is_a_directory")
    );
    // A parent that is a file.
    let (status, v) = put(&app, &format!("{deep}/under"), "", Body::from("x")).await;
    assert!(status.is_client_error(), "{status} {v}");
    let (status, v) = put(&app, "../../../../etc/x", "", Body::from("x")).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "path_escape"));
    let req = Request::put("/v1/files").body(Body::from("x")).unwrap();
    let (status, _, bytes) = send(&app, req).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test]
async fn read_errors() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (status, _, b) = get(&app, &format!("/v1/files?path={}", q(&d))).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "is_a_directory")
    );
    let (status, _, b) = get(
        &app,
        &format!("/v1/files?path={}", q(&format!("{d}/missing"))),
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "file_not_found")
    );
    assert!(v["message"].as_str().unwrap().contains("missing"));
    let (status, _, b) = get(&app, "/v1/files?path=/../etc/passwd").await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "path_escape"));
    let (status, _, b) = get(&app, "/v1/files?path=").await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let (status, _, b) = get(&app, "/v1/files/list?path=/tmp&recursive=maybe").await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    // A file whose size is not known up front (procfs) is read to its end.
    let (status, headers, b) = get(&app, "/v1/files?path=/proc/self/status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("content-length").is_none());
    assert!(String::from_utf8(b).unwrap().contains("Pid:"));
}

#[tokio::test]
async fn list_stat_exists() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(format!("{d}/sub/deeper")).unwrap();
    std::fs::write(format!("{d}/a.txt"), "abc").unwrap();
    std::fs::write(format!("{d}/sub/deeper/z"), "").unwrap();
    std::os::unix::fs::symlink("a.txt", format!("{d}/link")).unwrap();

    let (status, v) = get_json(&app, &format!("/v1/files/list?path={}", q(&d))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let l: FileList = serde_json::from_value(v).unwrap();
    assert!(!l.truncated);
    let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "link", "sub"]);
    let a = &l.entries[0];
    assert_eq!(
        (a.file_type, a.size, a.mode, a.path.clone()),
        (FileType::File, 3, 0o644, format!("{d}/a.txt"))
    );
    let link = &l.entries[1];
    assert_eq!(
        (link.file_type, link.link_target.as_deref()),
        (FileType::Symlink, Some("a.txt"))
    );
    assert_eq!(l.entries[2].file_type, FileType::Dir);

    let (_, v) = get_json(
        &app,
        &format!("/v1/files/list?path={}&recursive=true", q(&d)),
    )
    .await;
    let l: FileList = serde_json::from_value(v).unwrap();
    let paths: Vec<String> = l
        .entries
        .iter()
        .map(|e| e.path.replacen(&d, "", 1))
        .collect();
    assert_eq!(
        paths,
        ["/a.txt", "/link", "/sub", "/sub/deeper", "/sub/deeper/z"]
    );

    let (status, v) = get_json(
        &app,
        &format!("/v1/files/list?path={}", q(&format!("{d}/a.txt"))),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "not_a_directory")
    );
    let (status, v) = get_json(
        &app,
        &format!("/v1/files/list?path={}", q(&format!("{d}/nope"))),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "file_not_found")
    );

    let (status, v) = get_json(
        &app,
        &format!("/v1/files/stat?path={}", q(&format!("{d}/link"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let e: FileEntry = serde_json::from_value(v).unwrap();
    assert_eq!((e.name.as_str(), e.file_type), ("link", FileType::Symlink));
    // RFC 3339 UTC, e.g. 2026-11-22T20:48:39.123456789Z
    let m = e.mtime.as_bytes();
    assert!(
        e.mtime.len() >= 20 && m[4] == b'-' && m[10] == b'T' && e.mtime.ends_with('Z'),
        "{}",
        e.mtime
    );
    let (status, v) = get_json(
        &app,
        &format!("/v1/files/stat?path={}", q(&format!("{d}/nope"))),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "file_not_found")
    );

    for (p, want) in [
        ("a.txt", true),
        ("link", true),
        ("sub/deeper", true),
        ("nope", false),
        ("a.txt/under", false),
    ] {
        let (status, v) = get_json(
            &app,
            &format!("/v1/files/exists?path={}", q(&format!("{d}/{p}"))),
        )
        .await;
        assert_eq!(
            (status, v["exists"].as_bool()),
            (StatusCode::OK, Some(want)),
            "{p}"
        );
    }
}

#[tokio::test]
async fn list_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
    }
    let l = bothy_agent::files::entry::list(dir.path().to_str().unwrap(), false, 4).unwrap();
    assert!(l.truncated);
    assert_eq!(l.entries.len(), 4);
    let l = bothy_agent::files::entry::list(dir.path().to_str().unwrap(), false, 10).unwrap();
    assert!(!l.truncated);
}

#[tokio::test]
async fn mkdir_remove_move() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let deep = format!("{d}/x/y/z");
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/mkdir",
        json!({"path": deep, "mode": 0o700}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["type"].as_str(), v["mode"].as_u64()),
        (Some("dir"), Some(0o700))
    );
    // Again: fine (mkdir -p).
    let (status, _) = json(&app, "POST", "/v1/files/mkdir", json!({"path": deep})).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::write(format!("{d}/file"), "f").unwrap();
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/mkdir",
        json!({"path": format!("{d}/file")}),
    )
    .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "already_exists"));
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/mkdir",
        json!({"path": d, "extra": 1}),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );

    // Remove: a non-empty directory needs recursive.
    let (status, v) = delete(&app, &format!("{d}/x"), "").await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "directory_not_empty")
    );
    let (status, _) = delete(&app, &format!("{d}/x/y/z"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(&app, &format!("{d}/x"), "&recursive=true").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!std::path::Path::new(&format!("{d}/x")).exists());
    let (status, v) = delete(&app, &format!("{d}/x"), "").await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "file_not_found")
    );
    let (status, v) = delete(&app, "/", "&recursive=true").await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let (status, v) = delete(&app, "/tmp/../..", "&recursive=true").await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "path_escape"));
    // A symlink is removed, not what it points to.
    std::os::unix::fs::symlink(format!("{d}/file"), format!("{d}/ln")).unwrap();
    let (status, _) = delete(&app, &format!("{d}/ln"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(std::path::Path::new(&format!("{d}/file")).exists());

    // Move.
    std::fs::write(format!("{d}/other"), "o").unwrap();
    let mv = |from: &str, to: &str, overwrite: bool| json!({"from": format!("{d}/{from}"), "to": format!("{d}/{to}"), "overwrite": overwrite});
    let (status, v) = json(&app, "POST", "/v1/files/move", mv("file", "other", false)).await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "already_exists"));
    assert_eq!(std::fs::read_to_string(format!("{d}/other")).unwrap(), "o");
    let (status, v) = json(&app, "POST", "/v1/files/move", mv("file", "other", true)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(std::fs::read_to_string(format!("{d}/other")).unwrap(), "f");
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/move",
        mv("other", "new/dir/moved", false),
    )
    .await;
    assert_eq!(
        (status, v["name"].as_str()),
        (StatusCode::OK, Some("moved"))
    );
    let (status, v) = json(&app, "POST", "/v1/files/move", mv("missing", "x", false)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "file_not_found")
    );
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/move",
        json!({"from": "/", "to": format!("{d}/r")}),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/move",
        json!({"from": format!("{d}/new")}),
    )
    .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    // A directory into itself.
    let (status, v) = json(
        &app,
        "POST",
        "/v1/files/move",
        mv("new", "new/dir/inside", false),
    )
    .await;
    assert!(status.is_client_error(), "{status} {v}");
}

/// The kernel resolves `..` at the root of the agent's own root: a symlink to `/../../..` is
/// `/`. (Inside a sandbox that root is the sandbox's; here it is the test machine's.)
#[tokio::test]
async fn symlink_climbing_above_root_stays_at_root() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::os::unix::fs::symlink("/../../..", format!("{d}/up")).unwrap();
    let (status, v) = get_json(
        &app,
        &format!("/v1/files/list?path={}", q(&format!("{d}/up"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let via_link: Vec<String> = serde_json::from_value::<FileList>(v)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    let (_, v) = get_json(&app, "/v1/files/list?path=/").await;
    let root: Vec<String> = serde_json::from_value::<FileList>(v)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(via_link, root);
    let (status, v) = get_json(
        &app,
        &format!("/v1/files/stat?path={}", q(&format!("{d}/up"))),
    )
    .await;
    assert_eq!(
        (status, v["link_target"].as_str()),
        (StatusCode::OK, Some("/../../.."))
    );
    // The lexical check refuses the same climb when a client spells it.
    let (status, v) = get_json(
        &app,
        &format!(
            "/v1/files/list?path={}",
            q(&format!("{d}/../../../../../.."))
        ),
    )
    .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "path_escape"));
}

/// An upload that fails or is abandoned half-way leaves neither a partial file nor a temporary
/// one, and the old contents stay.
#[tokio::test]
async fn failed_or_abandoned_upload_leaves_nothing() {
    use tower::ServiceExt as _;
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let path = format!("{}/f", dir.path().display());
    std::fs::write(&path, "old").unwrap();

    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client broke")),
    ]);
    let (status, v) = put(&app, &path, "", Body::from_stream(failing)).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    let stalled = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
        b"partial",
    ))])
    .chain(futures_util::stream::pending());
    let req = Request::put(format!("/v1/files?path={}", q(&path)))
        .body(Body::from_stream(stalled))
        .unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        app.clone().oneshot(req),
    )
    .await;
    assert!(
        r.is_err(),
        "the upload should still be waiting for its body"
    );

    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
}
