//! `bothy serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use bothy_daemon::DaemonConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Data directory (metadata, layers, sandboxes' disks).
    #[arg(long, env = "BOTHY_DATA_DIR", default_value = "/var/lib/bothy")]
    data_dir: PathBuf,
    /// Also listen on TCP (e.g. 127.0.0.1:8080). TCP clients need the bearer token
    /// (BOTHY_TOKEN, or `token` in DATA_DIR/config.json; generated there if neither is set).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Parent cgroup of the sandboxes' cgroups.
    #[arg(long, default_value = "bothy", hide = true)]
    cgroup_parent: String,
    /// How often to look for idle sandboxes, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    idle_check_ms: u64,
    /// Domain of preview URLs: `http://{port}-{name}-{token}.{domain}` (wildcard DNS to this
    /// host). Default `localhost:{TCP port}`, which browsers resolve to loopback.
    #[arg(long, env = "BOTHY_PREVIEW_DOMAIN")]
    preview_domain: Option<String>,
    /// Most open preview connections to one sandbox; more are answered 503
    /// `resource_exhausted`.
    #[arg(long, default_value_t = bothy_daemon::preview::limit::DEFAULT_PER_SANDBOX, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    preview_max_connections: usize,
    /// Most connections open at once on the TCP listener (API and previews together); more
    /// are closed on arrival. Default: what the daemon's file descriptor limit allows.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: Option<usize>,
    /// Snapshot layer chains deeper than this are flattened into one layer when a snapshot
    /// is taken (reads stay fast; the flattening copies the state once).
    #[arg(long, default_value_t = bothy_daemon::manager::DEFAULT_MAX_LAYER_DEPTH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    max_layer_depth: usize,
    /// Where directory backups are stored, if not in the default blob store (`--blob-store`):
    /// a directory, or `s3://BUCKET[/PREFIX]?endpoint=URL` (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "BOTHY_BACKUP_STORE")]
    backup_store: Option<String>,
    /// How often expired backups are removed, in milliseconds.
    #[arg(long, default_value_t = 60_000, hide = true)]
    backup_gc_ms: u64,
    /// A PEM file of CA certificates the egress proxy trusts for upstream TLS besides the
    /// system's roots (repeatable).
    #[arg(long = "egress-extra-ca", value_name = "FILE")]
    egress_extra_ca: Vec<PathBuf>,
    /// Addresses of sandboxes in `proxy` mode; the first one is every sandbox's gateway and
    /// DNS server.
    #[arg(long, default_value = "10.88.0.0/16")]
    net_pool: bothy_daemon::net::Ipv4Net,
    /// Synthetic addresses the daemon's DNS answers sandboxes with (mapped back to names by
    /// the egress proxy).
    #[arg(long, default_value = "198.18.0.0/15")]
    net_synthetic: bothy_daemon::net::Ipv4Net,
    /// Blob store for export/import/evict/persist (repeatable; the first is the default):
    /// an absolute directory, or `s3://BUCKET[/PREFIX]?endpoint=URL[&region=R]` with
    /// credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Default: DATA_DIR/blobs.
    #[arg(long = "blob-store", env = "BOTHY_BLOB_STORE", value_delimiter = ',')]
    blob_stores: Vec<String>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    init_logging();
    let mut cfg = DaemonConfig::new(a.data_dir);
    cfg.listen = a.listen;
    cfg.token = std::env::var("BOTHY_TOKEN").ok().filter(|t| !t.is_empty());
    cfg.cgroup_parent = a.cgroup_parent;
    cfg.preview_domain = a.preview_domain;
    cfg.preview_max_connections = a.preview_max_connections;
    cfg.max_connections = a.max_connections;
    cfg.max_layer_depth = a.max_layer_depth;
    cfg.backup_store = a.backup_store;
    cfg.backup_gc = std::time::Duration::from_millis(a.backup_gc_ms.max(50));
    cfg.egress_extra_ca = a.egress_extra_ca;
    cfg.net_pool = a.net_pool;
    cfg.net_synthetic = a.net_synthetic;
    cfg.blob_stores = a.blob_stores;
    cfg.idle_check = std::time::Duration::from_millis(a.idle_check_ms.max(50));
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!("bothy serve must run as root (it creates namespaces, mounts and cgroups)");
    }
    bothy_daemon::serve(cfg).await.context("bothy serve")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
