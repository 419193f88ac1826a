//! Directory archives: `GET /v1/archive` packs a directory of a sandbox, `PUT /v1/archive`
//! unpacks one into it. The format is a gzip-compressed tar (GNU headers) whose entries are
//! relative to the archived directory, the first one being `./` (the directory itself).

use serde::{Deserialize, Serialize};

/// Content type of an archive, both ways.
pub const CONTENT_TYPE: &str = "application/gzip";

/// Default cap on the number of entries `PUT /v1/archive` unpacks (`max_entries` overrides it).
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Default cap on the bytes of file contents `PUT /v1/archive` unpacks (`max_bytes` overrides
/// it): a small gzip body can expand enormously.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// The reply of `PUT /v1/archive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractResult {
    /// The directory that now holds the archive's contents (absolute, symlinks resolved).
    pub path: String,
    /// Entries unpacked (directories, files, symlinks, hard links, fifos), the root included.
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Whether an existing directory was replaced (false: the directory was created).
    pub replaced: bool,
}
