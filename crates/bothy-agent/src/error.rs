//! Errors of agent handlers, as API errors.

use axum::response::{IntoResponse, Response};
use bothy_api::{ApiError, ErrorCode};

/// An error a handler returns; rendered as the API's `{code, message}` JSON.
#[derive(Debug)]
pub struct AgentError(pub ApiError);

impl AgentError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Maps an I/O error on `path` to the matching API code.
    pub fn io(path: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let (code, what) = match e.kind() {
            K::NotFound => (ErrorCode::FileNotFound, "no such file or directory"),
            K::PermissionDenied => (ErrorCode::PermissionDenied, "permission denied"),
            K::AlreadyExists => (ErrorCode::AlreadyExists, "already exists"),
            K::NotADirectory => (ErrorCode::NotADirectory, "not a directory"),
            K::IsADirectory => (ErrorCode::IsADirectory, "is a directory"),
            K::DirectoryNotEmpty => (ErrorCode::DirectoryNotEmpty, "directory not empty"),
            K::InvalidInput | K::InvalidFilename => (ErrorCode::InvalidPath, "invalid path"),
            _ => match e.raw_os_error() {
                Some(libc::ELOOP) => (ErrorCode::InvalidPath, "too many levels of symbolic links"),
                Some(libc::ENOSPC) => (ErrorCode::Internal, "no space left on device"),
                Some(libc::EROFS) => (ErrorCode::PermissionDenied, "read-only file system"),
                _ => (ErrorCode::Internal, "i/o error"),
            },
        };
        if code == ErrorCode::Internal {
            Self::new(code, format!("{path}: {what}: {e}"))
        } else {
            Self::new(code, format!("{path}: {what}"))
        }
    }
}

impl From<ApiError> for AgentError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// The JSON response for an API error.
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

/// A JSON body extractor whose rejections use the API's error shape.
pub struct Json<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AgentError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    AgentError::new(ErrorCode::BodyTooLarge, "request body is too large")
                } else {
                    AgentError::invalid(format!("could not read the request body: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            AgentError::new(
                ErrorCode::MalformedJson,
                format!("malformed JSON body: {e}"),
            )
        })
    }
}

/// A query-string extractor whose rejections use the API's error shape.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AgentError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| AgentError::invalid(format!("invalid query string: {}", e.body_text())))
    }
}
