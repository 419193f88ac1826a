//! Typed calls for terminals, and attaching to one over WebSocket.

use bothy_api::terminal::{
    CreateTerminal, KillTerminal, Protocol, Resize, TerminalInfo, TerminalList,
};
use bothy_api::ApiError;
use http::Method;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::WebSocketStream;

use crate::{q, Client, ClientError};

/// An attached terminal's WebSocket.
pub type TerminalSocket = WebSocketStream<crate::conn::AnyStream>;

/// Where to attach from and how (see `bothy_api::terminal::ws`).
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub protocol: Protocol,
    /// Resume after this cursor (`None`: replay the whole buffer).
    pub cursor: Option<String>,
    /// Resize on attach.
    pub size: Option<(u16, u16)>,
}

impl Client {
    pub async fn create_terminal(
        &self,
        sandbox: &str,
        req: &CreateTerminal,
    ) -> Result<TerminalInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/terminals"),
            Some(req),
        )
        .await
    }

    pub async fn list_terminals(&self, sandbox: &str) -> Result<TerminalList, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{sandbox}/terminals"),
            None::<&()>,
        )
        .await
    }

    pub async fn get_terminal(&self, sandbox: &str, id: &str) -> Result<TerminalInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{sandbox}/terminals/{}", q(id)),
            None::<&()>,
        )
        .await
    }

    pub async fn resize_terminal(
        &self,
        sandbox: &str,
        id: &str,
        size: Resize,
    ) -> Result<TerminalInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/terminals/{}/resize", q(id)),
            Some(&size),
        )
        .await
    }

    pub async fn kill_terminal(
        &self,
        sandbox: &str,
        id: &str,
        req: &KillTerminal,
    ) -> Result<TerminalInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/terminals/{}/kill", q(id)),
            Some(req),
        )
        .await
    }

    pub async fn delete_terminal(&self, sandbox: &str, id: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{sandbox}/terminals/{}", q(id)),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// Opens the terminal's WebSocket. A refusal (unknown terminal, bad cursor, sleeping
    /// sandbox that cannot wake) comes back as the API error the server sent.
    pub async fn attach_terminal(
        &self,
        sandbox: &str,
        id: &str,
        opts: &AttachOptions,
    ) -> Result<TerminalSocket, ClientError> {
        let mut query = vec![format!(
            "protocol={}",
            match opts.protocol {
                Protocol::Stable => "stable",
                Protocol::Cursor => "cursor",
            }
        )];
        if let Some(c) = &opts.cursor {
            query.push(format!("cursor={}", q(c)));
        }
        if let Some((cols, rows)) = opts.size {
            query.push(format!("cols={cols}&rows={rows}"));
        }
        let path = format!(
            "/v1/sandboxes/{sandbox}/terminals/{}/ws?{}",
            q(id),
            query.join("&")
        );
        let stream = self.endpoint().connect_raw().await?;
        let uri = format!("ws://{}{}", self.endpoint().host_header(), path);
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(uri.as_str())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        if let Some(t) = self.token() {
            req.headers_mut().insert(
                http::header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::Usage("token is not a valid header value".into()))?,
            );
        }
        match tokio_tungstenite::client_async(req, stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                Err(match serde_json::from_slice::<ApiError>(body) {
                    Ok(e) => ClientError::Api(e),
                    Err(_) => ClientError::WebSocket(format!(
                        "the server refused the upgrade: {}",
                        resp.status()
                    )),
                })
            }
            Err(e) => Err(ClientError::WebSocket(e.to_string())),
        }
    }
}
