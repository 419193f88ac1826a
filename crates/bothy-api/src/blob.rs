//! Moving snapshots and sandbox disks to and from blob stores: export, import, evict.
//!
//! Long transfers answer with JSON by default, or with an SSE stream when the request says
//! `Accept: text/event-stream`: `progress` events ([`TransferProgress`]) while it runs, then one
//! `result` event (the same JSON the plain form returns) or one `error` event
//! (`{code, message}`).

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotInfo;

/// Body of `POST /v1/snapshots/{id}/export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// One of the daemon's configured blob stores (`--blob-store`); default: the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// One layer of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedLayer {
    pub id: String,
    /// `sha256:…` of the layer's archive.
    pub digest: String,
    /// Bytes of the compressed archive.
    pub size_bytes: u64,
    /// Bytes sent this time (0 when the store had it all).
    pub uploaded_bytes: u64,
}

/// Reply of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResult {
    pub snapshot: String,
    /// The store it went to.
    pub store: String,
    /// `sha256:…` of the manifest: what `import` takes.
    pub manifest: String,
    pub layers: Vec<ExportedLayer>,
    pub uploaded_bytes: u64,
    pub skipped_bytes: u64,
}

/// Body of `POST /v1/snapshots/import`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// One of the daemon's configured blob stores; default: the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The manifest's digest (`sha256:…`), as an export returned it.
    pub manifest: String,
}

/// Reply of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    pub snapshot: SnapshotInfo,
    /// Bytes fetched from the store (layers already here are not fetched).
    pub downloaded_bytes: u64,
    /// Whether the snapshot was already here (nothing was done).
    pub already_present: bool,
}

/// Reply of `POST /v1/sandboxes/{name}/evict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictResult {
    pub name: String,
    pub store: String,
    /// `sha256:…` of the archive of the sandbox's disk.
    pub digest: String,
    pub size_bytes: u64,
    pub uploaded_bytes: u64,
}

/// A `progress` event of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// `pack`, `upload`, `download`, `unpack`.
    pub phase: String,
    /// The layer (or sandbox) being moved.
    pub item: String,
    /// Bytes done and in all, for this item.
    pub done: u64,
    pub total: u64,
    /// Of `done`, bytes that did not move because the store had them.
    #[serde(default)]
    pub skipped: u64,
}

/// Body of `POST /v1/sandboxes/{name}/evict`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvictRequest {
    /// One of the daemon's configured blob stores; default: the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}
