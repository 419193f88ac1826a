//! Egress log entries and secret listings on the wire.
//!
//! `GET /v1/sandboxes/{name}/egress-log` returns an [`EgressLog`]; `GET /v1/secrets` a
//! [`SecretList`] (names and timestamps only: a secret's value is never returned).

use serde::{Deserialize, Serialize};

/// What the egress proxy did with a request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressDecision {
    /// Forwarded to the host (or the rule's upstream).
    Allowed,
    /// Refused by the policy (HTTP 403 or a closed connection).
    Denied,
    /// Allowed, but forwarding failed (upstream unreachable, bad certificate, missing secret).
    Error,
}

/// One request (HTTP) or connection (raw TCP) that went through the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressLogEntry {
    /// RFC 3339, when the request arrived.
    pub time: String,
    pub host: String,
    pub port: u16,
    /// `http`, `https` or `tcp`.
    pub scheme: String,
    /// Empty for raw TCP.
    #[serde(default)]
    pub method: String,
    /// Path and query; empty for raw TCP.
    #[serde(default)]
    pub path: String,
    /// HTTP status returned to the sandbox; absent for raw TCP or when none was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body bytes (raw TCP: all bytes) from the sandbox to the upstream.
    pub bytes_up: u64,
    /// Body bytes (raw TCP: all bytes) from the upstream to the sandbox.
    pub bytes_down: u64,
    /// Which part of the policy decided: `deny[0]`, `rules[1]`, `allow[2]`, `default`.
    pub rule: String,
    pub decision: EgressDecision,
    /// Why it was denied or failed, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from the request to the end of the response.
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressLog {
    /// Oldest first.
    pub entries: Vec<EgressLogEntry>,
}

/// A stored secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// Whether `name` is a valid secret name: 1–128 of `[A-Za-z0-9_.-]`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(valid_secret_name("GITHUB_TOKEN"));
        assert!(valid_secret_name("api.key-1"));
        assert!(!valid_secret_name(""));
        assert!(!valid_secret_name("a/b"));
        assert!(!valid_secret_name("a b"));
        assert!(!valid_secret_name(&"x".repeat(129)));
    }
}
