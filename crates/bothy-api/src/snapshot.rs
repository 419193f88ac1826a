//! Snapshots, forks and restores.
//!
//! A snapshot is a sandbox's state frozen into an immutable layer on top of the layers it was
//! built on; a fork is a new sandbox whose lower layers are a snapshot's and whose own writable
//! layer starts empty, so forking costs the same whatever the size of the state.

use serde::{Deserialize, Serialize};

use crate::sandbox::SandboxInfo;

/// Prefix of snapshot ids (`snap-` + 16 hex digits). Names may not start with it.
pub const SNAPSHOT_ID_PREFIX: &str = "snap-";

/// Most sandboxes one fork request may create.
pub const MAX_FORK_COUNT: usize = 256;

/// Body of `POST /v1/sandboxes/{name}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Optional unique name (a DNS label not starting with `snap-`); the snapshot can then be
    /// referred to by it wherever an id is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What the API says about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken of (it may since have been deleted).
    pub sandbox: String,
    /// The image under its layers.
    pub image: String,
    /// The snapshot the sandbox's state descended from when this one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Its layer ids above the image, lowest first (the last one is its own).
    pub layers: Vec<String>,
    /// Bytes in its own layer (what changed since the layers below).
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

/// Body of `POST /v1/snapshots/{id}/fork`: either `names`, or `prefix` and `count` (the
/// sandboxes are then `{prefix}-1` … `{prefix}-{count}`). Forks are created asleep and wake on
/// their first request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkResult {
    pub sandboxes: Vec<SandboxInfo>,
}

/// Body of `POST /v1/sandboxes/{name}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Snapshot id or name.
    pub snapshot: String,
}

/// Checks a snapshot name: a DNS label that cannot be mistaken for an id.
pub fn validate_snapshot_name(name: &str) -> Result<(), String> {
    crate::name::validate_label(name).map_err(|e| format!("invalid snapshot name: {e}"))?;
    if name.starts_with(SNAPSHOT_ID_PREFIX) {
        return Err(format!(
            "invalid snapshot name: names may not start with {SNAPSHOT_ID_PREFIX:?} (reserved for ids)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_snapshot_name("base-1").is_ok());
        assert!(validate_snapshot_name("snap-1").is_err());
        assert!(validate_snapshot_name("Bad_Name").is_err());
        assert!(validate_snapshot_name("").is_err());
    }
}
