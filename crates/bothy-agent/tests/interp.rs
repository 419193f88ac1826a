//! Agent-level tests of code interpreter contexts: the router driven in-process, with real
//! python3 and node interpreters. Tests that need a runtime skip with a message when it is not
//! installed; rich-output tests skip when matplotlib/pandas are not (`.ci/install-deps.d/interp.sh`
//! installs them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use base64::Engine as _;
use bothy_agent::AgentState;
use bothy_api::agent::AgentConfig;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Agent {
    app: Router,
    dir: tempfile::TempDir,
}

fn have(program: &str) -> bool {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(program).exists())
}

fn python_has(module: &str) -> bool {
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

fn agent_with(env: BTreeMap<String, String>) -> Agent {
    bothy_agent::reaper::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        name: "t".into(),
        env,
        state_dir: dir.path().join("state").display().to_string(),
    };
    Agent {
        app: bothy_agent::router(AgentState::new(config)),
        dir,
    }
}

fn agent() -> Agent {
    // The sandbox's PATH, not the test runner's (which may have a pyenv python first).
    let env = [(
        "PATH".to_string(),
        "/usr/local/bin:/usr/bin:/bin".to_string(),
    )]
    .into();
    agent_with(env)
}

impl Agent {
    fn cwd(&self) -> String {
        self.dir.path().display().to_string()
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        sse: bool,
    ) -> http::Response<Body> {
        let mut req = http::Request::builder().method(method).uri(uri);
        if sse {
            req = req.header("accept", "text/event-stream");
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap()
    }

    async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        let resp = self.send(method, uri, body, false).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    async fn create(&self, language: &str, extra: Value) -> String {
        let mut body = json!({"language": language, "cwd": self.cwd()});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        let (status, v) = self.json("POST", "/v1/contexts", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn run(&self, ctx: &str, code: &str) -> Value {
        self.run_with(ctx, json!({"code": code})).await
    }

    async fn run_with(&self, ctx: &str, body: Value) -> Value {
        let (status, v) = self
            .json("POST", &format!("/v1/contexts/{ctx}/run"), Some(body))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Runs with SSE; returns (seconds since the request, event name, data) for each event.
    async fn stream(&self, ctx: &str, body: Value) -> Vec<(f64, String, Value)> {
        let t0 = Instant::now();
        let resp = self
            .send("POST", &format!("/v1/contexts/{ctx}/run"), Some(body), true)
            .await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut buf = String::new();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            buf.push_str(std::str::from_utf8(&data).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(d).unwrap());
                    }
                }
                if let (Some(n), Some(d)) = (name, data) {
                    out.push((t0.elapsed().as_secs_f64(), n, d));
                }
            }
        }
        out
    }
}

fn main_text(v: &Value) -> String {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["is_main_result"] == true)
        .and_then(|r| r["text"].as_str())
        .unwrap_or_else(|| panic!("no main result in {v}"))
        .to_string()
}

macro_rules! need {
    ($prog:expr) => {
        if !have($prog) {
            bothy_testkit::skip(&format!("{} is not installed", $prog));
            return;
        }
    };
}

#[tokio::test]
async fn python_state_cwd_env_and_errors() {
    need!("python3");
    let a = agent();
    let ctx = a
        .create("python", json!({"env": {"BOTHY_TEST_VAR": "hello env"}}))
        .await;
    let v = a.run(&ctx, "x = 41\nimport os").await;
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["results"].as_array().unwrap().is_empty(), "{v}");
    let v = a.run(&ctx, "x + 1").await;
    assert_eq!(main_text(&v), "42");
    assert_eq!(v["execution_count"], 2);
    let v = a
        .run(&ctx, "os.getcwd(), os.environ['BOTHY_TEST_VAR']")
        .await;
    assert_eq!(main_text(&v), format!("('{}', 'hello env')", a.cwd()));
    // The working directory persists across runs.
    std::fs::create_dir(a.dir.path().join("sub")).unwrap();
    a.run(&ctx, "os.chdir('sub')").await;
    let v = a.run(&ctx, "os.getcwd()").await;
    assert_eq!(main_text(&v), format!("'{}/sub'", a.cwd()));
    // A dict is JSON too.
    let v = a.run(&ctx, "{'a': [1, 2], 'b': None}").await;
    assert_eq!(v["results"][0]["json"], json!({"a": [1, 2], "b": null}));
    // Errors: name, value and a plain-text traceback pointing into the cell.
    let v = a.run(&ctx, "def f():\n    return 1/0\nf()").await;
    assert_eq!(v["status"], "error");
    let e = &v["error"];
    assert_eq!(e["name"], "ZeroDivisionError");
    assert_eq!(e["value"], "division by zero");
    let tb = e["traceback"].as_str().unwrap();
    assert!(tb.contains("return 1/0") && tb.contains("line 2"), "{tb}");
    assert!(!tb.contains('\x1b') && !tb.contains("runner.py"), "{tb}");
    let v = a.run(&ctx, "def f(:\n pass").await;
    assert_eq!(v["error"]["name"], "SyntaxError");
    // Output from print and from a subprocess, in order with the run.
    let v = a.run(&ctx, "print('a')\nimport subprocess\nsubprocess.run(['echo', 'b'])\nprint('c', file=__import__('sys').stderr)\nNone").await;
    assert_eq!(v["stdout"], "a\nb\n", "{v}");
    assert_eq!(v["stderr"], "c\n", "{v}");
    // Top-level await and display().
    let v = a
        .run(
            &ctx,
            "import asyncio\nawait asyncio.sleep(0.01)\ndisplay([1, 2])\n'done'",
        )
        .await;
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["json"], json!([1, 2]));
    assert_eq!(results[0]["is_main_result"], false);
    assert_eq!(main_text(&v), "'done'");
}

#[tokio::test]
async fn python_output_streams_while_the_code_runs() {
    need!("python3");
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    let code = "import time\nprint('before')\ntime.sleep(1.5)\nprint('after')\n7";
    let evs = a.stream(&ctx, json!({"code": code})).await;
    let names: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        names,
        ["start", "stdout", "stdout", "result", "end"],
        "{evs:?}"
    );
    let before = &evs[1];
    assert_eq!(before.2["data"], "before\n");
    let end = evs.last().unwrap();
    assert!(end.0 >= 1.5, "{evs:?}");
    assert!(
        before.0 < end.0 - 1.0,
        "'before' came only {}s before the end",
        end.0 - before.0
    );
    assert_eq!(end.2["status"], "ok");
    assert!(end.2["duration_ms"].as_u64().unwrap() >= 1500);
}

#[tokio::test]
async fn python_partial_lines_are_not_held_back() {
    need!("python3");
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    let code = "import sys, time\nsys.stdout.write('Loading...')\ntime.sleep(1)\nprint(' done')";
    let evs = a.stream(&ctx, json!({"code": code})).await;
    let first = evs.iter().find(|e| e.1 == "stdout").unwrap();
    assert_eq!(first.2["data"], "Loading...", "{evs:?}");
    assert!(first.0 < 0.6, "a partial line waited {}s", first.0);
    let out: String = evs
        .iter()
        .filter(|e| e.1 == "stdout")
        .map(|e| e.2["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, "Loading... done\n");
}

#[tokio::test]
async fn python_timeout_interrupts_and_keeps_the_context() {
    need!("python3");
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    a.run(&ctx, "x = 5").await;
    let t = Instant::now();
    let v = a
        .run_with(
            &ctx,
            json!({"code": "import time\nwhile True:\n    time.sleep(0.01)", "timeout_ms": 300}),
        )
        .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["error"]["name"], "TimeoutError");
    assert!(
        v["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("KeyboardInterrupt"),
        "{v}"
    );
    assert_eq!(v["restarted"], false);
    let v = a.run(&ctx, "x").await;
    assert_eq!(main_text(&v), "5");
    // A timeout that fires before the runner has even read the cell still interrupts it.
    let t = Instant::now();
    let v = a
        .run_with(
            &ctx,
            json!({"code": "import time\ntime.sleep(5)", "timeout_ms": 1}),
        )
        .await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Code that swallows the interrupt is killed after the grace period, and the caller told.
    let code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
    let t = Instant::now();
    let v = a
        .run_with(&ctx, json!({"code": code, "timeout_ms": 200}))
        .await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["restarted"], true);
    assert_eq!(v["error"]["restarted"], true);
    let evs = a.stream(&ctx, json!({"code": "'x' in globals()"})).await;
    assert_eq!(evs[0].2["fresh"], true, "{evs:?}");
    assert_eq!(
        evs.iter().find(|e| e.1 == "result").unwrap().2["text"],
        "False"
    );
}

#[tokio::test]
async fn python_restart_and_delete() {
    need!("python3");
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    a.run(&ctx, "y = 1").await;
    let (status, v) = a
        .json("POST", &format!("/v1/contexts/{ctx}/restart"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["execution_count"], 0);
    let v = a.run(&ctx, "y").await;
    assert_eq!(v["error"]["name"], "NameError");
    let (status, list) = a.json("GET", "/v1/contexts", None).await;
    assert_eq!(status, 200);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == ctx.as_str()));
    let (status, _) = a.json("DELETE", &format!("/v1/contexts/{ctx}"), None).await;
    assert_eq!(status, 204);
    let (status, v) = a
        .json(
            "POST",
            &format!("/v1/contexts/{ctx}/run"),
            Some(json!({"code": "1"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], "not_found");
}

#[tokio::test]
async fn client_disconnect_interrupts_the_run() {
    need!("python3");
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    let marker = a.dir.path().join("marker");
    let code = format!(
        "import time\ntime.sleep(2)\nopen({:?}, 'w').close()",
        marker.display().to_string()
    );
    let resp = a
        .send(
            "POST",
            &format!("/v1/contexts/{ctx}/run"),
            Some(json!({"code": code})),
            true,
        )
        .await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("event: start"));
    drop(body);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(!marker.exists(), "the run went on after the client left");
    let t = Instant::now();
    let v = a.run(&ctx, "1 + 1").await;
    assert_eq!(main_text(&v), "2");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn python_rich_outputs_matplotlib_and_pandas() {
    need!("python3");
    if !python_has("matplotlib") || !python_has("pandas") {
        bothy_testkit::skip("matplotlib/pandas not installed (see .ci/install-deps.d/interp.sh)");
        return;
    }
    let a = agent();
    let ctx = a.create("python", json!({})).await;
    let v = a
        .run(
            &ctx,
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title('t')\nNone",
        )
        .await;
    let pngs: Vec<&Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["png"].is_string())
        .collect();
    assert_eq!(pngs.len(), 1, "{v}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(pngs[0]["png"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        (200..4000).contains(&w) && (150..4000).contains(&h),
        "{w}x{h}"
    );
    // Figures are closed after capture: the next run shows none.
    let v = a.run(&ctx, "1").await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["png"].is_null()));
    let v = a
        .run(
            &ctx,
            "import pandas as pd\npd.DataFrame({'name': ['a', 'b'], 'n': [1, 2]})",
        )
        .await;
    let html = v["results"][0]["html"].as_str().unwrap();
    assert!(
        html.contains("<table") && html.contains("<td>a</td>"),
        "{html}"
    );
    assert!(v["results"][0]["text"].as_str().unwrap().contains("name"));
    // Objects offering other representations.
    let code = "class M:\n    def _repr_markdown_(self): return '**b**'\n    def _repr_latex_(self): return r'$x^2$'\n    def _repr_svg_(self): return '<svg/>'\nM()";
    let v = a.run(&ctx, code).await;
    let r = &v["results"][0];
    assert_eq!(r["markdown"], "**b**");
    assert_eq!(r["latex"], "$x^2$");
    assert_eq!(r["svg"], "<svg/>");
}

#[tokio::test]
async fn javascript_state_await_objects_and_errors() {
    need!("node");
    let a = agent();
    let ctx = a
        .create("javascript", json!({"env": {"BOTHY_JS": "yes"}}))
        .await;
    let v = a.run(&ctx, "const a = {x: 1};\nlet b = await Promise.resolve(2);\nfunction twice(n) { return 2 * n }").await;
    assert_eq!(v["status"], "ok", "{v}");
    let v = a.run(&ctx, "twice(a.x + b)").await;
    assert_eq!(main_text(&v), "6");
    // Declaring again in a later cell works, as in a notebook.
    let v = a.run(&ctx, "let b = 10; b").await;
    assert_eq!(main_text(&v), "10");
    let v = a
        .run(&ctx, "({...a, list: [1, 'two'], nested: {ok: true}})")
        .await;
    assert_eq!(
        v["results"][0]["json"],
        json!({"x": 1, "list": [1, "two"], "nested": {"ok": true}})
    );
    let v = a.run(&ctx, "console.log('hi', {k: 1}); console.error('oops'); [process.cwd(), process.env.BOTHY_JS]").await;
    assert_eq!(v["stdout"], "hi { k: 1 }\n");
    assert_eq!(v["stderr"], "oops\n");
    assert_eq!(v["results"][0]["json"], json!([a.cwd(), "yes"]));
    let v = a.run(&ctx, "await new Promise(r => setTimeout(r, 20)); const fs = require('fs'); typeof fs.readFileSync").await;
    assert_eq!(main_text(&v), "'function'");
    let v = a.run(&ctx, "null.boom").await;
    assert_eq!(v["error"]["name"], "TypeError");
    assert!(v["error"]["traceback"]
        .as_str()
        .unwrap()
        .contains("TypeError"));
    assert!(
        v["results"].as_array().unwrap().is_empty(),
        "an error gives no result: {v}"
    );
    // Streaming: console output arrives before a pending await ends.
    let evs = a.stream(&ctx, json!({"code": "console.log('now'); await new Promise(r => setTimeout(r, 1200)); 'later'"})).await;
    let out = evs.iter().find(|e| e.1 == "stdout").unwrap();
    let end = evs.last().unwrap();
    assert!(out.0 < end.0 - 0.8, "{evs:?}");
}

#[tokio::test]
async fn javascript_timeouts_interrupt_sync_loops_and_awaits() {
    need!("node");
    let a = agent();
    let ctx = a.create("js", json!({})).await;
    a.run(&ctx, "var kept = 'still here'").await;
    let t = Instant::now();
    let v = a
        .run_with(&ctx, json!({"code": "while (true) {}", "timeout_ms": 300}))
        .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    let v = a
        .run_with(
            &ctx,
            json!({"code": "await new Promise(() => {})", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    let v = a.run(&ctx, "kept").await;
    assert_eq!(main_text(&v), "'still here'");
    // A busy loop after an await cannot be interrupted: the context is restarted.
    let v = a
        .run_with(
            &ctx,
            json!({"code": "await null; while (true) {}", "timeout_ms": 200}),
        )
        .await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["restarted"], true, "{v}");
    let v = a.run(&ctx, "typeof kept").await;
    assert_eq!(main_text(&v), "'undefined'");
}

#[tokio::test]
async fn typescript_types_interfaces_and_generics() {
    need!("node");
    let a = agent();
    let ctx = a.create("typescript", json!({})).await;
    let code = "interface Point { x: number; y: number }\n\
                type Pair<T> = [T, T];\n\
                function first<T>(xs: T[]): T { return xs[0]; }\n\
                const pts: Point[] = [{ x: 1, y: 2 }, { x: 3, y: 4 }];\n\
                enum Color { Red, Green }\n\
                const pair: Pair<number> = [first<Point>(pts).x, Color.Green];\n\
                pair";
    let v = a.run(&ctx, code).await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["results"][0]["json"], json!([1, 1]));
    let v = a.run(&ctx, "class Box<T> { constructor(public value: T) {} }\nconst b = new Box<string>('v');\nawait Promise.resolve(b.value + pts.length)").await;
    assert_eq!(main_text(&v), "'v2'", "{v}");
    let v = a.run(&ctx, "let x: = 1").await;
    assert_eq!(v["error"]["name"], "SyntaxError", "{v}");
    assert!(
        v["error"]["traceback"].as_str().unwrap().contains("line 1"),
        "{v}"
    );
}

#[tokio::test]
async fn default_contexts_and_bad_requests() {
    need!("python3");
    let a = agent();
    let (status, v) = a
        .json("POST", "/v1/run", Some(json!({"code": "z = 3\nz * 2"})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["context"], "default-python");
    assert_eq!(main_text(&v), "6");
    let (_, v) = a
        .json(
            "POST",
            "/v1/run",
            Some(json!({"code": "z", "language": "python"})),
        )
        .await;
    assert_eq!(main_text(&v), "3");
    let (status, v) = a
        .json(
            "POST",
            "/v1/run",
            Some(json!({"code": "1", "language": "cobol"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/v1/contexts",
            Some(json!({"language": "python", "cwd": "/nonexistent/dir"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/v1/contexts",
            Some(json!({"language": "python", "env": {"A=B": "x"}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/v1/run",
            Some(json!({"code": "1", "context": "default-python", "language": "javascript"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn a_missing_runtime_names_what_to_install() {
    let env = [("PATH".to_string(), "/nonexistent".to_string())].into();
    let a = agent_with(env);
    let (status, v) = a
        .json(
            "POST",
            "/v1/contexts",
            Some(json!({"language": "python", "cwd": a.cwd()})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], "runtime_not_found");
    assert!(v["message"].as_str().unwrap().contains("python3"), "{v}");
    let (status, v) = a
        .json(
            "POST",
            "/v1/run",
            Some(json!({"code": "1", "language": "ts"})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("node"), "{v}");
}
