//! Typed calls for background processes, sessions and preview ports.

use bothy_api::preview::{ExposeRequest, PortInfo, PortList};
use bothy_api::process::{
    KillRequest, ProcessInfo, ProcessList, ProcessLogs, ProcessStart, StdinWrite, WaitExit,
    WaitLog, WaitLogResult, WaitPort, WaitPortResult,
};
use bothy_api::session::{SessionCreate, SessionInfo, SessionList};
use http::Method;

use crate::{q, sse::SseStream, Client, ClientError};

impl Client {
    /// POSTs `body` to `/v1/sandboxes/{name}/processes/{id}/{action}` and decodes the answer.
    async fn process_post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        id: &str,
        action: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/processes/{}/{action}", q(id)),
            Some(body),
        )
        .await
    }

    pub async fn start_process(
        &self,
        name: &str,
        req: &ProcessStart,
    ) -> Result<ProcessInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/processes"),
            Some(req),
        )
        .await
    }

    pub async fn list_processes(&self, name: &str) -> Result<ProcessList, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/processes"),
            None::<&()>,
        )
        .await
    }

    pub async fn get_process(&self, name: &str, id: &str) -> Result<ProcessInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/processes/{}", q(id)),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_process(&self, name: &str, id: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{name}/processes/{}", q(id)),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// Sends a signal (`TERM` when `None`) to the process's whole tree.
    pub async fn kill_process(
        &self,
        name: &str,
        id: &str,
        signal: Option<&str>,
    ) -> Result<ProcessInfo, ClientError> {
        let body = KillRequest {
            signal: signal.map(str::to_string),
        };
        self.process_post(name, id, "kill", &body).await
    }

    pub async fn write_stdin(
        &self,
        name: &str,
        id: &str,
        req: &StdinWrite,
    ) -> Result<(), ClientError> {
        self.json_bytes(
            Method::POST,
            &format!("/v1/sandboxes/{name}/processes/{}/stdin", q(id)),
            Some(req),
        )
        .await
        .map(|_| ())
    }

    /// The output kept from cursor `since` on.
    pub async fn process_logs(
        &self,
        name: &str,
        id: &str,
        since: u64,
    ) -> Result<ProcessLogs, ClientError> {
        self.json(
            Method::GET,
            &format!(
                "/v1/sandboxes/{name}/processes/{}/logs?since={since}",
                q(id)
            ),
            None::<&()>,
        )
        .await
    }

    /// The output as SSE from cursor `since`, following until the process ends.
    pub async fn stream_logs(
        &self,
        name: &str,
        id: &str,
        since: u64,
    ) -> Result<SseStream, ClientError> {
        self.sse(
            Method::GET,
            &format!(
                "/v1/sandboxes/{name}/processes/{}/logs?since={since}",
                q(id)
            ),
            None::<&()>,
        )
        .await
    }

    pub async fn wait_log(
        &self,
        name: &str,
        id: &str,
        req: &WaitLog,
    ) -> Result<WaitLogResult, ClientError> {
        self.process_post(name, id, "wait/log", req).await
    }

    pub async fn wait_port(
        &self,
        name: &str,
        id: &str,
        req: &WaitPort,
    ) -> Result<WaitPortResult, ClientError> {
        self.process_post(name, id, "wait/port", req).await
    }

    pub async fn wait_exit(
        &self,
        name: &str,
        id: &str,
        req: &WaitExit,
    ) -> Result<ProcessInfo, ClientError> {
        self.process_post(name, id, "wait/exit", req).await
    }

    pub async fn create_session(
        &self,
        name: &str,
        req: &SessionCreate,
    ) -> Result<SessionInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/sessions"),
            Some(req),
        )
        .await
    }

    pub async fn list_sessions(&self, name: &str) -> Result<SessionList, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/sessions"),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_session(&self, name: &str, id: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{name}/sessions/{}", q(id)),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// Exposes a port; returns its preview URL.
    pub async fn expose_port(
        &self,
        name: &str,
        req: &ExposeRequest,
    ) -> Result<PortInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/ports"),
            Some(req),
        )
        .await
    }

    pub async fn list_ports(&self, name: &str) -> Result<PortList, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/ports"),
            None::<&()>,
        )
        .await
    }

    pub async fn unexpose_port(&self, name: &str, port: u16) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{name}/ports/{port}"),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }
}
