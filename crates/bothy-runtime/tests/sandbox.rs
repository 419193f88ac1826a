//! Real sandboxes through the native runtime (root only). The "agent" is `/bin/sh` running a
//! probe script that writes what it sees into the state dir; assertions run on the host.
//!
//! This binary also serves as the runtime's init binary: `sandbox __sandbox-init` runs
//! [`bothy_runtime::native::init_main`].

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bothy_api::SandboxName;
use bothy_runtime::native::{NativeConfig, NativeRuntime};
use bothy_runtime::{Limits, Lower, OverlaySpec, Runtime, SandboxSpec, Started};

const UID_BASE: u32 = 1_000_000;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        bothy_runtime::native::init_main();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bothy_testkit::skip("sandbox tests: needs root");
        return;
    }
    // The first free argument is a name filter; flags (and the values of those that take one,
    // like `--test-threads 2` from `cargo test -- --test-threads 2`) are not.
    let mut filter = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if matches!(
            a.as_str(),
            "--test-threads" | "--skip" | "--color" | "--format" | "-Z"
        ) {
            args.next();
        } else if !a.starts_with('-') {
            filter = Some(a);
            break;
        }
    }
    let tests: [(&str, fn()); 7] = [
        ("planted_symlinks_are_refused", planted_symlinks_are_refused),
        (
            "exited_init_is_reaped_by_stop",
            exited_init_is_reaped_by_stop,
        ),
        ("v1_sweep_without_cgroup_kill", v1_sweep_without_cgroup_kill),
        ("isolation_and_persistence", isolation_and_persistence),
        ("setup_error_is_reported", setup_error_is_reported),
        ("stop_without_start_is_fine", stop_without_start_is_fine),
        ("timings", timings),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        eprintln!("test {name} ...");
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                eprintln!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    // The closing line test runners and CI read.
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// A runtime with a cgroup parent of its own; removes the parent on drop.
struct Rt {
    rt: NativeRuntime,
    parent: String,
}

impl Rt {
    fn new(tag: &str) -> Rt {
        let parent = format!("bothy-test-{tag}-{}", std::process::id());
        let rt = NativeRuntime::new(NativeConfig {
            cgroup_parent: parent.clone(),
            uid_base: UID_BASE,
            // BOTHY_INIT_BINARY=target/debug/bothy checks the real binary's dispatch.
            init_binary: std::env::var_os("BOTHY_INIT_BINARY")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::current_exe().unwrap()),
        })
        .unwrap();
        Rt { rt, parent }
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // A failed test may leave sandboxes running: stop whatever is under our parent.
        for h in ["unified", "pids", ""] {
            let Ok(dir) = fs::read_dir(Path::new("/sys/fs/cgroup").join(h).join(&self.parent))
            else {
                continue;
            };
            for e in dir.flatten() {
                if e.path().is_dir() {
                    if let Ok(n) = SandboxName::new(e.file_name().to_string_lossy()) {
                        let _ = self.rt.stop(&n, None);
                    }
                }
            }
        }
        for c in ["memory", "pids", "cpu", "cpuacct", "unified", ""] {
            let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(c).join(&self.parent));
        }
    }
}

/// A minimal image: the host's top-level symlinks (`bin -> usr/bin`, ...) and empty dirs; the
/// host's `/usr` comes in as an idmapped lower of a second overlay.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        fs::create_dir(&image).unwrap();
        for e in fs::read_dir("/").unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_symlink() {
                let to = fs::read_link(e.path()).unwrap();
                std::os::unix::fs::symlink(to, image.join(e.file_name())).unwrap();
            }
        }
        for d in [
            "proc",
            "dev",
            "sys",
            "run",
            "tmp",
            "workspace",
            "root",
            "etc",
            "mnt",
        ] {
            fs::create_dir(image.join(d)).unwrap();
        }
        Fixture { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn spec(&self, name: &str, script: &str, listener: OwnedFd) -> SandboxSpec {
        SandboxSpec {
            name: SandboxName::new(name).unwrap(),
            overlays: vec![
                OverlaySpec {
                    target: "/".into(),
                    lowers: vec![Lower {
                        path: self.p("image"),
                        idmap: true,
                    }],
                    upper: self.p("layer/root/upper"),
                    work: self.p("layer/root/work"),
                },
                OverlaySpec {
                    target: "/usr".into(),
                    lowers: vec![Lower {
                        path: "/usr".into(),
                        idmap: true,
                    }],
                    upper: self.p("layer/usr/upper"),
                    work: self.p("layer/usr/work"),
                },
            ],
            rootfs_dir: self.p("rootfs"),
            state_dir: self.p("state"),
            agent_binary: "/bin/sh".into(),
            agent_args: vec![
                "-c".into(),
                format!("{{ {script}\n}} > /run/bothy/state/out 2>&1; echo DONE >> /run/bothy/state/out; sleep 1000"),
            ],
            agent_listener: listener,
            limits: Limits {
                memory_bytes: 256 << 20,
                pids: 100,
                cpu_weight: 50,
            },
        }
    }

    fn listener(&self) -> OwnedFd {
        let path = self.p("agent.sock");
        let _ = fs::remove_file(&path);
        UnixListener::bind(path).unwrap().into()
    }

    /// Waits for the probe to finish and returns its `key=value` lines.
    fn output(&self) -> BTreeMap<String, String> {
        let path = self.p("state/out");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = fs::read_to_string(&path).unwrap_or_default();
            if s.ends_with("DONE\n") {
                eprintln!("--- probe output\n{s}---");
                return s
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            }
            assert!(Instant::now() < deadline, "probe did not finish: {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

const PROBE: &str = r#"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
echo "hostname=$(uname -n)"
echo "nprocs=$(ls /proc | grep -cE '^[0-9]+$')"
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline | cut -c1-19)"
echo "cwd=$(pwd)"
test -e /work && echo "work=visible" || echo "work=hidden"
test -e /root/.cargo && echo "cargo=visible" || echo "cargo=hidden"
umount /proc 2>/dev/null && echo "umount_proc=ok" || echo "umount_proc=denied"
umount -l /run/bothy/bothy 2>/dev/null && echo "umount_agent=ok" || echo "umount_agent=denied"
mount -o remount,bind,rw /run/bothy/bothy 2>/dev/null && echo "remount_agent=ok" || echo "remount_agent=denied"
( echo x > /run/bothy/bothy ) 2>/dev/null && echo "write_agent=ok" || echo "write_agent=denied"
mount -t tmpfs none /mnt 2>/dev/null && echo "mount_tmpfs=ok" || echo "mount_tmpfs=denied"
if command -v unshare >/dev/null; then
  unshare --user --map-root-user --mount sh -c 'umount /proc' 2>/dev/null && echo "nested_umount=ok" || echo "nested_umount=denied"
  unshare --user --map-root-user --mount sh -c 'mount -o remount,bind,rw /run/bothy/bothy' 2>/dev/null && echo "nested_remount=ok" || echo "nested_remount=denied"
  unshare --user --map-root-user --mount sh -c 'mount -t tmpfs none /mnt && echo nested-tmpfs' 2>&1 | grep -q nested-tmpfs && echo "nested_userns=works" || echo "nested_userns=broken"
fi
mount -t proc proc /mnt 2>/dev/null && echo "mount_proc=ok" || echo "mount_proc=denied"
mount -t sysfs sysfs /mnt 2>/dev/null && echo "mount_sysfs=ok" || echo "mount_sysfs=denied"
mknod /tmp/x c 1 3 2>/dev/null && echo "mknod=ok" || echo "mknod=denied"
( echo evil > /proc/sys/kernel/hostname ) 2>/dev/null && echo "sysctl_write=ok" || echo "sysctl_write=denied"
hostname evil 2>/dev/null && echo "sethostname=ok" || echo "sethostname=denied"
for f in kcore keys timer_list sysrq-trigger latency_stats sched_debug; do
  if [ ! -e /proc/$f ] || [ -c /proc/$f ]; then echo "mask_$f=masked"; else echo "mask_$f=exposed"; fi
done
echo "net=$(ls /sys/class/net | tr '\n' ' ')"
cp /bin/true /run/bothy/state/t 2>/dev/null && { /run/bothy/state/t 2>/dev/null && echo "state_exec=ok" || echo "state_exec=denied"; rm -f /run/bothy/state/t; }
echo "lo_flags=$(cat /sys/class/net/lo/flags)"
echo "fd3=$(readlink /proc/self/fd/3 | cut -d: -f1)"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \t' | cut -d: -f2)"
echo "devs=$(ls /dev | tr '\n' ' ')"
echo "shm_owner=$(stat -c %u /dev/shm)"
echo "cgroup=$(cat /proc/self/cgroup | grep -c '::/$')"
if command -v python3 >/dev/null; then
  python3 -c 'import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for name, nr in (("keyctl", 250), ("bpf", 321), ("userfaultfd", 323), ("io_uring_setup", 425)):
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    print("seccomp_%s=%s" % (name, "denied" if r == -1 and ctypes.get_errno() == 1 else "allowed"))'
fi
echo hello > /workspace/f && echo "write_workspace=ok"
touch /usr/bothy-probe && echo "write_usr=ok"
echo "sandbox_usr_owner=$(stat -c %u /usr/bin)"
"#;

fn isolation_and_persistence() {
    let rt = Rt::new("iso");
    let fx = Fixture::new();
    let name = "probe-one";
    let started = rt.rt.start(fx.spec(name, PROBE, fx.listener())).unwrap();
    assert!(rt.rt.is_alive(&started));
    let o = fx.output();
    let get = |k: &str| o.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("uid"), "0");
    assert_eq!(get("gid"), "0");
    assert_eq!(get("uid_map"), format!("0 {UID_BASE} 65536"));
    assert_eq!(get("hostname"), name);
    let nprocs: u32 = get("nprocs").parse().unwrap();
    assert!(nprocs < 8, "sandbox sees {nprocs} processes");
    assert!(
        get("pid1").starts_with("/run/bothy/bothy -c"),
        "{}",
        get("pid1")
    );
    assert_eq!(get("cwd"), "/workspace");
    assert_eq!(get("work"), "hidden");
    assert_eq!(get("cargo"), "hidden");
    for k in [
        "umount_proc",
        "umount_agent",
        "remount_agent",
        "write_agent",
        "mount_tmpfs",
        "state_exec",
        "mount_proc",
        "mount_sysfs",
        "mknod",
        "sysctl_write",
        "sethostname",
    ] {
        assert_eq!(get(k), "denied", "{k}");
    }
    for f in [
        "kcore",
        "keys",
        "timer_list",
        "sysrq-trigger",
        "latency_stats",
        "sched_debug",
    ] {
        assert_eq!(get(&format!("mask_{f}")), "masked", "/proc/{f}");
    }
    if Path::new("/usr/bin/unshare").exists() {
        // Nested user+mount namespaces work, but the mounts they inherit are locked.
        assert_eq!(get("nested_userns"), "works");
        assert_eq!(get("nested_umount"), "denied");
        assert_eq!(get("nested_remount"), "denied");
    }
    assert_eq!(get("net").trim(), "lo");
    let lo_flags = u32::from_str_radix(get("lo_flags").trim_start_matches("0x"), 16).unwrap();
    assert_eq!(lo_flags & 1, 1, "lo is up");
    assert_eq!(get("fd3"), "socket");
    let fds: Vec<u32> = get("fds")
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert!(fds.iter().all(|&f| f <= 4), "leaked fds: {fds:?}");
    assert_eq!(get("nnp"), "1");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
    ] {
        assert!(
            get("devs").split_whitespace().any(|x| x == d),
            "/dev/{d} missing"
        );
    }
    assert_eq!(get("shm_owner"), "0");
    assert_eq!(get("cgroup"), "1", "cgroup namespace root");
    if cfg!(target_arch = "x86_64") && Path::new("/usr/bin/python3").exists() {
        for sc in ["keyctl", "bpf", "userfaultfd", "io_uring_setup"] {
            assert_eq!(get(&format!("seccomp_{sc}")), "denied", "{sc}");
        }
    }
    assert_eq!(get("write_workspace"), "ok");
    assert_eq!(get("write_usr"), "ok");
    assert_eq!(get("sandbox_usr_owner"), "0");

    // On the host: shifted ownership in the upper, host /usr untouched.
    let f = fx.p("layer/root/upper/workspace/f");
    assert_eq!(fs::metadata(&f).unwrap().uid(), UID_BASE);
    assert_eq!(fs::read_to_string(&f).unwrap(), "hello\n");
    assert_eq!(
        fs::metadata(fx.p("layer/usr/upper/bothy-probe"))
            .unwrap()
            .uid(),
        UID_BASE
    );
    assert!(!Path::new("/usr/bothy-probe").exists());
    // Nothing of the sandbox is mounted in the host's namespace.
    assert_eq!(fs::read_dir(fx.p("rootfs")).unwrap().count(), 0);

    // Limits are in the cgroup.
    let memory = format!(
        "/sys/fs/cgroup/memory/{}/{name}/memory.limit_in_bytes",
        rt.parent
    );
    let pids = format!("/sys/fs/cgroup/pids/{}/{name}/pids.max", rt.parent);
    let v2 = format!("/sys/fs/cgroup/{}/{name}", rt.parent);
    if Path::new(&memory).exists() {
        assert_eq!(
            fs::read_to_string(memory).unwrap().trim(),
            (256u64 << 20).to_string()
        );
        assert_eq!(fs::read_to_string(pids).unwrap().trim(), "100");
    } else {
        assert_eq!(
            fs::read_to_string(format!("{v2}/memory.max"))
                .unwrap()
                .trim(),
            (256u64 << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(format!("{v2}/pids.max")).unwrap().trim(),
            "100"
        );
    }
    let usage = rt.rt.usage(&SandboxName::new(name).unwrap()).unwrap();
    assert!(
        usage.memory_bytes > 0 && usage.cpu_usage_ns > 0,
        "{usage:?}"
    );
    assert!(rt.rt.netns(&started).is_ok());
    assert!(rt.rt.pidfd(&started).is_ok());

    let n = SandboxName::new(name).unwrap();
    let err = rt
        .rt
        .start(fx.spec(name, "true", fx.listener()))
        .unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    assert!(rt.rt.is_alive(&started));

    rt.rt.stop(&n, Some(started)).unwrap();
    assert!(!rt.rt.is_alive(&started));
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/{}/{name}", rt.parent)).exists());
    assert!(rt.rt.netns(&started).is_err());
    // Idempotent.
    rt.rt.stop(&n, Some(started)).unwrap();
    rt.rt.stop(&n, None).unwrap();

    // Start again on the same layer: the upper persisted.
    fs::remove_file(fx.p("state/out")).unwrap();
    let again = rt
        .rt
        .start(fx.spec(
            name,
            "echo \"persisted=$(cat /workspace/f)\"",
            fx.listener(),
        ))
        .unwrap();
    assert_eq!(
        fx.output().get("persisted").map(String::as_str),
        Some("hello")
    );
    rt.rt.stop(&n, Some(again)).unwrap();
    assert!(fs::read_to_string(fx.p("state/agent.log")).is_ok());
}

fn setup_error_is_reported() {
    let rt = Rt::new("err");
    let fx = Fixture::new();
    let mut spec = fx.spec("broken", "true", fx.listener());
    spec.overlays[1].lowers[0].path = fx.p("does-not-exist");
    let err = rt.rt.start(spec).unwrap_err().to_string();
    assert!(
        err.contains("open lower") && err.contains("No such file"),
        "{err}"
    );
    // Nothing is left running and the cgroups are gone.
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/{}/broken", rt.parent)).exists());
}

/// The sandbox writes its own upper layer and state dir, and setup runs as host root: symlinks
/// planted there must not make setup create, mount over, append to or chown host paths.
fn planted_symlinks_are_refused() {
    use std::os::unix::fs::symlink;
    let rt = Rt::new("link");
    let fx = Fixture::new();
    let host = fx.p("host");
    fs::create_dir(&host).unwrap();
    let name = SandboxName::new("planted").unwrap();
    let upper = fx.p("layer/root/upper");
    fs::create_dir_all(&upper).unwrap();
    for mount_point in ["run", "usr", "proc", "dev"] {
        let link = upper.join(mount_point);
        // An earlier attempt may have created the mount point (e.g. /usr) in the upper.
        let _ = fs::remove_dir(&link);
        symlink(host.join(mount_point).join("x"), &link).unwrap();
        let err = rt
            .rt
            .start(fx.spec("planted", "true", fx.listener()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("mount point /{mount_point}")),
            "{err}"
        );
        assert_eq!(fs::read_dir(&host).unwrap().count(), 0, "host dir touched");
        fs::remove_file(&link).unwrap();
    }
    // agent.log -> a host file: neither appended to nor chowned.
    let victim = host.join("victim");
    fs::write(&victim, "secret\n").unwrap();
    let _ = fs::remove_file(fx.p("state/agent.log"));
    symlink(&victim, fx.p("state/agent.log")).unwrap();
    let err = rt
        .rt
        .start(fx.spec("planted", "true", fx.listener()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent.log"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "secret\n");
    assert_eq!(fs::metadata(&victim).unwrap().uid(), 0);
    rt.rt.stop(&name, None).unwrap();
}

/// An agent that exits on its own leaves a zombie (the runtime's caller is its subreaper): it is
/// not alive, and stop reaps it.
fn exited_init_is_reaped_by_stop() {
    let rt = Rt::new("exit");
    let fx = Fixture::new();
    let mut spec = fx.spec("quitter", "true", fx.listener());
    spec.agent_args = vec!["-c".into(), "exit 3".into()];
    let s = rt.rt.start(spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.rt.is_alive(&s) {
        assert!(Instant::now() < deadline, "init did not exit");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        Path::new(&format!("/proc/{}", s.pid)).exists(),
        "zombie until reaped"
    );
    rt.rt
        .stop(&SandboxName::new("quitter").unwrap(), Some(s))
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", s.pid)).exists(),
        "reaped by stop"
    );
}

fn stop_without_start_is_fine() {
    let rt = Rt::new("idle");
    let n = SandboxName::new("never").unwrap();
    rt.rt.stop(&n, None).unwrap();
    rt.rt
        .stop(
            &n,
            Some(Started {
                pid: i32::MAX - 1,
                start_time: 1,
            }),
        )
        .unwrap();
    rt.rt.cleanup(&n).unwrap();
}

/// On a v1 host without the unified hierarchy there is no `cgroup.kill`: stop falls back to
/// SIGKILLing what `cgroup.procs` lists until it is empty.
fn v1_sweep_without_cgroup_kill() {
    use bothy_runtime::native::cgroup::Layout;
    let Layout::V1 { hierarchies, .. } = Layout::detect(Path::new("/sys/fs/cgroup")).unwrap()
    else {
        eprintln!("skipping: the host has no cgroup v1");
        return;
    };
    let layout = Layout::V1 {
        hierarchies,
        unified: None,
    };
    let parent = format!("bothy-test-sweep-{}", std::process::id());
    layout.create_parent(&parent).unwrap();
    let cg = layout.sandbox(&parent, "sweep");
    assert!(cg.kill_dir.is_none());
    cg.create(&Limits::default()).unwrap();
    let mut children: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("100")
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &children {
        for f in cg.procs_files() {
            fs::write(f, c.id().to_string()).unwrap();
        }
    }
    assert_eq!(cg.pids().len(), 3);
    assert!(!cg.kill());
    assert!(cg.sweep(Instant::now() + Duration::from_secs(5)));
    for c in &mut children {
        assert!(!c.wait().unwrap().success());
    }
    cg.remove().unwrap();
    for (_, d) in &cg.dirs {
        assert!(!d.exists());
        let _ = fs::remove_dir(d.parent().unwrap());
    }
}

/// CPU time (user + system) used so far by this process and its reaped children.
fn cpu_used() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: rusage is plain old data; getrusage fills it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out pointer.
        unsafe { libc::getrusage(who, &mut u) };
        for t in [u.ru_utime, u.ru_stime] {
            total += Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
        }
    }
    total
}

/// "median (min, p90)" of some durations.
fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{:.2?} (min {:.2?}, p90 {:.2?})", at(0.5), v[0], at(0.9))
}

/// Prints start/stop medians (and start-to-first-output); asserts only that they work.
fn timings() {
    let rt = Rt::new("time");
    let fx = Fixture::new();
    let n = SandboxName::new("timing").unwrap();
    let (mut starts, mut firsts, mut stops) = (vec![], vec![], vec![]);
    let runs: usize = std::env::var("BOTHY_TIMING_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let cpu0 = cpu_used();
    for _ in 0..runs {
        let _ = fs::remove_file(fx.p("state/out"));
        let t0 = Instant::now();
        let s = rt
            .rt
            .start(fx.spec("timing", "echo hi", fx.listener()))
            .unwrap();
        starts.push(t0.elapsed());
        while !fs::read_to_string(fx.p("state/out"))
            .unwrap_or_default()
            .ends_with("DONE\n")
        {
            std::thread::yield_now();
        }
        firsts.push(t0.elapsed());
        let t1 = Instant::now();
        rt.rt.stop(&n, Some(s)).unwrap();
        stops.push(t1.elapsed());
        if std::env::var_os("BOTHY_TIMING_CLEAN_WORK").is_some() {
            for o in ["root", "usr"] {
                let _ = fs::remove_dir(fx.p(&format!("layer/{o}/work/work")));
            }
        }
    }
    let cpu = (cpu_used() - cpu0) / runs as u32;
    eprintln!("cpu time per start+stop (runtime, init, agent; not kernel workers): {cpu:.2?}");
    eprintln!(
        "timings over {runs} runs: start {}, start to first output {}, stop {}",
        stats(starts),
        stats(firsts),
        stats(stops)
    );
}
