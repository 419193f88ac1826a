//! End to end: code interpreter contexts through the daemon, in real sandboxes, and
//! `bothy run`. Rich-output checks need matplotlib and pandas in the host image
//! (`.ci/install-deps.d/interp.sh`); they skip with a message otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bothy_api::files::MkdirRequest;
use bothy_api::interp::{CreateContextRequest, Language, RunEvent, RunRequest, RunStatus};
use bothy_api::sandbox::CreateSandbox;
use bothy_api::{Data, Encoding};
use bothy_testkit::TestDaemon;

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn run(ctx: &str, code: &str) -> RunRequest {
    RunRequest {
        code: code.into(),
        context: Some(ctx.into()),
        ..Default::default()
    }
}

fn main_text(r: &bothy_api::interp::RunResult) -> String {
    r.results
        .iter()
        .find(|x| x.is_main_result)
        .and_then(|x| x.text.clone())
        .unwrap_or_else(|| panic!("no main result in {r:?}"))
}

fn python_has(modules: &str) -> bool {
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success())
}

async fn sandbox(name: &str) -> Option<TestDaemon> {
    let d = TestDaemon::start(BIN).await?;
    d.client
        .put_sandbox(name, &CreateSandbox::default())
        .await
        .unwrap();
    Some(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_context_end_to_end() {
    let Some(d) = sandbox("py").await else { return };
    let c = &d.client;
    c.mkdir(
        "py",
        &MkdirRequest {
            path: "/workspace/proj".into(),
            mode: None,
        },
    )
    .await
    .unwrap();
    let t = Instant::now();
    let ctx = c
        .create_context(
            "py",
            &CreateContextRequest {
                language: Language::Python,
                cwd: Some("proj".into()),
                env: BTreeMap::from([("GREETING".into(), "hej".into())]),
            },
        )
        .await
        .unwrap();
    eprintln!("python context created in {:?}", t.elapsed());
    assert_eq!(ctx.cwd, "/workspace/proj");

    // State, cwd and env.
    c.run_code("py", &run(&ctx.id, "import os\nn = 20"))
        .await
        .unwrap();
    let r = c
        .run_code(
            "py",
            &run(&ctx.id, "n + 1, os.getcwd(), os.environ['GREETING']"),
        )
        .await
        .unwrap();
    assert_eq!(main_text(&r), "(21, '/workspace/proj', 'hej')");

    // Streaming: the print before the sleep arrives before the sleep ends.
    let t0 = Instant::now();
    let mut s = c
        .run_code_stream(
            "py",
            &run(
                &ctx.id,
                "import time\nprint('first')\ntime.sleep(1.5)\nprint('second')",
            ),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = s.next().await.unwrap() {
        let e: RunEvent = ev.json().unwrap();
        seen.push((t0.elapsed(), e));
    }
    let first = seen
        .iter()
        .find(|(_, e)| matches!(e, RunEvent::Stdout(d) if d.data == "first\n"))
        .expect("first printed");
    let end = seen.last().unwrap();
    assert!(matches!(end.1, RunEvent::End(_)), "{seen:?}");
    assert!(end.0 - first.0 > Duration::from_millis(1000), "{seen:?}");

    // Errors with a plain-text traceback.
    let r = c
        .run_code("py", &run(&ctx.id, "{}['missing']"))
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Error);
    let e = r.error.unwrap();
    assert_eq!(e.name, "KeyError");
    assert!(e.traceback.contains("Traceback") && !e.traceback.contains('\x1b'));

    // A timeout interrupts; the same context then runs again with its state.
    let mut req = run(&ctx.id, "import time\ntime.sleep(30)");
    req.timeout_ms = Some(500);
    let t = Instant::now();
    let r = c.run_code("py", &req).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(r.status, RunStatus::Timeout);
    assert!(!r.restarted);
    let r = c.run_code("py", &run(&ctx.id, "n * 2")).await.unwrap();
    assert_eq!(main_text(&r), "40");

    // A dict is JSON.
    let r = c
        .run_code("py", &run(&ctx.id, "{'k': [1, 2.5, 'x']}"))
        .await
        .unwrap();
    assert_eq!(
        r.results[0].json,
        Some(serde_json::json!({"k": [1, 2.5, "x"]}))
    );

    if !python_has("matplotlib, pandas") {
        bothy_testkit::skip("rich outputs: matplotlib/pandas not installed");
        return;
    }
    let r = c
        .run_code(
            "py",
            &run(&ctx.id, "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])\nNone"),
        )
        .await
        .unwrap();
    let png = r.results.iter().find_map(|x| x.png.clone()).expect("a PNG");
    let png = Data {
        data: png,
        encoding: Encoding::Base64,
    }
    .decode()
    .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w >= 200 && h >= 150 && w < 5000 && h < 5000, "{w}x{h}");
    let r = c
        .run_code(
            "py",
            &run(
                &ctx.id,
                "import pandas as pd\npd.DataFrame({'city': ['Oslo'], 'pop': [700000]})",
            ),
        )
        .await
        .unwrap();
    let html = r.results[0].html.clone().expect("html");
    assert!(html.contains("<table") && html.contains("Oslo"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_and_typescript_end_to_end() {
    let Some(d) = sandbox("js").await else { return };
    let c = &d.client;
    let js = c
        .create_context(
            "js",
            &CreateContextRequest {
                language: Language::Javascript,
                cwd: None,
                env: BTreeMap::from([("MODE".into(), "e2e".into())]),
            },
        )
        .await
        .unwrap();
    let r = c
        .run_code("js", &run(&js.id, "const data = await Promise.resolve({a: 1, b: [true, null]});\nconsole.log('got it');"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "got it\n");
    let r = c
        .run_code(
            "js",
            &run(
                &js.id,
                "({...data, mode: process.env.MODE, cwd: process.cwd()})",
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        r.results[0].json,
        Some(serde_json::json!({"a": 1, "b": [true, null], "mode": "e2e", "cwd": "/workspace"}))
    );
    let mut req = run(&js.id, "for (;;) {}");
    req.timeout_ms = Some(300);
    let r = c.run_code("js", &req).await.unwrap();
    assert_eq!(r.status, RunStatus::Timeout);
    let r = c.run_code("js", &run(&js.id, "data.a + 1")).await.unwrap();
    assert_eq!(main_text(&r), "2");

    // TypeScript, through the default context of the language.
    let code = "interface User { name: string; age?: number }\n\
                function pick<T, K extends keyof T>(o: T, k: K): T[K] { return o[k]; }\n\
                const u: User = { name: 'ada' };\n\
                pick<User, 'name'>(u, 'name').toUpperCase() as string";
    let r = c
        .run_code(
            "js",
            &RunRequest {
                code: code.into(),
                language: Some(Language::Typescript),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.context, "default-typescript");
    assert_eq!(main_text(&r), "'ADA'", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_survive_sleep_with_a_fresh_interpreter() {
    let Some(d) = sandbox("zz").await else { return };
    let c = &d.client;
    let ctx = c
        .create_context(
            "zz",
            &CreateContextRequest {
                language: Language::Python,
                cwd: None,
                env: BTreeMap::from([("KEEP".into(), "1".into())]),
            },
        )
        .await
        .unwrap();
    c.run_code("zz", &run(&ctx.id, "v = 1")).await.unwrap();
    c.sleep_sandbox("zz").await.unwrap();
    let list = c.list_contexts("zz").await.unwrap();
    let again = list.iter().find(|x| x.id == ctx.id).expect("context kept");
    assert!(!again.running);
    let r = c
        .run_code(
            "zz",
            &run(&ctx.id, "import os\n'v' in globals(), os.environ['KEEP']"),
        )
        .await
        .unwrap();
    assert_eq!(main_text(&r), "(False, '1')");
    c.delete_context("zz", &ctx.id).await.unwrap();
    assert!(c
        .list_contexts("zz")
        .await
        .unwrap()
        .iter()
        .all(|x| x.id != ctx.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_prints_results_and_saves_images() {
    let Some(d) = sandbox("cli").await else {
        return;
    };
    let out = d
        .cli()
        .args(["run", "cli", "-c", "x = 6\nprint('hello')\nx * 7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n42\n");
    let out = d
        .cli()
        .args([
            "run",
            "cli",
            "--lang",
            "js",
            "-c",
            "throw new RangeError('nope')",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RangeError: nope"),
        "{out:?}"
    );
    let out = d
        .cli()
        .args([
            "run",
            "cli",
            "--timeout",
            "0.3",
            "-c",
            "import time\ntime.sleep(10)",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    if !python_has("matplotlib") {
        bothy_testkit::skip("image saving: matplotlib not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plot.py");
    std::fs::write(
        &script,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n",
    )
    .unwrap();
    let out = d
        .cli()
        .args(["run", "cli", "--out-dir"])
        .arg(dir.path())
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("png image saved to"), "{stderr}");
    let saved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .collect();
    assert_eq!(saved.len(), 1);
    assert!(std::fs::read(saved[0].path())
        .unwrap()
        .starts_with(b"\x89PNG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_interrupts_and_contexts_stay_inside_the_sandbox() {
    let Some(d) = sandbox("dc").await else { return };
    let c = &d.client;
    // A cwd cannot climb out of the sandbox's root, and the interpreter sees only the sandbox.
    let err = c
        .create_context(
            "dc",
            &CreateContextRequest {
                language: Language::Python,
                cwd: Some("../../../..".into()),
                env: BTreeMap::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("PathEscape"), "{err:?}");
    let host_dir = d.data_dir().display().to_string();
    let ctx = c
        .create_context(
            "dc",
            &CreateContextRequest {
                language: Language::Python,
                cwd: Some("/".into()),
                env: BTreeMap::new(),
            },
        )
        .await
        .unwrap();
    let r = c
        .run_code(
            "dc",
            &run(
                &ctx.id,
                &format!("import os\nos.path.exists({host_dir:?}), os.path.exists('/workspace')"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        main_text(&r),
        "(False, True)",
        "the daemon's data dir is visible inside"
    );

    // A client that goes away mid-run interrupts the run (noticed through the daemon's proxy
    // by the stream's keep-alive writes).
    let mut s = c
        .run_code_stream(
            "dc",
            &run(
                &ctx.id,
                "import time\ntime.sleep(3)\nopen('/workspace/marker', 'w').close()",
            ),
        )
        .await
        .unwrap();
    let ev = s.next().await.unwrap().unwrap();
    assert_eq!(ev.event, "start");
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !c.file_exists("dc", "/workspace/marker").await.unwrap(),
        "the run went on after its client left"
    );
    let r = c
        .run_code("dc", &run(&ctx.id, "'still usable'"))
        .await
        .unwrap();
    assert_eq!(main_text(&r), "'still usable'");
}
