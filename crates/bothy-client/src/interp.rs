//! Typed calls for code interpreter contexts.

use bothy_api::interp::{Context, CreateContextRequest, RunRequest, RunResult};
use http::Method;

use crate::{sse::SseStream, Client, ClientError};

impl Client {
    pub async fn create_context(
        &self,
        name: &str,
        req: &CreateContextRequest,
    ) -> Result<Context, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/contexts"),
            Some(req),
        )
        .await
    }

    pub async fn list_contexts(&self, name: &str) -> Result<Vec<Context>, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/contexts"),
            None::<&()>,
        )
        .await
    }

    pub async fn restart_context(&self, name: &str, id: &str) -> Result<Context, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/contexts/{id}/restart"),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_context(&self, name: &str, id: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{name}/contexts/{id}"),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// Runs code (in `req.context`, or the default context of `req.language`) and waits for
    /// the whole result.
    pub async fn run_code(&self, name: &str, req: &RunRequest) -> Result<RunResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/run"),
            Some(req),
        )
        .await
    }

    /// Same, as a stream of events (`start`, `stdout`, `stderr`, `result`, `error`, `end`).
    pub async fn run_code_stream(
        &self,
        name: &str,
        req: &RunRequest,
    ) -> Result<SseStream, ClientError> {
        self.sse(
            Method::POST,
            &format!("/v1/sandboxes/{name}/run"),
            Some(req),
        )
        .await
    }
}
