//! Daemon configuration: flags, environment and `$DATA/config.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bothy_runtime::Limits;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    /// Extra TCP listener (requires a token).
    pub listen: Option<SocketAddr>,
    /// Bearer token for TCP clients.
    pub token: Option<String>,
    /// Name of the cgroup under which sandboxes' cgroups are created.
    pub cgroup_parent: String,
    /// Host uid that root inside sandboxes maps to (a range of 65536 from it).
    pub uid_base: u32,
    /// The `bothy` binary run as each sandbox's agent (default: this executable).
    pub agent_binary: PathBuf,
    pub limits: Limits,
    /// How often idle sandboxes are looked for.
    pub idle_check: Duration,
    /// How long shutdown waits for open requests.
    pub shutdown_grace: Duration,
    /// Domain of preview URLs (`{port}-{name}-{token}.{domain}`); default
    /// `localhost:{TCP port}`.
    pub preview_domain: Option<String>,
    /// Most open preview connections to one sandbox.
    pub preview_max_connections: usize,
    /// Most connections open at once on the TCP listener; `None`: what the file descriptor
    /// limit allows.
    pub max_connections: Option<usize>,
    /// Snapshot layer chains longer than this are flattened into one layer.
    pub max_layer_depth: usize,
    /// Where directory backups are stored: a directory or `s3://bucket[/prefix]?endpoint=...`
    /// (see `bothy_blob::StoreLocation`); default `$DATA/blobs`.
    pub backup_store: Option<String>,
    /// How often expired backups are swept.
    pub backup_gc: Duration,
    /// PEM files of CAs the egress proxy trusts for upstream TLS besides the system's roots.
    pub egress_extra_ca: Vec<PathBuf>,
    /// Sandbox addresses in `proxy` mode (the first one is every sandbox's gateway).
    pub net_pool: crate::net::Ipv4Net,
    /// Synthetic addresses the DNS stub answers with.
    pub net_synthetic: crate::net::Ipv4Net,
    /// Blob stores (`/dir`, `s3://bucket?endpoint=…`); the first is the default. Empty:
    /// `$DATA/blobs`.
    pub blob_stores: Vec<String>,
}

impl DaemonConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: None,
            token: None,
            cgroup_parent: "bothy".into(),
            uid_base: 1_000_000,
            agent_binary: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
            limits: Limits::default(),
            idle_check: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            preview_domain: None,
            preview_max_connections: crate::preview::limit::DEFAULT_PER_SANDBOX,
            max_connections: None,
            max_layer_depth: crate::manager::DEFAULT_MAX_LAYER_DEPTH,
            backup_store: None,
            backup_gc: Duration::from_secs(60),
            egress_extra_ca: Vec::new(),
            net_pool: crate::net::NetOptions::default().pool,
            net_synthetic: crate::net::NetOptions::default().synthetic,
            blob_stores: Vec::new(),
        }
    }
}

/// `$DATA/config.json`: settings that outlive a command line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the file readable by root only (it holds the token).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }
}
