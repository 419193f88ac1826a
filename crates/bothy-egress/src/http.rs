//! HTTP/1.1 through the proxy, one request at a time: policy, header injection, forwarding
//! with streamed bodies both ways, keep-alive on both sides, and `Connection: upgrade`
//! (WebSocket) passthrough.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bothy_api::egress::EgressDecision;
use bothy_api::network::HostRule;
use bothy_api::{ApiError, ErrorCode};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::policy;
use crate::record::{blank, Counted, Direction, Recorder};
use crate::serve::Shared;
use crate::upstream::{parse_upstream, BoxIo, Scheme, Target};

type UpBody = Counted<Incoming>;
pub type DownBody = BoxBody<Bytes, hyper::Error>;

/// One connection from a sandbox, after TLS termination if it was TLS.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub peer: IpAddr,
    pub dst: SocketAddr,
    /// The host of a TLS connection (SNI): every request on it is for that host.
    pub tls_host: Option<String>,
    /// Upstream connections kept alive for the next request, by target.
    pool: Mutex<HashMap<Target, SendRequest<UpBody>>>,
}

impl Conn {
    pub fn new(
        shared: Arc<Shared>,
        peer: IpAddr,
        dst: SocketAddr,
        tls_host: Option<String>,
    ) -> Self {
        Self {
            shared,
            peer,
            dst,
            tls_host,
            pool: Mutex::new(HashMap::new()),
        }
    }
}

/// Serves HTTP/1.1 on `io` until the sandbox closes it.
pub(crate) async fn serve(io: BoxIo, conn: Conn) {
    let conn = Arc::new(conn);
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let res = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "egress connection ended");
    }
}

/// Serves HTTP/2 (negotiated by ALPN on a TLS connection) on `io`. Requests go upstream as
/// HTTP/1.1, like those of HTTP/1.1 clients.
pub(crate) async fn serve_h2(io: BoxIo, conn: Conn) {
    let conn = Arc::new(conn);
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let res = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "egress HTTP/2 connection ended");
    }
}

impl Conn {
    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<DownBody> {
        let dir = self.shared.dir.clone();
        let scheme = if self.tls_host.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let port = self.dst.port();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let host = match (&self.tls_host, request_host(&req)) {
            (Some(t), Some(h)) if !h.eq_ignore_ascii_case(t) => {
                return error(
                    StatusCode::MISDIRECTED_REQUEST,
                    ErrorCode::InvalidRequest,
                    format!("this TLS connection is for {t}, not {h}"),
                )
            }
            (Some(t), _) => t.clone(),
            (None, Some(h)) => h,
            (None, None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "the request names no host".into(),
                )
            }
        };
        let Some(sb) = dir.lookup(self.peer) else {
            return error(
                StatusCode::FORBIDDEN,
                ErrorCode::EgressDenied,
                "this sandbox has no network egress".into(),
            );
        };
        dir.touch(&sb.name);

        let mut entry = blank();
        entry.host = host.clone();
        entry.port = port;
        entry.scheme = scheme.as_str().into();
        entry.method = req.method().to_string();
        entry.path = path.clone();
        let verdict = policy::evaluate(&sb.policy, &host, port);
        entry.rule = verdict.matched.clone();
        if !verdict.allowed {
            entry.decision = EgressDecision::Denied;
            entry.status = Some(403);
            dir.record(&sb.name, entry);
            return error(
                StatusCode::FORBIDDEN,
                ErrorCode::EgressDenied,
                format!(
                    "egress to {host}:{port} is denied by this sandbox's policy ({})",
                    verdict.matched
                ),
            );
        }
        let rec = Recorder::new(dir.clone(), sb.name.clone(), entry);
        let fail = |status: StatusCode, code: ErrorCode, msg: String| {
            rec.fail(EgressDecision::Error, msg.clone());
            rec.set_status(status.as_u16());
            error(status, code, msg)
        };

        let rule = verdict.rule(&sb.policy);
        let target = match rule.and_then(|r| r.upstream.as_deref()) {
            Some(u) => match parse_upstream(u, scheme) {
                Ok(t) if t.scheme != Scheme::Tcp => t,
                Ok(_) => {
                    return fail(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::BadGateway,
                        format!("rule {} routes HTTP to a tcp:// upstream", verdict.matched),
                    )
                }
                Err(e) => {
                    return fail(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::BadGateway,
                        e.to_string(),
                    )
                }
            },
            None => Target {
                scheme,
                host: host.clone(),
                port,
                operator_routed: false,
            },
        };
        let injected = match rule.map(|r| injected_headers(r, &*dir)).transpose() {
            Ok(h) => h.unwrap_or_default(),
            Err((code, msg)) => {
                return fail(
                    StatusCode::BAD_GATEWAY,
                    code,
                    format!("rule {}: {msg}", verdict.matched),
                )
            }
        };

        let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
        let down_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        parts.headers.remove(header::PROXY_AUTHORIZATION);
        for (name, value) in injected {
            parts.headers.insert(name, value);
        }
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 carries the host in the :authority pseudo-header; HTTP/1.1 needs Host.
            let authority = parts.uri.authority().map(|a| a.as_str().to_string());
            if let Ok(v) = http::HeaderValue::from_str(&authority.unwrap_or_else(|| host.clone())) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.uri = match path.parse() {
            Ok(u) => u,
            Err(_) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "invalid request target".into(),
                )
            }
        };
        parts.version = Version::HTTP_11;
        let up_req = Request::from_parts(parts, Counted::new(body, rec.clone(), Direction::Up));

        let mut sender = match self.sender(&target).await {
            Ok(s) => s,
            Err(msg) => return fail(StatusCode::BAD_GATEWAY, ErrorCode::BadGateway, msg),
        };
        let mut resp = match sender.send_request(up_req).await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::BadGateway,
                    format!("upstream {}:{} failed: {e}", target.host, target.port),
                )
            }
        };
        rec.set_status(resp.status().as_u16());
        let switching = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let up_upgrade = hyper::upgrade::on(&mut resp);
            if let Some(down_upgrade) = down_upgrade {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let (Ok(down), Ok(up)) = tokio::join!(down_upgrade, up_upgrade) else {
                        return;
                    };
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        use std::sync::atomic::Ordering::Relaxed;
                        rec.up.fetch_add(a, Relaxed);
                        rec.down.fetch_add(b, Relaxed);
                    }
                });
            }
        } else {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target, sender);
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, switching);
        Response::from_parts(parts, Counted::new(body, rec, Direction::Down).boxed())
    }

    /// A kept-alive upstream connection to `t`, or a new one.
    async fn sender(&self, t: &Target) -> Result<SendRequest<UpBody>, String> {
        let cached = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(t);
        if let Some(mut s) = cached {
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let io = self
            .shared
            .connector
            .connect(t)
            .await
            .map_err(|e| error_chain(&e))?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake with {}:{}: {e}", t.host, t.port))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }
}

/// The host a request is for (absolute-form target or `Host`), lowercase, without port.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let auth = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<http::uri::Authority>()
            .ok()?,
    };
    let h = auth.host().trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then(|| h.trim_end_matches('.').to_ascii_lowercase())
}

/// The headers a rule sets, with secrets substituted. Errors name the header, never a value.
fn injected_headers(
    rule: &HostRule,
    dir: &dyn crate::Directory,
) -> Result<Vec<(HeaderName, http::HeaderValue)>, (ErrorCode, String)> {
    let mut out = Vec::with_capacity(rule.headers.len());
    for (name, hv) in &rule.headers {
        let hname = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            (
                ErrorCode::BadGateway,
                format!("invalid header name {name:?}"),
            )
        })?;
        let text = match (&hv.secret, &hv.value) {
            (Some(secret), None) => {
                let value = dir.secret(secret).ok_or_else(|| {
                    (
                        ErrorCode::SecretNotFound,
                        format!("secret {secret:?} for header {name} is not set"),
                    )
                })?;
                hv.format
                    .as_deref()
                    .unwrap_or("{secret}")
                    .replace("{secret}", &value)
            }
            (None, Some(v)) => v.clone(),
            _ => {
                return Err((
                    ErrorCode::BadGateway,
                    format!("header {name}: give exactly one of secret and value"),
                ))
            }
        };
        let mut value = http::HeaderValue::from_str(&text).map_err(|_| {
            (
                ErrorCode::BadGateway,
                format!("header {name}: the value is not a valid header value"),
            )
        })?;
        value.set_sensitive(hv.secret.is_some());
        out.push((hname, value));
    }
    Ok(out)
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1); keeps `Connection: upgrade` + `Upgrade` when
/// the exchange is an upgrade.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if !(upgrade && name == header::UPGRADE) {
            h.remove(name);
        }
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(name);
    }
    if upgrade {
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    } else {
        h.remove(header::UPGRADE);
    }
}

/// An API-shaped error answered by the proxy itself.
pub(crate) fn error(status: StatusCode, code: ErrorCode, message: String) -> Response<DownBody> {
    let body = ApiError::new(code, message).to_json();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        HeaderName::from_static("x-bothy-egress"),
        http::HeaderValue::from_static("proxy"),
    );
    r
}

pub(crate) use bothy_api::error::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-foo".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn hosts_from_requests() {
        let r = Request::get("/x")
            .header("host", "API.Example.test:443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("api.example.test"));
        let r = Request::get("http://a.test/x").body(()).unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("a.test"));
        let r = Request::get("/x").body(()).unwrap();
        assert_eq!(request_host(&r), None);
    }
}
