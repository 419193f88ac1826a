//! Preview URLs: `POST/GET /v1/sandboxes/{name}/ports`, `GET/DELETE …/ports/{port}`.
//!
//! Exposing a port gives a URL `http://{port}-{name}-{token}.{preview domain}` that the daemon
//! routes (HTTP and WebSocket upgrades) to that port on the sandbox's loopback, waking the
//! sandbox if it sleeps. The token is 16 random lowercase letters and digits; a wrong token,
//! or a port not exposed, gives 404.

use serde::{Deserialize, Serialize};

/// Length of a preview token.
pub const TOKEN_LEN: usize = 16;

/// Body of `POST /v1/sandboxes/{name}/ports`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    pub port: u16,
    /// Replace the token of a port already exposed (the old URL stops working). Without it,
    /// exposing an exposed port returns its current URL.
    #[serde(default)]
    pub rotate: bool,
}

/// An exposed port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortInfo {
    pub port: u16,
    pub url: String,
    pub token: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Reply of `GET /v1/sandboxes/{name}/ports`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortList {
    pub ports: Vec<PortInfo>,
}

/// What a preview Host names: `{port}-{sandbox}-{token}` as its first label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewHost {
    pub port: u16,
    pub sandbox: crate::SandboxName,
    pub token: String,
}

/// The host (with the preview domain) for an exposed port.
pub fn host_for(port: u16, sandbox: &crate::SandboxName, token: &str, domain: &str) -> String {
    format!("{port}-{}-{token}.{domain}", sandbox.as_str())
}

/// Parses a `Host` header value against the preview domain. `None` if the host is not under
/// the domain or its first label is not `{port}-{sandbox}-{token}`. A domain without a port
/// matches hosts with any port; a domain with one matches only that port.
pub fn parse_host(host: &str, domain: &str) -> Option<PreviewHost> {
    let host = host.trim().to_ascii_lowercase();
    let domain = domain.trim().trim_start_matches('.').to_ascii_lowercase();
    let host = if domain.contains(':') {
        host
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => host,
        }
    };
    let label = host.strip_suffix(&domain)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let (port, rest) = label.split_once('-')?;
    let (name, token) = rest.rsplit_once('-')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if token.len() != TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return None;
    }
    Some(PreviewHost {
        port,
        sandbox: crate::SandboxName::new(name).ok()?,
        token: token.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_round_trip() {
        let name = crate::SandboxName::new("my-app").unwrap();
        let h = host_for(8000, &name, "abcdefghij012345", "localhost:7070");
        assert_eq!(h, "8000-my-app-abcdefghij012345.localhost:7070");
        let p = parse_host(&h, "localhost:7070").unwrap();
        assert_eq!(
            (p.port, p.sandbox.as_str(), p.token.as_str()),
            (8000, "my-app", "abcdefghij012345")
        );
        // Case-insensitive; a domain without a port accepts any port.
        assert!(parse_host(
            "8000-MY-APP-abcdefghij012345.Preview.Example.com",
            "preview.example.com"
        )
        .is_some());
        assert!(parse_host(
            "8000-my-app-abcdefghij012345.preview.example.com:443",
            "preview.example.com"
        )
        .is_some());
    }

    #[test]
    fn other_hosts_are_not_previews() {
        let d = "localhost:7070";
        for h in [
            "localhost:7070",
            "8000-app-abcdefghij012345.localhost:7071",
            "8000-app-abcdefghij012345.evil.localhost:7070",
            "x.8000-app-abcdefghij012345.localhost:7070",
            "8000-app-short.localhost:7070",
            "0-app-abcdefghij012345.localhost:7070",
            "99999-app-abcdefghij012345.localhost:7070",
            "port-app-abcdefghij012345.localhost:7070",
            "8000--abcdefghij012345.localhost:7070",
            "8000-app-abcdefghij01234_.localhost:7070",
            "8000-app-abcdefghij012345localhost:7070",
        ] {
            assert_eq!(parse_host(h, d), None, "{h}");
        }
    }
}
