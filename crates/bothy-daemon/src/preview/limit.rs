//! Caps on open connections. Preview URLs are meant to be shared, so their visitors are not
//! trusted: without caps, enough open connections (a relayed preview connection holds two
//! sockets and two pipes in the daemon) would take every file descriptor the daemon has, and
//! with them the API of every sandbox.
//!
//! - [`ConnLimit`]: open preview connections per sandbox; past it, `resource_exhausted`, and
//!   other sandboxes' previews are unaffected.
//! - [`tcp_connection_budget`]: all connections of the TCP listener together (enforced by
//!   [`super::listener`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bothy_api::{ApiError, ErrorCode, SandboxName};

/// Default of `--preview-max-connections`.
pub const DEFAULT_PER_SANDBOX: usize = 1024;
/// File descriptors a relayed connection holds: two sockets, two pipes.
const FDS_PER_CONNECTION: u64 = 6;
/// File descriptors kept out of the preview budget for everything else the daemon does.
const RESERVED_FDS: u64 = 4096;
/// The total never drops below this, whatever the descriptor limit says.
const MIN_TOTAL: usize = 64;

/// File descriptors this process may open (its soft `RLIMIT_NOFILE`, raised at start).
fn nofile() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// How many things holding `fds_each` descriptors fit in this process's limit, after
/// [`RESERVED_FDS`]; never less than [`MIN_TOTAL`].
fn fd_budget(fds_each: u64) -> usize {
    (nofile().saturating_sub(RESERVED_FDS) / fds_each)
        .try_into()
        .unwrap_or(usize::MAX)
        .max(MIN_TOTAL)
}

/// The most TCP connections the daemon's listener keeps open at once: as many relayed preview
/// connections as fit (each holds [`FDS_PER_CONNECTION`]) — an idle or API connection holds one,
/// so this also bounds a flood of idle connections well inside the limit.
pub fn tcp_connection_budget() -> usize {
    fd_budget(FDS_PER_CONNECTION)
}

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

    #[test]
    fn the_tcp_budget_follows_the_descriptor_limit() {
        let n = tcp_connection_budget();
        assert!(n >= MIN_TOTAL);
        assert!(n as u64 <= nofile().max(MIN_TOTAL as u64 * FDS_PER_CONNECTION));
    }
}
