//! Sandbox lifecycle types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SandboxName;

/// Default idle time before a sandbox is put to sleep.
pub const DEFAULT_SLEEP_AFTER_SECS: u64 = 600;

/// Body of `PUT /v1/sandboxes/{name}` (get-or-create). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Image to create the sandbox from (default `host`). Refused with 409 if the sandbox
    /// exists with another image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment applied to every command in the sandbox. Replaces the stored one if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Idle seconds before the sandbox sleeps (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_after: Option<u64>,
    /// Never put the sandbox to sleep for idleness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Create the sandbox as a fork of this snapshot (id or name): its lower layers are the
    /// snapshot's, its own layer starts empty. Refused with 409 if the sandbox exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// Network mode and egress policy (default for a new sandbox: `proxy`, every host
    /// allowed). Replaces the stored one if given (like `PUT .../network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkConfig>,
    /// Push the sandbox's disk to the blob store each time it goes to sleep, so it can be
    /// evicted at once and survives the loss of this machine's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Running,
    Sleeping,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Sleeping => "sleeping",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "creating" => Some(Self::Creating),
            "running" => Some(Self::Running),
            "sleeping" => Some(Self::Sleeping),
            _ => None,
        }
    }
}

/// What the API says about a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub name: SandboxName,
    pub state: SandboxState,
    pub image: String,
    /// RFC 3339 timestamps.
    pub created_at: String,
    pub last_activity_at: String,
    pub sleep_after: u64,
    pub keep_alive: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bytes written to the sandbox's own layer (what it adds to its image). `None` in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    /// PID of the sandbox's init (the agent) on the host, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Network mode, policy and address (`None` only from daemons without networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkInfo>,
    /// Whether this request created the sandbox (only on get-or-create replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// Its disk lives in a blob store (`bothy evict`); the next wake pulls it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evicted: bool,
    /// Each sleep pushes its disk to the blob store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxInfo>,
}

/// An image as listed by `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    /// Layer ids, lowest first.
    pub layers: Vec<String>,
    pub created_at: String,
    pub size_bytes: u64,
    /// `host` for the built-in view of the host, `imported` otherwise.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageInfo>,
}

/// Body of `POST /v1/images`: import a rootfs from a path on the daemon's machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportImage {
    pub name: String,
    /// A directory, or a tarball (`.tar`, `.tar.gz`/`.tgz`), readable by the daemon.
    pub path: String,
}

/// Daemon health and version, `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub runtime: String,
    pub sandboxes_running: usize,
}
