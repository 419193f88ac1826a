//! Preview URLs: exposed ports of sandboxes reachable at
//! `http://{port}-{name}-{token}.{preview domain}`.
//!
//! - [`api`]: `POST/GET /v1/sandboxes/{name}/ports`, `GET/DELETE …/ports/{port}`; exposures
//!   are rows of the metadata store (they outlive daemon restarts and sandbox sleep, and go
//!   with the sandbox when it is destroyed).
//! - [`listener`]: the daemon's TCP listener, split in front of the API (and its auth): a
//!   connection whose first request has a preview `Host` is handed to [`proxy`], every other
//!   one to the API, untouched (the head is only peeked at).
//! - [`proxy`]: checks the token, wakes the sandbox if it sleeps, connects to the port inside
//!   the sandbox's network namespace (waiting for it after a wake, while on-wake services come
//!   up), then splices bytes both ways for the rest of the connection — HTTP keep-alive and
//!   WebSocket upgrades included, with no per-request parsing. The connection counts as
//!   activity while it is open.
//! - [`limit`]: caps on open preview connections, per sandbox and in total.

pub mod api;
pub mod limit;
pub mod listener;
pub mod proxy;
pub mod sockets;
pub mod splice;

use std::sync::{Arc, OnceLock};

use bothy_api::preview::PortInfo;
use bothy_store::meta::PortRecord;

use crate::manager::Manager;

/// Preview settings and the state the proxy needs.
#[derive(Clone)]
pub struct Previews {
    pub manager: Arc<Manager>,
    /// The configured domain, or `localhost:{tcp port}` once the TCP listener is bound.
    domain: Arc<OnceLock<String>>,
    /// Opens connections inside sandboxes.
    pub sockets: Arc<sockets::Sockets>,
    /// Caps on open connections.
    pub limit: Arc<limit::ConnLimit>,
}

impl Previews {
    /// `domain`: the configured preview domain, if any; `limit`: caps on open connections.
    pub fn new(
        manager: Arc<Manager>,
        domain: Option<String>,
        limit: Arc<limit::ConnLimit>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(d) = domain.filter(|d| !d.is_empty()) {
            let _ = cell.set(d.trim_start_matches('.').to_ascii_lowercase());
        }
        Self {
            manager,
            domain: Arc::new(cell),
            sockets: Arc::default(),
            limit,
        }
    }

    /// Sets the default domain from the bound TCP port (no-op when one was configured).
    pub fn set_default_port(&self, port: u16) {
        let _ = self.domain.set(format!("localhost:{port}"));
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.get().map(String::as_str)
    }

    pub fn info(&self, r: &PortRecord) -> Option<PortInfo> {
        let domain = self.domain()?;
        Some(PortInfo {
            port: r.port,
            url: format!(
                "http://{}/",
                bothy_api::preview::host_for(r.port, &r.sandbox, &r.token, domain)
            ),
            token: r.token.clone(),
            created_at: bothy_api::time::rfc3339_ms(r.created_at_ms),
        })
    }
}

/// A random preview token: 16 lowercase letters and digits (~82 bits).
pub fn new_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..bothy_api::preview::TOKEN_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Compares tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
