//! The snapshots suite (issue 8): fork time against the size of the state (it should be flat),
//! and snapshot time of a running sandbox against the bytes it changed.
//!
//! For each state size (1 MiB, 100 MiB, 1 GiB by default) a sandbox writes one big file plus
//! many 4 KiB files into its own layer, and is snapshotted while it runs (timed: a freeze and a
//! copy of the changed files; next to it, a plain `cp -a` of the same upper on the host as the
//! baseline). Then forks of that snapshot are timed: `PUT /v1/sandboxes/{new}` with
//! `from_snapshot` (create + start, the fork is running when the reply arrives), next to a
//! plain new empty sandbox measured in the same run. A batch fork (`POST …/fork`, forks created
//! asleep) is timed per sandbox. Every sandbox, snapshot and copy is deleted after each size.

use std::time::Instant;

use anyhow::{Context, Result};
use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_api::snapshot::ForkRequest;
use bothy_client::Client;
use bothy_testkit::{Options, TestDaemon};

use crate::report::{Row, Stat, Target, Unit};
use crate::Report;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// State sizes in MiB (default 1,100,1024).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<u64>,
    /// Forks timed per size (default 20).
    #[arg(long)]
    pub forks: Option<usize>,
    /// Running snapshots timed per size (default 3).
    #[arg(long)]
    pub snapshots: Option<usize>,
}

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        timeout_ms: Some(600_000),
        ..Default::default()
    }
}

async fn run_sh(c: &Client, name: &str, cmd: &str) -> Result<String> {
    let r = c.exec(name, &sh(cmd)).await?;
    if r.exit_code != Some(0) {
        anyhow::bail!("{name}: {cmd}: {r:?}");
    }
    Ok(String::from_utf8_lossy(&r.stdout_bytes()).into_owned())
}

fn keep_alive() -> CreateSandbox {
    CreateSandbox {
        keep_alive: Some(true),
        ..CreateSandbox::default()
    }
}

pub async fn run(
    bin: &std::path::Path,
    quick: bool,
    args: Args,
    report: &mut Report,
) -> Result<()> {
    let sizes = if args.sizes.is_empty() {
        if quick {
            vec![1, 100]
        } else {
            vec![1, 100, 1024]
        }
    } else {
        args.sizes.clone()
    };
    let forks = args.forks.unwrap_or(if quick { 5 } else { 20 }).max(1);
    let snaps = args.snapshots.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let d = TestDaemon::start_with(
        bin,
        Options {
            idle_check_ms: 1000,
            ..Options::default()
        },
    )
    .await
    .context("the benchmark needs root")?;
    let c = &d.client;
    eprintln!("bothy serve: data dir {}", d.data_dir().display());

    // Warm-up (page cache of the binaries, first-use costs in the daemon).
    c.put_sandbox("warm", &keep_alive()).await?;
    c.delete_sandbox("warm").await?;

    for &mib in &sizes {
        eprintln!("== state of {mib} MiB");
        let src = format!("src-{mib}");
        c.put_sandbox(&src, &keep_alive()).await?;
        // Many small files (up to 8 MiB of them), the rest in one big file.
        let small_kib = (mib * 1024 / 2).min(8 * 1024);
        let files = small_kib / 4;
        let big_mib = mib - small_kib / 1024;
        run_sh(
            c,
            &src,
            &format!(
                "mkdir -p /workspace/state/s && cd /workspace/state && \
                 head -c 4096 /dev/urandom > seed && \
                 for i in $(seq 1 {files}); do cp seed s/$i; done && \
                 dd if=/dev/urandom of=big bs=1M count={big_mib} 2>/dev/null && \
                 du -sm /workspace/state | cut -f1"
            ),
        )
        .await?;
        let upper = d
            .data_dir()
            .join("sandboxes")
            .join(&src)
            .join("disk/root/upper");

        // Running snapshots (freeze + copy), next to a plain copy of the same upper.
        let (mut snap_t, mut copy_t, mut frozen) = (vec![], vec![], vec![]);
        let mut keep = None;
        for i in 0..snaps {
            let t = Instant::now();
            let s = c.create_snapshot(&src, None).await?;
            snap_t.push(t.elapsed());
            if let Some(ms) = frozen_ms(&d.log(), &s.id) {
                frozen.push(ms);
            }
            let dst = d.data_dir().join(format!("copy-{mib}-{i}"));
            let t = Instant::now();
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(&upper)
                .arg(&dst)
                .status()?;
            copy_t.push(t.elapsed());
            anyhow::ensure!(st.success(), "cp -a failed");
            std::fs::remove_dir_all(&dst)?;
            if i + 1 < snaps {
                c.delete_snapshot(&s.id).await?;
            } else {
                keep = Some(s);
            }
        }
        let snap = keep.expect("at least one snapshot");
        report.rows.push(
            Row::new(
                format!(
                    "snapshot of a running sandbox, {mib} MiB changed (vs `cp -a` of its layer)"
                ),
                Stat::durations(&snap_t),
            )
            .baseline(Stat::durations(&copy_t)),
        );
        if !frozen.is_empty() {
            report.rows.push(Row::new(
                format!("  of which the sandbox was frozen ({mib} MiB)"),
                Stat::of(&frozen, Unit::Ms),
            ));
        }

        // Forks: PUT from_snapshot, create + start; each next to a plain new empty sandbox
        // (the baseline), alternating so that both see the same load.
        let (mut fork_t, mut plain_t) = (Vec::new(), Vec::new());
        for i in 0..forks {
            let plain = format!("plain-{mib}-{i}");
            let t = Instant::now();
            c.put_sandbox(&plain, &keep_alive()).await?;
            plain_t.push(t.elapsed());
            let name = format!("fork-{mib}-{i}");
            let t = Instant::now();
            c.fork_snapshot(&snap.id, &name).await?;
            fork_t.push(t.elapsed());
            c.delete_sandbox(&plain).await?;
        }
        // Check one fork sees the state.
        let seen = run_sh(
            c,
            &format!("fork-{mib}-0"),
            "du -sm /workspace/state | cut -f1",
        )
        .await?;
        eprintln!("   a fork sees {} MiB", seen.trim());
        for i in 0..forks {
            c.delete_sandbox(&format!("fork-{mib}-{i}")).await?;
        }
        report.rows.push(
            Row::new(
                format!("fork: PUT from_snapshot (create + start), state {mib} MiB (vs new empty sandbox)"),
                Stat::durations(&fork_t),
            )
            .baseline(Stat::durations(&plain_t))
            .target(Target::AtMost(20.0)),
        );

        // Batch fork (asleep), per sandbox.
        let t = Instant::now();
        let r = c
            .fork_many(
                &snap.id,
                &ForkRequest {
                    prefix: Some(format!("batch-{mib}")),
                    count: Some(forks),
                    ..Default::default()
                },
            )
            .await?;
        let per = t.elapsed().as_secs_f64() * 1e3 / forks as f64;
        report.rows.push(Row::new(
            format!("batch fork of {forks} (asleep), per sandbox, state {mib} MiB"),
            Stat::value(per, Unit::Ms),
        ));
        for s in r.sandboxes {
            c.delete_sandbox(s.name.as_str()).await?;
        }
        c.delete_sandbox(&src).await?;
        c.delete_snapshot(&snap.id).await?;
    }
    report.notes.push(format!(
        "fork rows: {forks} forks per size; running snapshots: {snaps} per size (a new copy each time)"
    ));
    Ok(())
}

/// The freeze time the daemon logged for snapshot `id` (`frozen_ms=…`, ANSI colours removed).
fn frozen_ms(log: &str, id: &str) -> Option<f64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(id) && l.contains("frozen_ms"))?;
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            // Skip to the end of the escape sequence (a letter).
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(ch);
        }
    }
    let rest = plain.split("frozen_ms=").nth(1)?;
    let num: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_frozen_ms_with_colours() {
        let log = "x \x1b[3mfrozen_ms\x1b[0m\x1b[2m=\x1b[0m\"12.5\" snap-1\n";
        assert_eq!(super::frozen_ms(log, "snap-1"), Some(12.5));
        assert_eq!(super::frozen_ms("frozen_ms=3 snap-2", "snap-2"), Some(3.0));
        assert_eq!(super::frozen_ms("frozen_ms=3 snap-2", "snap-3"), None);
    }
}
