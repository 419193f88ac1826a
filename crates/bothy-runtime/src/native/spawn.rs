//! Host side of `start`: prepares directories, spawns `bothy __sandbox-init` and collects the
//! pid of the sandbox's PID 1.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        clear_workdir(&o.work);
    }
    ensure_dir(&spec.state_dir, uid_base, 0o700)?;
    if !spec.rootfs_dir.is_dir() {
        fs::create_dir_all(&spec.rootfs_dir)
            .map_err(|e| RuntimeError::io(format!("create {}", spec.rootfs_dir.display()), e))?;
    }
    Ok(())
}

const TRASH_PREFIX: &str = ".bothy-trash-";

/// Moves overlayfs' `work/work` left by the previous mount out of the way and deletes it (and
/// any trash a crash left behind) on a background thread.
///
/// Mounting an overlay whose `work/work` exists makes the kernel remove and recreate it inside
/// the mount call: measured here, that is ~2.5 ms per overlay (directory removal is slow on this
/// ext4), against ~0.25 ms when it is absent. A rename is microseconds. The trash stays inside
/// the work dir (same filesystem, invisible in the sandbox; overlayfs ignores other names).
fn clear_workdir(work: &Path) {
    let mut trash = Vec::new();
    let old = work.join("work");
    if old.symlink_metadata().is_ok() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let to = work.join(format!("{TRASH_PREFIX}{}-{nanos}", std::process::id()));
        match fs::rename(&old, &to) {
            Ok(()) => trash.push(to),
            Err(e) => {
                tracing::debug!(error = %e, dir = %old.display(), "cannot move old overlay work dir")
            }
        }
    }
    if let Ok(entries) = fs::read_dir(work) {
        for e in entries.flatten() {
            let stale = e.file_name().to_string_lossy().starts_with(TRASH_PREFIX);
            if stale && !trash.contains(&e.path()) {
                trash.push(e.path());
            }
        }
    }
    if !trash.is_empty() {
        std::thread::spawn(move || {
            for t in trash {
                // Another start may be deleting the same stale trash: NotFound is fine.
                let _ = fs::remove_dir_all(&t);
            }
        });
    }
}

/// How long the init may take before `start` gives up (it normally takes a few ms).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the init parent's stdout and stderr to EOF (both at once, so neither can fill up),
/// giving up at `deadline`.
fn read_outputs(child: &mut Child, deadline: Instant) -> Result<(String, String), RuntimeError> {
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Setup(
            "sandbox init has no output pipes".into(),
        ));
    };
    let mut open = [Some(OwnedFd::from(stdout)), Some(OwnedFd::from(stderr))];
    let mut bufs = [Vec::new(), Vec::new()];
    while open.iter().any(Option::is_some) {
        let mut pfds: Vec<libc::pollfd> = open
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RuntimeError::Setup(format!(
                "sandbox init did not finish within {INIT_TIMEOUT:?}"
            )));
        }
        // SAFETY: `pfds` is a valid array of pollfd (fd -1 entries are ignored).
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, left.as_millis().min(60_000) as i32) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RuntimeError::io("poll sandbox init", e));
        }
        for i in 0..2 {
            if pfds[i].revents == 0 {
                continue;
            }
            let Some(fd) = &open[i] else { continue };
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a stack buffer of the given length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                bufs[i].extend_from_slice(&buf[..n as usize]);
            } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                open[i] = None;
            }
        }
    }
    let [out, err] = bufs;
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
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
    let (out, err) = match read_outputs(&mut child, Instant::now() + INIT_TIMEOUT) {
        Ok(o) => o,
        Err(e) => {
            // Hung (or unreadable): kill the init parent; the caller sweeps the cgroup.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_workdir_moves_work_aside_and_deletes_trash() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path();
        fs::create_dir_all(work.join("work/#leftover")).unwrap();
        fs::create_dir_all(work.join(format!("{TRASH_PREFIX}stale/x"))).unwrap();
        fs::create_dir(work.join("index")).unwrap();
        clear_workdir(work);
        assert!(!work.join("work").exists(), "old work dir moved at once");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let names: Vec<String> = fs::read_dir(work)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if names == ["index"] {
                break;
            }
            assert!(Instant::now() < deadline, "trash not deleted: {names:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing to do on a fresh dir.
        clear_workdir(work);
        assert!(work.join("index").exists());
    }
}
