//! Cgroups of sandboxes, on a pure v2 hierarchy or on a v1/hybrid layout.
//!
//! - **v2** (`<root>/cgroup.controllers` exists): `<root>/<parent>/<name>` with `memory.max`,
//!   `pids.max`, `cpu.weight`; `<parent>` enables `+memory +pids +cpu` for its children.
//! - **v1/hybrid**: one directory per controller hierarchy (`memory`, `pids`, `cpu`, `cpuacct`;
//!   co-mounted hierarchies are used once) with `memory.limit_in_bytes`, `pids.max`,
//!   `cpu.shares`; plus, when a controller-less v2 is mounted at `<root>/unified`, a cgroup
//!   there too, used only for `cgroup.kill` (one write kills every process of the sandbox).
//!   cpuset is never used (a v1 cpuset needs `cpus`/`mems` before a pid can join).
//!
//! Paths are computed from a root directory so the layout logic is unit-tested on a fake tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Limits, RuntimeError, Usage};

const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V2 {
        root: PathBuf,
    },
    V1 {
        /// (controller name, hierarchy root); co-mounted controllers share one root, listed once.
        hierarchies: Vec<(String, PathBuf)>,
        /// The controller-less v2 hierarchy of a hybrid layout.
        unified: Option<PathBuf>,
    },
}

impl Layout {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Result<Layout, RuntimeError> {
        if root.join("cgroup.controllers").exists() {
            return Ok(Layout::V2 {
                root: root.to_path_buf(),
            });
        }
        let mut hierarchies: Vec<(String, PathBuf)> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            let dir = root.join(ctrl);
            if !dir.join("cgroup.procs").exists() {
                if ctrl == "cpuacct" || ctrl == "freezer" {
                    continue; // statistics; freezing (only without a v2 cgroup.freeze)
                }
                return Err(RuntimeError::Unsupported(format!(
                    "no cgroup v2 and no v1 {ctrl} hierarchy under {}",
                    root.display()
                )));
            }
            let canon = fs::canonicalize(&dir).unwrap_or(dir);
            if !hierarchies.iter().any(|(_, p)| *p == canon) {
                hierarchies.push((ctrl.to_string(), canon));
            }
        }
        let unified = root.join("unified");
        let unified = unified.join("cgroup.procs").exists().then_some(unified);
        Ok(Layout::V1 {
            hierarchies,
            unified,
        })
    }

    /// The cgroups of sandbox `name` under `parent`.
    pub fn sandbox(&self, parent: &str, name: &str) -> SandboxCgroups {
        match self {
            Layout::V2 { root } => SandboxCgroups {
                v2: true,
                dirs: vec![("".to_string(), root.join(parent).join(name))],
                kill_dir: Some(root.join(parent).join(name)),
            },
            Layout::V1 {
                hierarchies,
                unified,
            } => {
                let mut dirs: Vec<(String, PathBuf)> = hierarchies
                    .iter()
                    .map(|(c, r)| (c.clone(), r.join(parent).join(name)))
                    .collect();
                let kill_dir = unified.as_ref().map(|u| u.join(parent).join(name));
                if let Some(k) = &kill_dir {
                    dirs.push(("unified".to_string(), k.clone()));
                }
                SandboxCgroups {
                    v2: false,
                    dirs,
                    kill_dir,
                }
            }
        }
    }

    /// Creates `parent` in every hierarchy (and, on v2, delegates the controllers to it).
    pub fn create_parent(&self, parent: &str) -> Result<(), RuntimeError> {
        match self {
            Layout::V2 { root } => {
                // The root must delegate the controllers first; it usually does already.
                enable_controllers(root)?;
                let dir = root.join(parent);
                mkdir(&dir)?;
                enable_controllers(&dir)
            }
            Layout::V1 {
                hierarchies,
                unified,
            } => {
                for (_, r) in hierarchies {
                    mkdir(&r.join(parent))?;
                }
                if let Some(u) = unified {
                    mkdir(&u.join(parent))?;
                }
                Ok(())
            }
        }
    }
}

/// Delegates memory, pids and cpu to the children of `dir` (v2). memory and pids are required;
/// cpu is skipped with a warning when the kernel or the parent does not offer it.
fn enable_controllers(dir: &Path) -> Result<(), RuntimeError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| RuntimeError::io(format!("read {}/cgroup.controllers", dir.display()), e))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let current = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let mut missing = Vec::new();
    for c in ["memory", "pids", "cpu"] {
        if current.split_whitespace().any(|x| x == c) {
            continue;
        }
        if !available.contains(&c) {
            if c == "cpu" {
                tracing::warn!(cgroup = %dir.display(), "cgroup v2 cpu controller not available; no cpu weights");
                continue;
            }
            return Err(RuntimeError::Unsupported(format!(
                "cgroup v2 controller {c} is not available in {}",
                dir.display()
            )));
        }
        missing.push(format!("+{c}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &missing.join(" "))
}

fn mkdir(dir: &Path) -> Result<(), RuntimeError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::io(
            format!("create cgroup {}", dir.display()),
            e,
        )),
    }
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))
}

/// v1 `cpu.shares` for a v2-scale weight (100 = the default 1024).
pub fn v1_shares(weight: u64) -> u64 {
    (weight.saturating_mul(1024) / 100).max(2)
}

/// The cgroup directories of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroups {
    v2: bool,
    /// (controller or "" on v2 / "unified", directory).
    pub dirs: Vec<(String, PathBuf)>,
    /// Where `cgroup.kill` lives, if anywhere.
    pub kill_dir: Option<PathBuf>,
}

impl SandboxCgroups {
    /// Every `cgroup.procs` a process must join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    fn dir(&self, ctrl: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c == ctrl)
            .map(|(_, d)| d.as_path())
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: &Limits) -> Result<(), RuntimeError> {
        for (_, d) in &self.dirs {
            mkdir(d)?;
        }
        if self.v2 {
            let d = &self.dirs[0].1;
            write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
            write(&d.join("pids.max"), &limits.pids.to_string())?;
            if d.join("cpu.weight").exists() {
                write(
                    &d.join("cpu.weight"),
                    &limits.cpu_weight.clamp(1, 10000).to_string(),
                )?;
            }
        } else {
            if let Some(d) = self.dir("memory") {
                write(
                    &d.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
            }
            if let Some(d) = self.dir("pids") {
                write(&d.join("pids.max"), &limits.pids.to_string())?;
            }
            if let Some(d) = self.dir("cpu") {
                write(
                    &d.join("cpu.shares"),
                    &v1_shares(limits.cpu_weight).to_string(),
                )?;
            }
        }
        Ok(())
    }

    /// Pids listed in any of the sandbox's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for f in self.procs_files() {
            if let Ok(s) = fs::read_to_string(&f) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process with `cgroup.kill`; `false` if that is not available.
    pub fn kill(&self) -> bool {
        match &self.kill_dir {
            Some(d) if d.join("cgroup.kill").exists() => {
                fs::write(d.join("cgroup.kill"), "1").is_ok()
            }
            _ => false,
        }
    }

    /// SIGKILLs every listed process until the cgroups are empty or `deadline` passes.
    pub fn sweep(&self, deadline: Instant) -> bool {
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            for p in pids {
                // SAFETY: kill(2) with a pid from the sandbox's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the cgroups are empty; `false` on timeout.
    pub fn wait_empty(&self, deadline: Instant) -> bool {
        loop {
            if self.pids().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the directories (retrying briefly on EBUSY); missing ones are fine.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        for (_, d) in &self.dirs {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        return Err(RuntimeError::io(
                            format!("remove cgroup {}", d.display()),
                            e,
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Freezes (or thaws) every process of the sandbox and waits until the kernel says it is
    /// done: v2 `cgroup.freeze` (also in the controller-less v2 of a hybrid layout), else the
    /// v1 freezer.
    pub fn set_frozen(&self, frozen: bool, deadline: Instant) -> Result<(), RuntimeError> {
        let timeout = || {
            RuntimeError::Setup(format!(
                "the sandbox did not {} in time",
                if frozen { "freeze" } else { "thaw" }
            ))
        };
        if let Some(d) = self
            .kill_dir
            .as_ref()
            .filter(|d| d.join("cgroup.freeze").exists())
        {
            write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            loop {
                let ev = fs::read_to_string(d.join("cgroup.events")).map_err(|e| {
                    RuntimeError::io(format!("read {}/cgroup.events", d.display()), e)
                })?;
                if ev.lines().any(|l| l.trim() == want) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(timeout());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let Some(d) = self.dir("freezer") else {
            return Err(RuntimeError::Unsupported(
                "no cgroup freezer (neither v2 cgroup.freeze nor a v1 freezer)".into(),
            ));
        };
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write(&d.join("freezer.state"), want)?;
        loop {
            let st = fs::read_to_string(d.join("freezer.state"))
                .map_err(|e| RuntimeError::io(format!("read {}/freezer.state", d.display()), e))?;
            if st.trim() == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(timeout());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn usage(&self) -> Result<Usage, RuntimeError> {
        let read = |p: PathBuf| {
            fs::read_to_string(&p).map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))
        };
        let num = |s: &str| s.trim().parse::<u64>().unwrap_or(0);
        if self.v2 {
            let d = &self.dirs[0].1;
            let stat = read(d.join("cpu.stat"))?;
            let usec = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .map_or(0, num);
            Ok(Usage {
                cpu_usage_ns: usec.saturating_mul(1000),
                memory_bytes: num(&read(d.join("memory.current"))?),
            })
        } else {
            // With cpu,cpuacct co-mounted, the one hierarchy is listed as "cpu".
            let cpu = match self.dir("cpuacct").or(self.dir("cpu")) {
                Some(d) => num(&read(d.join("cpuacct.usage"))?),
                None => 0,
            };
            let mem = match self.dir("memory") {
                Some(d) => num(&read(d.join("memory.usage_in_bytes"))?),
                None => 0,
            };
            Ok(Usage {
                cpu_usage_ns: cpu,
                memory_bytes: mem,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }

    #[test]
    fn detects_v2_and_computes_paths() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("cgroup.controllers"));
        let l = Layout::detect(t.path()).unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                root: t.path().to_path_buf()
            }
        );
        let s = l.sandbox("bothy", "web");
        let d = t.path().join("bothy/web");
        assert_eq!(s.procs_files(), vec![d.join("cgroup.procs")]);
        assert_eq!(s.kill_dir, Some(d.clone()));
        // Creating writes v2 limits (plain files on the fake tree; the kernel would create the
        // interface files itself).
        fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(t.path().join("cgroup.subtree_control"), "memory pids\n").unwrap();
        fs::create_dir_all(t.path().join("bothy")).unwrap();
        fs::write(
            t.path().join("bothy/cgroup.controllers"),
            "cpu memory pids\n",
        )
        .unwrap();
        l.create_parent("bothy").unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu",
            "only the missing controller is enabled at the root"
        );
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpu.weight"), "").unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("bothy/cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        s.create(&Limits {
            memory_bytes: 1 << 20,
            pids: 7,
            cpu_weight: 50,
        })
        .unwrap();
        assert_eq!(fs::read_to_string(d.join("memory.max")).unwrap(), "1048576");
        assert_eq!(fs::read_to_string(d.join("pids.max")).unwrap(), "7");
        assert_eq!(fs::read_to_string(d.join("cpu.weight")).unwrap(), "50");
        fs::write(d.join("cpu.stat"), "usage_usec 12\nuser_usec 1\n").unwrap();
        fs::write(d.join("memory.current"), "4096\n").unwrap();
        assert_eq!(
            s.usage().unwrap(),
            Usage {
                cpu_usage_ns: 12_000,
                memory_bytes: 4096
            }
        );
    }

    #[test]
    fn v2_without_memory_controller_is_unsupported() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
        let l = Layout::detect(t.path()).unwrap();
        let err = l.create_parent("bothy").unwrap_err();
        assert!(matches!(err, RuntimeError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn detects_hybrid_v1_with_unified() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu", "unified"] {
            touch(&t.path().join(c).join("cgroup.procs"));
        }
        // cpu,cpuacct co-mounted: cpuacct is a symlink to cpu and must be used once.
        std::os::unix::fs::symlink(t.path().join("cpu"), t.path().join("cpuacct")).unwrap();
        let l = Layout::detect(t.path()).unwrap();
        let s = l.sandbox("p", "n");
        let ctrls: Vec<&str> = s.dirs.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(ctrls, ["memory", "pids", "cpu", "unified"]);
        assert_eq!(s.kill_dir, Some(t.path().join("unified/p/n")));
        l.create_parent("p").unwrap();
        s.create(&Limits {
            memory_bytes: 100,
            pids: 3,
            cpu_weight: 200,
        })
        .unwrap();
        let cpu = fs::canonicalize(t.path().join("cpu")).unwrap();
        assert_eq!(
            fs::read_to_string(cpu.join("p/n/cpu.shares")).unwrap(),
            "2048"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("memory/p/n/memory.limit_in_bytes")).unwrap(),
            "100"
        );
        fs::write(cpu.join("p/n/cpuacct.usage"), "123\n").unwrap();
        fs::write(t.path().join("memory/p/n/memory.usage_in_bytes"), "456\n").unwrap();
        assert_eq!(
            s.usage().unwrap(),
            Usage {
                cpu_usage_ns: 123,
                memory_bytes: 456
            }
        );
    }

    #[test]
    fn v1_without_pids_is_unsupported() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("memory/cgroup.procs"));
        assert!(matches!(
            Layout::detect(t.path()),
            Err(RuntimeError::Unsupported(_))
        ));
    }

    #[test]
    fn shares_scale() {
        assert_eq!(v1_shares(100), 1024);
        assert_eq!(v1_shares(0), 2);
        assert_eq!(v1_shares(10000), 102400);
    }
}
