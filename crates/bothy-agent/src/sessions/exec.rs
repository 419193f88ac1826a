//! An exec in a session: the exec module's command runner, with the session's shell around
//! the command and its state recorded at the exit.

use std::time::Duration;

use bothy_api::exec::ExecRequest;

use crate::error::AgentError;
use crate::exec::{Running, Spec};
use crate::reaper::ExitInfo;
use crate::server::AgentState;

/// Starts `req` in session `id`, once the session's previous command has finished. The
/// session stays busy until the command's exit is handed out (or the command is dropped).
pub async fn start(state: &AgentState, id: &str, req: &ExecRequest) -> Result<Running, AgentError> {
    req.validate()?;
    if let Some(argv) = &req.argv {
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(AgentError::invalid("argv contains a NUL byte"));
        }
    }
    if req.shell.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(AgentError::invalid("shell contains a NUL byte"));
    }
    let stdin = req.stdin_bytes()?;
    let run = state
        .sessions
        .prepare(id, req, &state.sandbox_env())
        .await?;
    let spec = Spec {
        argv: run.argv.clone(),
        env: run.env.clone(),
        cwd: run.cwd.clone(),
        stdin,
        timeout: req.timeout_ms.map(Duration::from_millis),
    };
    let mut running = Running::start(spec)?;
    running.on_exit(move |exit| {
        run.finish(&ExitInfo {
            code: exit.exit_code,
            signal: exit.signal,
        })
    });
    Ok(running)
}
