//! Isolation backends.
//!
//! This crate owns everything that makes a sandbox a sandbox: namespaces, the idmapped overlay
//! root, `pivot_root`, `/proc` and `/dev`, cgroups (v1 and v2), and the launch of `bothy agent`
//! as the sandbox's PID 1. It is the only crate with much `unsafe`. It knows nothing of HTTP,
//! names' lifecycle or metadata: the daemon decides *when*, this crate decides *how*.
//!
//! Backends implement [`Runtime`]; the default is [`native::NativeRuntime`].

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use bothy_api::SandboxName;

pub mod native;

/// One overlay mount of a sandbox's root: the root itself (`target == "/"`) or a directory of
/// the host image mounted on top of it (`/usr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Absolute path inside the sandbox.
    pub target: String,
    /// Read-only lower layers, top-most first.
    pub lowers: Vec<Lower>,
    /// The sandbox's own writable layer for this mount, and overlayfs' work dir (same
    /// filesystem). Created by the runtime if missing, owned by the sandbox's root.
    pub upper: PathBuf,
    pub work: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lower {
    pub path: PathBuf,
    /// Files in this layer carry host uids as in the image (0 = root): the runtime mounts it
    /// idmapped so they appear with those uids inside the sandbox. `false` for layers whose
    /// files already carry the shifted uids (a sandbox's own former upper, e.g. a snapshot).
    pub idmap: bool,
}

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// Relative CPU weight (cgroup v2 scale 1–10000, default 100).
    pub cpu_weight: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            pids: 2048,
            cpu_weight: 100,
        }
    }
}

/// Everything needed to start a sandbox.
#[derive(Debug)]
pub struct SandboxSpec {
    pub name: SandboxName,
    /// Overlays in mount order; the first one has target `/`.
    pub overlays: Vec<OverlaySpec>,
    /// Empty host directory used as the mount point of the root overlay (inside the sandbox's
    /// own mount namespace only; nothing is mounted there in the host's).
    pub rootfs_dir: PathBuf,
    /// Host directory bind-mounted read-write at [`bothy_api::agent::AGENT_STATE_IN_SANDBOX`].
    pub state_dir: PathBuf,
    /// The `bothy` binary: bind-mounted read-only at [`bothy_api::agent::AGENT_BIN_IN_SANDBOX`]
    /// and executed as PID 1 with `args` (e.g. `["agent", "--config", "{...}"]`).
    pub agent_binary: PathBuf,
    pub agent_args: Vec<String>,
    /// Listening unix socket handed to the agent as fd 3.
    pub agent_listener: OwnedFd,
    pub limits: Limits,
}

/// Identifies a running sandbox's init on the host, robust to pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// Resource use of a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("this host cannot run sandboxes: {0}")]
    Unsupported(String),
}

impl RuntimeError {
    pub fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            op: op.into(),
            source,
        }
    }
}

/// An isolation backend. Methods block (they make syscalls and wait for processes): call them
/// from a blocking context.
pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs and `/v1/health` (`native`).
    fn name(&self) -> &'static str;

    /// Starts the sandbox and returns once its init runs `bothy agent` (the agent's socket is
    /// already listening, so requests can be sent at once). Fails if the sandbox already runs.
    ///
    /// The init becomes a child of the calling process (a child subreaper): when it exits on its
    /// own (the pidfd turns readable), reap it with `waitpid(pid, WNOHANG)` or call [`stop`],
    /// which does. Never `waitpid(-1)`.
    ///
    /// [`stop`]: Runtime::stop
    fn start(&self, spec: SandboxSpec) -> Result<Started, RuntimeError>;

    /// Stops every process of the sandbox and returns once they are gone and the sandbox's
    /// mounts are released, so its layer can be mounted again. Idempotent.
    fn stop(&self, name: &SandboxName, started: Option<Started>) -> Result<(), RuntimeError>;

    /// Whether `started` still names the sandbox's live init (a zombie is not alive).
    fn is_alive(&self, started: &Started) -> bool;

    /// A pidfd of the sandbox's init, readable once it exits.
    fn pidfd(&self, started: &Started) -> Result<OwnedFd, RuntimeError>;

    /// The sandbox's network namespace (to open sockets inside it, e.g. for preview URLs).
    fn netns(&self, started: &Started) -> Result<OwnedFd, RuntimeError>;

    /// CPU and memory use of the sandbox's cgroup.
    fn usage(&self, name: &SandboxName) -> Result<Usage, RuntimeError>;

    /// Removes what the runtime keeps for a sandbox that is not running (its cgroups).
    fn cleanup(&self, name: &SandboxName) -> Result<(), RuntimeError>;

    /// Freezes every process of a running sandbox (no CPU; memory and state kept) and returns
    /// once they are all frozen, so its files can be read consistently from the host. On
    /// failure the sandbox is left thawed.
    fn freeze(&self, name: &SandboxName) -> Result<(), RuntimeError> {
        let _ = name;
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime cannot freeze sandboxes",
            self.name()
        )))
    }

    /// Thaws a frozen sandbox (a no-op for one that is not frozen).
    fn thaw(&self, name: &SandboxName) -> Result<(), RuntimeError> {
        let _ = name;
        Ok(())
    }
}
