//! File contents in and out, streamed: nothing is held in memory whole, whatever the size.

use std::os::unix::fs::PermissionsExt as _;

use axum::body::Body;
use axum::response::Response;
use bothy_api::files::WriteResult;
use bothy_api::ErrorCode;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::entry::parent;
use crate::error::AgentError;

const CHUNK: usize = 256 * 1024;

/// Streams the file at `path`. A regular file is sent with its `Content-Length` (and exactly
/// that many bytes); anything else (a pipe, a `/proc` file reporting size 0) chunked to its end.
pub async fn read(path: &str) -> Result<Response, AgentError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| AgentError::io(path, &e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| AgentError::io(path, &e))?;
    if meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::IsADirectory,
            format!("{path}: is a directory; list it with files/list"),
        ));
    }
    let builder =
        Response::builder().header(http::header::CONTENT_TYPE, "application/octet-stream");
    let len = meta.len();
    let response = if meta.is_file() && len > 0 {
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), CHUNK);
        builder
            .header(http::header::CONTENT_LENGTH, len)
            .body(Body::from_stream(stream))
    } else {
        let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
        builder.body(Body::from_stream(stream))
    };
    response.map_err(|e| AgentError::internal(format!("building the response: {e}")))
}

/// Writes `body` to `path` atomically: into a temporary file next to it, then renamed over it,
/// so a reader never sees half a file and a failed upload leaves the old file intact. Creates
/// missing parent directories. The file gets exactly `mode` (the umask does not apply). A
/// symlink at `path` is replaced, not written through.
pub async fn write(path: &str, mode: u32, body: Body) -> Result<WriteResult, AgentError> {
    if path == "/" {
        return Err(AgentError::new(
            ErrorCode::IsADirectory,
            "/: is a directory",
        ));
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            return Err(AgentError::new(
                ErrorCode::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
    }
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, &e))?;
    let base = path.rsplit('/').next().unwrap_or("file");
    let mut tmp = TempFile(format!(
        "{dir}/.{base}.bothy-{:016x}.tmp",
        rand::random::<u64>()
    ));
    let written = write_tmp(&tmp.0, path, mode, body).await?;
    std::fs::rename(&tmp.0, path).map_err(|e| AgentError::io(path, &e))?;
    tmp.0.clear(); // renamed: nothing left to clean up
    Ok(WriteResult {
        path: path.to_string(),
        bytes_written: written,
    })
}

/// A temporary file removed when dropped: on an error, and also when the client goes away
/// mid-upload (hyper then drops the handler's future and no code after an `.await` runs).
struct TempFile(String);

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn write_tmp(tmp: &str, path: &str, mode: u32, body: Body) -> Result<u64, AgentError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .await
        .map_err(|e| AgentError::io(path, &e))?;
    let mut written = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AgentError::invalid(format!("reading the request body for {path}: {e}"))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| AgentError::io(path, &e))?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| AgentError::io(path, &e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| AgentError::io(path, &e))?;
    Ok(written)
}
