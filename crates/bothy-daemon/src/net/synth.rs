//! Synthetic addresses: every name a sandbox resolves gets an address from a private pool,
//! mapped back to the name when the sandbox connects to it.
//!
//! The sandbox never learns a real address, so the proxy always knows which *name* a connection
//! is for (also for non-HTTP ports, where there is no `Host` header or SNI), and `host:port`
//! rules are exact. The map is shared by all sandboxes of a daemon (a name has one address);
//! the policy is still evaluated per sandbox, on the name. When the pool is used up, the oldest
//! mapping is reused.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::Ipv4Net;

pub struct Synth {
    net: Ipv4Net,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, u32>,
    by_offset: HashMap<u32, String>,
    next: u32,
}

impl Synth {
    pub fn new(net: Ipv4Net) -> Self {
        Self {
            net,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The address of `name` (lower-case, no trailing dot), allocated if it has none.
    pub fn addr_for(&self, name: &str) -> Ipv4Addr {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&off) = g.by_name.get(name) {
            return self.net.nth(off);
        }
        // Offsets 1..size-1: skip the network and broadcast-looking ends.
        let usable = self.net.size().saturating_sub(2).max(1);
        let off = 1 + g.next % usable;
        g.next = g.next.wrapping_add(1);
        if let Some(old) = g.by_offset.remove(&off) {
            g.by_name.remove(&old);
        }
        g.by_offset.insert(off, name.to_string());
        g.by_name.insert(name.to_string(), off);
        self.net.nth(off)
    }

    /// The name an address was handed out for.
    pub fn name_for(&self, ip: Ipv4Addr) -> Option<String> {
        let off = self.net.offset(ip)?;
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.by_offset.get(&off).cloned()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.offset(ip).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_and_wrap() {
        let s = Synth::new("198.18.0.0/30".parse().unwrap());
        let a = s.addr_for("a.test");
        assert_eq!(s.addr_for("a.test"), a);
        assert_eq!(s.name_for(a).as_deref(), Some("a.test"));
        let b = s.addr_for("b.test");
        assert_ne!(a, b);
        // Pool of 2 usable addresses: a third name reuses the oldest.
        let c = s.addr_for("c.test");
        assert_eq!(c, a);
        assert_eq!(s.name_for(a).as_deref(), Some("c.test"));
        assert_eq!(s.name_for("10.0.0.1".parse().unwrap()), None);
        assert!(!s.contains("198.18.0.4".parse().unwrap()));
    }
}
