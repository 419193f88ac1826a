//! The foundation suite (issue 3): new sandbox → first output, wake → first output, exec round
//! trip, memory per idle sandbox and how many sandboxes run at once, each next to a bare
//! `unshare`/fork+exec baseline measured in the same run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bothy_api::exec::{ExecRequest, ExecResult};
use bothy_api::sandbox::{CreateSandbox, SandboxState};
use bothy_client::http::Method;
use bothy_client::Client;
use bothy_testkit::{Options, TestDaemon};
use futures_util::stream::{self, StreamExt};

use crate::host;
use crate::report::{Row, Stat, Target, Unit};
use crate::Report;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Request → first output byte of `echo hi` in a new sandbox.
    New,
    /// The same for waking a sleeping sandbox.
    Wake,
    /// Round trip of `exec true` in a running sandbox.
    Exec,
    /// Host memory per idle running sandbox.
    Memory,
    /// How many sandboxes run at once.
    Scale,
}

const ALL: [Metric; 5] = [
    Metric::New,
    Metric::Wake,
    Metric::Exec,
    Metric::Memory,
    Metric::Scale,
];

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Metrics to run (default: all).
    #[arg(value_enum)]
    pub metrics: Vec<Metric>,
    /// New sandboxes timed by `new` (and sandboxes woken by `wake`).
    #[arg(long)]
    pub starts: Option<usize>,
    /// Round trips timed by `exec`.
    #[arg(long)]
    pub execs: Option<usize>,
    /// Idle sandboxes measured by `memory`.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Sandboxes `scale` tries to run at once.
    #[arg(long)]
    pub max: Option<usize>,
    /// Sandboxes created in parallel by `memory` and `scale`.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Rounds of `memory` (baseline and bothy alternate; medians are reported).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// `scale` runs an exec in every Nth sandbox (default 50).
    #[arg(long)]
    pub exec_every: Option<usize>,
}

/// How much each metric does.
struct Sizes {
    starts: usize,
    execs: usize,
    idle: usize,
    max: usize,
    parallel: usize,
    exec_every: usize,
    mem_rounds: usize,
    settle: Duration,
}

impl Sizes {
    fn new(quick: bool, a: &Args) -> Self {
        let (starts, execs, idle, max, settle) = if quick {
            (5, 30, 10, 20, Duration::from_secs(1))
        } else {
            (30, 300, 100, 500, Duration::from_secs(5))
        };
        Self {
            starts: a.starts.unwrap_or(starts),
            execs: a.execs.unwrap_or(execs),
            idle: a.idle.unwrap_or(idle),
            max: a.max.unwrap_or(max),
            parallel: a.parallel.unwrap_or(8).max(1),
            exec_every: a.exec_every.unwrap_or(50).max(1),
            mem_rounds: a.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            settle,
        }
    }
}

/// Runs the suite against a fresh daemon; the daemon and every sandbox it started are gone
/// when this returns (or is dropped, e.g. on Ctrl-C).
pub async fn run(
    bin: &std::path::Path,
    quick: bool,
    args: Args,
    report: &mut Report,
) -> Result<()> {
    let sizes = Sizes::new(quick, &args);
    let metrics = if args.metrics.is_empty() {
        ALL.to_vec()
    } else {
        args.metrics.clone()
    };
    let d = TestDaemon::start_with(
        bin,
        Options {
            idle_check_ms: 1000,
            ..Options::default()
        },
    )
    .await
    .context("the benchmark needs root")?;
    eprintln!(
        "bothy serve: data dir {}, cgroup parent {}",
        d.data_dir().display(),
        d.cgroup_parent
    );
    let b = Bench { d: &d, sizes };
    for m in metrics {
        eprintln!("== foundation {m:?}");
        let t = Instant::now();
        match m {
            Metric::New => b.new_sandbox(report).await?,
            Metric::Wake => b.wake(report).await?,
            Metric::Exec => b.exec(report).await?,
            Metric::Memory => b.memory(report).await?,
            Metric::Scale => b.scale(report).await?,
        }
        eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
    }
    Ok(())
}

struct Bench<'a> {
    d: &'a TestDaemon,
    sizes: Sizes,
}

fn keep_alive() -> CreateSandbox {
    CreateSandbox {
        keep_alive: Some(true),
        ..CreateSandbox::default()
    }
}

fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: Some(args.iter().map(|s| s.to_string()).collect()),
        ..ExecRequest::default()
    }
}

/// Streams `echo hi` and returns when the first `stdout` event arrives (then drains the rest).
pub async fn echo_first_output(c: &Client, name: &str) -> Result<Duration> {
    let t0 = Instant::now();
    let mut s = c
        .exec_stream(name, &argv(&["echo", "hi"]))
        .await
        .with_context(|| format!("exec in {name}"))?;
    let t = loop {
        match s.next().await? {
            Some(ev) if ev.event == "stdout" => {
                if !ev.data.contains("hi") {
                    bail!("unexpected output in {name}: {}", ev.data);
                }
                break t0.elapsed();
            }
            Some(ev) if ev.event == "exit" || ev.event == "error" => {
                bail!("{name}: {} before any output: {}", ev.event, ev.data)
            }
            Some(_) => {}
            None => bail!("{name}: stream ended before any output"),
        }
    };
    while s.next().await?.is_some() {}
    Ok(t)
}

/// Runs `f` over `items`, `parallel` at a time; returns each result in order with its time.
async fn parallel<F, Fut>(items: &[String], parallel: usize, f: F) -> Vec<(Result<()>, Duration)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    stream::iter(items.iter().map(|it| {
        let fut = f(it.clone());
        async move {
            let t = Instant::now();
            let r = fut.await;
            (r, t.elapsed())
        }
    }))
    .buffered(parallel)
    .collect()
    .await
}

/// Per-sandbox memory of each round, MiB.
#[derive(Default)]
struct MemRounds {
    avail: Vec<f64>,
    cgroup: Vec<f64>,
    pss: Vec<f64>,
    kernel: Vec<f64>,
}

/// Adds the daemon's distinct warnings and errors (up to 10) to the report's notes.
fn daemon_log_problems(d: &TestDaemon, report: &mut Report) {
    let mut seen = std::collections::BTreeSet::new();
    for line in d.log().lines() {
        if !(line.contains("WARN") || line.contains("ERROR")) {
            continue;
        }
        // Drop the timestamp so repeats collapse.
        let text = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
        if seen.len() < 10 && seen.insert(text.to_string()) {
            report.notes.push(format!("daemon log: {text}"));
        }
    }
}

impl Bench<'_> {
    fn c(&self) -> &Client {
        &self.d.client
    }

    async fn create_all(&self, names: &[String]) -> Result<()> {
        let c = self.c();
        for (r, _) in parallel(names, self.sizes.parallel, |n| async move {
            c.put_sandbox(&n, &keep_alive())
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await
        {
            r?;
        }
        Ok(())
    }

    async fn delete_all(&self, names: &[String]) -> Vec<(Result<()>, Duration)> {
        let c = self.c();
        parallel(names, self.sizes.parallel, |n| async move {
            c.delete_sandbox(&n).await.map_err(Into::into)
        })
        .await
    }

    /// Metric 1: PUT get-or-create of a new name + streamed `echo hi` → first stdout event.
    async fn new_sandbox(&self, report: &mut Report) -> Result<()> {
        let n = self.sizes.starts;
        // Warm up once (page cache of the binaries, first-use costs in the daemon).
        host::unshare_first_byte()?;
        self.c().put_sandbox("warmup", &keep_alive()).await?;
        echo_first_output(self.c(), "warmup").await?;
        self.c().delete_sandbox("warmup").await?;

        let (mut total, mut put, mut exec, mut base) = (vec![], vec![], vec![], vec![]);
        let mut names = vec![];
        for i in 0..n {
            base.push(host::unshare_first_byte()?);
            let name = format!("new-{i}");
            let t0 = Instant::now();
            self.c().put_sandbox(&name, &keep_alive()).await?;
            let p = t0.elapsed();
            let e = echo_first_output(self.c(), &name).await?;
            total.push(t0.elapsed());
            put.push(p);
            exec.push(e);
            names.push(name);
        }
        for (r, _) in self.delete_all(&names).await {
            r?;
        }
        report.rows.push(
            Row::new(
                "new sandbox: PUT + streamed `echo hi` → first stdout",
                Stat::durations(&total),
            )
            .baseline(Stat::durations(&base))
            .target(Target::AtMost(15.0)),
        );
        report.rows.push(Row::new(
            "  of which PUT get-or-create (create + start)",
            Stat::durations(&put),
        ));
        report.rows.push(Row::new(
            "  of which exec → first stdout",
            Stat::durations(&exec),
        ));
        Ok(())
    }

    /// Metric 2: POST sleep, then streamed `echo hi` (wakes it) → first stdout event.
    async fn wake(&self, report: &mut Report) -> Result<()> {
        let names: Vec<String> = (0..self.sizes.starts)
            .map(|i| format!("wake-{i}"))
            .collect();
        self.create_all(&names).await?;
        let (mut wake, mut sleep, mut base) = (vec![], vec![], vec![]);
        for name in &names {
            base.push(host::unshare_first_byte()?);
            let t = Instant::now();
            let info = self.c().sleep_sandbox(name).await?;
            sleep.push(t.elapsed());
            if info.state != SandboxState::Sleeping {
                bail!("{name} is {:?} after sleep", info.state);
            }
            // A sandbox wakes long after it slept; let the kernel finish tearing it down.
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.push(echo_first_output(self.c(), name).await?);
        }
        for (r, _) in self.delete_all(&names).await {
            r?;
        }
        report.rows.push(
            Row::new(
                "wake: streamed `echo hi` to a sleeping sandbox → first stdout",
                Stat::durations(&wake),
            )
            .baseline(Stat::durations(&base))
            .target(Target::AtMost(15.0)),
        );
        report.rows.push(Row::new(
            "  (POST sleep, not in the target)",
            Stat::durations(&sleep),
        ));
        Ok(())
    }

    /// Metric 3: `exec true` (JSON) in a running sandbox, fresh and kept-alive connections.
    async fn exec(&self, report: &mut Report) -> Result<()> {
        let name = "exec-rt";
        let c = self.c();
        c.put_sandbox(name, &keep_alive()).await?;
        let mut conn = c.connection().await?;
        let path = format!("/v1/sandboxes/{name}/exec");
        let exists = format!("/v1/sandboxes/{name}/files/exists?path=/");
        let req = argv(&["true"]);
        let check = |r: ExecResult| {
            if r.exit_code != Some(0) {
                bail!("exec true exited with {:?}/{:?}", r.exit_code, r.signal);
            }
            Ok(())
        };
        for _ in 0..20 {
            check(c.exec(name, &req).await?)?;
            check(conn.json(Method::POST, &path, Some(&req)).await?)?;
            host::fork_exec_true()?;
        }
        let (mut fresh, mut kept, mut health, mut files, mut base) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..self.sizes.execs {
            let t = Instant::now();
            check(c.exec(name, &req).await?)?;
            fresh.push(t.elapsed());

            let t = Instant::now();
            check(conn.json(Method::POST, &path, Some(&req)).await?)?;
            kept.push(t.elapsed());

            let t = Instant::now();
            let _: serde_json::Value = conn.json(Method::GET, "/v1/health", None::<&()>).await?;
            health.push(t.elapsed());

            let t = Instant::now();
            let _: serde_json::Value = conn.json(Method::GET, &exists, None::<&()>).await?;
            files.push(t.elapsed());

            base.push(host::fork_exec_true()?);
        }
        c.delete_sandbox(name).await?;
        let base = Stat::durations(&base);
        report.rows.push(
            Row::new(
                "exec `true` (JSON), fresh connection per request (as the CLI)",
                Stat::durations(&fresh),
            )
            .baseline(base)
            .target(Target::AtMost(2.0)),
        );
        report.rows.push(
            Row::new(
                "exec `true` (JSON), kept-alive connection",
                Stat::durations(&kept),
            )
            .baseline(base)
            .target(Target::AtMost(2.0)),
        );
        report.rows.push(Row::new(
            "  GET /v1/health, kept-alive (daemon only)",
            Stat::durations(&health),
        ));
        report.rows.push(Row::new(
            "  GET files/exists, kept-alive (daemon → agent, no process)",
            Stat::durations(&files),
        ));
        Ok(())
    }

    /// Metric 4: (MemAvailable before − after) / N for N idle sandboxes vs N idle `unshare`d
    /// `sleep`s, plus cgroup memory, PSS and kernel memory per sandbox. `MemAvailable` moves
    /// with everything else the machine does, so baseline and bothy alternate for a few rounds
    /// and the medians are reported.
    async fn memory(&self, report: &mut Report) -> Result<()> {
        let n = self.sizes.idle;
        // Signed: on a busy machine MemAvailable can grow meanwhile, and that shows as noise.
        let mib = |b: f64| b / n as f64 / (1024.0 * 1024.0);
        let drop_of = |before: u64, after: u64| mib(before as f64 - after as f64);
        let (mut base, mut bothy) = (MemRounds::default(), MemRounds::default());
        for round in 0..self.sizes.mem_rounds {
            // Baseline, in a cgroup of our own.
            let mut cg = host::BenchCgroup::create("idle")?;
            let before = host::mem_available_settled().await?;
            let kbefore = host::kernel_memory()?;
            for _ in 0..n {
                cg.spawn_idle_unshare()?;
            }
            tokio::time::sleep(self.sizes.settle).await;
            let after = host::mem_available_settled().await?;
            let kafter = host::kernel_memory()?;
            let pids = cg.pids();
            if pids.len() < 2 * n {
                bail!(
                    "expected {} baseline processes, found {}",
                    2 * n,
                    pids.len()
                );
            }
            base.avail.push(drop_of(before, after));
            base.kernel.push(drop_of(kafter, kbefore));
            base.cgroup.push(mib(cg.memory()? as f64));
            base.pss.push(mib(host::pss(&pids) as f64));
            drop(cg);
            tokio::time::sleep(Duration::from_secs(1)).await;

            let names: Vec<String> = (0..n).map(|i| format!("idle-{round}-{i}")).collect();
            let before = host::mem_available_settled().await?;
            let kbefore = host::kernel_memory()?;
            self.create_all(&names).await?;
            tokio::time::sleep(self.sizes.settle).await;
            let after = host::mem_available_settled().await?;
            let kafter = host::kernel_memory()?;
            let parent = &self.d.cgroup_parent;
            bothy.avail.push(drop_of(before, after));
            bothy.kernel.push(drop_of(kafter, kbefore));
            bothy.cgroup.push(mib(host::cgroup_memory(parent)? as f64));
            bothy
                .pss
                .push(mib(host::pss(&host::cgroup_pids(parent)) as f64));
            for (r, _) in self.delete_all(&names).await {
                r?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let st = |v: &[f64]| Stat::of(v, Unit::MiB);
        report.rows.push(
            Row::new(
                format!("host memory per idle sandbox, (MemAvailable before − after) / {n}"),
                st(&bothy.avail),
            )
            .baseline(st(&base.avail))
            .target(Target::AtMost(3.0)),
        );
        for (label, b, s) in [
            (
                "  cgroup memory usage per sandbox",
                &base.cgroup,
                &bothy.cgroup,
            ),
            (
                "  PSS of the sandbox's processes per sandbox",
                &base.pss,
                &bothy.pss,
            ),
            (
                "  kernel memory (SUnreclaim + KernelStack + PageTables) per sandbox",
                &base.kernel,
                &bothy.kernel,
            ),
        ] {
            report.rows.push(Row::new(label, st(s)).baseline(st(b)));
        }
        Ok(())
    }

    /// Metric 5: create up to `max` sandboxes in parallel, check they run and answer, destroy.
    async fn scale(&self, report: &mut Report) -> Result<()> {
        let max = self.sizes.max;
        let c = self.c();
        let names: Vec<String> = (0..max).map(|i| format!("s-{i}")).collect();
        let before = host::mem_available_settled().await?;
        let kbefore = host::kernel_memory()?;
        let t0 = Instant::now();
        let mut created = Vec::new();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        let mut create_times = Vec::new();
        // Batches of `parallel`; stop after the first batch with a failure.
        for batch in names.chunks(self.sizes.parallel * 4) {
            let results = parallel(batch, self.sizes.parallel, |n| async move {
                c.put_sandbox(&n, &keep_alive())
                    .await
                    .map(drop)
                    .map_err(Into::into)
            })
            .await;
            let mut failed = false;
            for (name, (r, t)) in batch.iter().zip(results) {
                match r {
                    Ok(()) => {
                        created.push(name.clone());
                        create_times.push(t);
                    }
                    Err(e) => {
                        failed = true;
                        *errors.entry(format!("{e:#}")).or_default() += 1;
                    }
                }
            }
            if failed {
                break;
            }
        }
        let create_total = t0.elapsed();
        eprintln!(
            "   created {} in {:.1} s",
            created.len(),
            create_total.as_secs_f64()
        );

        let list = c.list_sandboxes().await?;
        let running = list
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Running)
            .count();
        let mut sampled = 0;
        let mut sample_ok = 0;
        for name in created.iter().step_by(self.sizes.exec_every) {
            sampled += 1;
            match c.exec(name, &argv(&["echo", "ok"])).await {
                Ok(r) if r.exit_code == Some(0) && r.stdout == "ok\n" => sample_ok += 1,
                Ok(r) => *errors.entry(format!("exec in {name}: {r:?}")).or_default() += 1,
                Err(e) => *errors.entry(format!("exec in {name}: {e:#}")).or_default() += 1,
            }
        }
        let daemon = host::daemon_pid(self.d.data_dir());
        let (fds, threads) = daemon
            .map(|p| (host::fd_count(p), host::thread_count(p)))
            .unwrap_or_default();
        tokio::time::sleep(self.sizes.settle.min(Duration::from_secs(2))).await;
        let after = host::mem_available_settled().await?;
        let kernel = host::kernel_memory()? as f64 - kbefore as f64;
        let cg_mem = host::cgroup_memory(&self.d.cgroup_parent).unwrap_or(0);

        let t1 = Instant::now();
        let deleted = self.delete_all(&created).await;
        let delete_total = t1.elapsed();
        for (r, _) in &deleted {
            if let Err(e) = r {
                *errors.entry(format!("delete: {e:#}")).or_default() += 1;
            }
        }
        let nc = created.len().max(1) as f64;
        report.rows.push(
            Row::new(
                format!(
                    "sandboxes running at once (asked {max}, {} in parallel)",
                    self.sizes.parallel
                ),
                Stat::value(running as f64, Unit::Count),
            )
            .target(Target::AtLeast(max as f64)),
        );
        report.rows.push(Row::new(
            format!("  time to create all {}", created.len()),
            Stat::value(create_total.as_secs_f64(), Unit::Seconds),
        ));
        report.rows.push(Row::new(
            "  PUT latency during the parallel create",
            Stat::durations(&create_times),
        ));
        report.rows.push(Row::new(
            format!(
                "  exec `echo ok` in every {}th: ok of {sampled}",
                self.sizes.exec_every
            ),
            Stat::value(sample_ok as f64, Unit::Count),
        ));
        report.rows.push(Row::new(
            format!("  host memory per sandbox at {}", created.len()),
            Stat::value(
                (before as f64 - after as f64) / nc / (1024.0 * 1024.0),
                Unit::MiB,
            ),
        ));
        report.rows.push(Row::new(
            format!("  cgroup memory per sandbox at {}", created.len()),
            Stat::value(cg_mem as f64 / nc / (1024.0 * 1024.0), Unit::MiB),
        ));
        report.rows.push(Row::new(
            format!("  kernel memory per sandbox at {}", created.len()),
            Stat::value(kernel / nc / (1024.0 * 1024.0), Unit::MiB),
        ));
        report.rows.push(Row::new(
            format!("  daemon open fds at {}", created.len()),
            Stat::value(fds as f64, Unit::Count),
        ));
        report.rows.push(Row::new(
            format!("  daemon threads at {}", created.len()),
            Stat::value(threads as f64, Unit::Count),
        ));
        report.rows.push(Row::new(
            format!("  time to destroy all {}", created.len()),
            Stat::value(delete_total.as_secs_f64(), Unit::Seconds),
        ));
        if !errors.is_empty() {
            daemon_log_problems(self.d, report);
        }
        for (e, count) in errors {
            report.notes.push(format!("scale: {count}× {e}"));
        }
        Ok(())
    }
}
