//! Building a sandbox's root inside its (not yet user-owned) mount namespace: idmapped lower
//! layers, overlays through the new mount API, and the pseudo filesystems (`/proc`, `/sys`,
//! `/dev`, `/run`). Runs as real root in the host user namespace, in the init's PID 1.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use super::config::{InitConfig, InitOverlay};
use super::init::{InitError, StepExt};
use super::sys::{self, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY};

const MS_RO_BIND_FLAGS: libc::c_ulong =
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;

/// Mounts every overlay of the sandbox under `cfg.rootfs_dir`.
pub fn mount_overlays(cfg: &InitConfig, userns: Option<&OwnedFd>) -> Result<(), InitError> {
    for (i, o) in cfg.overlays.iter().enumerate() {
        let target = if i == 0 {
            cfg.rootfs_dir.clone()
        } else {
            mount_point(&cfg.rootfs_dir, &o.target, cfg.uid_base)?
        };
        mount_overlay(o, &target, userns)?;
    }
    Ok(())
}

fn mount_overlay(
    o: &InitOverlay,
    target: &Path,
    userns: Option<&OwnedFd>,
) -> Result<(), InitError> {
    let what = |s: &str| format!("{s} (overlay {})", o.target);
    let fs = sys::fsopen("overlay").step(what("fsopen"))?;
    // The detached lower mounts must stay open until the overlay is created: closing the last
    // fd of a detached mount dissolves it, and overlayfs then fails to clone it (EINVAL).
    let mut keep = Vec::with_capacity(o.lowers.len());
    for (path, idmap) in &o.lowers {
        let lower =
            sys::open_tree_clone(path).step(what(&format!("open lower {}", path.display())))?;
        let (attrs, ns) = if *idmap {
            let ns =
                userns.ok_or_else(|| InitError::msg("idmapped lower without a user namespace"))?;
            (
                MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
                Some(ns),
            )
        } else {
            (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, None)
        };
        sys::mount_setattr(&lower, attrs, ns)
            .step(what(&format!("idmap lower {}", path.display())))?;
        sys::fsconfig_fd(&fs, "lowerdir+", &lower).step(what("set lowerdir+"))?;
        keep.push(lower);
    }
    let s = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| InitError::msg("non-utf-8 path"))
    };
    // Snapshots turn uppers into lowers: an upper must be self-contained, so no directory
    // redirects and no metadata-only copy-ups (both point into lower layers).
    sys::fsconfig_string(&fs, "redirect_dir", "off").step(what("set redirect_dir=off"))?;
    sys::fsconfig_string(&fs, "metacopy", "off").step(what("set metacopy=off"))?;
    sys::fsconfig_string(&fs, "upperdir", &s(&o.upper)?).step(what("set upperdir"))?;
    sys::fsconfig_string(&fs, "workdir", &s(&o.work)?).step(what("set workdir"))?;
    sys::fsconfig_create(&fs).step(what("create overlay"))?;
    drop(keep);
    let m = sys::fsmount(&fs, MOUNT_ATTR_NODEV).step(what("fsmount"))?;
    sys::move_mount(&m, target).step(what("move_mount"))
}

/// Makes sure `abs` is a real directory inside the sandbox's root, creating missing components
/// (owned by the sandbox's root), and returns its host path.
///
/// The root's upper layer is written by the sandbox, and this runs as real root on the host: a
/// symlink planted at a mount point (`/run -> /etc`) would otherwise make us create directories
/// on the host or mount over host paths. Every component is checked without following links;
/// nothing in the sandbox runs during setup, so the check cannot be raced.
pub fn mount_point(root: &Path, abs: &str, uid_base: u32) -> Result<PathBuf, InitError> {
    let mut p = root.to_path_buf();
    for c in abs.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(InitError::msg(format!(
                "mount point {abs} is not a clean path"
            )));
        }
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(InitError::msg(format!(
                    "mount point {abs}: {} is not a directory (a symlink or file in the sandbox's layer)",
                    p.strip_prefix(root).unwrap_or(&p).display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&p)
                    .step(format!("create mount point {abs}"))?;
                std::os::unix::fs::lchown(&p, Some(uid_base), Some(uid_base))
                    .step(format!("chown mount point {abs}"))?;
            }
            Err(e) => return Err(e).step(format!("inspect mount point {abs}")),
        }
    }
    Ok(p)
}

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    sys::mount(Some(src), target, Some(fstype), flags, data)
}

fn bind(src: &Path, target: &Path) -> io::Result<()> {
    let s = src
        .to_str()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    sys::mount(Some(s), target, None, libc::MS_BIND, None)
}

fn ro_bind(src: &Path, target: &Path, extra: libc::c_ulong) -> io::Result<()> {
    bind(src, target)?;
    sys::mount(None, target, None, MS_RO_BIND_FLAGS | extra, None)
}

fn mkdir_p(p: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(p)
}

fn touch(p: &Path) -> io::Result<()> {
    if p.symlink_metadata().is_err() {
        fs::File::create(p)?;
    }
    Ok(())
}

/// Mounts `/proc`, `/sys`, `/dev` and `/run` inside the new root (before `pivot_root`).
pub fn mount_pseudo_fs(cfg: &InitConfig) -> Result<(), InitError> {
    let root = &cfg.rootfs_dir;
    let base = cfg.uid_base;
    let nsd = libc::MS_NOSUID | libc::MS_NODEV;

    // /proc of the sandbox's own pid namespace, with the usual masks.
    let proc_ = mount_point(root, "/proc", base)?;
    mount("proc", &proc_, "proc", nsd | libc::MS_NOEXEC, None).step("mount /proc")?;
    for f in [
        "kcore",
        "keys",
        "timer_list",
        "sysrq-trigger",
        "latency_stats",
        "sched_debug",
    ] {
        let p = proc_.join(f);
        if p.exists() {
            bind(Path::new("/dev/null"), &p).step(format!("mask /proc/{f}"))?;
        }
    }
    for d in ["sys", "bus", "fs", "irq"] {
        let p = proc_.join(d);
        if p.exists() {
            ro_bind(&p, &p, libc::MS_NOEXEC).step(format!("read-only /proc/{d}"))?;
        }
    }
    for d in ["acpi", "scsi"] {
        let p = proc_.join(d);
        if p.is_dir() {
            mount(
                "tmpfs",
                &p,
                "tmpfs",
                nsd | libc::MS_NOEXEC | libc::MS_RDONLY,
                None,
            )
            .step(format!("mask /proc/{d}"))?;
        }
    }

    let sys_ = mount_point(root, "/sys", base)?;
    mount(
        "sysfs",
        &sys_,
        "sysfs",
        nsd | libc::MS_NOEXEC | libc::MS_RDONLY,
        None,
    )
    .step("mount /sys")?;

    // /dev: a fresh tmpfs owned by the sandbox's root, with the harmless host devices bound in.
    let dev = mount_point(root, "/dev", base)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID,
        Some(&format!("mode=755,size=65536k,uid={base},gid={base}")),
    )
    .step("mount /dev")?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = dev.join(d);
        touch(&p).step(format!("create /dev/{d}"))?;
        bind(&Path::new("/dev").join(d), &p).step(format!("bind /dev/{d}"))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts, 0o755).step("create /dev/pts")?;
    mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(&format!(
            "newinstance,ptmxmode=0666,mode=0620,gid={}",
            base + 5
        )),
    )
    .step("mount /dev/pts")?;
    symlink("pts/ptmx", dev.join("ptmx")).step("link /dev/ptmx")?;
    let shm = dev.join("shm");
    mkdir_p(&shm, 0o1777).step("create /dev/shm")?;
    mount(
        "tmpfs",
        &shm,
        "tmpfs",
        nsd,
        Some(&format!("mode=1777,uid={base},gid={base}")),
    )
    .step("mount /dev/shm")?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name)).step(format!("link /dev/{name}"))?;
    }

    // /run: tmpfs with the agent binary (read-only bind, never a copy) and the state dir.
    let run = mount_point(root, "/run", base)?;
    mount(
        "tmpfs",
        &run,
        "tmpfs",
        nsd,
        Some(&format!("mode=755,size=65536k,uid={base},gid={base}")),
    )
    .step("mount /run")?;
    let bothy = run.join("bothy");
    mkdir_p(&bothy, 0o755).step("create /run/bothy")?;
    std::os::unix::fs::lchown(&bothy, Some(base), Some(base)).step("chown /run/bothy")?;
    let bin = bothy.join("bothy");
    touch(&bin).step("create /run/bothy/bothy")?;
    // CVE-2019-5736 (runc): a container that can write to the runtime's own binary can replace
    // it on the host. The agent binary is therefore a read-only bind of the host file: never
    // copied into a writable layer, never writable from inside.
    ro_bind(&cfg.agent_binary, &bin, 0).step("bind agent binary")?;
    let state = bothy.join("state");
    mkdir_p(&state, 0o700).step("create /run/bothy/state")?;
    bind(&cfg.state_dir, &state).step("bind state dir")?;
    sys::mount(
        None,
        &state,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | nsd | libc::MS_NOEXEC,
        None,
    )
    .step("remount state dir nosuid,nodev,noexec")?;
    Ok(())
}
