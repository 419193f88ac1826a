//! The native runtime: Linux namespaces, idmapped overlays and cgroups, no helper daemons.
//!
//! `start` spawns `bothy __sandbox-init` ([`init_main`]; [`init`] lists its stages), which
//! builds the sandbox and execs the agent as PID 1 of a new PID namespace; the daemon is a
//! child subreaper, so PID 1 becomes its child. Syscalls only: no `ip`, `mount` or OCI runtime.
//!
//! # Security model
//! - **Unprivileged root.** Sandbox root is uid 0 of its own user namespace, mapped to host uid
//!   `uid_base` (65536 ids from there): it holds no privilege on the host. The user namespace is
//!   created *after* every mount is made, by real root outside, so the sandbox never needs
//!   (or gets) the right to mount filesystems of the host's kernel on its own.
//! - **No mounting.** The sandbox's mount namespace is owned by the host user namespace, so
//!   sandbox root cannot mount, unmount or remount anything in it. If it creates a nested
//!   user+mount namespace (allowed), every mount it inherits there is locked by the kernel (no
//!   unmounting, no remounting read-write, nothing revealed under the masks).
//! - **nodev overlays.** Lower layers, overlays and every pseudo filesystem are `nodev`: a
//!   device node shipped in an image (or created by `mknod`, which the sandbox cannot do
//!   anyway) must never open a host device.
//! - **Idmapped lowers.** Image layers keep host ownership (0 = root) on disk and are mounted
//!   idmapped read-only, so nothing in them is writable from the host's point of view; copy-up
//!   writes the shifted uids into the sandbox's own upper dir.
//! - `no_new_privs`; `/proc` masks (`kcore`, `keys`, `timer_list`, `sysrq-trigger`,
//!   `latency_stats`, `sched_debug`), read-only `/proc/{sys,bus,fs,irq}`, empty `/proc/{acpi,scsi}`;
//!   `/sys` read-only; a private `/dev` with only null, zero, full, random, urandom, tty and
//!   a private devpts instance.
//! - **The agent binary is a read-only bind mount of the host file, never copied.** CVE-2019-5736
//!   (runc) let a container overwrite the host runtime binary through `/proc/self/exe`; here
//!   the binary is mounted read-only, owned by host root (unmapped inside), and the mount is
//!   locked.
//! - **Setup never trusts sandbox-written paths.** Setup runs as host root over the sandbox's
//!   own upper layer and state dir: mount points must be real directories (a planted
//!   `/run -> /etc` symlink fails the start instead of mounting or creating on the host), and
//!   `agent.log` is opened with `O_NOFOLLOW` and must be a regular file.
//! - **Loopback-only network**: a new network namespace with only `lo`, owned by the host user
//!   namespace, so sandbox root cannot add interfaces, change routes or the hostname.
//! - **A seccomp deny-list** ([`seccomp`]): keyrings, `bpf`, `perf_event_open`, `userfaultfd`,
//!   `io_uring`, module/kexec loading and a few more are refused, and so are foreign syscall
//!   ABIs (i386, x32). It is a deny-list, not an allow-list: nested user namespaces, `ptrace`
//!   within the sandbox and the rest of the kernel API stay available.
//!
//! # Cgroups
//! See [`cgroup`]: pure v2, or v1/hybrid with a controller-less v2 used for `cgroup.kill`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bothy_api::SandboxName;

use std::os::fd::AsRawFd;

use crate::{Runtime, RuntimeError, SandboxSpec, Started, Usage};

mod caps;
pub mod cgroup;
pub mod config;
pub mod idmap;
pub mod init;
pub mod mounts;
pub mod proc;
pub mod seccomp;
mod spawn;
pub mod sys;
pub mod sysctl;

pub use init::init_main;

use cgroup::Layout;
use config::{InitConfig, InitOverlay};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the native runtime.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Cgroup (in every hierarchy) under which sandboxes' cgroups are created.
    pub cgroup_parent: String,
    /// First host uid/gid of the sandboxes' 65536-id range (sandbox root).
    pub uid_base: u32,
    /// The binary that implements `__sandbox-init` (the `bothy` binary).
    pub init_binary: PathBuf,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            cgroup_parent: "bothy".into(),
            uid_base: 1_000_000,
            init_binary: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        }
    }
}

pub struct NativeRuntime {
    cfg: NativeConfig,
    layout: Layout,
    /// The daemon's `RLIMIT_NOFILE` before [`NativeRuntime::new`] raised it; sandbox inits get
    /// it back.
    sandbox_nofile: Option<libc::rlimit>,
    /// The user namespace (`0 uid_base 65536`) idmapped lower layers are mapped through,
    /// created once and handed to every sandbox init: creating it costs a fork, a wait and a
    /// reap (3–10 ms measured per start). `None` if it could not be made; inits then create
    /// their own.
    idmap_userns: Option<std::os::fd::OwnedFd>,
}

impl NativeRuntime {
    /// Detects cgroups, makes the caller a child subreaper (sandbox inits must outlive a
    /// daemon crash, so no PDEATHSIG is ever set) and raises host sysctls.
    pub fn new(cfg: NativeConfig) -> Result<Self, RuntimeError> {
        if cfg.cgroup_parent.is_empty()
            || cfg
                .cgroup_parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(RuntimeError::Setup(format!(
                "invalid cgroup parent {:?}",
                cfg.cgroup_parent
            )));
        }
        if cfg.uid_base == 0 || cfg.uid_base.checked_add(65536).is_none() {
            return Err(RuntimeError::Setup(format!(
                "invalid uid base {}",
                cfg.uid_base
            )));
        }
        let layout = Layout::detect(std::path::Path::new("/sys/fs/cgroup"))?;
        layout.create_parent(&cfg.cgroup_parent)?;
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(RuntimeError::io(
                "set child subreaper",
                std::io::Error::last_os_error(),
            ));
        }
        sysctl::raise_limits();
        // The daemon holds fds per running sandbox (a pidfd, pooled agent connections): under
        // a service manager's usual soft limit of 1024 it ran out near 500 busy sandboxes
        // (a pidfd that could not be opened left the agent unreaped and its cgroup busy).
        // Sandboxes get the original limit back: programs that walk every possible fd slow
        // down under a huge soft limit.
        let sandbox_nofile = match sys::raise_nofile_limit() {
            Ok(old) => Some(old),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit; continuing");
                None
            }
        };
        // The helper child only makes async-signal-safe syscalls, so forking it from this
        // (possibly multi-threaded) process is fine.
        let idmap_userns = match idmap::userns_fd(cfg.uid_base) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the idmap user namespace once; each sandbox start will");
                None
            }
        };
        tracing::debug!(?layout, "native runtime ready");
        Ok(Self {
            cfg,
            layout,
            sandbox_nofile,
            idmap_userns,
        })
    }

    fn cgroups(&self, name: &SandboxName) -> cgroup::SandboxCgroups {
        self.layout.sandbox(&self.cfg.cgroup_parent, name.as_str())
    }

    fn init_config(&self, spec: &SandboxSpec, cg: &cgroup::SandboxCgroups) -> InitConfig {
        InitConfig {
            hostname: spec.name.as_str().to_string(),
            uid_base: self.cfg.uid_base,
            cgroup_procs: cg.procs_files(),
            overlays: spec
                .overlays
                .iter()
                .map(|o| InitOverlay {
                    target: o.target.clone(),
                    lowers: o.lowers.iter().map(|l| (l.path.clone(), l.idmap)).collect(),
                    upper: o.upper.clone(),
                    work: o.work.clone(),
                })
                .collect(),
            rootfs_dir: spec.rootfs_dir.clone(),
            state_dir: spec.state_dir.clone(),
            agent_binary: spec.agent_binary.clone(),
            agent_args: spec.agent_args.clone(),
            idmap_userns_inherited: self.idmap_userns.is_some(),
        }
    }
}

/// How long freezing or thawing a sandbox may take (a process in an uninterruptible wait, e.g.
/// on slow I/O, delays it).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn start(&self, spec: SandboxSpec) -> Result<Started, RuntimeError> {
        let cg = self.cgroups(&spec.name);
        let cfg = self.init_config(&spec, &cg);
        cfg.validate().map_err(RuntimeError::Setup)?;
        if !cg.pids().is_empty() {
            return Err(RuntimeError::Setup(format!(
                "sandbox {} is already running",
                spec.name.as_str()
            )));
        }
        let started = cg
            .create(&spec.limits)
            .and_then(|()| spawn::prepare_dirs(&spec, self.cfg.uid_base))
            .and_then(|()| {
                spawn::run_init(
                    &self.cfg.init_binary,
                    &cfg,
                    &spec.agent_listener,
                    self.sandbox_nofile,
                    self.idmap_userns.as_ref().map(|fd| fd.as_raw_fd()),
                )
            })
            .and_then(|pid| {
                let start_time = proc::start_time(pid)
                    .map_err(|e| RuntimeError::io("read start time of sandbox init", e))?;
                Ok(Started { pid, start_time })
            });
        if started.is_err() {
            // Leave nothing running or half-built behind.
            let _ = self.stop(&spec.name, None);
        }
        started
    }

    fn stop(&self, name: &SandboxName, started: Option<Started>) -> Result<(), RuntimeError> {
        let cg = self.cgroups(name);
        let deadline = Instant::now() + STOP_TIMEOUT;
        // Open the pidfd before killing, so pid reuse cannot fool the wait below. A zombie init
        // (exited, not reaped) still matches, and is reaped below.
        let same = |s: &Started| proc::start_time(s.pid).is_ok_and(|t| t == s.start_time);
        let pid1 = started.filter(same).and_then(|s| {
            let fd = proc::pidfd(s.pid).ok()?;
            same(&s).then_some((s.pid, fd))
        });
        if !cg.kill() {
            if let Some((pid, _)) = &pid1 {
                // SAFETY: kill(2); PID 1's death kills its whole pid namespace.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            cg.sweep(deadline);
        }
        if let Some((pid, fd)) = &pid1 {
            if !proc::wait_exit(fd, deadline.saturating_duration_since(Instant::now())) {
                return Err(RuntimeError::Setup(format!(
                    "sandbox init {pid} did not exit"
                )));
            }
            proc::reap(*pid);
        }
        if !cg.wait_empty(deadline) {
            return Err(RuntimeError::Setup(format!(
                "processes of {name} did not exit"
            )));
        }
        cg.remove()
    }

    fn is_alive(&self, started: &Started) -> bool {
        // A zombie (exited, not yet reaped) is not alive.
        proc::is_running(started.pid, started.start_time)
    }

    fn pidfd(&self, started: &Started) -> Result<std::os::fd::OwnedFd, RuntimeError> {
        let fd = proc::pidfd(started.pid)
            .map_err(|e| RuntimeError::io("open pidfd of sandbox init", e))?;
        // Checked after opening: the fd pins the process, so it is the right one if alive now.
        if !self.is_alive(started) {
            return Err(RuntimeError::Setup(format!(
                "sandbox init {} is gone",
                started.pid
            )));
        }
        Ok(fd)
    }

    fn netns(&self, started: &Started) -> Result<std::os::fd::OwnedFd, RuntimeError> {
        let f = std::fs::File::open(format!("/proc/{}/ns/net", started.pid))
            .map_err(|e| RuntimeError::io("open network namespace of sandbox", e))?;
        if !self.is_alive(started) {
            return Err(RuntimeError::Setup(format!(
                "sandbox init {} is gone",
                started.pid
            )));
        }
        Ok(f.into())
    }

    fn usage(&self, name: &SandboxName) -> Result<Usage, RuntimeError> {
        self.cgroups(name).usage()
    }

    fn cleanup(&self, name: &SandboxName) -> Result<(), RuntimeError> {
        self.cgroups(name).remove()
    }

    fn freeze(&self, name: &SandboxName) -> Result<(), RuntimeError> {
        let cg = self.cgroups(name);
        let r = cg.set_frozen(true, Instant::now() + FREEZE_TIMEOUT);
        if r.is_err() {
            // Never leave a sandbox half-frozen.
            let _ = cg.set_frozen(false, Instant::now() + FREEZE_TIMEOUT);
        }
        r
    }

    fn thaw(&self, name: &SandboxName) -> Result<(), RuntimeError> {
        self.cgroups(name)
            .set_frozen(false, Instant::now() + FREEZE_TIMEOUT)
    }
}
