//! File watching, driven through the agent's router in-process, with real inotify on temp dirs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use bothy_agent::{router, AgentState};
use bothy_api::agent::AgentConfig;
use bothy_api::watch::{WatchChanges, WatchEvent, WatchEventKind as K};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app(state_dir: &Path) -> axum::Router {
    router(AgentState::new(AgentConfig {
        name: "t".into(),
        env: Default::default(),
        state_dir: state_dir.to_string_lossy().into_owned(),
    }))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(dir: &Path, extra: &str) -> String {
    format!("path={}{extra}", enc(&dir.to_string_lossy()))
}

struct Stream {
    body: Body,
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf`.
    off: usize,
    ended: bool,
}

impl Stream {
    async fn open(app: &axum::Router, q: &str) -> Self {
        Self::open_with(app, q, None).await
    }

    async fn open_with(app: &axum::Router, q: &str, last_event_id: Option<&str>) -> Self {
        let mut req = http::Request::get(format!("/v1/watch?{q}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "watch {q}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            body: resp.into_body(),
            buf: Vec::new(),
            off: 0,
            ended: false,
        }
    }

    /// The next event, or None at the end of the stream or after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<WatchEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf[self.off..].windows(2).position(|w| w == b"\n\n") {
                let frame = &self.buf[self.off..self.off + pos + 2];
                let text = String::from_utf8(frame.to_vec()).unwrap();
                self.off += pos + 2;
                let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue; // keepalive comment
                };
                let ev: WatchEvent = serde_json::from_str(data).unwrap();
                let id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
                let name = text
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap();
                assert_eq!(id, ev.cursor);
                assert_eq!(name, ev.kind.as_str());
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(f)) => {
                    if let Ok(data) = f.unwrap().into_data() {
                        self.buf.drain(..self.off);
                        self.off = 0;
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    async fn ready(&mut self) -> WatchEvent {
        let ev = self.next(Duration::from_secs(10)).await.expect("ready");
        assert_eq!(ev.kind, K::Ready, "{ev:?}");
        ev
    }

    /// Events until `done` says stop (on the accumulated list) or nothing comes for `quiet`.
    async fn collect_until(
        &mut self,
        quiet: Duration,
        done: impl Fn(&[WatchEvent]) -> bool,
    ) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        while !done(&out) {
            match self.next(quiet).await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// Events until nothing arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<WatchEvent> {
        self.collect_until(quiet, |_| false).await
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().canonicalize().unwrap();
    (t, p)
}

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).to_string_lossy().into_owned()
}

fn has(events: &[WatchEvent], kind: K, path: &str) -> bool {
    events.iter().any(|e| e.kind == kind && e.path == path)
}

fn sh(script: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn basic_events_with_types_dirs_and_cursors() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    let ready = s.ready().await;
    assert_eq!(ready.path, dir.to_string_lossy());
    assert_eq!(ready.resumed, Some(false));

    std::fs::write(dir.join("a.txt"), b"hello").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    sh(&format!("chmod 600 {}", dir.join("a.txt").display()));
    std::fs::remove_file(dir.join("a.txt")).unwrap();
    let ev = s
        .collect_until(QUIET, |e| has(e, K::Delete, &p(&dir, "a.txt")))
        .await;
    let kinds: Vec<(K, &str)> = ev.iter().map(|e| (e.kind, e.path.as_str())).collect();
    let a = p(&dir, "a.txt");
    let sub = p(&dir, "sub");
    assert_eq!(
        kinds,
        vec![
            (K::Create, a.as_str()),
            (K::Modify, a.as_str()),
            (K::Create, sub.as_str()),
            (K::Attrib, a.as_str()),
            (K::Delete, a.as_str()),
        ],
        "{ev:#?}"
    );
    assert!(ev[2].is_dir && !ev[0].is_dir);
    // Cursors increase and belong to the watch of `ready`.
    let id = ready.cursor.split(':').next().unwrap();
    let seqs: Vec<u64> = ev
        .iter()
        .map(|e| {
            let (i, s) = e.cursor.split_once(':').unwrap();
            assert_eq!(i, id);
            s.parse().unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Many writes to one open file are one modify (close-after-write, not per write).
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join("sub/b")).unwrap();
        for _ in 0..100 {
            f.write_all(b"x").unwrap();
        }
    }
    let ev = s.drain(QUIET).await;
    let b = p(&dir, "sub/b");
    assert_eq!(
        ev.iter()
            .filter(|e| e.path == b)
            .map(|e| e.kind)
            .collect::<Vec<_>>(),
        vec![K::Create, K::Modify]
    );
}

#[tokio::test]
async fn coalescing_merges_duplicates_but_keeps_every_type() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;
    let f = dir.join("f");
    // Create, 20 attrib changes, 20 closes after write, delete: all in well under the window.
    std::fs::write(&f, b"1").unwrap();
    for i in 0..20 {
        std::fs::set_permissions(
            &f,
            std::os::unix::fs::PermissionsExt::from_mode(0o600 + (i % 2) * 0o4),
        )
        .unwrap();
    }
    for _ in 0..20 {
        std::fs::write(&f, b"2").unwrap();
    }
    std::fs::remove_file(&f).unwrap();
    let ev = s.drain(QUIET).await;
    let kinds: Vec<K> = ev.iter().map(|e| e.kind).collect();
    for k in [K::Create, K::Modify, K::Attrib, K::Delete] {
        assert!(kinds.contains(&k), "{k:?} lost: {kinds:?}");
    }
    assert_eq!(kinds.first(), Some(&K::Create));
    assert_eq!(kinds.last(), Some(&K::Delete));
    // 42 without coalescing; identical neighbours merge within each window (the writes may
    // span a few windows on a loaded machine, so a handful of modifies can remain).
    assert!(kinds.len() < 30, "nothing was coalesced: {kinds:?}");
}

#[tokio::test]
async fn a_tree_created_at_once_is_reported_whole() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;
    sh(&format!(
        "cd {} && mkdir -p a/b/c && touch a/b/c/f && mkdir -p x/y && echo hi > x/y/z && cp -r a copy",
        dir.display()
    ));
    let ev = s.drain(QUIET).await;
    for (rel, is_dir) in [
        ("a", true),
        ("a/b", true),
        ("a/b/c", true),
        ("a/b/c/f", false),
        ("x", true),
        ("x/y", true),
        ("x/y/z", false),
        ("copy", true),
        ("copy/b", true),
        ("copy/b/c", true),
        ("copy/b/c/f", false),
    ] {
        let path = p(&dir, rel);
        let creates: Vec<&WatchEvent> = ev
            .iter()
            .filter(|e| e.kind == K::Create && e.path == path)
            .collect();
        assert_eq!(creates.len(), 1, "create of {rel}: {ev:#?}");
        assert_eq!(creates[0].is_dir, is_dir, "{rel}");
    }
    // Files in the new directories are watched too.
    std::fs::write(dir.join("a/b/c/g"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "a/b/c/g")), "{ev:#?}");
}

#[tokio::test]
async fn renames_within_out_of_and_into_the_tree() {
    let (_t, base) = tmp();
    let dir = base.join("w");
    let outside = base.join("outside");
    std::fs::create_dir_all(dir.join("d/e")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(dir.join("f1"), b"").unwrap();
    std::fs::write(dir.join("d/e/g"), b"").unwrap();
    let app = app(&base);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;

    // Within: one move event with both ends.
    std::fs::rename(dir.join("f1"), dir.join("f2")).unwrap();
    std::fs::rename(dir.join("d"), dir.join("d2")).unwrap();
    let ev = s.drain(QUIET).await;
    let moves: Vec<(&str, Option<&str>, bool)> = ev
        .iter()
        .map(|e| (e.path.as_str(), e.from.as_deref(), e.is_dir))
        .collect();
    let (f1, f2, d, d2) = (p(&dir, "f1"), p(&dir, "f2"), p(&dir, "d"), p(&dir, "d2"));
    assert_eq!(
        moves,
        vec![
            (f2.as_str(), Some(f1.as_str()), false),
            (d2.as_str(), Some(d.as_str()), true)
        ]
    );
    assert!(ev.iter().all(|e| e.kind == K::Move));
    // The moved directory is still watched, under its new name.
    std::fs::write(dir.join("d2/e/h"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "d2/e/h")), "{ev:#?}");

    // Out: a delete; the directory is no longer followed.
    std::fs::rename(dir.join("f2"), outside.join("f2")).unwrap();
    std::fs::rename(dir.join("d2"), outside.join("d2")).unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Delete, &f2), "{ev:#?}");
    assert!(has(&ev, K::Delete, &d2), "{ev:#?}");
    std::fs::write(outside.join("d2/e/after"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(ev.is_empty(), "events from outside the watch: {ev:#?}");

    // In: a create, and the contents of a directory moved in.
    std::fs::rename(outside.join("d2"), dir.join("back")).unwrap();
    let ev = s.drain(QUIET).await;
    for rel in ["back", "back/e", "back/e/g", "back/e/h", "back/e/after"] {
        assert!(has(&ev, K::Create, &p(&dir, rel)), "{rel}: {ev:#?}");
    }
    std::fs::write(dir.join("back/e/new"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "back/e/new")), "{ev:#?}");
}

#[tokio::test]
async fn burst_of_50000_creations_is_counted_in_full_or_overflows() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "&events=create")).await;
    s.ready().await;
    const N: usize = 50_000;
    let d = dir.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            std::fs::File::create(d.join(format!("f{i}"))).unwrap();
        }
    });
    let mut seen = HashSet::new();
    let mut overflows = 0;
    let start = std::time::Instant::now();
    while seen.len() < N {
        let Some(e) = s.next(Duration::from_secs(5)).await else {
            break;
        };
        match e.kind {
            K::Create => {
                seen.insert(e.path);
            }
            K::Overflow => overflows += 1,
            k => panic!("unexpected {k:?} with events=create"),
        }
    }
    writer.join().unwrap();
    eprintln!(
        "burst: {} of {N} creations reported, {overflows} overflow events, {:?}",
        seen.len(),
        start.elapsed()
    );
    assert!(
        seen.len() == N || overflows > 0,
        "{} of {N} reported and no overflow: events were lost silently",
        seen.len()
    );
    for i in 0..N {
        if overflows == 0 {
            assert!(seen.contains(&p(&dir, &format!("f{i}"))), "f{i} missing");
        }
    }
}

#[tokio::test]
async fn resume_by_cursor_replays_what_was_missed() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;
    std::fs::create_dir(dir.join("one")).unwrap();
    let ev = s.drain(QUIET).await;
    assert_eq!(ev.len(), 1);
    let cursor = ev[0].cursor.clone();
    drop(s);

    // Missed while disconnected.
    std::fs::create_dir(dir.join("two")).unwrap();
    std::fs::create_dir(dir.join("three")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut s = Stream::open(&app, &query(&dir, &format!("&cursor={}", enc(&cursor)))).await;
    let ready = s.ready().await;
    assert_eq!(ready.resumed, Some(true));
    assert_eq!(ready.cursor, cursor);
    let ev = s.drain(QUIET).await;
    let paths: Vec<&str> = ev.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec![p(&dir, "two"), p(&dir, "three")]);
    let last = ev[1].cursor.clone();
    drop(s);

    // Same through Last-Event-ID, as EventSource does.
    std::fs::create_dir(dir.join("four")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = Stream::open_with(&app, &query(&dir, ""), Some(&last)).await;
    assert_eq!(s.ready().await.resumed, Some(true));
    let ev = s.drain(QUIET).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].path, p(&dir, "four"));

    // A cursor of no current watch (agent restarted, watch expired): resync, then live events.
    let mut s = Stream::open(&app, &query(&dir, "&cursor=0123456789abcdef:5")).await;
    assert_eq!(s.ready().await.resumed, Some(false));
    let r = s.next(QUIET).await.unwrap();
    assert_eq!(r.kind, K::Resync);
    assert_eq!(r.reason.as_deref(), Some("unknown_cursor"));
    assert!(r.message.unwrap().contains("rescan"));
    std::fs::create_dir(dir.join("five")).unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "five")));

    // A cursor from the future of this watch is outside the window too.
    let id = cursor.split(':').next().unwrap();
    let mut s = Stream::open(&app, &query(&dir, &format!("&cursor={id}:999999"))).await;
    s.ready().await;
    let r = s.next(QUIET).await.unwrap();
    assert_eq!((r.kind, r.reason.as_deref()), (K::Resync, Some("expired")));
}

#[tokio::test]
async fn polling_form_follows_the_same_log() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let poll = |q: String| {
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(
                    http::Request::get(format!("/v1/watch/changes?{q}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            serde_json::from_slice::<WatchChanges>(&body).unwrap()
        }
    };
    let first = poll(query(&dir, "")).await;
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].kind, K::Ready);
    std::fs::write(dir.join("x"), b"1").unwrap();
    std::fs::create_dir(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/HEAD"), b"1").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = poll(query(&dir, &format!("&cursor={}", enc(&first.cursor)))).await;
    let kinds: Vec<(K, String)> = c.events.iter().map(|e| (e.kind, e.path.clone())).collect();
    assert_eq!(
        kinds,
        vec![(K::Create, p(&dir, "x")), (K::Modify, p(&dir, "x"))],
        "default excludes hide .git"
    );
    assert!(!c.more);
    // limit pages through.
    let c1 = poll(query(
        &dir,
        &format!("&cursor={}&limit=1", enc(&first.cursor)),
    ))
    .await;
    assert_eq!(c1.events.len(), 1);
    assert!(c1.more);
    // Nothing new: empty, same cursor; long-poll returns as soon as something happens.
    let idle = poll(query(&dir, &format!("&cursor={}", enc(&c.cursor)))).await;
    assert!(idle.events.is_empty());
    assert_eq!(idle.cursor, c.cursor);
    let d = dir.clone();
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::remove_file(d.join("x")).unwrap();
    });
    let started = std::time::Instant::now();
    let waited = poll(query(
        &dir,
        &format!("&cursor={}&wait_ms=5000", enc(&c.cursor)),
    ))
    .await;
    t.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(waited.events[0].kind, K::Delete);
    // An unknown cursor: resync with a fresh cursor.
    let r = poll(query(&dir, "&cursor=ffff:1")).await;
    assert_eq!(r.events[0].kind, K::Ready);
    assert_eq!(r.events[1].kind, K::Resync);
}

#[tokio::test]
async fn filters_include_exclude_and_types() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    std::fs::create_dir_all(dir.join("node_modules/pkg")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let mut def = Stream::open(&app, &query(&dir, "")).await;
    let mut rs = Stream::open(&app, &query(&dir, "&include=*.rs")).await;
    let mut all = Stream::open(&app, &query(&dir, "&exclude=")).await;
    let mut custom = Stream::open(&app, &query(&dir, "&exclude=src&exclude=*.tmp")).await;
    let mut deletes = Stream::open(&app, &query(&dir, "&events=delete")).await;
    for s in [&mut def, &mut rs, &mut all, &mut custom, &mut deletes] {
        s.ready().await;
    }
    std::fs::write(dir.join("src/main.rs"), b"").unwrap();
    std::fs::write(dir.join("notes.tmp"), b"").unwrap();
    std::fs::write(dir.join("node_modules/pkg/index.js"), b"").unwrap();
    std::fs::create_dir(dir.join(".git")).unwrap();
    std::fs::remove_file(dir.join("notes.tmp")).unwrap();

    let (main, tmpf, idx, git) = (
        p(&dir, "src/main.rs"),
        p(&dir, "notes.tmp"),
        p(&dir, "node_modules/pkg/index.js"),
        p(&dir, ".git"),
    );
    let ev = def.drain(QUIET).await;
    assert!(has(&ev, K::Create, &main) && has(&ev, K::Create, &tmpf));
    assert!(
        !has(&ev, K::Create, &idx) && !has(&ev, K::Create, &git),
        "{ev:#?}"
    );

    let ev = rs.drain(QUIET).await;
    assert!(ev.iter().all(|e| e.path == main), "{ev:#?}");
    assert!(has(&ev, K::Create, &main));

    let ev = all.drain(QUIET).await;
    assert!(
        has(&ev, K::Create, &idx) && has(&ev, K::Create, &git),
        "{ev:#?}"
    );

    let ev = custom.drain(QUIET).await;
    assert!(has(&ev, K::Create, &idx), "defaults replaced: {ev:#?}");
    assert!(
        !has(&ev, K::Create, &main) && !has(&ev, K::Create, &tmpf),
        "{ev:#?}"
    );

    let ev = deletes.drain(QUIET).await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert!(has(&ev, K::Delete, &tmpf));

    // Non-recursive: only direct children.
    let mut flat = Stream::open(&app, &query(&dir, "&recursive=false")).await;
    flat.ready().await;
    std::fs::write(dir.join("src/lib.rs"), b"").unwrap();
    std::fs::write(dir.join("top"), b"").unwrap();
    let ev = flat.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "top")));
    assert!(!has(&ev, K::Create, &p(&dir, "src/lib.rs")), "{ev:#?}");
}

#[tokio::test]
async fn bad_requests_are_clear_4xx() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    std::fs::write(dir.join("file"), b"").unwrap();
    let cases = [
        (query(&dir.join("missing"), ""), 404, "file_not_found"),
        (query(&dir.join("file"), ""), 400, "not_a_directory"),
        (query(&dir, "&cursor=garbage"), 400, "invalid_request"),
        (query(&dir, "&include=a%5B"), 400, "invalid_request"),
        (
            query(&dir, "&events=create,explode"),
            400,
            "invalid_request",
        ),
        (query(&dir, "&recursive=maybe"), 400, "invalid_request"),
        (query(&dir, "&bogus=1"), 400, "invalid_request"),
        ("path=..%2F..%2F..%2Fetc".to_string(), 400, "path_escape"),
    ];
    for endpoint in ["/v1/watch", "/v1/watch/changes"] {
        for (q, status, code) in &cases {
            let resp = app
                .clone()
                .oneshot(
                    http::Request::get(format!("{endpoint}?{q}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), *status, "{endpoint}?{q}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let e: bothy_api::ApiError = serde_json::from_slice(&body).unwrap();
            assert_eq!(e.code.as_str(), *code, "{q}: {}", e.message);
            assert!(!e.message.is_empty());
        }
    }
}

#[tokio::test]
async fn stopped_when_the_directory_goes() {
    let (_t, base) = tmp();
    let app = app(&base);
    for (name, how) in [("del", "rm -rf"), ("mv", "mv")] {
        let dir = base.join(name);
        std::fs::create_dir_all(dir.join("inner")).unwrap();
        std::fs::write(dir.join("inner/f"), b"").unwrap();
        let mut s = Stream::open(&app, &query(&dir, "")).await;
        s.ready().await;
        if how == "mv" {
            sh(&format!(
                "mv {} {}",
                dir.display(),
                base.join("elsewhere").display()
            ));
        } else {
            sh(&format!("rm -rf {}", dir.display()));
        }
        let ev = s.drain(Duration::from_secs(3)).await;
        assert!(s.ended, "{name}: stream must end: {ev:#?}");
        let last = ev.last().expect("events");
        assert_eq!(last.kind, K::Stopped, "{name}: {ev:#?}");
        let reason = if how == "mv" { "moved" } else { "deleted" };
        assert_eq!(last.reason.as_deref(), Some(reason));
        if how == "rm -rf" {
            assert!(has(&ev, K::Delete, &p(&dir, "inner/f")), "{ev:#?}");
        }
        // A new watch on the path now is a 404, not a hang.
        let resp = app
            .clone()
            .oneshot(
                http::Request::get(format!("/v1/watch?{}", query(&dir, "")))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
}

#[tokio::test]
async fn two_clients_on_one_directory_share_the_watch() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut a = Stream::open(&app, &query(&dir, "")).await;
    let mut b = Stream::open(&app, &query(&dir, "")).await;
    let (ra, rb) = (a.ready().await, b.ready().await);
    let id = |c: &str| c.split(':').next().unwrap().to_string();
    assert_eq!(id(&ra.cursor), id(&rb.cursor));
    std::fs::write(dir.join("f"), b"").unwrap();
    let (ea, eb) = (a.drain(QUIET).await, b.drain(QUIET).await);
    assert_eq!(ea, eb);
    assert_eq!(ea.len(), 2);
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_overflow_then_continues() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;
    // The client reads nothing while more events than the log holds happen
    // (create + modify per file).
    let n = bothy_agent::watch::log::LOG_CAPACITY / 2 + 2_000;
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            std::fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = s.next(QUIET).await.unwrap();
    assert_eq!(first.kind, K::Overflow, "{first:?}");
    assert_eq!(first.reason.as_deref(), Some("client_lag"));
    assert!(first.message.unwrap().contains("rescan"));
    // Then it continues with what the log still holds, up to the newest event.
    let rest = s.drain(QUIET).await;
    assert!(has(&rest, K::Modify, &p(&dir, &format!("f{}", n - 1))));
    std::fs::write(dir.join("after"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "after")), "{ev:#?}");
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn mounts_inside_the_tree_are_not_followed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (mounts a tmpfs)");
        return;
    }
    let (_t, dir) = tmp();
    let m = dir.join("mnt");
    std::fs::create_dir(&m).unwrap();
    sh(&format!("mount -t tmpfs bothy-watch-test {}", m.display()));
    let _guard = Mount(m.clone());
    std::fs::create_dir(m.join("inner")).unwrap();
    let app = app(&dir);
    let mut s = Stream::open(&app, &query(&dir, "")).await;
    s.ready().await;
    std::fs::write(m.join("inner/x"), b"").unwrap();
    std::fs::write(dir.join("y"), b"").unwrap();
    let ev = s.drain(QUIET).await;
    assert!(has(&ev, K::Create, &p(&dir, "y")), "{ev:#?}");
    assert!(
        ev.iter().all(|e| !e.path.starts_with(&p(&dir, "mnt/"))),
        "{ev:#?}"
    );
}

#[tokio::test]
async fn distinct_watches_are_capped_with_a_clear_error() {
    let (_t, dir) = tmp();
    let app = app(&dir);
    let max = bothy_agent::watch::hub::MAX_WATCHES;
    for i in 0..max {
        let q = query(&dir, &format!("&exclude=x{i}"));
        let resp = app
            .clone()
            .oneshot(
                http::Request::get(format!("/v1/watch/changes?{q}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "watch {i}");
    }
    let q = query(&dir, "&exclude=one-too-many");
    let resp = app
        .clone()
        .oneshot(
            http::Request::get(format!("/v1/watch?{q}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let e: bothy_api::ApiError = serde_json::from_slice(&body).unwrap();
    assert!(e.message.contains("too many"), "{}", e.message);
    // An existing watch is still shared.
    let mut s = Stream::open(&app, &query(&dir, "&exclude=x0")).await;
    s.ready().await;
}
