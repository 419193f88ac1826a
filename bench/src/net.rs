//! Issue 9: what `proxy` networking adds to a sandbox's start and wake, against `none` mode
//! measured in the same run (interleaved, one sandbox of each per round).
//!
//! Start: PUT get-or-create of a new name (in proxy mode this includes the veth pair, both
//! ends' addresses and route, and writing `/etc/resolv.conf`) + streamed `echo hi` → first
//! stdout. Wake: POST sleep, 100 ms pause, then the same exec (the link is set up again).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bothy_api::network::{NetworkConfig, NetworkMode};
use bothy_api::sandbox::CreateSandbox;
use bothy_testkit::{Options, TestDaemon};

use crate::foundation::echo_first_output;
use crate::report::{Row, Stat};
use crate::Report;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Sandboxes of each mode (default 30, --quick 5).
    #[arg(long)]
    pub rounds: Option<usize>,
}

fn spec(mode: NetworkMode) -> CreateSandbox {
    CreateSandbox {
        keep_alive: Some(true),
        network: Some(NetworkConfig {
            mode,
            ..Default::default()
        }),
        ..CreateSandbox::default()
    }
}

pub async fn run(
    bin: &std::path::Path,
    quick: bool,
    args: Args,
    report: &mut Report,
) -> Result<()> {
    let n = args.rounds.unwrap_or(if quick { 5 } else { 30 });
    let d = TestDaemon::start_with(bin, Options::default())
        .await
        .context("the benchmark needs root")?;
    let c = &d.client;
    // Warm up both paths once.
    for (name, m) in [
        ("warm-none", NetworkMode::None),
        ("warm-proxy", NetworkMode::Proxy),
    ] {
        c.put_sandbox(name, &spec(m)).await?;
        echo_first_output(c, name).await?;
        c.delete_sandbox(name).await?;
    }
    let mut start: [Vec<Duration>; 2] = [vec![], vec![]];
    let mut wake: [Vec<Duration>; 2] = [vec![], vec![]];
    let modes = [NetworkMode::None, NetworkMode::Proxy];
    let mut names = vec![];
    for i in 0..n {
        for (k, m) in modes.iter().enumerate() {
            let name = format!("{}-{i}", m.as_str());
            let t0 = Instant::now();
            let info = c.put_sandbox(&name, &spec(*m)).await?;
            echo_first_output(c, &name).await?;
            start[k].push(t0.elapsed());
            let has_link = info.network.and_then(|n| n.address).is_some();
            if has_link != (*m == NetworkMode::Proxy) {
                anyhow::bail!("{name}: mode {m:?} but link present = {has_link}");
            }
            names.push(name);
        }
    }
    for i in 0..n {
        for (k, m) in modes.iter().enumerate() {
            let name = format!("{}-{i}", m.as_str());
            c.sleep_sandbox(&name).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake[k].push(echo_first_output(c, &name).await?);
        }
    }
    for name in &names {
        c.delete_sandbox(name).await?;
    }
    report.rows.push(
        Row::new(
            "new sandbox, proxy mode: PUT + `echo hi` → first stdout (baseline: mode none)",
            Stat::durations(&start[1]),
        )
        .baseline(Stat::durations(&start[0])),
    );
    report.rows.push(
        Row::new(
            "wake, proxy mode: `echo hi` to a sleeping sandbox → first stdout (baseline: mode none)",
            Stat::durations(&wake[1]),
        )
        .baseline(Stat::durations(&wake[0])),
    );
    Ok(())
}
