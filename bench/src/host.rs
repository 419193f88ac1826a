//! Host-side measurements and baselines: `/proc/meminfo`, cgroup memory, PSS, and bare
//! `unshare` processes (the baselines), kept in a cgroup of the benchmark's own so they are
//! measured the same way as sandboxes and always cleaned up.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The namespaces a sandbox gets, as `unshare(1)` flags (the baseline).
pub const UNSHARE_ALL: [&str; 9] = [
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--cgroup",
];

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    meminfo_field(&s, "MemAvailable").context("no MemAvailable in /proc/meminfo")
}

fn meminfo_field(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Kernel memory that no cgroup or process accounts for well, in bytes:
/// `SUnreclaim + KernelStack + PageTables` from `/proc/meminfo` (namespaces, mounts, sockets,
/// page tables). Less disturbed by other work on the host than `MemAvailable`.
pub fn kernel_memory() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    ["SUnreclaim", "KernelStack", "PageTables"]
        .iter()
        .map(|k| meminfo_field(&s, k).with_context(|| format!("no {k} in /proc/meminfo")))
        .sum()
}

/// The 1-minute load average (other work on the machine skews every number).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// Median of a few `MemAvailable` readings 200 ms apart (it moves with other work on the host).
pub async fn mem_available_settled() -> Result<u64> {
    let mut v = Vec::new();
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        v.push(mem_available()?);
    }
    v.sort_unstable();
    Ok(v[v.len() / 2])
}

/// The directory of the memory controller's hierarchy (v1 `memory/`, or the v2 root).
pub fn memory_root() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        root.join("memory")
    }
}

/// Memory charged to cgroup `rel` (under [`memory_root`]), children included.
pub fn cgroup_memory(rel: &str) -> Result<u64> {
    let d = memory_root().join(rel);
    let f = if d.join("memory.current").exists() {
        d.join("memory.current")
    } else {
        d.join("memory.usage_in_bytes")
    };
    let s = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("parse {}", f.display()))
}

/// Every pid in cgroup `rel` and its descendants (memory hierarchy).
pub fn cgroup_pids(rel: &str) -> Vec<i32> {
    fn walk(d: &Path, out: &mut Vec<i32>) {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&memory_root().join(rel), &mut out);
    out
}

/// Sum of the proportional set size of `pids`, in bytes (pids that are gone count 0).
pub fn pss(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| meminfo_field(&s, "Pss"))
        .sum()
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Number of threads of `pid`.
pub fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// The pid of the `bothy serve` whose command line names `data_dir`.
pub fn daemon_pid(data_dir: &Path) -> Option<i32> {
    let needle = data_dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_serve = cmd.split(|b| *b == 0).any(|a| a == b"serve");
        let names_dir = cmd.windows(needle.len()).any(|w| w == needle);
        (is_serve && names_dir).then_some(pid)
    })
}

/// A memory cgroup of the benchmark's own (`bothy-bench-<pid>/<name>`) holding baseline
/// processes. Dropping it kills whatever is in it and removes it.
pub struct BenchCgroup {
    rel: String,
    procs: CString,
    children: Vec<Child>,
}

/// Name of the benchmark's parent cgroup; `bench/run` removes it if the process died.
pub fn bench_cgroup_parent() -> String {
    format!("bothy-bench-{}", std::process::id())
}

impl BenchCgroup {
    pub fn create(name: &str) -> Result<Self> {
        let rel = format!("{}/{name}", bench_cgroup_parent());
        let dir = memory_root().join(&rel);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .context("cgroup path")?;
        Ok(Self {
            rel,
            procs,
            children: Vec::new(),
        })
    }

    /// A command whose process joins this cgroup before it execs.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.procs.clone();
        // SAFETY: open/write/close are async-signal-safe and the path was allocated before the
        // fork; writing "0" to cgroup.procs moves the calling process (v1 and v2).
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Starts an idle process in fresh namespaces (the memory baseline of one sandbox).
    pub fn spawn_idle_unshare(&mut self) -> Result<()> {
        let child = self
            .command("unshare")
            .args(UNSHARE_ALL)
            .arg("--kill-child")
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn unshare sleep")?;
        self.children.push(child);
        Ok(())
    }

    pub fn pids(&self) -> Vec<i32> {
        cgroup_pids(&self.rel)
    }

    pub fn memory(&self) -> Result<u64> {
        cgroup_memory(&self.rel)
    }

    /// Kills everything in the cgroup and waits until it is empty.
    pub fn kill_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) of a pid read from the benchmark's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let dir = memory_root().join(&self.rel);
        for _ in 0..100 {
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir(memory_root().join(bench_cgroup_parent()));
    }
}

/// Baseline of "first output of a command in new namespaces": runs
/// `unshare <all namespaces> sh -c 'echo hi'` and returns the time to its first output byte.
pub fn unshare_first_byte() -> Result<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new("unshare")
        .args(UNSHARE_ALL)
        .args(["sh", "-c", "echo hi"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn unshare")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut b = [0u8; 1];
    let n = out.read(&mut b).context("read unshare output")?;
    let t = t0.elapsed();
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = child.wait().context("wait unshare")?;
    if n != 1 || b[0] != b'h' || !status.success() {
        bail!("unshare baseline failed ({status}): is unshare(1) from util-linux installed?");
    }
    Ok(t)
}

/// Baseline of an exec round trip: fork + exec + wait of `/bin/true` from this process.
pub fn fork_exec_true() -> Result<Duration> {
    let t0 = Instant::now();
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run /bin/true")?;
    let t = t0.elapsed();
    if !status.success() {
        bail!("/bin/true failed: {status}");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_smaps() {
        let s = "MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n";
        assert_eq!(meminfo_field(s, "MemAvailable"), Some(1000 * 1024));
        assert_eq!(meminfo_field(s, "MemFree"), None);
        let smaps = "55-66 ---p 0 00:00 0 [rollup]\nRss: 10 kB\nPss:                 12 kB\n";
        assert_eq!(meminfo_field(smaps, "Pss"), Some(12 * 1024));
    }

    #[test]
    fn true_runs() {
        assert!(fork_exec_true().unwrap() < Duration::from_secs(5));
    }
}
