//! Errors of blob stores and layer archives, and how they map onto the API's error codes.

use bothy_api::{ApiError, ErrorCode};

/// What went wrong talking to a blob store or handling an archive.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object does not exist in the store.
    #[error("blob not found: {0}")]
    NotFound(String),
    /// The store could not be reached, refused the request or failed.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// A blob, chunk, archive or manifest failed its checksum, is truncated or malformed.
    #[error("corrupt blob: {0}")]
    Corrupt(String),
    /// The request itself is wrong (a bad key, a bad store URL).
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

impl BlobError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(message.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Unavailable(_) => ErrorCode::BlobStoreUnavailable,
            Self::Corrupt(_) => ErrorCode::CorruptBlob,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Io { .. } => ErrorCode::Internal,
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let message = match &e {
            BlobError::Io { context, source } => format!("{context}: {source}"),
            other => other.to_string(),
        };
        ApiError::new(e.code(), message)
    }
}

/// Adds a short context to local I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BlobError::io(context(), e))
    }
}
