//! Caps on open preview connections. Preview URLs are meant to be shared, so their visitors are
//! not trusted: without a cap, enough open connections to one sandbox (each holds two sockets
//! and two pipes in the daemon) would take every file descriptor the daemon has, and with them
//! the API of every other sandbox. A connection past a cap is answered `resource_exhausted`.

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

#[derive(Default)]
struct Counts {
    total: usize,
    by_sandbox: HashMap<SandboxName, usize>,
}

pub struct ConnLimit {
    per_sandbox: usize,
    total: usize,
    counts: Mutex<Counts>,
}

/// One open connection; counted until dropped.
pub struct ConnGuard {
    limit: Arc<ConnLimit>,
    name: SandboxName,
}

impl ConnLimit {
    pub fn new(per_sandbox: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_sandbox: per_sandbox.max(1),
            total: total.max(1),
            counts: Mutex::default(),
        })
    }

    /// `per_sandbox`, and a total that fits this process's `RLIMIT_NOFILE`.
    pub fn for_this_process(per_sandbox: usize) -> Arc<Self> {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let total = (soft.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION)
            .try_into()
            .unwrap_or(usize::MAX)
            .max(MIN_TOTAL);
        Self::new(per_sandbox, total)
    }

    /// Counts a new connection to `name`, or says which cap it would pass.
    pub fn acquire(self: &Arc<Self>, name: &SandboxName) -> Result<ConnGuard, ApiError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.total {
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the daemon already has {} open preview connections, the most its file \
                     descriptor limit allows; retry later",
                    c.total
                ),
            ));
        }
        let n = c.by_sandbox.entry(name.clone()).or_default();
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
        c.total += 1;
        Ok(ConnGuard {
            limit: self.clone(),
            name: name.clone(),
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.by_sandbox.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                c.by_sandbox.remove(&self.name);
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
    fn caps_per_sandbox_and_in_total_and_frees_on_drop() {
        let l = ConnLimit::new(2, 3);
        let a1 = l.acquire(&name("a")).unwrap();
        let _a2 = l.acquire(&name("a")).unwrap();
        let e = l.acquire(&name("a")).err().unwrap();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("sandbox a"), "{}", e.message);
        let _b1 = l.acquire(&name("b")).unwrap();
        let e = l.acquire(&name("b")).err().unwrap();
        assert!(e.message.contains("file descriptor"), "{}", e.message);
        drop(a1);
        let _b2 = l.acquire(&name("b")).unwrap();
        assert!(l.acquire(&name("c")).is_err());
    }

    #[test]
    fn the_total_follows_the_descriptor_limit() {
        let l = ConnLimit::for_this_process(DEFAULT_PER_SANDBOX);
        assert!(l.total >= MIN_TOTAL);
    }
}
