//! The daemon's side of the egress proxy's [`Directory`]: who a connection comes from (the
//! sandbox's link address), which name a synthetic address stands for, and activity.
//!
//! Secrets and the egress log belong to the daemon's egress state; they come in as an
//! [`EgressSink`] so this module needs nothing of how they are stored.

use std::net::IpAddr;
use std::sync::Arc;

use bothy_api::egress::EgressLogEntry;
use bothy_api::SandboxName;
use bothy_egress::{Directory, SandboxEgress};

use super::Network;
use crate::manager::Manager;

/// Where secrets come from and log entries go.
pub trait EgressSink: Send + Sync + 'static {
    fn secret(&self, name: &str) -> Option<String>;
    fn record(&self, sandbox: &SandboxName, entry: EgressLogEntry);
}

pub struct SandboxDirectory {
    pub net: Arc<Network>,
    pub manager: Arc<Manager>,
    pub sink: Arc<dyn EgressSink>,
}

impl Directory for SandboxDirectory {
    fn lookup(&self, peer: IpAddr) -> Option<SandboxEgress> {
        let a = self.net.lookup(peer)?;
        Some(SandboxEgress {
            name: a.name.clone(),
            policy: a.policy(),
        })
    }

    fn host_for(&self, peer: IpAddr, dst: IpAddr) -> Option<String> {
        // Only for a sandbox we know: a stranger learns nothing of the map.
        self.net.lookup(peer)?;
        self.net.host_for(dst)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.sink.secret(name)
    }

    fn record(&self, sandbox: &SandboxName, entry: EgressLogEntry) {
        self.sink.record(sandbox, entry)
    }

    fn touch(&self, sandbox: &SandboxName) {
        self.manager.touch(sandbox);
    }
}
