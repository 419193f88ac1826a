//! Starting the egress proxy on the listener the firewall redirects sandboxes' TCP to.

use std::sync::Arc;

use bothy_egress::{Ca, ProxyOptions};
use tokio_util::sync::CancellationToken;

use super::directory::{EgressSink, SandboxDirectory};
use super::Network;
use crate::manager::Manager;

/// Runs the proxy until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    net: Arc<Network>,
    manager: Arc<Manager>,
    sink: Arc<dyn EgressSink>,
    ca: Arc<Ca>,
    opts: ProxyOptions,
    stop: CancellationToken,
) {
    let dir = Arc::new(SandboxDirectory { net, manager, sink });
    tokio::select! {
        _ = stop.cancelled() => {}
        r = bothy_egress::serve(listener, dir, ca, opts) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "the egress proxy stopped; sandboxes in proxy mode have no way out");
            }
        }
    }
}
