//! The accept loop: one task per connection, which finds the sandbox and the original
//! destination, then speaks TLS + HTTP, HTTP, or relays raw TCP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

use bothy_api::SandboxName;

use crate::ca::Ca;
use crate::directory::Directory;
use crate::upstream::Connector;
use crate::{http, origdst, policy, tcp};

/// Where a connection was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstSource {
    /// Ask conntrack (`SO_ORIGINAL_DST`): connections redirected by nftables. Connections that
    /// were not redirected are closed.
    OriginalDst,
    /// Every connection is taken to be for this address (a listener per port, without
    /// nftables: tests and benchmarks).
    Fixed(SocketAddr),
}

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Roots trusted for upstream TLS in addition to the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub dst: DstSource,
    /// For upstream DNS, TCP and TLS each.
    pub connect_timeout: Duration,
    /// For the sandbox's first bytes and TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections one sandbox may hold through the proxy; more are closed at once, so
    /// that no sandbox can exhaust the daemon's file descriptors.
    pub max_connections_per_sandbox: usize,
    /// Open connections all sandboxes together may hold; more are closed at once, so that
    /// many sandboxes together cannot exhaust them either.
    pub max_connections: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            dst: DstSource::OriginalDst,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            max_connections_per_sandbox: 1024,
            max_connections: 65_536,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("upstream TLS configuration")]
    Tls(#[from] rustls::Error),
}

pub(crate) struct Shared {
    pub dir: Arc<dyn Directory>,
    pub ca: Arc<Ca>,
    pub connector: Connector,
    pub opts: ProxyOptions,
    /// Open connections per sandbox, and in total.
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_sandbox: HashMap<SandboxName, usize>,
}

/// One open connection of a sandbox, counted until dropped.
struct Slot {
    shared: Arc<Shared>,
    name: SandboxName,
}

impl Slot {
    fn take(shared: &Arc<Shared>, name: SandboxName) -> Option<Self> {
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= shared.opts.max_connections {
            return None;
        }
        let n = open.by_sandbox.entry(name.clone()).or_insert(0);
        if *n >= shared.opts.max_connections_per_sandbox {
            return None;
        }
        *n += 1;
        open.total += 1;
        Some(Self {
            shared: shared.clone(),
            name,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_sandbox.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                open.by_sandbox.remove(&self.name);
            }
        }
    }
}

/// Serves the egress proxy on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    dir: Arc<dyn Directory>,
    ca: Arc<Ca>,
    opts: ProxyOptions,
) -> Result<(), ServeError> {
    let connector = Connector::new(&opts.extra_roots, opts.connect_timeout)?;
    let shared = Arc::new(Shared {
        dir,
        ca,
        connector,
        opts,
        open: Mutex::default(),
    });
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(connection(shared.clone(), sock, peer));
    }
}

async fn connection(shared: Arc<Shared>, sock: TcpStream, peer: SocketAddr) {
    let _ = sock.set_nodelay(true);
    let peer_ip = canonical(peer.ip());
    let dst = match shared.opts.dst {
        DstSource::Fixed(a) => a,
        DstSource::OriginalDst => {
            let Ok(local) = sock.local_addr() else { return };
            match origdst::original_dst(&sock, local) {
                Ok(a) if a != local => SocketAddr::new(canonical(a.ip()), a.port()),
                _ => {
                    tracing::debug!(%peer, "egress proxy: connection was not redirected; closing");
                    return;
                }
            }
        }
    };
    let Some(sb) = shared.dir.lookup(peer_ip) else {
        tracing::debug!(%peer, "egress proxy: no sandbox with egress at this address; closing");
        return;
    };
    let Some(_slot) = Slot::take(&shared, sb.name.clone()) else {
        tracing::warn!(sandbox = %sb.name, "egress proxy: too many open connections; closing a new one");
        return;
    };
    if !policy::WEB_PORTS.contains(&dst.port()) {
        return tcp::relay(shared, sock, peer_ip, dst).await;
    }
    // HTTP clients speak first: the first byte tells TLS (a handshake record) from plain HTTP.
    let mut first = [0u8; 1];
    match tokio::time::timeout(shared.opts.handshake_timeout, sock.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] != 0x16 {
        let conn = http::Conn::new(shared, peer_ip, dst, None);
        return http::serve(Box::pin(sock), conn).await;
    }
    let accept = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), sock);
    let Ok(Ok(start)) = tokio::time::timeout(shared.opts.handshake_timeout, accept).await else {
        return;
    };
    let host = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
        .or_else(|| shared.dir.host_for(peer_ip, dst.ip()))
        .unwrap_or_else(|| dst.ip().to_string());
    let cfg = match shared.ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%host, error = %e, "egress proxy: cannot mint a certificate");
            return;
        }
    };
    let tls =
        match tokio::time::timeout(shared.opts.handshake_timeout, start.into_stream(cfg)).await {
            Ok(Ok(t)) => t,
            _ => return,
        };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let conn = http::Conn::new(shared, peer_ip, dst, Some(host));
    if h2 {
        http::serve_h2(Box::pin(tls), conn).await
    } else {
        http::serve(Box::pin(tls), conn).await
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
