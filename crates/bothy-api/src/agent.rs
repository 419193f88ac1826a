//! The daemon ↔ agent contract at launch.
//!
//! The daemon starts `bothy agent` as PID 1 of a sandbox with the listening unix socket on
//! file descriptor [`AGENT_LISTEN_FD`] and this config as JSON in the `--config` argument. The
//! socket file lives on the host only; nothing inside the sandbox can reach it by path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File descriptor on which the agent finds its listening socket.
pub const AGENT_LISTEN_FD: i32 = 3;

/// Path of the agent binary inside every sandbox (a read-only bind mount of the host's `bothy`).
pub const AGENT_BIN_IN_SANDBOX: &str = "/run/bothy/bothy";

/// Directory inside the sandbox where the agent keeps its records (process logs and the like).
/// It survives sleep; it is not part of the sandbox's layer, so snapshots do not carry it.
pub const AGENT_STATE_IN_SANDBOX: &str = "/run/bothy/state";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Sandbox name (also the hostname).
    pub name: String,
    /// Environment applied to every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directory for the agent's persistent records.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            env: BTreeMap::new(),
            state_dir: default_state_dir(),
        }
    }
}

fn default_state_dir() -> String {
    AGENT_STATE_IN_SANDBOX.to_string()
}

/// Body of `PUT /v1/env` on the agent: replaces the sandbox-level environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentEnv {
    pub env: BTreeMap<String, String>,
}
