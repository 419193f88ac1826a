//! The web console in a real browser: headless Chromium driven by Playwright
//! (`ui/tests/console.mjs`) against a real daemon on TCP with a token. Screenshots are kept in
//! `test-artifacts/console/`.
//!
//! Needs `/usr/bin/chromium` (Debian's `chromium`) and `npm ci` run in `ui/` (for
//! `playwright-core`); `.ci/install-deps.d/term.sh` provides both.

use std::path::PathBuf;
use std::process::Command;

use bothy_testkit::{Options, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        bothy_testkit::skip(&format!(
            "needs Chromium at {chromium} (apt-get install chromium)"
        ));
        return;
    }
    if !root.join("ui/node_modules/playwright-core").is_dir() {
        bothy_testkit::skip("needs playwright-core (run `npm ci` in ui/)");
        return;
    }
    let Some(d) = TestDaemon::start_with(
        env!("CARGO_BIN_EXE_bothy"),
        Options {
            tcp_token: Some("console-test-token".into()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let artifacts = root.join("test-artifacts/console");
    let _ = std::fs::remove_dir_all(&artifacts);
    let url = format!("http://{}", d.tcp_addr.clone().expect("tcp listener"));
    let unix_socket = d.data_dir().join("bothy.sock");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("ui/tests/console.mjs")
            .current_dir(&root)
            .env("BOTHY_CONSOLE_URL", url)
            .env("BOTHY_TOKEN", "console-test-token")
            .env("BOTHY_ARTIFACTS", &artifacts)
            .env("CHROMIUM", chromium)
            .env("BOTHY_UNIX_SOCKET", unix_socket)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "console test failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    assert!(stdout.contains("console test: ok"));
    assert!(!stdout.contains("SKIPPED the Cloudflare addon"));
}
