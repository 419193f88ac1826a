//! Directory backups: `POST /v1/sandboxes/{name}/backups`, `GET /v1/backups`,
//! `GET|DELETE /v1/backups/{id}`, `POST /v1/backups/{id}/restore`.
//!
//! A backup is one directory of a sandbox, archived by its agent (see [`crate::archive`]),
//! stored in the daemon's blob store with its sha256, kept until its TTL runs out. It outlives
//! the sandbox it came from and restores into any sandbox.

use serde::{Deserialize, Serialize};

/// TTL of a backup when the request gives none: 7 days.
pub const DEFAULT_TTL_SECS: u64 = 7 * 86_400;

/// Body of `POST /v1/sandboxes/{name}/backups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The directory to back up (absolute, or relative to `/workspace`).
    pub path: String,
    /// Glob patterns left out: without `/` they match a name at any depth (`node_modules`,
    /// `*.log`), with `/` a path from the directory (`build/out`); a trailing `/` limits a
    /// pattern to directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Also leave out what the tree's `.gitignore` files ignore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gitignore: bool,
    /// How long the backup is kept: seconds, or a duration such as `90s`, `30m`, `12h`, `7d`
    /// (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
}

/// A TTL as a number of seconds or a duration string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ttl {
    Secs(u64),
    Text(String),
}

impl Ttl {
    /// The TTL in seconds; `None` if it is not a positive duration.
    pub fn secs(&self) -> Option<u64> {
        match self {
            Ttl::Secs(0) => None,
            Ttl::Secs(s) => Some(*s),
            Ttl::Text(t) => parse_duration(t),
        }
    }
}

/// Parses `45`, `45s`, `30m`, `12h`, `7d`, `2w` into seconds (positive only).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// A backup as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// `bk-` and 16 hex digits.
    pub id: String,
    /// The sandbox it was taken from (which may since have been destroyed).
    pub sandbox: String,
    /// The directory it holds, as resolved in that sandbox.
    pub path: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub gitignore: bool,
    /// Size of the stored archive (compressed), bytes.
    pub size_bytes: u64,
    /// sha256 of the stored archive, hex.
    pub sha256: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; after this the backup is refused and removed.
    pub expires_at: String,
}

/// Reply of `GET /v1/backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupList {
    pub backups: Vec<Backup>,
}

/// Body of `POST /v1/backups/{id}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    /// The sandbox to restore into (woken if it sleeps; it must exist).
    pub sandbox: String,
    /// Where to restore (default: the backed-up path). Its contents are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A `progress` event of the SSE form of create and restore (`Accept: text/event-stream`).
/// The stream ends with a `backup` (create) or `restored` (restore) event holding the reply, or
/// an `error` event `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `archive` (create: the sandbox's agent packing and the daemon storing), `verify`
    /// (restore: checking the stored archive), `send` (restore: the agent unpacking as it
    /// receives), `commit` (restore: everything sent, the agent swapping it in).
    pub phase: String,
    /// Archive bytes done in this phase.
    pub bytes: u64,
    /// Archive bytes in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Reply of `POST /v1/backups/{id}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub backup: String,
    pub sandbox: String,
    /// The directory that now holds the backup's contents.
    pub path: String,
    /// Entries unpacked (the directory itself included).
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Whether an existing directory's contents were replaced.
    pub replaced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("45s"), Some(45));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("7d"), Some(604_800));
        for bad in [
            "",
            "0",
            "0d",
            "d",
            "1y",
            "-1d",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let req: CreateBackup = serde_json::from_str(r#"{"path":"p","ttl":"2d"}"#).unwrap();
        assert_eq!(req.ttl.unwrap().secs(), Some(172_800));
        let req: CreateBackup = serde_json::from_str(r#"{"path":"p","ttl":60}"#).unwrap();
        assert_eq!(req.ttl.unwrap().secs(), Some(60));
    }
}
