//! The daemon's API error type and JSON extractor.

use axum::response::{IntoResponse, Response};
use bothy_api::{ApiError, ErrorCode, NameError, SandboxName};

/// An error a handler returns, rendered as `{code, message}` with the code's status. Internal
/// errors are logged here, where they are handled, and reach the client without details.
#[derive(Debug)]
pub struct DaemonError(pub ApiError);

impl DaemonError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(name: &SandboxName) -> Self {
        Self::new(
            ErrorCode::SandboxNotFound,
            format!("no sandbox named {name:?}; create it with PUT /v1/sandboxes/{name}"),
        )
    }

    /// An unexpected failure: logged with its cause chain, reported without it.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        let mut msg = format!("{context}: {err}");
        let mut src = err.source();
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        tracing::error!("{msg}");
        Self::new(
            ErrorCode::Internal,
            format!("{context} failed; see the daemon log"),
        )
    }
}

impl From<ApiError> for DaemonError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<NameError> for DaemonError {
    fn from(e: NameError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

pub fn error_response(e: &ApiError) -> Response {
    let status =
        http::StatusCode::from_u16(e.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response()
}

pub use bothy_api::error::error_chain;

/// Parses a sandbox name from a path segment.
pub fn parse_name(s: &str) -> Result<SandboxName, DaemonError> {
    SandboxName::new(s).map_err(DaemonError::from)
}

/// JSON body extractor with API-shaped rejections. An empty body decodes as `T::default()`.
pub struct JsonOrDefault<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonOrDefault<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = DaemonError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Self(T::default()));
        }
        decode(&bytes).map(Self)
    }
}

/// JSON body extractor with API-shaped rejections; the body is required.
pub struct Json<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = DaemonError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        decode(&bytes).map(Self)
    }
}

async fn read_body<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> Result<bytes::Bytes, DaemonError> {
    use axum::extract::FromRequest;
    bytes::Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            DaemonError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    bothy_api::MAX_JSON_BODY
                ),
            )
        } else {
            DaemonError::invalid(format!("could not read the request body: {e}"))
        }
    })
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DaemonError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DaemonError::new(
            ErrorCode::MalformedJson,
            format!("malformed JSON body: {e}"),
        )
    })
}

/// A failed step of daemon startup, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct StartupError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StartupError {
    pub fn new(context: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            context: context.to_string(),
            source: Box::new(source),
        }
    }
}
