//! File operations: `/v1/files` (read, write, remove), `files/list`, `files/stat`,
//! `files/exists`, `files/mkdir`, `files/move` (the table is in [`bothy_api::files`]).
//!
//! Every path goes through [`bothy_api::path::normalize`]: relative paths are under
//! `/workspace`, and a `..` that climbs above `/` is refused (`path_escape`). The agent runs in
//! the sandbox's own root, so the kernel resolves every symlink inside it: a link to
//! `/../../..` is the sandbox's `/`, never the host's.
//!
//! Contents are streamed both ways (any size, binary-safe): the agent's `DefaultBodyLimit`
//! only bounds buffering extractors, and a write reads its body as a stream. A write goes to a
//! temporary file in the same directory, renamed over the target at the end (atomic; removed if
//! the upload fails or its client goes away); the file gets `mode` (octal, default 0644; an
//! existing file's mode is not kept). `move` creates the parents of its target like `write`. Listings stop at
//! [`entry::MAX_LIST_ENTRIES`] entries and say `truncated: true`. Directory walks and removals
//! run on the blocking pool so one big tree does not stall the agent's other requests.

pub mod entry;
pub mod transfer;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bothy_api::files::{parse_mode, Exists, MkdirRequest, MoveRequest};
use bothy_api::ErrorCode;
use serde::Deserialize;

use crate::error::{AgentError, Json, Query};
use crate::server::AgentState;

/// Mode of a written file when the request gives none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a created directory when the request gives none.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// The file routes. They need no state of their own.
pub fn routes(_state: &AgentState) -> Router {
    Router::new()
        .route("/v1/files", get(read).put(write).delete(remove))
        .route("/v1/files/list", get(list))
        .route("/v1/files/stat", get(stat))
        .route("/v1/files/exists", get(exists))
        .route("/v1/files/mkdir", post(mkdir))
        .route("/v1/files/move", post(move_path))
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    recursive: bool,
}

impl PathQuery {
    /// The normalised `path` parameter.
    fn path(&self) -> Result<String, AgentError> {
        let p = self
            .path
            .as_deref()
            .ok_or_else(|| AgentError::invalid("missing the path query parameter (?path=...)"))?;
        Ok(bothy_api::path::normalize(p)?)
    }

    fn mode(&self, default: u32) -> Result<u32, AgentError> {
        match &self.mode {
            None => Ok(default),
            Some(m) => parse_mode(m).ok_or_else(|| {
                AgentError::invalid(format!(
                    "invalid mode {m:?}: give octal permission bits such as 644 or 0755"
                ))
            }),
        }
    }
}

async fn read(Query(q): Query<PathQuery>) -> Result<Response, AgentError> {
    transfer::read(&q.path()?).await
}

async fn write(Query(q): Query<PathQuery>, req: Request) -> Result<Response, AgentError> {
    let path = q.path()?;
    let mode = q.mode(DEFAULT_FILE_MODE)?;
    let body: Body = req.into_body();
    let result = transfer::write(&path, mode, body).await?;
    Ok(axum::Json(result).into_response())
}

async fn remove(Query(q): Query<PathQuery>) -> Result<http::StatusCode, AgentError> {
    let path = q.path()?;
    if path == "/" {
        return Err(AgentError::new(
            ErrorCode::InvalidPath,
            "refusing to remove / (the sandbox's root)",
        ));
    }
    blocking(move || {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| AgentError::io(&path, &e))?;
        let r = if !meta.is_dir() {
            std::fs::remove_file(&path)
        } else if q.recursive {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_dir(&path)
        };
        r.map_err(|e| {
            let mut err = AgentError::io(&path, &e);
            if err.0.code == ErrorCode::DirectoryNotEmpty {
                err.0.message = format!("{path}: directory not empty; pass recursive=true");
            }
            err
        })
    })
    .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

async fn list(Query(q): Query<PathQuery>) -> Result<Response, AgentError> {
    let path = q.path()?;
    let listing =
        blocking(move || entry::list(&path, q.recursive, entry::MAX_LIST_ENTRIES)).await?;
    Ok(axum::Json(listing).into_response())
}

async fn stat(Query(q): Query<PathQuery>) -> Result<Response, AgentError> {
    Ok(axum::Json(entry::stat(&q.path()?)?).into_response())
}

async fn exists(Query(q): Query<PathQuery>) -> Result<Response, AgentError> {
    let path = q.path()?;
    let exists = match std::fs::symlink_metadata(&path) {
        Ok(_) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => false,
        Err(e) => return Err(AgentError::io(&path, &e)),
    };
    Ok(axum::Json(Exists { exists }).into_response())
}

/// `mkdir -p`: creates the directory and its missing parents (each with `mode`, default 0755,
/// exactly: the umask does not apply). An existing directory is fine; replies its entry.
async fn mkdir(Json(req): Json<MkdirRequest>) -> Result<Response, AgentError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let path = bothy_api::path::normalize(&req.path)?;
    let mode = req.mode.unwrap_or(DEFAULT_DIR_MODE);
    if mode > 0o7777 {
        return Err(AgentError::invalid(format!(
            "invalid mode {mode:#o}: permission bits go up to 0o7777"
        )));
    }
    let existed = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
    if !existed {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&path)
            .map_err(|e| AgentError::io(&path, &e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| AgentError::io(&path, &e))?;
    }
    Ok(axum::Json(entry::stat(&path)?).into_response())
}

/// Renames `from` to `to`, creating the parents of `to`. Without `overwrite`, an existing `to`
/// is a 409 `already_exists` (checked atomically with `RENAME_NOREPLACE` where the file system
/// supports it). Replies the entry at `to`.
async fn move_path(Json(req): Json<MoveRequest>) -> Result<Response, AgentError> {
    let from = bothy_api::path::normalize(&req.from)?;
    let to = bothy_api::path::normalize(&req.to)?;
    if from == "/" || to == "/" {
        return Err(AgentError::new(
            ErrorCode::InvalidPath,
            "refusing to move / (the sandbox's root)",
        ));
    }
    std::fs::symlink_metadata(&from).map_err(|e| AgentError::io(&from, &e))?;
    let dir = entry::parent(&to);
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, &e))?;
    if req.overwrite {
        std::fs::rename(&from, &to).map_err(|e| AgentError::io(&to, &e))?;
    } else {
        rename_noreplace(&from, &to)?;
    }
    Ok(axum::Json(entry::stat(&to)?).into_response())
}

fn rename_noreplace(from: &str, to: &str) -> Result<(), AgentError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let exists_err = || {
        AgentError::new(
            ErrorCode::AlreadyExists,
            format!("{to}: already exists; pass overwrite=true to replace it"),
        )
    };
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(exists_err()),
        // File systems without RENAME_NOREPLACE: check, then rename (a small race remains).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(exists_err());
            }
            std::fs::rename(from, to).map_err(|e| AgentError::io(to, &e))
        }
        Err(e) => Err(AgentError::io(to, &std::io::Error::from(e))),
    }
}

/// Runs a file-system job that may take a while on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::internal(format!("file-system task failed: {e}")))?
}
