//! `bothy-bench`: benchmarks of a real `bothy serve` (started fresh in a temp data dir with its
//! own cgroup parent) against bare baselines measured in the same run. Run it through
//! `bench/run`, which builds release binaries first.
//!
//! One module per suite (`foundation.rs`, …); each adds rows to a [`Report`], printed as one
//! markdown table. To add a suite: a module with `Args` (clap) and `run`, and one variant in
//! [`Suite`].

mod blob;
mod foundation;
mod host;
mod net;
mod report;
mod snapshots;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of bothy against bare-namespace baselines (needs root)")]
struct Cli {
    /// Short smoke run: few samples, small counts.
    #[arg(long, global = true)]
    quick: bool,
    /// The `bothy` binary to benchmark (default: next to this one).
    #[arg(long, global = true, env = "BOTHY_BIN")]
    bothy: Option<PathBuf>,
    #[command(subcommand)]
    suite: Option<Suite>,
}

#[derive(Subcommand, Debug)]
enum Suite {
    /// Issue 3: start, wake, exec round trip, memory, scale.
    Foundation(foundation::Args),
    /// Issue 9: start and wake in `proxy` network mode against mode `none`.
    Net(net::Args),
    /// Issue 8: snapshot export/import throughput to an S3-compatible server.
    Blob(blob::Args),
    /// Issue 8: fork time against state size, snapshot time against changed bytes.
    Snapshots(snapshots::Args),
}

/// Results of a run: table rows and free-form notes (errors met, limits hit).
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<report::Row>,
    pub notes: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bin = match cli.bothy {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("bothy"),
    };
    if !bin.exists() {
        anyhow::bail!("{} not found (build it, or pass --bothy)", bin.display());
    }
    let suite = cli
        .suite
        .unwrap_or(Suite::Foundation(foundation::Args::default()));
    println!("{}", machine());
    println!(
        "bothy-bench {}; load average at start {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        host::loadavg()
    );
    let mut rep = Report::default();
    let run = async {
        match suite {
            Suite::Foundation(a) => foundation::run(&bin, cli.quick, a, &mut rep).await,
            Suite::Net(a) => net::run(&bin, cli.quick, a, &mut rep).await,
            Suite::Blob(a) => blob::run(&bin, cli.quick, a, &mut rep).await,
            Suite::Snapshots(a) => snapshots::run(&bin, cli.quick, a, &mut rep).await,
        }
    };
    // On Ctrl-C the suite's future is dropped, which kills its daemon and sandboxes.
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    println!("load average at end {}", host::loadavg());
    println!();
    print!("{}", report::table(&rep.rows));
    for n in &rep.notes {
        println!("- {n}");
    }
    result
}

/// One line describing the machine: cores, memory, kernel, CPU model.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l.trim_start_matches("MemTotal:").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "machine: {cpus} cpus ({model}), MemTotal {mem}, kernel {}",
        kernel.trim()
    )
}
