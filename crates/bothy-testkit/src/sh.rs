//! Shell lines run in a sandbox through the public API, the way most end-to-end tests probe a
//! sandbox from inside.

use std::time::Duration;

use bothy_api::exec::{ExecRequest, ExecResult};
use bothy_client::Client;

/// How long a test's shell line may run before the agent kills it.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The same for a probe (a line expected to fail, which may hang where isolation holds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

async fn run(c: &Client, name: &str, line: String, timeout: Duration) -> ExecResult {
    c.exec(
        name,
        &ExecRequest {
            shell: Some(line),
            timeout_ms: Some(timeout.as_millis() as u64),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("exec in {name}: {e}"))
}

/// Runs `line` with `/bin/sh -c` in sandbox `name`; panics (with its output) unless it exits 0.
/// Returns its stdout.
pub async fn sh_ok(c: &Client, name: &str, line: &str) -> String {
    let r = run(c, name, line.to_string(), TIMEOUT).await;
    let out = String::from_utf8_lossy(&r.stdout_bytes()).into_owned();
    assert_eq!(
        r.exit_code,
        Some(0),
        "in {name}: {line}\nstdout: {out}\nstderr: {}",
        r.stderr
    );
    out
}

/// Runs `line` with its stderr merged into stdout; returns the exit code (-1 when it was
/// killed, after 30 s at most) and the output. For probes that are expected to fail.
pub async fn sh_status(c: &Client, name: &str, line: &str) -> (i32, String) {
    let r = run(c, name, format!("{line} 2>&1"), PROBE_TIMEOUT).await;
    (
        r.exit_code.unwrap_or(-1),
        String::from_utf8_lossy(&r.stdout_bytes()).into_owned(),
    )
}

/// Runs `line` and asserts that it fails; returns its output (stdout and stderr).
pub async fn sh_fails(c: &Client, name: &str, line: &str) -> String {
    let (code, out) = sh_status(c, name, line).await;
    assert_ne!(code, 0, "`{line}` in {name} should have failed, got: {out}");
    out
}
