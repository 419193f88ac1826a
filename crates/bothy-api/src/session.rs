//! Sessions: `/v1/sandboxes/{name}/sessions`.
//!
//! A session is a named execution context (working directory, environment, last exit code)
//! that execs can run in; `cd`, `export`/`unset` and `$?` carry over from one exec to the next.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCreate {
    /// The session's id (a DNS label); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Starting directory; relative to `/workspace` unless absolute. Default `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables set in the session on top of the sandbox's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    /// Current working directory.
    pub cwd: String,
    /// Variables the session set or changed, relative to the sandbox's environment.
    pub env: BTreeMap<String, String>,
    /// Variables of the sandbox's environment the session unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
    /// Exit code of the last command run in the session (`$?` of the next one).
    pub last_exit_code: i32,
    /// RFC 3339.
    pub created_at: String,
    /// Whether a command is running in the session right now.
    #[serde(default)]
    pub busy: bool,
}

/// Reply of `GET /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

impl SessionCreate {
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        if let Some(id) = &self.id {
            crate::name::validate_label(id)
                .map_err(|e| crate::ApiError::invalid(format!("invalid session id {id:?}: {e}")))?;
        }
        validate_env(&self.env)
    }
}

pub use crate::command::validate_env;
