//! `bothy serve`: open the store, build the host image, reconcile, listen, shut down gracefully.

use std::sync::Arc;

use axum::Router;
use bothy_runtime::native::{NativeConfig, NativeRuntime};
use bothy_store::meta::{MetaStore, SqliteStore};
use bothy_store::Layout;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::{self, Token};
use crate::config::{DaemonConfig, FileConfig};
use crate::error::StartupError;
use crate::images::Images;
use crate::manager::Manager;
use crate::net::{NetOptions, Network};

/// Runs the daemon until SIGTERM or SIGINT. Sandboxes keep running after it exits.
pub async fn serve(mut cfg: DaemonConfig) -> Result<(), StartupError> {
    let layout = Layout::new(&cfg.data_dir);
    layout
        .create()
        .map_err(|e| StartupError::new("create the data directory", e))?;
    let file_cfg =
        FileConfig::load(&layout.config()).map_err(|e| StartupError::new("read config.json", e))?;
    if cfg.token.is_none() {
        cfg.token = file_cfg.token.clone();
    }
    if cfg.listen.is_some() && cfg.token.is_none() {
        let token = auth::generate_token();
        FileConfig {
            token: Some(token.clone()),
        }
        .save(&layout.config())
        .map_err(|e| StartupError::new("save the generated token", e))?;
        tracing::warn!(
            "no BOTHY_TOKEN given: generated one and saved it in {} (root only)",
            layout.config().display()
        );
        cfg.token = Some(token);
    }

    let sqlite = Arc::new(
        SqliteStore::open(&layout.db()).map_err(|e| StartupError::new("open state.db", e))?,
    );
    let store: Arc<dyn MetaStore> = sqlite.clone();
    let egress = {
        let (layout, extra) = (layout.clone(), cfg.egress_extra_ca.clone());
        tokio::task::spawn_blocking(move || {
            crate::egress::EgressState::open(&layout, sqlite.clone(), sqlite, &extra)
        })
        .await
        .map_err(|e| StartupError::new("set up egress", e))?
        .map_err(|e| StartupError::new("set up egress", e))?
    };
    let runtime = NativeRuntime::new(NativeConfig {
        cgroup_parent: cfg.cgroup_parent.clone(),
        uid_base: cfg.uid_base,
        init_binary: cfg.agent_binary.clone(),
    })
    .map_err(|e| StartupError::new("set up the native runtime", e))?;
    let images = {
        let (layout, store) = (layout.clone(), store.clone());
        tokio::task::spawn_blocking(move || Images::open(layout, store))
            .await
            .map_err(|e| StartupError::new("build the host image", e))??
    };
    let (net, net_listeners) = Network::start(NetOptions {
        pool: cfg.net_pool,
        synthetic: cfg.net_synthetic,
        instance: cfg.cgroup_parent.clone(),
    })
    .map_err(|e| StartupError::new("set up sandbox networking", e))?;
    match net.unavailable_reason() {
        Some(r) => tracing::warn!(
            "proxy networking unavailable ({r}): new sandboxes get network mode `none`, and mode `proxy` is refused"
        ),
        None => tracing::info!(pool = %cfg.net_pool, gateway = %net.gateway(), "proxy networking ready"),
    }
    let manager = Manager::new(
        store,
        Arc::new(runtime),
        layout.clone(),
        images,
        cfg.agent_binary.clone(),
        cfg.limits,
        net.clone(),
    );
    manager.set_max_layer_depth(cfg.max_layer_depth);
    manager.blobs.set_uid_base(cfg.uid_base);
    manager.blobs.clean_tmp();
    manager
        .blobs
        .configure(&cfg.blob_stores)
        .map_err(|e| StartupError::new("open the blob stores", e))?;
    manager.reconcile().await?;

    let stop = CancellationToken::new();
    manager.spawn_idle_loop(cfg.idle_check, stop.clone());
    egress.log.spawn_writer(stop.clone());
    if let Some(l) = net_listeners {
        let (proxy, dns) = l.into_parts();
        net.serve_dns(dns, stop.clone());
        tokio::spawn(crate::net::egress::serve(
            proxy,
            net.clone(),
            manager.clone(),
            Arc::new(egress.clone()),
            egress.ca.clone(),
            egress.proxy_options(),
            stop.clone(),
        ));
    }
    let previews = crate::preview::Previews::new(
        manager.clone(),
        cfg.preview_domain.clone(),
        crate::preview::limit::ConnLimit::new(cfg.preview_max_connections),
    );
    // Backups go to their own store if one is configured, else to the default blob store.
    let backup_store = match (&cfg.backup_store, cfg.blob_stores.first()) {
        (Some(s), _) | (None, Some(s)) => s.clone(),
        (None, None) => cfg.data_dir.join("blobs").display().to_string(),
    };
    let backup_store = bothy_blob::open_store(&backup_store)
        .map_err(|e| StartupError::new("open the backup store", e))?;
    let backups = crate::backups::Backups::new(manager.clone(), backup_store);
    backups.spawn_gc_loop(cfg.backup_gc, stop.clone());
    let app = api::router(AppState {
        manager: manager.clone(),
        previews: previews.clone(),
        backups,
        egress: egress.clone(),
    });

    let sock = layout.socket();
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock)
        .map_err(|e| StartupError::new("listen on the unix socket", e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StartupError::new("chmod the unix socket", e))?;
    }
    tracing::info!(socket = %sock.display(), "listening");
    let mut servers = tokio::task::JoinSet::new();
    {
        let app = app.clone();
        let stop = stop.clone();
        servers.spawn(crate::http_server::serve(unix, app, stop));
    }
    if let Some(addr) = cfg.listen {
        let token = Token(Arc::new(cfg.token.clone().expect("set above")));
        let tcp_app: Router = app.clone().layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| StartupError::new("listen on TCP", e))?;
        tracing::info!(addr = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening (bearer token required)");
        if let Ok(a) = tcp.local_addr() {
            previews.set_default_port(a.port());
        }
        // Preview requests are recognised by their Host and served before auth; the rest
        // reaches the API untouched.
        let tcp = crate::preview::listener::split(
            tcp,
            previews.clone(),
            cfg.max_connections
                .unwrap_or_else(crate::fds::tcp_listener_connections),
        )
        .map_err(|e| StartupError::new("listen on TCP", e))?;
        let stop = stop.clone();
        servers.spawn(crate::http_server::serve(tcp, tcp_app, stop));
    }

    shutdown_signal().await;
    tracing::info!("shutting down: no new requests; sandboxes keep running");
    stop.cancel();
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("open requests did not finish within the grace period; closing them");
    }
    manager.flush_activity();
    if let Err(e) = egress.log.flush() {
        tracing::warn!(error = ?e.0, "egress log entries lost at shutdown");
    }
    net.shutdown();
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
