//! Host side of `start`: prepares directories, spawns `bothy __sandbox-init` and collects the
//! pid of the sandbox's PID 1.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::config::{InitConfig, CONFIG_FD};
use super::sys;
use crate::{RuntimeError, SandboxSpec};

/// Creates `dir` (and parents) if missing, owned by `uid`, with `mode` on the leaf.
pub fn ensure_dir(dir: &Path, uid: u32, mode: u32) -> Result<(), RuntimeError> {
    let op = || format!("create {}", dir.display());
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| RuntimeError::io(op(), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| RuntimeError::io(op(), e))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(|e| RuntimeError::io(op(), e))
}

/// Prepares the host directories the init relies on.
pub fn prepare_dirs(spec: &SandboxSpec, uid_base: u32) -> Result<(), RuntimeError> {
    for o in &spec.overlays {
        ensure_dir(&o.upper, uid_base, 0o755)?;
        ensure_dir(&o.work, uid_base, 0o755)?;
    }
    ensure_dir(&spec.state_dir, uid_base, 0o700)?;
    if !spec.rootfs_dir.is_dir() {
        fs::create_dir_all(&spec.rootfs_dir)
            .map_err(|e| RuntimeError::io(format!("create {}", spec.rootfs_dir.display()), e))?;
    }
    Ok(())
}

/// Runs the init with `cfg`, handing it `listener` as fd 3; returns PID 1's host pid.
pub fn run_init(
    init_binary: &Path,
    cfg: &InitConfig,
    listener: &impl AsRawFd,
) -> Result<i32, RuntimeError> {
    let json = serde_json::to_vec(cfg)
        .map_err(|e| RuntimeError::Setup(format!("encode init config: {e}")))?;
    let (cfg_r, cfg_w) = sys::pipe().map_err(|e| RuntimeError::io("create pipe", e))?;
    let cfg_fd = cfg_r.as_raw_fd();
    let listener_fd = listener.as_raw_fd();
    let mut cmd = Command::new(init_binary);
    cmd.arg("__sandbox-init")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear();
    // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, dup2) in the child.
    unsafe {
        cmd.pre_exec(move || {
            // Move both fds out of the way first so neither dup2 clobbers the other.
            let l = libc::fcntl(listener_fd, libc::F_DUPFD_CLOEXEC, 10);
            let c = libc::fcntl(cfg_fd, libc::F_DUPFD_CLOEXEC, 10);
            if l < 0 || c < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(l, bothy_api::agent::AGENT_LISTEN_FD) < 0 || libc::dup2(c, CONFIG_FD) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::io(format!("spawn {}", init_binary.display()), e))?;
    drop(cfg_r);
    // The init reads its config first thing; a write error means it died, reported below.
    let _ = sys::write_all(&cfg_w, &json);
    drop(cfg_w);
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    // Reaps exactly the init parent (waitpid on its pid).
    let status = child
        .wait()
        .map_err(|e| RuntimeError::io("wait for sandbox init", e))?;
    if !status.success() {
        let msg = err.trim();
        return Err(RuntimeError::Setup(if msg.is_empty() {
            format!("sandbox init exited with {status}")
        } else {
            msg.to_string()
        }));
    }
    out.trim()
        .parse::<i32>()
        .map_err(|_| RuntimeError::Setup(format!("sandbox init printed no pid: {out:?}")))
}
