//! Test support: an HTTPS (or HTTP) upstream on loopback with its own test CA, a test
//! [`Directory`], and a TLS client that trusts a given CA.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bothy_api::egress::EgressLogEntry;
use bothy_api::network::EgressPolicy;
use bothy_api::SandboxName;
use bothy_egress::{Directory, EgressLogs, SandboxEgress};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// A CA of the test world, unrelated to bothy's.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "test upstream CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server config for `names` (DNS names or IPs), signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        Arc::new(cfg)
    }
}

pub type TBody = BoxBody<Bytes, Infallible>;

/// A body of `left` bytes, sent in 64 KiB chunks, generated as it is read.
pub struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    pub fn new(n: u64) -> Self {
        Self {
            left: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// What the upstream saw, per request.
#[derive(Default)]
pub struct Seen {
    pub requests: Mutex<Vec<HashMap<String, String>>>,
}

async fn upstream_handle(
    seen: Arc<Seen>,
    mut req: Request<Incoming>,
) -> Result<Response<TBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/upgrade" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap());
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: u64 = n.parse().unwrap_or(0);
        return Ok(Response::new(Repeat::new(n).boxed()));
    }
    let mut m = HashMap::new();
    m.insert("method".into(), req.method().to_string());
    m.insert(
        "path".into(),
        req.uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    for (k, v) in req.headers() {
        m.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    m.insert("body_len".into(), body.len().to_string());
    let json = serde_json::to_vec(&m).unwrap();
    seen.requests.lock().unwrap().push(m);
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)).boxed())
        .unwrap())
}

/// An upstream on 127.0.0.1: HTTPS with `tls`, else plain HTTP. Echoes requests as JSON,
/// `/big/N` streams N bytes, `/upgrade` switches to an echo protocol.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let seen = s2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r| upstream_handle(seen.clone(), r));
                    let b = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(cfg) => {
                            let Ok(t) = tokio_rustls::TlsAcceptor::from(cfg).accept(sock).await
                            else {
                                return;
                            };
                            let _ = b
                                .serve_connection(TokioIo::new(t), svc)
                                .with_upgrades()
                                .await;
                        }
                        None => {
                            let _ = b
                                .serve_connection(TokioIo::new(sock), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }
}

/// A directory with one sandbox at every address (or none), a mutable policy, secrets and logs.
pub struct TestDir {
    pub name: SandboxName,
    pub policy: Mutex<Option<Arc<EgressPolicy>>>,
    pub secrets: Mutex<HashMap<String, String>>,
    pub hosts: Mutex<HashMap<IpAddr, String>>,
    pub logs: EgressLogs,
    pub touches: AtomicU64,
}

impl TestDir {
    pub fn new(policy: EgressPolicy) -> Arc<Self> {
        Arc::new(Self {
            name: "t1".parse().unwrap(),
            policy: Mutex::new(Some(Arc::new(policy))),
            secrets: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            logs: EgressLogs::default(),
            touches: AtomicU64::new(0),
        })
    }
    pub fn set_policy(&self, p: Option<EgressPolicy>) {
        *self.policy.lock().unwrap() = p.map(Arc::new);
    }
    pub fn lookup_policy(&self) -> Arc<EgressPolicy> {
        self.policy.lock().unwrap().clone().unwrap()
    }
    pub fn log(&self) -> Vec<EgressLogEntry> {
        self.logs.get(&self.name)
    }
}

impl Directory for TestDir {
    fn lookup(&self, _peer: IpAddr) -> Option<SandboxEgress> {
        let policy = self.policy.lock().unwrap().clone()?;
        Some(SandboxEgress {
            name: self.name.clone(),
            policy,
        })
    }
    fn host_for(&self, _peer: IpAddr, dst: IpAddr) -> Option<String> {
        self.hosts.lock().unwrap().get(&dst).cloned()
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.lock().unwrap().get(name).cloned()
    }
    fn record(&self, sandbox: &SandboxName, entry: EgressLogEntry) {
        self.logs.push(sandbox, entry);
    }
    fn touch(&self, _sandbox: &SandboxName) {
        self.touches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the proxy on a fresh loopback port, treating every connection as one for `dst`.
pub async fn start_proxy(
    dir: Arc<dyn Directory>,
    ca: Arc<bothy_egress::Ca>,
    dst: SocketAddr,
    extra_roots: Vec<CertificateDer<'static>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let opts = bothy_egress::ProxyOptions {
        extra_roots,
        dst: bothy_egress::DstSource::Fixed(dst),
        ..Default::default()
    };
    start_proxy_with(dir, ca, opts).await
}

/// Starts the proxy on a fresh loopback port with `opts`.
pub async fn start_proxy_with(
    dir: Arc<dyn Directory>,
    ca: Arc<bothy_egress::Ca>,
    opts: bothy_egress::ProxyOptions,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        bothy_egress::serve(l, dir, ca, opts).await.unwrap();
    });
    (addr, task)
}

/// A rustls client config trusting only `roots`.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth(),
    )
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a TLS connection to `addr` for `sni` and an HTTP/1.1 client on it.
pub async fn https_client(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(s)
}

/// An HTTP/1.1 client on a plain TCP connection.
pub async fn http_client(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    s
}

pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends a request; returns the status and the whole body.
pub async fn send(s: &mut Sender, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    s.ready().await.unwrap();
    let r = s.send_request(req).await.unwrap();
    let st = r.status().as_u16();
    (st, r.into_body().collect().await.unwrap().to_bytes())
}
