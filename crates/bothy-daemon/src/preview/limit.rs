//! Caps on open connections. Preview URLs are meant to be shared, so their visitors are not
//! trusted: without caps, enough open connections (a relayed preview connection holds two
//! sockets and two pipes in the daemon) would take every file descriptor the daemon has, and
//! with them the API of every sandbox.
//!
//! - [`ConnLimit`]: open preview connections per sandbox; past it, `resource_exhausted`, and
//!   other sandboxes' previews are unaffected.
//! - All connections of the TCP listener together are capped by [`super::listener`], to
//!   [`crate::fds::tcp_listener_connections`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bothy_api::{ApiError, ErrorCode, SandboxName};

/// Default of `--preview-max-connections`.
pub const DEFAULT_PER_SANDBOX: usize = 1024;
pub struct ConnLimit {
    per_sandbox: usize,
    counts: Mutex<HashMap<SandboxName, usize>>,
}

/// One open connection; counted until dropped.
pub struct ConnGuard {
    limit: Arc<ConnLimit>,
    name: SandboxName,
}

impl ConnLimit {
    pub fn new(per_sandbox: usize) -> Arc<Self> {
        Arc::new(Self {
            per_sandbox: per_sandbox.max(1),
            counts: Mutex::default(),
        })
    }

    /// Counts a new connection to `name`, or refuses it past the cap.
    pub fn acquire(self: &Arc<Self>, name: &SandboxName) -> Result<ConnGuard, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(name.clone()).or_default();
        if *n >= self.per_sandbox {
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "sandbox {} already has {n} open preview connections, the most allowed \
                     (bothy serve --preview-max-connections); close some and retry",
                    name.as_str()
                ),
            ));
        }
        *n += 1;
        Ok(ConnGuard {
            limit: self.clone(),
            name: name.clone(),
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SandboxName {
        SandboxName::new(s).unwrap()
    }

    #[test]
    fn caps_each_sandbox_and_frees_on_drop() {
        let l = ConnLimit::new(2);
        let a1 = l.acquire(&name("a")).unwrap();
        let _a2 = l.acquire(&name("a")).unwrap();
        let e = l.acquire(&name("a")).err().unwrap();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("sandbox a"), "{}", e.message);
        let _b1 = l.acquire(&name("b")).unwrap();
        drop(a1);
        let _a3 = l.acquire(&name("a")).unwrap();
        assert!(l.acquire(&name("a")).is_err());
    }
}
