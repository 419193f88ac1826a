//! Client errors.

use bothy_api::{ApiError, ErrorCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the bothy daemon at {endpoint} (is `bothy serve` running? set BOTHY_URL to point elsewhere)")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Api(ApiError),
    #[error("http error talking to the daemon")]
    Http(#[source] hyper::Error),
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("could not decode the daemon's reply: {0}")]
    Decode(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The API error code, if the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

pub(crate) async fn from_response(resp: http::Response<Incoming>) -> ClientError {
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return ClientError::Http(e),
    };
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(e) => ClientError::Api(e),
        Err(_) => ClientError::Api(ApiError::new(
            ErrorCode::Unknown,
            format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            ),
        )),
    }
}
