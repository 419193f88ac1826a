//! The contract between the proxy and the daemon: who a connection comes from, what policy
//! applies, which secrets exist, where the log goes.
//!
//! The daemon implements [`Directory`]; the proxy calls it on every connection and request, so
//! every call must be cheap and must not block (in-memory maps behind a lock, no SQLite).

use std::net::IpAddr;
use std::sync::Arc;

use bothy_api::egress::EgressLogEntry;
use bothy_api::network::EgressPolicy;
use bothy_api::SandboxName;

/// The sandbox behind a source address, with the policy in force right now.
#[derive(Debug, Clone)]
pub struct SandboxEgress {
    pub name: SandboxName,
    /// Looked up again for every request, so a `PUT /network` applies to the next request
    /// (also on a kept-alive connection).
    pub policy: Arc<EgressPolicy>,
}

pub trait Directory: Send + Sync + 'static {
    /// The sandbox a connection comes from (by its source address); `None` = refuse the
    /// connection (unknown peer, or a sandbox not in `proxy` mode).
    fn lookup(&self, peer: IpAddr) -> Option<SandboxEgress>;
    /// The name this sandbox resolved to `dst` through the daemon's DNS, if any. Used for
    /// connections that carry no name (raw TCP, TLS without SNI).
    fn host_for(&self, peer: IpAddr, dst: IpAddr) -> Option<String>;
    /// A secret's value (`PUT /v1/secrets/{name}`); `None` if there is no such secret.
    fn secret(&self, name: &str) -> Option<String>;
    /// One finished request or connection of a sandbox.
    fn record(&self, sandbox: &SandboxName, entry: EgressLogEntry);
    /// Traffic counts as activity: called when a connection opens and on every request.
    fn touch(&self, sandbox: &SandboxName);
}
