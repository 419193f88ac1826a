//! File operations under `/v1/sandboxes/{name}/files`.
//!
//! | method and path            | what                                              |
//! |----------------------------|---------------------------------------------------|
//! | `GET    files?path=P`      | read (streamed bytes)                             |
//! | `PUT    files?path=P&mode=`| write the body (streamed); creates parents        |
//! | `DELETE files?path=P&recursive=true` | remove                                  |
//! | `GET    files/list?path=P&recursive=true` | list a directory                   |
//! | `GET    files/stat?path=P` | stat                                              |
//! | `GET    files/exists?path=P` | `{"exists": bool}`                              |
//! | `POST   files/mkdir` `{path, mode?}` | mkdir -p                                |
//! | `POST   files/move` `{from, to, overwrite?}` | rename                          |

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a listing, or the reply of stat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Base name.
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub size: u64,
    /// Permission bits, e.g. 0o644 (as a number).
    pub mode: u32,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileList {
    pub path: String,
    pub entries: Vec<FileEntry>,
    /// The listing stopped at the agent's bound on entries (100,000); `entries` is partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exists {
    pub exists: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub overwrite: bool,
}

/// Reply of a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    pub path: String,
    pub bytes_written: u64,
}

/// Parses a mode given as an octal string (`"644"`, `"0755"`) in a query.
pub fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?;
    (m <= 0o7777).then_some(m)
}
