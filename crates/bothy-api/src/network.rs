//! A sandbox's network: its mode and its egress policy.
//!
//! `GET /v1/sandboxes/{name}/network` returns a [`NetworkConfig`]; `PUT` replaces it and takes
//! effect at once, without a restart. New sandboxes get `proxy` mode with the default policy
//! (every host allowed) unless `network` is given at creation.
//!
//! Policy evaluation for a destination host (and port), first match wins:
//! 1. `deny` globs → blocked;
//! 2. `rules` whose `host` glob matches → allowed, with the rule's header changes and upstream;
//! 3. `allow` globs → allowed as is;
//! 4. `default`.
//!
//! Globs match a host name case-insensitively: `*` matches any run of characters including dots
//! (`*.example.com` matches `a.b.example.com`, not `example.com`). An entry may carry a port
//! (`db.internal:5432`); without one it applies to the HTTP(S) ports 80 and 443 only. Outbound TCP
//! to any other port is refused unless an `allow` entry or a rule names that host and port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Loopback only: no route out at all.
    None,
    /// A veth link to the host; DNS answered by the daemon; all outbound TCP ends in the
    /// daemon's egress proxy, which applies the policy.
    #[default]
    Proxy,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    #[default]
    Allow,
    Deny,
}

/// A header a rule sets (or replaces) on requests to its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// Name of a secret (`PUT /v1/secrets/{name}`); its value is substituted for `{secret}` in
    /// `format`. Exactly one of `secret` and `value` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A literal value (not secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Template for a secret's value, default `{secret}` (e.g. `Bearer {secret}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A per-host rule: allows its hosts and changes requests to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRule {
    /// Host glob, optionally with a port (see the module docs).
    pub host: String,
    /// Headers set on every request to the host, replacing any the sandbox sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Send the requests to this upstream instead of the host itself
    /// (`https://127.0.0.1:8443`, `http://10.0.0.5:8080`); the sandbox still sees the host's
    /// name and a certificate for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HostRule>,
    #[serde(default)]
    pub default: PolicyAction,
}

/// `GET`/`PUT /v1/sandboxes/{name}/network`, and `network` in `PUT /v1/sandboxes/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default)]
    pub policy: EgressPolicy,
}

/// `GET /v1/sandboxes/{name}/network`: the stored config and, while the sandbox runs in
/// `proxy` mode, its link's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub mode: NetworkMode,
    pub policy: EgressPolicy,
    /// The sandbox's address (source address of everything it sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its gateway and DNS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_proxy_allow_all() {
        let c: NetworkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.mode, NetworkMode::Proxy);
        assert_eq!(c.policy.default, PolicyAction::Allow);
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"mode":"bridge"}"#).is_err());
    }

    #[test]
    fn rule_round_trips() {
        let j = r#"{"mode":"proxy","policy":{"deny":["*.evil.test"],"rules":[{"host":"api.example.test","headers":{"authorization":{"secret":"tok","format":"Bearer {secret}"}},"upstream":"https://127.0.0.1:8443"}],"default":"deny"}}"#;
        let c: NetworkConfig = serde_json::from_str(j).unwrap();
        assert_eq!(
            c.policy.rules[0].headers["authorization"].secret.as_deref(),
            Some("tok")
        );
        assert_eq!(serde_json::to_string(&c).unwrap(), j);
    }
}
