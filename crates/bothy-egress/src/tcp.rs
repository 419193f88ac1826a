//! Raw TCP forwarding for ports other than 80 and 443: only when an `allow` entry or a rule
//! names the host and port; the host is the name the sandbox resolved through the daemon's DNS
//! (or the bare address).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bothy_api::egress::EgressDecision;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::error_chain;
use crate::policy;
use crate::record::{blank, Recorder};
use crate::serve::Shared;
use crate::upstream::{parse_upstream, Scheme, Target};

/// How often an open connection counts as activity.
const TOUCH_EVERY: Duration = Duration::from_secs(30);

pub(crate) async fn relay(shared: Arc<Shared>, mut sock: TcpStream, peer: IpAddr, dst: SocketAddr) {
    let dir = shared.dir.clone();
    let Some(sb) = dir.lookup(peer) else { return };
    dir.touch(&sb.name);
    let host = dir
        .host_for(peer, dst.ip())
        .unwrap_or_else(|| dst.ip().to_string());
    let mut entry = blank();
    entry.host = host.clone();
    entry.port = dst.port();
    entry.scheme = "tcp".into();
    let verdict = policy::evaluate(&sb.policy, &host, dst.port());
    entry.rule = verdict.matched.clone();
    if !verdict.allowed {
        entry.decision = EgressDecision::Denied;
        dir.record(&sb.name, entry);
        return;
    }
    let rec = Recorder::new(dir.clone(), sb.name.clone(), entry);
    let target = match verdict.rule(&sb.policy).and_then(|r| r.upstream.as_deref()) {
        Some(u) => match parse_upstream(u, Scheme::Tcp) {
            Ok(mut t) => {
                // A raw connection is relayed as is, whatever scheme the upstream names.
                t.scheme = Scheme::Tcp;
                t
            }
            Err(e) => return rec.fail(EgressDecision::Error, e.to_string()),
        },
        None => Target {
            scheme: Scheme::Tcp,
            host,
            port: dst.port(),
            operator_routed: false,
        },
    };
    let mut up = match shared.connector.connect(&target).await {
        Ok(s) => s,
        Err(e) => return rec.fail(EgressDecision::Error, error_chain(&e)),
    };
    {
        let copy = tokio::io::copy_bidirectional(&mut sock, &mut up);
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(TOUCH_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut copy => {
                    match r {
                        Ok((a, b)) => {
                            rec.up.fetch_add(a, Ordering::Relaxed);
                            rec.down.fetch_add(b, Ordering::Relaxed);
                        }
                        Err(e) => rec.fail(EgressDecision::Error, e.to_string()),
                    }
                    break;
                }
                _ = tick.tick() => dir.touch(&sb.name),
            }
        }
    }
    let _ = sock.shutdown().await;
    dir.touch(&sb.name);
}
