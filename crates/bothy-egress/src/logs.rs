//! Per-sandbox egress logs: a bounded ring of the latest entries in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bothy_api::egress::EgressLogEntry;
use bothy_api::SandboxName;

/// Entries kept per sandbox by default.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug)]
pub struct EgressLogs {
    capacity: usize,
    rings: Mutex<HashMap<SandboxName, VecDeque<EgressLogEntry>>>,
}

impl Default for EgressLogs {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl EgressLogs {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// Appends an entry, dropping the oldest when the sandbox's ring is full.
    pub fn push(&self, sandbox: &SandboxName, entry: EgressLogEntry) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings.entry(sandbox.clone()).or_default();
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The sandbox's entries, oldest first.
    pub fn get(&self, sandbox: &SandboxName) -> Vec<EgressLogEntry> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings
            .get(sandbox)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a sandbox's log (when it is destroyed).
    pub fn remove(&self, sandbox: &SandboxName) {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sandbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_api::egress::EgressDecision;

    fn entry(host: &str) -> EgressLogEntry {
        EgressLogEntry {
            time: String::new(),
            host: host.into(),
            port: 443,
            scheme: "https".into(),
            method: "GET".into(),
            path: "/".into(),
            status: Some(200),
            bytes_up: 0,
            bytes_down: 0,
            rule: "default".into(),
            decision: EgressDecision::Allowed,
            error: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn bounded_oldest_first() {
        let logs = EgressLogs::new(2);
        let a: SandboxName = "a".parse().unwrap();
        for h in ["1", "2", "3"] {
            logs.push(&a, entry(h));
        }
        let got: Vec<_> = logs.get(&a).into_iter().map(|e| e.host).collect();
        assert_eq!(got, ["2", "3"]);
        assert!(logs.get(&"b".parse().unwrap()).is_empty());
        logs.remove(&a);
        assert!(logs.get(&a).is_empty());
    }
}
