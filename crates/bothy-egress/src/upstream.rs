//! Connections from the proxy to where a request really goes: the host itself, or a rule's
//! `upstream`. TLS upstreams are verified against the host's system roots (plus any extra
//! roots the operator trusts); nothing is ever accepted unverified.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Any byte stream the proxy relays.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub type BoxIo = Pin<Box<dyn Io>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    Tcp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Named by the operator in a rule's `upstream`: may be a private or loopback address
    /// (internal services). Hosts the sandbox names never may.
    pub operator_routed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid upstream {0:?} (expected http://host:port, https://host:port or host:port)")]
    BadUpstream(String),
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("{host} resolves only to non-public or this host's own addresses ({addrs}); use a rule with an upstream to reach internal services")]
    NotPublic { host: String, addrs: String },
    #[error("cannot connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("TLS with {0} failed")]
    Tls(String, #[source] std::io::Error),
}

/// Parses a rule's `upstream`: `https://h[:p]`, `http://h[:p]`, `tcp://h:p` or `h:p` (raw TCP).
pub fn parse_upstream(s: &str, default_scheme: Scheme) -> Result<Target, UpstreamError> {
    let bad = || UpstreamError::BadUpstream(s.to_string());
    let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = s.strip_prefix("tcp://") {
        (Scheme::Tcp, r)
    } else {
        (default_scheme, s)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.is_empty() {
        return Err(bad());
    }
    let auth: http::uri::Authority = rest.parse().map_err(|_| bad())?;
    let port = match (auth.port_u16(), scheme) {
        (Some(p), _) => p,
        (None, Scheme::Https) => 443,
        (None, Scheme::Http) => 80,
        (None, Scheme::Tcp) => return Err(bad()),
    };
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    Ok(Target {
        scheme,
        host: host.to_string(),
        port,
        operator_routed: true,
    })
}

/// Addresses a sandbox may reach by naming a host: global unicast only. Loopback, private,
/// link-local (cloud metadata), CGNAT, multicast and unspecified addresses are the host's or
/// its neighbours' and stay out of reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Whether `ip` is one of this machine's own addresses (its services listen there). The
/// interface list is read at most once a second.
pub fn is_local(ip: IpAddr) -> bool {
    use std::sync::Mutex;
    use std::time::Instant;
    static CACHE: Mutex<Option<(Instant, Vec<IpAddr>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = matches!(&*cache, Some((at, _)) if at.elapsed() < Duration::from_secs(1));
    if !fresh {
        *cache = Some((Instant::now(), interface_addrs()));
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    cache.as_ref().is_some_and(|(_, addrs)| addrs.contains(&ip))
}

/// The addresses of every interface of the host (`getifaddrs`).
fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Opens connections to targets.
pub struct Connector {
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

impl Connector {
    /// `extra_roots` are trusted in addition to the system's.
    pub fn new(
        extra_roots: &[CertificateDer<'static>],
        timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("no system root certificates found: only extra roots are trusted");
        }
        for c in extra_roots {
            roots.add(c.clone())?;
        }
        let mut cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(cfg),
            timeout,
        })
    }

    /// Connects to `t` (TCP, then TLS for `https`), verifying the server's certificate for
    /// `t.host`.
    pub async fn connect(&self, t: &Target) -> Result<BoxIo, UpstreamError> {
        let tcp = self.connect_tcp(t).await?;
        if t.scheme != Scheme::Https {
            return Ok(Box::pin(tcp));
        }
        let name = ServerName::try_from(t.host.clone())
            .map_err(|_| UpstreamError::ServerName(t.host.clone()))?;
        let tls = tokio::time::timeout(
            self.timeout,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(t.host.clone()))?
        .map_err(|e| UpstreamError::Tls(t.host.clone(), e))?;
        Ok(Box::pin(tls))
    }

    async fn connect_tcp(&self, t: &Target) -> Result<TcpStream, UpstreamError> {
        let hostport = format!("{}:{}", t.host, t.port);
        let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => tokio::time::timeout(
                self.timeout,
                tokio::net::lookup_host((t.host.as_str(), t.port)),
            )
            .await
            .map_err(|_| UpstreamError::Timeout(hostport.clone()))?
            .map_err(|e| UpstreamError::Resolve(t.host.clone(), e))?
            .collect(),
        };
        let usable: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| t.operator_routed || (is_public(a.ip()) && !is_local(a.ip())))
            .collect();
        if usable.is_empty() {
            return Err(UpstreamError::NotPublic {
                host: t.host.clone(),
                addrs: addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut last = None;
        for a in usable {
            match tokio::time::timeout(self.timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = Some(UpstreamError::Connect(hostport.clone(), e)),
                Err(_) => last = Some(UpstreamError::Timeout(hostport.clone())),
            }
        }
        Err(last.unwrap_or(UpstreamError::Timeout(hostport)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse() {
        let t = parse_upstream("https://127.0.0.1:8443", Scheme::Https).unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Https, "127.0.0.1", 8443)
        );
        let t = parse_upstream("http://internal.test", Scheme::Https).unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Http, 80));
        let t = parse_upstream("10.0.0.5:5432", Scheme::Tcp).unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Tcp, 5432));
        let t = parse_upstream("https://[::1]:9/", Scheme::Https).unwrap();
        assert_eq!(t.host, "::1");
        assert!(parse_upstream("https://h/path", Scheme::Https).is_err());
        assert!(parse_upstream("tcp://h", Scheme::Tcp).is_err());
        assert!(parse_upstream("", Scheme::Tcp).is_err());
    }

    #[test]
    fn only_global_addresses_are_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["198.18.0.1", "198.19.255.1", "10.88.0.1"] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.200".parse().unwrap()));
    }
}
