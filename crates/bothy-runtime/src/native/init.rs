//! `bothy __sandbox-init`: the short-lived process that turns a spec into a running sandbox.
//!
//! It runs single-threaded (no tokio) as real root on the host:
//! 1. reads its [`InitConfig`] from fd [`CONFIG_FD`], joins the sandbox's cgroups, `setsid`;
//! 2. creates the idmapping user namespace (if a lower layer needs it), then unshares UTS, IPC,
//!    network, PID and cgroup namespaces (after joining, so the sandbox's cgroup is its root);
//! 3. forks PID 1 of the new PID namespace, which unshares its mount namespace, makes `/`
//!    recursively private, builds the root (overlays, `/proc`, `/sys`,
//!    `/dev`, `/run`), sets the hostname, brings `lo` up, `pivot_root`s, unshares its user
//!    namespace (the parent, still privileged outside, writes `0 uid_base 65536`), becomes
//!    root in it, sets `no_new_privs` and execs the agent. Its mount namespace stays owned by
//!    the host user namespace, so sandbox root can neither mount nor unmount anything there;
//!    in a nested user+mount namespace of its own, every inherited mount is locked;
//! 4. the parent prints PID 1's pid on stdout and exits 0 once the exec happened (EOF on a
//!    close-on-exec status pipe), or prints PID 1's error (`step: errno`) on stderr and exits 1.
//!    PID 1 is then reparented to the daemon, a child subreaper.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::config::{InitConfig, CONFIG_FD};
use super::{idmap, mounts, sys};

/// A failed setup step: `"mount /proc: Operation not permitted (os error 1)"`.
#[derive(Debug)]
pub struct InitError(String);

impl InitError {
    pub fn msg(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait StepExt<T> {
    fn step(self, step: impl fmt::Display) -> Result<T, InitError>;
}

impl<T> StepExt<T> for io::Result<T> {
    fn step(self, step: impl fmt::Display) -> Result<T, InitError> {
        self.map_err(|e| InitError(format!("{step}: {e}")))
    }
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    sys::check(r as libc::c_long).map(drop)
}

/// Entry point of `bothy __sandbox-init`. Never returns.
pub fn init_main() -> ! {
    match run() {
        Ok(pid) => {
            let _ = writeln!(io::stdout(), "{pid}");
            let _ = io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "{e}");
            std::process::exit(1)
        }
    }
}

fn read_config() -> Result<InitConfig, InitError> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(CONFIG_FD, libc::F_GETFD) } < 0 {
        return Err(InitError::msg(
            "no init config on fd 4 (this subcommand is run by the bothy runtime, not by hand)",
        ));
    }
    // SAFETY: the runtime passes the config pipe as CONFIG_FD (checked open above); we take
    // ownership of it once.
    let fd = unsafe { OwnedFd::from_raw_fd(CONFIG_FD) };
    let bytes = sys::read_to_end(&fd).step("read init config")?;
    let cfg: InitConfig =
        serde_json::from_slice(&bytes).map_err(|e| InitError(format!("parse init config: {e}")))?;
    cfg.validate()
        .map_err(|e| InitError(format!("invalid init config: {e}")))?;
    Ok(cfg)
}

/// Runs the init parent; returns PID 1's host pid once it exec'd the agent.
fn run() -> Result<i32, InitError> {
    let cfg = read_config()?;
    let me = std::process::id().to_string();
    for procs in &cfg.cgroup_procs {
        fs::write(procs, &me).step(format!("join cgroup {}", procs.display()))?;
    }
    // SAFETY: plain syscall.
    cvt(unsafe { libc::setsid() }).step("setsid")?;
    let userns = if cfg.needs_idmap() {
        Some(idmap::userns_fd(cfg.uid_base).step("create idmap user namespace")?)
    } else {
        None
    };
    // The mount namespace is PID 1's alone (unshared there): pivot_root moves the root of every
    // process of a mount namespace, and this parent must keep the host's /proc.
    let flags = libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWCGROUP;
    // SAFETY: plain syscall.
    cvt(unsafe { libc::unshare(flags) }).step("unshare namespaces")?;

    let (status_r, status_w) = sys::pipe().step("pipe")?;
    let (req_r, req_w) = sys::pipe().step("pipe")?;
    let (ack_r, ack_w) = sys::pipe().step("pipe")?;
    // SAFETY: the init process is single-threaded.
    let pid = unsafe { sys::fork() }.step("fork pid 1")?;
    if pid == 0 {
        drop((status_r, req_r, ack_w));
        let err = pid1(&cfg, userns.as_ref(), &req_w, &ack_r).unwrap_err();
        let _ = sys::write_all(&status_w, err.to_string().as_bytes());
        // SAFETY: terminating the failed PID 1 without running the parent's atexit handlers.
        unsafe { libc::_exit(1) };
    }
    drop((status_w, req_w, ack_r, userns));

    // PID 1 asks once for its user namespace maps (EOF if it failed before).
    if sys::read_byte(&req_r).step("wait for pid 1")?.is_some() {
        let map = format!("0 {} 65536\n", cfg.uid_base);
        let written = fs::write(format!("/proc/{pid}/uid_map"), &map)
            .and_then(|()| fs::write(format!("/proc/{pid}/gid_map"), &map));
        match written {
            Ok(()) => {
                let _ = sys::write_all(&ack_w, b"a");
            }
            Err(e) => {
                // SAFETY: killing our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = sys::waitpid(pid);
                return Err(InitError(format!("write user namespace maps: {e}")));
            }
        }
    }
    drop(ack_w);
    let status = sys::read_to_end(&status_r).step("read pid 1 status")?;
    if !status.is_empty() {
        let _ = sys::waitpid(pid);
        return Err(InitError(String::from_utf8_lossy(&status).into_owned()));
    }
    Ok(pid)
}

/// PID 1 of the sandbox: only returns on error.
fn pid1(
    cfg: &InitConfig,
    userns: Option<&OwnedFd>,
    req: &OwnedFd,
    ack: &OwnedFd,
) -> Result<std::convert::Infallible, InitError> {
    // The agent's stdout/stderr go to the state dir's log (the runtime reads only our status).
    // The state dir is writable from inside the sandbox: never follow a planted symlink (we are
    // real root here and would append to, and chown, a host file), never block on a FIFO.
    let log = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(cfg.state_dir.join("agent.log"))
        .step("open agent.log")?;
    if !log.metadata().step("stat agent.log")?.is_file() {
        return Err(InitError::msg("agent.log is not a regular file"));
    }
    // SAFETY: fcntl on an fd we own; back to blocking mode for the agent's stdout/stderr.
    cvt(unsafe { libc::fcntl(log.as_raw_fd(), libc::F_SETFL, libc::O_APPEND) })
        .step("set agent.log flags")?;
    std::os::unix::fs::fchown(&log, Some(cfg.uid_base), Some(cfg.uid_base))
        .step("chown agent.log")?;
    for target in [1, 2] {
        // SAFETY: duplicating a valid fd over stdout/stderr.
        cvt(unsafe { libc::dup2(log.as_raw_fd(), target) }).step("redirect output")?;
    }
    drop(log);

    // SAFETY: plain syscall; PID 1 is single-threaded as unshare(CLONE_NEWNS) requires.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) }).step("unshare mount namespace")?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .step("make / rprivate")?;
    mounts::mount_overlays(cfg, userns)?;
    mounts::mount_pseudo_fs(cfg)?;
    let host = cfg.hostname.as_bytes();
    // SAFETY: pointer and length of a valid byte slice.
    cvt(unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) }).step("sethostname")?;
    loopback_up().step("bring lo up")?;

    std::env::set_current_dir(&cfg.rootfs_dir).step("chdir root")?;
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one; both are "." strings.
    sys::check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })
        .step("pivot_root")?;
    // SAFETY: detaching the old root that now sits on ".".
    cvt(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }).step("detach old root")?;
    if std::env::set_current_dir("/workspace").is_err() {
        std::env::set_current_dir("/").step("chdir /")?;
    }

    // Our own user namespace; the parent (privileged outside) writes the maps.
    // SAFETY: plain syscall, single-threaded.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) }).step("unshare user namespace")?;
    sys::write_all(req, b"m").step("request user namespace maps")?;
    if sys::read_byte(ack)
        .step("wait for user namespace maps")?
        .is_none()
    {
        return Err(InitError::msg("user namespace maps were not written"));
    }
    // SAFETY: plain syscalls switching to the namespace's root (mapped to uid_base).
    unsafe {
        cvt(libc::setgroups(0, std::ptr::null())).step("setgroups")?;
        cvt(libc::setresgid(0, 0, 0)).step("setresgid")?;
        cvt(libc::setresuid(0, 0, 0)).step("setresuid")?;
        // No second mount namespace: the current one is owned by the host user namespace, so
        // sandbox root has no CAP_SYS_ADMIN over it (no mount, umount, remount, pivot_root).
        // Were it owned by the sandbox's user namespace, the mounts above would be locked but
        // sandbox root could still mount new filesystems (tmpfs) over any directory.
        cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)).step("no_new_privs")?;
    }
    // Before exec: the agent (root) gets exactly the reduced bounding set.
    super::caps::drop_bounding_set().step("drop capabilities")?;
    exec_agent(cfg)
}

fn exec_agent(cfg: &InitConfig) -> Result<std::convert::Infallible, InitError> {
    let bin = CString::new(bothy_api::agent::AGENT_BIN_IN_SANDBOX).expect("constant has no NUL");
    let mut argv: Vec<CString> = vec![bin.clone()];
    for a in &cfg.agent_args {
        argv.push(sys::cstr(a).step("agent argument")?);
    }
    let env: Vec<CString> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
    ]
    .iter()
    .map(|s| CString::new(*s).expect("constant has no NUL"))
    .collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // Nothing but stdio and the agent listener (fd 3) crosses into the sandbox.
    sys::cloexec_from(4).step("close fds")?;
    // Last, so the setup above is not filtered (the filter needs no_new_privs, set before).
    super::seccomp::install().step("install seccomp filter")?;
    // SAFETY: argv and envp are NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(bin.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) };
    Err(io::Error::last_os_error()).step("exec agent")
}

/// `ip link set lo up`, with one ioctl.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket used only for the interface ioctls.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    sys::check(s as libc::c_long)?;
    // SAFETY: we own the fd just returned.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}
