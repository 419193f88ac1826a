//! Test support for end-to-end tests: [`TestDaemon`] runs a real `bothy serve` (real
//! namespaces, SQLite, overlays) in a temp data directory with its own cgroup parent, and
//! cleans up every sandbox it started when dropped (sandboxes outlive their daemon on purpose,
//! so a test that only killed the daemon would leak them).
//!
//! ```ignore
//! let Some(d) = TestDaemon::start(env!("CARGO_BIN_EXE_bothy")).await else { return };
//! d.client.put_sandbox("t1", &Default::default()).await.unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bothy_client::Client;

pub mod rootfs;
pub mod s3;
pub mod sh;
pub use rootfs::minimal_rootfs;
pub use s3::S3Server;
pub use sh::{sh_fails, sh_ok, sh_status};

/// Reports that a test cannot run here. Outside CI it prints the reason and the test returns;
/// in CI (`CI` set, as `.ci/run` is run) it fails instead: CI runs as root and installs every
/// dependency, so a skip there means a missing install step, never a silent pass.
pub fn skip(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if ci {
        panic!("cannot run in CI: {reason} (install it in .ci/run or .ci/install-deps.d/)");
    }
    eprintln!("SKIPPED: {reason}");
}

/// True when running as root; otherwise reports (see [`skip`]) why the calling test is skipped.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(&format!("{test} needs root (namespaces, mounts, cgroups)"));
    }
    root
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes; returns whether it became true.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Also listen on TCP 127.0.0.1 (free port) with this token.
    pub tcp_token: Option<String>,
    /// How often the daemon looks for idle sandboxes.
    pub idle_check_ms: u64,
    /// Extra arguments for `bothy serve`.
    pub extra_args: Vec<String>,
    /// Extra environment for `bothy serve` (e.g. blob store credentials).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tcp_token: None,
            idle_check_ms: 200,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

pub struct TestDaemon {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    /// Client over the unix socket.
    pub client: Client,
    /// `unix:…/bothy.sock`
    pub url: String,
    /// `127.0.0.1:PORT` when started with a TCP listener.
    pub tcp_addr: Option<String>,
    pub cgroup_parent: String,
    opts: Options,
    child: Option<Child>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDaemon {
    /// Starts a daemon, or returns `None` (after printing why) when not root.
    pub async fn start(bin: impl AsRef<Path>) -> Option<Self> {
        Self::start_with(bin, Options::default()).await
    }

    pub async fn start_with(bin: impl AsRef<Path>, opts: Options) -> Option<Self> {
        if !require_root("end-to-end test") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bothy-test-")
            .tempdir()
            .expect("create temp data dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let cgroup_parent = format!("bothy-test-{}-{n}", std::process::id());
        let url = format!("unix:{}/bothy.sock", dir.path().display());
        let mut d = Self {
            bin: bin.as_ref().to_path_buf(),
            client: Client::new(&url, None).expect("valid url"),
            url,
            tcp_addr: None,
            cgroup_parent,
            opts,
            child: None,
            dir,
        };
        d.spawn().await;
        Some(d)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--idle-check-ms")
            .arg(self.opts.idle_check_ms.to_string())
            .args(&self.opts.extra_args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env_remove("BOTHY_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some(token) = &self.opts.tcp_token {
            let addr = self.tcp_addr.clone().unwrap_or_else(|| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
                l.local_addr().expect("addr").to_string()
            });
            cmd.arg("--listen").arg(&addr).env("BOTHY_TOKEN", token);
            self.tcp_addr = Some(addr);
        }
        let mut child = cmd.spawn().expect("spawn bothy serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("bothy serve exited early ({status}):\n{}", self.log());
            }
            if self
                .client
                .json::<serde_json::Value>(http_get(), "/v1/health", None::<&()>)
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bothy serve did not come up in 30 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    /// `kill -9` of the daemon (sandboxes keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns its exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().ok().and_then(|s| s.code())
    }

    /// Starts the daemon again on the same data directory.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// A client over TCP with `token` (requires `Options::tcp_token`).
    pub fn tcp_client(&self, token: Option<&str>) -> Client {
        let addr = self.tcp_addr.as_ref().expect("daemon started with tcp");
        Client::new(&format!("http://{addr}"), token.map(str::to_string)).expect("valid url")
    }

    /// The CLI, pointed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("BOTHY_URL", &self.url).env_remove("BOTHY_TOKEN");
        c
    }

    /// Kills every sandbox this daemon started and removes their cgroups.
    pub fn kill_sandboxes(&self) {
        kill_cgroup_tree(&self.cgroup_parent);
    }
}

fn http_get() -> bothy_client::http::Method {
    bothy_client::http::Method::GET
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        self.kill_sandboxes();
        self.remove_firewall_table();
    }
}

impl TestDaemon {
    /// Deletes the nftables table of this (killed) daemon. A daemon killed with SIGKILL cannot
    /// remove it, and until the next daemon's sweep its NAT chain would keep conntrack running
    /// on all of the host's traffic (which skews benchmarks). Nothing to do where the daemon
    /// made none (no nft, or `none` networking).
    fn remove_firewall_table(&self) {
        // The daemon's naming (`bothy_daemon::net::firewall::table_name`) for a non-default
        // cgroup parent: `bothy_` and the name with non-alphanumerics as `_`.
        let name: String = self
            .cgroup_parent
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(48)
            .collect();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("bothy_{name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills all processes in `<root>/<parent>/*` of every cgroup hierarchy and removes them.
fn kill_cgroup_tree(parent: &str) {
    let roots: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        ["unified", "memory", "pids", "cpu", "cpuacct", "cpu,cpuacct"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .filter(|p| p.exists())
            .collect()
    };
    // Up to 5 s: a killed sandbox's processes (thousands after a fork bomb) take a moment to go.
    for _ in 0..250 {
        let mut remaining = false;
        for root in &roots {
            let dir = root.join(parent);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let cg = e.path();
                if !cg.is_dir() {
                    continue;
                }
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                    for pid in procs
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                    {
                        // SAFETY: kill(2) with a pid read from the test's own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                if std::fs::remove_dir(&cg).is_err() {
                    remaining = true;
                }
            }
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                remaining = true;
            }
        }
        if !remaining {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
