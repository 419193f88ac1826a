//! Directory archives: `GET /v1/archive` streams a directory as a gzip-compressed tar;
//! `PUT /v1/archive` restores one into a directory. Directory backups are built on these (the
//! daemon pulls an archive into its blob store and pushes it back on restore).
//!
//! `GET /v1/archive?path=DIR[&exclude=GLOB]...[&gitignore=true][&level=0-9]` — entries keep
//! mode, owner, group, mtime; symlinks stay links ([`pack`]); what is left out is decided by
//! [`select`]. The archive is streamed as it is made; if packing fails half-way the body ends
//! with an error (never a short archive that looks complete).
//!
//! `PUT /v1/archive?path=DIR[&max_entries=N][&max_bytes=N]` — the body is such an archive. It
//! is unpacked into a staging directory next to `DIR` with every entry checked ([`unpack`]),
//! and only then put in place of `DIR`'s contents ([`commit`]): a bad, truncated or refused
//! upload leaves `DIR` as it was. Replies [`bothy_api::archive::ExtractResult`].
//!
//! Both run on the blocking pool, fed through bounded channels: memory stays flat whatever the
//! size, and the rest of the agent keeps serving. Paths resolve inside the sandbox (the agent
//! runs in its root), so nothing here can reach outside it.

pub mod commit;
pub mod pack;
pub mod select;
pub mod unpack;

use std::io::{self, Read};

use axum::body::Body;
use axum::extract::{RawQuery, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bothy_api::archive::{ExtractResult, CONTENT_TYPE, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
use bothy_api::ErrorCode;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::server::AgentState;
use select::{Excludes, Selection};
use unpack::{Limits, UnpackError};

/// Default gzip level: fast; archives of source trees still shrink several times.
pub const DEFAULT_LEVEL: u32 = 1;

pub fn routes(_state: &AgentState) -> Router {
    Router::new().route("/v1/archive", get(get_archive).put(put_archive))
}

/// The query of both routes (repeated `exclude` keys, hence parsed by hand).
#[derive(Debug, Default)]
struct ArchiveQuery {
    path: Option<String>,
    exclude: Vec<String>,
    gitignore: bool,
    level: Option<u32>,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
}

impl ArchiveQuery {
    fn parse(raw: Option<&str>) -> Result<Self, AgentError> {
        let mut q = Self::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            let v = decode(v)?;
            let number = |v: &str| {
                v.parse::<u64>().map_err(|_| {
                    AgentError::invalid(format!("{k}={v:?} is not a non-negative integer"))
                })
            };
            match k.as_str() {
                "path" => q.path = Some(v),
                "exclude" => q.exclude.push(v),
                "gitignore" => {
                    q.gitignore = match v.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(AgentError::invalid(format!("gitignore={v:?}: give true or false"))),
                    }
                }
                "level" => match number(&v)? {
                    l @ 0..=9 => q.level = Some(l as u32),
                    _ => return Err(AgentError::invalid("level: give a gzip level from 0 to 9")),
                },
                "max_entries" => q.max_entries = Some(number(&v)?),
                "max_bytes" => q.max_bytes = Some(number(&v)?),
                _ => {
                    return Err(AgentError::invalid(format!(
                        "unknown query parameter {k:?} (known: path, exclude, gitignore, level, max_entries, max_bytes)"
                    )))
                }
            }
        }
        Ok(q)
    }

    fn path(&self) -> Result<String, AgentError> {
        let p = self
            .path
            .as_deref()
            .ok_or_else(|| AgentError::invalid("missing the path query parameter (?path=DIR)"))?;
        let p = bothy_api::path::normalize(p)?;
        if p == "/" {
            return Err(AgentError::new(
                ErrorCode::InvalidPath,
                "refusing to archive / (the sandbox's root); give a directory below it",
            ));
        }
        Ok(p)
    }
}

fn decode(s: &str) -> Result<String, AgentError> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| AgentError::invalid("query string is not valid UTF-8 once decoded"))
}

async fn get_archive(RawQuery(raw): RawQuery) -> Result<Response, AgentError> {
    let q = ArchiveQuery::parse(raw.as_deref())?;
    let path = q.path()?;
    let meta = std::fs::metadata(&path).map_err(|e| AgentError::io(&path, &e))?;
    if !meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::NotADirectory,
            format!("{path}: not a directory; archives are made of directories"),
        ));
    }
    let root = std::fs::canonicalize(&path).map_err(|e| AgentError::io(&path, &e))?;
    let selection = Selection {
        excludes: Excludes::new(&q.exclude).map_err(|e| AgentError::invalid(e.to_string()))?,
        gitignore: q.gitignore,
    };
    let level = q.level.unwrap_or(DEFAULT_LEVEL);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let writer = pack::ChannelWriter::new(tx.clone());
        if let Err(e) = pack::pack(&root, &selection, level, writer) {
            tracing::warn!(path = %root.display(), error = %e, "archive failed");
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Body::from_stream(stream))
        .map_err(|e| AgentError::internal(format!("building the response: {e}")))
}

/// A message from the request body to the unpacker.
enum Chunk {
    Data(Bytes),
    /// The body failed (the client's connection broke).
    Failed(String),
    /// The body ended normally.
    End,
}

async fn put_archive(RawQuery(raw): RawQuery, req: Request) -> Result<Response, AgentError> {
    let mut body = req.into_body().into_data_stream();
    let result = extract(raw, &mut body).await;
    if result.is_err() {
        // Read what is left of the upload before answering (bounded), so the sender gets the
        // error instead of a broken pipe while it is still writing.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut left = DRAIN_LIMIT;
            while let Some(Ok(chunk)) = body.next().await {
                left = left.saturating_sub(chunk.len() as u64);
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }
    result
}

/// How much of a refused upload is read and dropped before the error is sent.
const DRAIN_LIMIT: u64 = 256 << 20;

async fn extract(
    raw: Option<String>,
    body: &mut axum::body::BodyDataStream,
) -> Result<Response, AgentError> {
    let q = ArchiveQuery::parse(raw.as_deref())?;
    let path = q.path()?;
    let limits = Limits {
        max_entries: q.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
        max_bytes: q.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
    };
    let target = commit::resolve(&path)?;
    let staging = commit::stage(&target)?;
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    let job = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        let stats = unpack::unpack(reader, &staging.dir, limits).map_err(unpack_error)?;
        let replaced = commit::commit(staging, &target, stats.root.as_ref())?;
        Ok::<_, AgentError>(ExtractResult {
            path: target.path.display().to_string(),
            entries: stats.entries,
            bytes: stats.bytes,
            replaced,
        })
    });
    // Pump the body into the unpacker. If this future is dropped (the client went away), the
    // sender goes without `End` and the unpacker fails as "cut off": nothing is committed.
    let mut complete = true;
    while let Some(chunk) = body.next().await {
        let msg = match chunk {
            Ok(b) => Chunk::Data(b),
            Err(e) => {
                complete = false;
                Chunk::Failed(e.to_string())
            }
        };
        if tx.send(msg).await.is_err() || !complete {
            // The unpacker stopped (it has an error to report) or the body broke.
            complete = false;
            break;
        }
    }
    if complete {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    let result = job
        .await
        .map_err(|e| AgentError::internal(format!("unpacking task failed: {e}")))??;
    Ok(axum::Json(result).into_response())
}

fn unpack_error(e: UnpackError) -> AgentError {
    let code = match &e {
        UnpackError::NotGzip => ErrorCode::UnsupportedMediaType,
        UnpackError::Corrupt(_) => ErrorCode::CorruptBlob,
        UnpackError::Cut(_) | UnpackError::Unsupported { .. } | UnpackError::Conflict { .. } => {
            ErrorCode::InvalidRequest
        }
        UnpackError::Escape { .. } => ErrorCode::PathEscape,
        UnpackError::TooManyEntries(_) | UnpackError::TooManyBytes(_) => ErrorCode::BodyTooLarge,
        UnpackError::Io { path, source } => {
            let mut err = AgentError::io(path, source);
            err.0.message = format!("nothing was restored: {}", err.0.message);
            return err;
        }
    };
    AgentError::new(code, format!("{e}; nothing was restored"))
}

/// The request body as a blocking reader for the unpacker.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.current = b,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(why)) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, why))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the upload was cut off",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_takes_repeated_excludes_and_refuses_unknown_keys() {
        let q = ArchiveQuery::parse(Some(
            "path=a%20b&exclude=*.log&exclude=node_modules&gitignore=true&level=6",
        ))
        .unwrap();
        assert_eq!(q.path.as_deref(), Some("a b"));
        assert_eq!(q.exclude, ["*.log", "node_modules"]);
        assert!(q.gitignore);
        assert_eq!(q.level, Some(6));
        assert!(ArchiveQuery::parse(Some("path=a&excludes=x")).is_err());
        assert!(ArchiveQuery::parse(Some("path=a&level=10")).is_err());
        assert!(ArchiveQuery::parse(Some("path=/")).unwrap().path().is_err());
    }
}
