//! Client of the bothy API.
//!
//! Talks to a daemon over its unix socket (`unix:/var/lib/bothy/bothy.sock`) or TCP
//! (`http://host:port`, with a bearer token). Used by the CLI, the tests and the benchmarks.
//! Generic calls ([`Client::json`], [`Client::send`], [`Client::sse`], [`Client::websocket`]) plus
//! typed helpers per area ([`sandboxes`]).

pub mod backups;
pub mod blobs;
mod conn;
pub mod egress;
mod error;
pub mod interp;
pub mod network;
pub mod processes;
pub mod sandboxes;
pub mod snapshots;
pub mod sse;
pub mod terminals;
pub mod watch;

pub use conn::Endpoint;
pub use error::ClientError;
/// Re-exported so callers need no direct `http` dependency.
pub use http;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Request body type: anything that streams bytes.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Turns bytes into a [`Body`].
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty [`Body`].
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Default daemon URL: the unix socket of the default data directory.
pub const DEFAULT_URL: &str = "unix:/var/lib/bothy/bothy.sock";

#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
}

impl Client {
    /// `url` is `unix:PATH` or `http://HOST:PORT`; `token` is sent as a bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        Ok(Self {
            endpoint: Endpoint::parse(url)?,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// From `BOTHY_URL` / `BOTHY_TOKEN`, defaulting to [`DEFAULT_URL`].
    pub fn from_env() -> Result<Self, ClientError> {
        let url = std::env::var("BOTHY_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
        Self::new(&url, std::env::var("BOTHY_TOKEN").ok())
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request builder with the host and auth headers set.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.endpoint.host_header());
        if let Some(t) = &self.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }

    /// Sends a request on a fresh connection and returns the response head with a streaming
    /// body. Non-2xx statuses are returned as is (see [`Client::check`]).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        let mut sender = self.endpoint.connect().await?;
        sender.send_request(req).await.map_err(ClientError::Http)
    }

    /// Turns a non-2xx response into [`ClientError::Api`].
    pub async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        Err(error::from_response(resp).await)
    }

    /// Sends JSON (or nothing) and decodes a JSON reply. A 204 decodes as `null`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let bytes = self.json_bytes(method, path, body).await?;
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Like [`Client::json`] but returns the raw reply bytes.
    pub async fn json_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Bytes, ClientError> {
        let req = self.json_request(method, path, body)?;
        collect_checked(self.send(req).await?).await
    }

    /// A request with an optional JSON body.
    fn json_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Request<Body>, ClientError> {
        let mut b = self.request(method, path);
        let body = match body {
            Some(v) => {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
                full(serde_json::to_vec(v).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => empty(),
        };
        b.body(body).map_err(|e| ClientError::Usage(e.to_string()))
    }

    /// Opens one connection that is kept alive for sequential requests ([`Connection`]).
    /// The other methods open a fresh connection per request, which is what the CLI wants.
    pub async fn connection(&self) -> Result<Connection, ClientError> {
        Ok(Connection {
            client: self.clone(),
            sender: self.endpoint.connect().await?,
        })
    }

    /// Opens an SSE stream (GET, or POST with a JSON body).
    pub async fn sse(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<sse::SseStream, ClientError> {
        let mut b = self
            .request(method, path)
            .header(http::header::ACCEPT, "text/event-stream");
        let body = match body {
            Some(v) => {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
                full(serde_json::to_vec(v).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => empty(),
        };
        let req = b
            .body(body)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let resp = Self::check(self.send(req).await?).await?;
        Ok(sse::SseStream::new(resp.into_body()))
    }

    /// Opens a WebSocket at `path` (e.g. a terminal).
    pub async fn websocket(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<conn::AnyStream>, ClientError> {
        let stream = self.endpoint.connect_raw().await?;
        let uri = format!("ws://{}{}", self.endpoint.host_header(), path);
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                uri.as_str(),
            )
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        if let Some(t) = &self.token {
            req.headers_mut().insert(
                http::header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::Usage("token is not a valid header value".into()))?,
            );
        }
        let (ws, _resp) = tokio_tungstenite::client_async(req, stream)
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        Ok(ws)
    }
}

/// Reads a whole reply, turning a non-2xx status into [`ClientError::Api`].
async fn collect_checked(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(Client::check(resp)
        .await?
        .into_body()
        .collect()
        .await
        .map_err(ClientError::Http)?
        .to_bytes())
}

/// One HTTP/1.1 connection to the daemon reused for sequential requests (keep-alive), for
/// callers that make many small requests (benchmarks, loops). Not pooled: one request at a
/// time, and a reply body must be read to its end before the next request is sent.
pub struct Connection {
    client: Client,
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl Connection {
    /// Sends a request (build it with [`Client::request`]) on this connection.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        self.sender.ready().await.map_err(ClientError::Http)?;
        self.sender
            .send_request(req)
            .await
            .map_err(ClientError::Http)
    }

    /// [`Client::json`] on this connection.
    pub async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let req = self.client.json_request(method, path, body)?;
        let bytes = collect_checked(self.send(req).await?).await?;
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Percent-encodes a value for a query string.
pub fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
