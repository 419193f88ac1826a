//! The one error shape of the API: `{"code": "...", "message": "..."}`.

use serde::{Deserialize, Serialize};

/// Stable machine codes. Clients match on these; the message is for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidName,
    InvalidPath,
    PathEscape,
    InvalidRequest,
    MalformedJson,
    BodyTooLarge,
    Unauthorized,
    NotFound,
    SandboxNotFound,
    ImageNotFound,
    FileNotFound,
    NotADirectory,
    IsADirectory,
    AlreadyExists,
    DirectoryNotEmpty,
    PermissionDenied,
    Conflict,
    MethodNotAllowed,
    UnsupportedMediaType,
    Timeout,
    ProcessExited,
    SandboxUnavailable,
    /// A language runtime the request needs (python3, node) is not installed in the sandbox.
    RuntimeNotFound,
    /// The sandbox is at a resource limit (processes, memory); retry later.
    ResourceExhausted,
    /// No snapshot with that id or name.
    SnapshotNotFound,
    /// No backup with that id (or it expired).
    BackupNotFound,
    /// No secret with that name.
    SecretNotFound,
    /// A blob, layer or manifest failed its checksum or is truncated; nothing was applied.
    CorruptBlob,
    /// The blob store (local directory or S3-compatible server) could not be reached or
    /// refused the request.
    BlobStoreUnavailable,
    /// The egress policy of the sandbox blocks this destination.
    EgressDenied,
    /// `proxy` networking cannot be used on this host (nftables missing); `none` still works.
    NetworkUnavailable,
    /// A remote (git host) refused the credentials, or asked for some and none were given.
    AuthenticationFailed,
    /// The remote says the repository does not exist (or is not visible without credentials).
    RepositoryNotFound,
    /// `git` failed for another reason; the message has its last output.
    GitFailed,
    BadGateway,
    Internal,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidName | InvalidPath | PathEscape | InvalidRequest | MalformedJson
            | NotADirectory | IsADirectory | DirectoryNotEmpty => 400,
            Unauthorized => 401,
            PermissionDenied => 403,
            NotFound | SandboxNotFound | ImageNotFound | FileNotFound | SnapshotNotFound
            | BackupNotFound | SecretNotFound => 404,
            EgressDenied | AuthenticationFailed => 403,
            RepositoryNotFound => 404,
            GitFailed => 422,
            NetworkUnavailable => 503,
            CorruptBlob => 422,
            BlobStoreUnavailable => 502,
            MethodNotAllowed => 405,
            AlreadyExists | Conflict | ProcessExited => 409,
            Timeout => 408,
            RuntimeNotFound => 422,
            BodyTooLarge => 413,
            UnsupportedMediaType => 415,
            BadGateway => 502,
            SandboxUnavailable | ResourceExhausted => 503,
            Internal | Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidName => "invalid_name",
            InvalidPath => "invalid_path",
            PathEscape => "path_escape",
            InvalidRequest => "invalid_request",
            MalformedJson => "malformed_json",
            BodyTooLarge => "body_too_large",
            Unauthorized => "unauthorized",
            NotFound => "not_found",
            SandboxNotFound => "sandbox_not_found",
            ImageNotFound => "image_not_found",
            FileNotFound => "file_not_found",
            NotADirectory => "not_a_directory",
            IsADirectory => "is_a_directory",
            AlreadyExists => "already_exists",
            DirectoryNotEmpty => "directory_not_empty",
            PermissionDenied => "permission_denied",
            Conflict => "conflict",
            MethodNotAllowed => "method_not_allowed",
            UnsupportedMediaType => "unsupported_media_type",
            Timeout => "timeout",
            ProcessExited => "process_exited",
            SandboxUnavailable => "sandbox_unavailable",
            RuntimeNotFound => "runtime_not_found",
            ResourceExhausted => "resource_exhausted",
            SnapshotNotFound => "snapshot_not_found",
            BackupNotFound => "backup_not_found",
            SecretNotFound => "secret_not_found",
            CorruptBlob => "corrupt_blob",
            BlobStoreUnavailable => "blob_store_unavailable",
            EgressDenied => "egress_denied",
            NetworkUnavailable => "network_unavailable",
            AuthenticationFailed => "authentication_failed",
            RepositoryNotFound => "repository_not_found",
            GitFailed => "git_failed",
            BadGateway => "bad_gateway",
            Internal => "internal",
            Unknown => "unknown",
        }
    }
}

/// An API error as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"code":"internal","message":"error could not be encoded"}"#.to_string()
        })
    }
}

impl From<crate::NameError> for ApiError {
    fn from(e: crate::NameError) -> Self {
        ApiError::new(ErrorCode::InvalidName, format!("invalid sandbox name: {e}"))
    }
}

/// An error and its sources, as one line: `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape_is_flat() {
        let e = ApiError::new(ErrorCode::SandboxNotFound, "no sandbox named x");
        assert_eq!(
            e.to_json(),
            r#"{"code":"sandbox_not_found","message":"no sandbox named x"}"#
        );
        assert_eq!(e.status(), 404);
        assert_eq!(ErrorCode::PathEscape.as_str(), "path_escape");
    }
}
