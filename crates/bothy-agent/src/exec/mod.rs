//! Running commands: `POST /v1/exec`.
//!
//! A command is `argv` run without a shell, or `shell` run by `/bin/sh -c`. It starts on a
//! cleared environment made of the base environment, the sandbox's and the request's own
//! (later layers win), in `cwd` (relative paths are under `/workspace`; it must exist and be a
//! directory; without one, `/workspace`, or `/` in a root without it), as a session leader and child subreaper ([`crate::proctree::isolate`]) through
//! [`crate::reaper::spawn`]. Its stdin is the request's bytes, then closed (or `/dev/null`).
//!
//! The reply is one [`bothy_api::exec::ExecResult`] JSON document, or with
//! `Accept: text/event-stream` a stream of SSE events (`start`, `stdout`, `stderr`, `exit`,
//! `error`; see [`output::events`]). Output is byte-exact: UTF-8 as a string, anything else as
//! base64. A JSON reply keeps at most [`output::JSON_CAPTURE_LIMIT`] (64 MiB) of each stream and
//! flags the rest as truncated; a stream has no cap.
//!
//! **Ending.** `timeout_ms` kills the whole process tree with `SIGKILL` and the reply says
//! `timed_out: true`. A client that goes away (the response or the stream is dropped) kills the
//! tree too. When the main process exits, the reply ends once both pipes reach end of file, or
//! after they stay silent for [`run::DRAIN_SILENCE`] (30 ms), or at the latest
//! [`run::DRAIN_MAX`] (500 ms) after the exit: a background process the command left behind
//! (`server &`) keeps running and may hold the pipes open, but it cannot hold the reply open.
//! Its later output is dropped.

pub mod output;
pub mod run;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bothy_api::exec::ExecRequest;

use crate::error::{AgentError, Json};
use crate::server::AgentState;
use crate::sse;

pub use run::{Event, Running, Spec};

/// The exec routes.
pub fn routes(state: &AgentState) -> Router {
    Router::new()
        .route("/v1/exec", post(exec))
        .with_state(state.clone())
}

async fn exec(
    State(state): State<AgentState>,
    headers: http::HeaderMap,
    Json(req): Json<ExecRequest>,
) -> Result<Response, AgentError> {
    // A request naming a session is the sessions module's: it runs the command in a fresh
    // shell that restores and then records the session's state.
    let running = match &req.session {
        Some(id) => crate::sessions::exec::start(&state, id, &req).await?,
        None => Running::start(Spec::from_request(&req, &state.sandbox_env())?)?,
    };
    if sse::wants_sse(&headers) {
        Ok(sse::response(output::events(running)))
    } else {
        let result = output::collect(running, output::JSON_CAPTURE_LIMIT).await;
        Ok(axum::Json(result).into_response())
    }
}
