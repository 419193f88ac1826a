//! Sandbox networking: links, addresses, the host firewall and the DNS stub.
//!
//! Mode `none`: the sandbox's network namespace has loopback only. Mode `proxy`: a veth pair
//! joins the namespace to the host, point-to-point: every host-side link (`bx<hex address>`,
//! in this daemon's interface group) has the same local address, the *gateway* (first address
//! of the pool, `10.88.0.1` by default), and the sandbox's address as its peer; in the sandbox,
//! `eth0` has its own address with the gateway as peer and the default route. One gateway for
//! all means `/etc/resolv.conf` is the same everywhere (`nameserver 10.88.0.1`).
//!
//! The firewall ([`firewall`]) sends every TCP connection from a sandbox link to the egress
//! proxy's listener and DNS to [`dns`]; everything else is dropped. The DNS stub answers with
//! synthetic addresses ([`synth`]) so the proxy knows each connection's name; the proxy
//! identifies the sandbox by its source address ([`Network::lookup`]).
//!
//! Link setup happens after the runtime starts a sandbox and before its agent is handed out;
//! stopping the sandbox drops its namespace, which destroys the pair. Switching modes at
//! runtime adds or deletes the pair in the running namespace.

pub mod directory;
pub mod dns;
pub mod egress;
pub mod firewall;
mod link;
pub mod netlink;
pub mod synth;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bothy_api::network::{EgressPolicy, PolicyAction};
use bothy_api::SandboxName;
use tokio_util::sync::CancellationToken;

use link::{host_link_name, in_thread, link_addr, setup_link, SANDBOX_LINK};

/// `/etc/resolv.conf` of a sandbox in `proxy` mode.
pub fn resolv_conf(gateway: Ipv4Addr) -> String {
    format!("# written by bothy: the daemon answers DNS\nnameserver {gateway}\noptions edns0\n")
}

/// An IPv4 network `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn size(&self) -> u32 {
        if self.prefix == 0 {
            u32::MAX
        } else {
            1u32 << (32 - self.prefix as u32)
        }
    }

    pub fn nth(&self, off: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(off))
    }

    /// The offset of `ip` in the network, if it is in it.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).wrapping_sub(u32::from(self.base));
        (off < self.size()).then_some(off)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX (10.88.0.0/16)"))?;
        let base: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix {p:?} must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix as u32);
        if u32::from(base) & !mask != 0 {
            return Err(format!(
                "{s}: host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(base) & mask)
            ));
        }
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Daemon-level network settings.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Sandbox addresses; its first address is the gateway.
    pub pool: Ipv4Net,
    /// Synthetic addresses handed out by the DNS stub.
    pub synthetic: Ipv4Net,
    /// Identifies this daemon's firewall table and interface group (its cgroup parent).
    pub instance: String,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            pool: Ipv4Net {
                base: Ipv4Addr::new(10, 88, 0, 0),
                prefix: 16,
            },
            synthetic: Ipv4Net {
                base: Ipv4Addr::new(198, 18, 0, 0),
                prefix: 15,
            },
            instance: "bothy".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("proxy networking is unavailable on this host: {0}")]
    Unavailable(String),
    #[error("no free address left in the sandbox pool {0}")]
    PoolExhausted(Ipv4Net),
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    fn io(op: &'static str, source: std::io::Error) -> Self {
        Self::Io { op, source }
    }
}

/// A sandbox with a link: who it is and what it may reach.
pub struct Attached {
    pub name: SandboxName,
    pub addr: Ipv4Addr,
    policy: Mutex<Arc<EgressPolicy>>,
}

impl Attached {
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
struct Links {
    by_addr: HashMap<Ipv4Addr, Arc<Attached>>,
    by_name: HashMap<SandboxName, Arc<Attached>>,
    /// Next pool offset to try: allocation goes round the pool so that an address whose old
    /// link the kernel is still tearing down is not reused at once.
    cursor: u32,
}

/// The daemon's network service.
pub struct Network {
    opts: NetOptions,
    gateway: Ipv4Addr,
    group: u32,
    /// Why `proxy` mode cannot be used here, if it cannot.
    unavailable: Option<String>,
    rules: Option<firewall::Rules>,
    links: Mutex<Links>,
    synth: synth::Synth,
}

/// Sockets the daemon serves on behalf of [`Network`]; the proxy listener goes to the egress
/// proxy.
pub struct Listeners {
    pub proxy: tokio::net::TcpListener,
    dns_udp: tokio::net::UdpSocket,
    dns_tcp: tokio::net::TcpListener,
}

impl Network {
    /// Binds the proxy and DNS sockets on the gateway address and loads the firewall. If nft is
    /// missing (or refuses the rules) the service still starts, with `proxy` mode refused.
    pub fn start(opts: NetOptions) -> Result<(Arc<Self>, Option<Listeners>), NetError> {
        let gateway = opts.pool.nth(1);
        let group = firewall::group_for(&opts.instance);
        let table = firewall::table_name(&opts.instance);
        let mut unavailable = None;
        let mut rules = None;
        let mut listeners = None;
        match firewall::available() {
            Err(e) => unavailable = Some(e.to_string()),
            Ok(()) => {
                let l = bind_listeners(gateway)?;
                let stale = firewall::remove_stale(&table);
                if stale > 0 {
                    tracing::info!(stale, "removed firewall tables of daemons that are gone");
                }
                let r = firewall::Rules {
                    table,
                    group,
                    proxy_port: l
                        .proxy
                        .local_addr()
                        .map_err(|e| NetError::io("read proxy port", e))?
                        .port(),
                    dns_port: l
                        .dns_udp
                        .local_addr()
                        .map_err(|e| NetError::io("read dns port", e))?
                        .port(),
                };
                match r.load() {
                    Ok(()) => {
                        rules = Some(r);
                        listeners = Some(l);
                    }
                    Err(e) => unavailable = Some(e.to_string()),
                }
            }
        }
        let net = Arc::new(Self {
            synth: synth::Synth::new(opts.synthetic),
            opts,
            gateway,
            group,
            unavailable,
            rules,
            links: Mutex::new(Links {
                cursor: 2,
                ..Links::default()
            }),
        });
        Ok((net, listeners))
    }

    /// Serves DNS on the stub's sockets until `stop`.
    pub fn serve_dns(
        self: &Arc<Self>,
        l: (tokio::net::UdpSocket, tokio::net::TcpListener),
        stop: CancellationToken,
    ) {
        tokio::spawn(dns::serve_udp(l.0, self.clone(), stop.clone()));
        tokio::spawn(dns::serve_tcp(l.1, self.clone(), stop));
    }

    /// Closes the firewall at shutdown: sandbox links stay dropped while the daemon is away.
    pub fn shutdown(&self) {
        if let Some(r) = &self.rules {
            let any = !self.links().by_addr.is_empty();
            let res = if any { r.close() } else { r.remove() };
            if let Err(e) = res {
                tracing::warn!(error = %e, "could not close the firewall table");
            }
        }
    }

    /// `Err` with a clear reason if `proxy` mode cannot be used on this host.
    pub fn check_available(&self) -> Result<(), NetError> {
        match &self.unavailable {
            Some(r) => Err(NetError::Unavailable(r.clone())),
            None => Ok(()),
        }
    }

    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn pool(&self) -> Ipv4Net {
        self.opts.pool
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the running sandbox `name` (network namespace `netns`) its link and address.
    pub async fn attach(
        &self,
        name: &SandboxName,
        netns: OwnedFd,
        policy: Arc<EgressPolicy>,
    ) -> Result<Ipv4Addr, NetError> {
        self.check_available()?;
        self.detach_record(name);
        // A few tries: an address whose link still exists (being torn down by the kernel, or
        // used by another daemon on this machine) fails with EEXIST; take the next one.
        let mut last = None;
        for _ in 0..8 {
            let addr = self.reserve(name, policy.clone())?;
            let (gw, group) = (self.gateway, self.group);
            let ns = netns
                .try_clone()
                .map_err(|e| NetError::io("duplicate the netns fd", e))?;
            match in_thread(move || setup_link(ns, addr, gw, group)).await {
                Ok(()) => return Ok(addr),
                Err(e) => {
                    self.release(addr);
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        last = Some(e);
                        continue;
                    }
                    return Err(NetError::io("set up the sandbox's link", e));
                }
            }
        }
        Err(NetError::io(
            "set up the sandbox's link",
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        ))
    }

    /// After a daemon restart: finds the address of a running sandbox's link and records it.
    /// Returns `false` if the sandbox has no link (the caller then attaches one).
    pub async fn adopt(
        &self,
        name: &SandboxName,
        netns: OwnedFd,
        policy: Arc<EgressPolicy>,
    ) -> bool {
        let Ok(addr) = in_thread(move || {
            rustix::thread::move_into_link_name_space(
                netns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            link_addr(SANDBOX_LINK)
        })
        .await
        else {
            return false;
        };
        if self.opts.pool.offset(addr).is_none() || addr == self.gateway {
            return false;
        }
        let a = Arc::new(Attached {
            name: name.clone(),
            addr,
            policy: Mutex::new(policy),
        });
        let mut l = self.links();
        l.by_addr.insert(addr, a.clone());
        l.by_name.insert(name.clone(), a);
        true
    }

    /// Removes the link of a running sandbox (switch to `none`).
    pub async fn detach_live(&self, name: &SandboxName) -> Result<(), NetError> {
        let Some(a) = self.detach_record(name) else {
            return Ok(());
        };
        let host = host_link_name(a.addr);
        in_thread(move || {
            let mut nl = netlink::Netlink::open()?;
            match netlink::link_index(&host) {
                Ok(i) => nl.del_link(i),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| NetError::io("delete the sandbox's link", e))
    }

    /// Forgets a sandbox's address (its namespace is gone, or about to be: the kernel deletes
    /// the pair with it). Returns what was recorded.
    pub fn detach_record(&self, name: &SandboxName) -> Option<Arc<Attached>> {
        let mut l = self.links();
        let a = l.by_name.remove(name)?;
        l.by_addr.remove(&a.addr);
        Some(a)
    }

    /// Replaces the policy of an attached sandbox (applies to the next connection/query).
    pub fn set_policy(&self, name: &SandboxName, policy: Arc<EgressPolicy>) {
        if let Some(a) = self.links().by_name.get(name) {
            *a.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
        }
    }

    /// The address of an attached sandbox.
    pub fn addr_of(&self, name: &SandboxName) -> Option<Ipv4Addr> {
        self.links().by_name.get(name).map(|a| a.addr)
    }

    fn reserve(&self, name: &SandboxName, policy: Arc<EgressPolicy>) -> Result<Ipv4Addr, NetError> {
        let mut l = self.links();
        let size = self.opts.pool.size();
        // Offsets 2..size-1: 0 is the network, 1 the gateway, the last looks like a broadcast.
        let usable = size.saturating_sub(3);
        for _ in 0..usable {
            let off = l.cursor;
            l.cursor = if off + 1 >= size - 1 { 2 } else { off + 1 };
            let addr = self.opts.pool.nth(off);
            if l.by_addr.contains_key(&addr) {
                continue;
            }
            let a = Arc::new(Attached {
                name: name.clone(),
                addr,
                policy: Mutex::new(policy),
            });
            l.by_addr.insert(addr, a.clone());
            l.by_name.insert(name.clone(), a);
            return Ok(addr);
        }
        Err(NetError::PoolExhausted(self.opts.pool))
    }

    fn release(&self, addr: Ipv4Addr) {
        let mut l = self.links();
        if let Some(a) = l.by_addr.remove(&addr) {
            if l.by_name.get(&a.name).is_some_and(|b| b.addr == addr) {
                l.by_name.remove(&a.name);
            }
        }
    }

    /// The sandbox whose link has address `peer` (how the proxy and the DNS stub know who is
    /// asking).
    pub fn lookup(&self, peer: IpAddr) -> Option<Arc<Attached>> {
        let IpAddr::V4(v4) = peer else { return None };
        self.links().by_addr.get(&v4).cloned()
    }

    /// The name a synthetic destination address was handed out for.
    pub fn host_for(&self, dst: IpAddr) -> Option<String> {
        let IpAddr::V4(v4) = dst else { return None };
        self.synth.name_for(v4)
    }

    /// Whether `ip` belongs to the sandbox pool or the synthetic pool (never a real upstream).
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.opts.pool.offset(v4).is_some() || self.synth.contains(v4),
            IpAddr::V6(_) => false,
        }
    }

    /// What the DNS stub answers `peer` for `name` (lower-case, no trailing dot).
    ///
    /// - an unknown peer is refused;
    /// - a name a routing rule covers (`upstream`) gets its synthetic address without any
    ///   lookup, whether it exists publicly or not;
    /// - a *denied* name is answered too (synthetic, no lookup), so that the connection reaches
    ///   the proxy and fails there with a clear error instead of "could not resolve host";
    /// - single-label names and reverse lookups are NXDOMAIN;
    /// - any other name is looked up with the host's resolver: NXDOMAIN passes through,
    ///   otherwise the synthetic address is answered.
    ///
    /// Only A records are answered; other types get NOERROR with no records (the sandbox has no
    /// IPv6 route anyway).
    pub async fn resolve(&self, peer: IpAddr, name: &str, qtype: u16) -> dns::Answer {
        use dns::Answer;
        let Some(att) = self.lookup(peer) else {
            return Answer::Rcode(dns::RCODE_REFUSED);
        };
        if qtype == dns::TYPE_PTR || name.ends_with(".arpa") {
            return Answer::Rcode(dns::RCODE_NXDOMAIN);
        }
        let policy = att.policy();
        let known = routed(&policy, name) || denied(&policy, name);
        if !known {
            if !name.contains('.') {
                return Answer::Rcode(dns::RCODE_NXDOMAIN);
            }
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((name.to_string(), 0u16)),
            )
            .await
            .map(|r| r.map(|addrs| addrs.count()));
            match lookup {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Answer::Rcode(dns::RCODE_NXDOMAIN),
                Err(_) => return Answer::Rcode(dns::RCODE_SERVFAIL),
            }
        }
        if qtype == dns::TYPE_A {
            Answer::Records(vec![self.synth.addr_for(name)])
        } else {
            Answer::Records(Vec::new())
        }
    }
}

/// Whether a routing rule (one with an `upstream`) covers `host` on any port.
pub fn routed(policy: &EgressPolicy, host: &str) -> bool {
    policy
        .rules
        .iter()
        .any(|r| r.upstream.is_some() && glob_matches(strip_port(&r.host), host))
}

/// Whether `host` is denied on every port: a `deny` glob matches it, or the default is deny and
/// nothing allows it.
pub fn denied(policy: &EgressPolicy, host: &str) -> bool {
    if policy
        .deny
        .iter()
        .any(|g| glob_matches(strip_port(g), host) && !g.contains(':'))
    {
        return true;
    }
    policy.default == PolicyAction::Deny
        && !policy
            .allow
            .iter()
            .any(|g| glob_matches(strip_port(g), host))
        && !policy
            .rules
            .iter()
            .any(|r| glob_matches(strip_port(&r.host), host))
}

fn strip_port(entry: &str) -> &str {
    match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => entry,
    }
}

/// Host glob matching as documented in [`bothy_api::network`]: case-insensitive, `*` matches
/// any run of characters including dots.
pub fn glob_matches(glob: &str, host: &str) -> bool {
    let g: Vec<u8> = glob.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let h: Vec<u8> = host.bytes().map(|b| b.to_ascii_lowercase()).collect();
    // Iterative wildcard matching with backtracking to the last star.
    let (mut gi, mut hi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while hi < h.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some(gi);
            mark = hi;
            gi += 1;
        } else if gi < g.len() && g[gi] == h[hi] {
            gi += 1;
            hi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            hi = mark;
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == b'*' {
        gi += 1;
    }
    gi == g.len()
}

/// Binds the proxy listener and the DNS stub's sockets on the gateway address. The address
/// exists only once a first link has it, hence `IP_FREEBIND`.
fn bind_listeners(gateway: Ipv4Addr) -> Result<Listeners, NetError> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let mk = |ty: SocketType, port: u16| -> std::io::Result<OwnedFd> {
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            ty,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        sockopt::set_ip_freebind(&fd, true)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        rustix::net::bind(&fd, &SocketAddrV4::new(gateway, port))?;
        if ty == SocketType::STREAM {
            rustix::net::listen(&fd, 1024)?;
        }
        Ok(fd)
    };
    let proxy = mk(SocketType::STREAM, 0).map_err(|e| NetError::io("bind the egress proxy", e))?;
    let proxy = tokio::net::TcpListener::from_std(std::net::TcpListener::from(proxy))
        .map_err(|e| NetError::io("register the egress proxy", e))?;
    // DNS: UDP and TCP on one port.
    let mut last = None;
    for _ in 0..16 {
        let udp = mk(SocketType::DGRAM, 0).map_err(|e| NetError::io("bind the DNS stub", e))?;
        let port = rustix::net::getsockname(&udp)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .map(|a| a.port())
            .unwrap_or(0);
        match mk(SocketType::STREAM, port) {
            Ok(tcp) => {
                let dns_udp = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(udp))
                    .map_err(|e| NetError::io("register the DNS stub", e))?;
                let dns_tcp = tokio::net::TcpListener::from_std(std::net::TcpListener::from(tcp))
                    .map_err(|e| NetError::io("register the DNS stub", e))?;
                return Ok(Listeners {
                    proxy,
                    dns_udp,
                    dns_tcp,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(NetError::io(
        "bind the DNS stub (TCP)",
        last.unwrap_or_else(|| std::io::Error::other("no port")),
    ))
}

impl Listeners {
    /// Splits off the DNS sockets (for [`Network::serve_dns`]).
    pub fn into_parts(
        self,
    ) -> (
        tokio::net::TcpListener,
        (tokio::net::UdpSocket, tokio::net::TcpListener),
    ) {
        (self.proxy, (self.dns_udp, self.dns_tcp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_api::network::HostRule;

    #[test]
    fn globs() {
        assert!(glob_matches("*.example.com", "a.b.example.com"));
        assert!(!glob_matches("*.example.com", "example.com"));
        assert!(glob_matches("API.example.test", "api.EXAMPLE.test"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*c*e", "abcde"));
        assert!(!glob_matches("a*c*e", "abcdf"));
    }

    #[test]
    fn nets() {
        let n: Ipv4Net = "10.88.0.0/16".parse().unwrap();
        assert_eq!(n.nth(1), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(n.offset(Ipv4Addr::new(10, 88, 1, 0)), Some(256));
        assert_eq!(n.offset(Ipv4Addr::new(10, 89, 0, 0)), None);
        assert!("10.88.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("10.88.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.88.0.0/31".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn routed_and_denied() {
        let p = EgressPolicy {
            deny: vec!["*.evil.test".into(), "db.evil2.test:5432".into()],
            allow: vec!["ok.test".into()],
            rules: vec![HostRule {
                host: "api.example.test".into(),
                headers: Default::default(),
                upstream: Some("https://127.0.0.1:8443".into()),
            }],
            default: PolicyAction::Deny,
        };
        assert!(routed(&p, "api.example.test"));
        assert!(!routed(&p, "ok.test"));
        assert!(denied(&p, "x.evil.test"));
        assert!(denied(&p, "other.test")); // default deny
        assert!(!denied(&p, "ok.test"));
        assert!(!denied(&p, "api.example.test"));
        assert_eq!(host_link_name(Ipv4Addr::new(10, 88, 0, 2)), "bx0a580002");
    }

    fn test_net(pool: &str) -> Network {
        Network {
            opts: NetOptions {
                pool: pool.parse().unwrap(),
                ..NetOptions::default()
            },
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            group: 1,
            unavailable: None,
            rules: None,
            links: Mutex::new(Links {
                cursor: 2,
                ..Links::default()
            }),
            synth: synth::Synth::new("198.18.0.0/15".parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn dns_answers_per_policy_without_lookups() {
        use dns::Answer;
        let net = test_net("10.88.0.0/16");
        let policy = EgressPolicy {
            deny: vec!["*.evil.test".into()],
            rules: vec![HostRule {
                host: "api.example.test".into(),
                headers: Default::default(),
                upstream: Some("http://127.0.0.1:1".into()),
            }],
            ..Default::default()
        };
        let name: SandboxName = "s".parse().unwrap();
        let addr = net.reserve(&name, Arc::new(policy)).unwrap();
        let peer = IpAddr::V4(addr);
        // Routed: synthetic, and mapped back.
        let Answer::Records(r) = net.resolve(peer, "api.example.test", dns::TYPE_A).await else {
            panic!("no records")
        };
        assert!(net.synth.contains(r[0]));
        assert_eq!(
            net.host_for(IpAddr::V4(r[0])).as_deref(),
            Some("api.example.test")
        );
        // Denied: answered too (the proxy explains).
        assert!(matches!(
            net.resolve(peer, "x.evil.test", dns::TYPE_A).await,
            Answer::Records(v) if v.len() == 1
        ));
        // AAAA: no records; single labels and PTR: NXDOMAIN; strangers: REFUSED.
        assert_eq!(
            net.resolve(peer, "api.example.test", dns::TYPE_AAAA).await,
            Answer::Records(vec![])
        );
        assert_eq!(
            net.resolve(peer, "nosuchlabel", dns::TYPE_A).await,
            Answer::Rcode(dns::RCODE_NXDOMAIN)
        );
        assert_eq!(
            net.resolve(peer, "1.0.88.10.in-addr.arpa", dns::TYPE_PTR)
                .await,
            Answer::Rcode(dns::RCODE_NXDOMAIN)
        );
        assert_eq!(
            net.resolve(
                "10.88.9.9".parse().unwrap(),
                "api.example.test",
                dns::TYPE_A
            )
            .await,
            Answer::Rcode(dns::RCODE_REFUSED)
        );
        // A policy change applies to the next query.
        net.set_policy(&name, Arc::new(EgressPolicy::default()));
        assert_eq!(
            net.resolve(peer, "nosuchlabel2", dns::TYPE_A).await,
            Answer::Rcode(dns::RCODE_NXDOMAIN)
        );
        assert!(net.is_internal(IpAddr::V4(addr)));
        assert!(!net.is_internal("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn pool_allocation_goes_round() {
        let net = test_net("10.88.0.0/29");
        let p = Arc::new(EgressPolicy::default());
        let names: Vec<SandboxName> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        // /29: offsets 2..=6 usable (5 addresses).
        let got: Vec<Ipv4Addr> = names[..5]
            .iter()
            .map(|n| net.reserve(n, p.clone()).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 88, 0, 6));
        assert!(matches!(
            net.reserve(&names[5], p.clone()),
            Err(NetError::PoolExhausted(_))
        ));
        net.detach_record(&names[1]);
        assert_eq!(net.reserve(&names[5], p.clone()).unwrap(), got[1]);
        assert_eq!(net.lookup(IpAddr::V4(got[1])).unwrap().name, names[5]);
    }
}
