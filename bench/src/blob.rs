//! Issue 8: snapshot export and import through a real daemon to a real S3-compatible server
//! (moto, on loopback), beside the same layer directory packed with `tar | zstd -3` to local
//! disk and unpacked with `zstd -d | tar -x`, measured in the same run.
//!
//! Each round exports to a fresh key prefix (so everything is uploaded), exports again (nothing
//! is), and imports into a second daemon that has none of it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bothy_api::blob::{ExportRequest, ImportRequest};
use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_client::http::Method;
use bothy_testkit::{Options, S3Server, TestDaemon};

use crate::report::{Row, Stat, Unit};
use crate::Report;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// MiB of sandbox state: three quarters random bytes, one quarter base64 text files.
    #[arg(long)]
    pub mib: Option<u64>,
    /// Rounds (medians are reported).
    #[arg(long)]
    pub rounds: Option<usize>,
}

fn secs_to_mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1048576.0 / d.as_secs_f64()
}

fn sh(script: &str) -> Result<Duration> {
    let t = Instant::now();
    let st = Command::new("sh").arg("-c").arg(script).status()?;
    if !st.success() {
        bail!("baseline failed: {script}");
    }
    Ok(t.elapsed())
}

fn du_bytes(p: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(p)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub async fn run(bin: &Path, quick: bool, a: Args, rep: &mut Report) -> Result<()> {
    let mib = a.mib.unwrap_or(if quick { 16 } else { 128 });
    let rounds = a.rounds.unwrap_or(if quick { 1 } else { 3 });
    let Some(s3) = S3Server::start() else {
        bail!("moto_server is not installed (see .ci/install-deps.d/s3.sh)");
    };
    s3.create_bucket("bench");
    let stores: Vec<String> = (0..rounds)
        .map(|i| format!("s3://bench/r{i}?endpoint={}", s3.endpoint))
        .collect();
    let opts = Options {
        extra_args: stores
            .iter()
            .flat_map(|s| ["--blob-store".to_string(), s.clone()])
            .collect(),
        env: s3.env(),
        ..Default::default()
    };
    let src = TestDaemon::start_with(bin, opts.clone())
        .await
        .context("start daemon (needs root)")?;
    let dst = TestDaemon::start_with(bin, opts)
        .await
        .context("start daemon (needs root)")?;

    src.client
        .put_sandbox("state", &CreateSandbox::default())
        .await?;
    let random = mib * 3 / 4;
    let text_files = 1000;
    let text_kib = (mib - random) * 1024 * 3 / 4 / text_files;
    let r = src
        .client
        .exec(
            "state",
            &ExecRequest {
                shell: Some(format!(
                    "set -e; head -c {random}M /dev/urandom > rand.bin; mkdir -p src; \
                     for i in $(seq 1 {text_files}); do head -c {text_kib}K /dev/urandom | base64 > src/f$i.txt; done"
                )),
                timeout_ms: Some(600_000),
                ..Default::default()
            },
        )
        .await?;
    if r.exit_code != Some(0) {
        bail!("building the state failed: {}", r.stderr);
    }
    let snap: serde_json::Value = src
        .client
        .json(
            Method::POST,
            "/v1/sandboxes/state/snapshots",
            Some(&serde_json::json!({})),
        )
        .await?;
    let id = snap["id"].as_str().context("snapshot id")?.to_string();
    let layer_dir = src.data_dir().join("layers").join(&id);
    let state_bytes = du_bytes(&layer_dir);

    let work = tempfile::tempdir()?;
    let (mut exp, mut again, mut imp, mut base_pack, mut base_unpack) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut archive_bytes = 0;
    for (i, store) in stores.iter().enumerate() {
        let t = Instant::now();
        let e = src
            .client
            .export_snapshot(
                &id,
                &ExportRequest {
                    store: Some(store.clone()),
                },
            )
            .await?;
        exp.push(secs_to_mibps(state_bytes, t.elapsed()));
        archive_bytes = e.layers.iter().map(|l| l.size_bytes).sum();
        let t = Instant::now();
        let e2 = src
            .client
            .export_snapshot(
                &id,
                &ExportRequest {
                    store: Some(store.clone()),
                },
            )
            .await?;
        again.push(t.elapsed());
        if e2.uploaded_bytes != 0 {
            rep.notes.push(format!(
                "round {i}: second export uploaded {} bytes",
                e2.uploaded_bytes
            ));
        }
        // The importer must have none of it: drop what a previous round imported.
        if i > 0 {
            dst.client
                .json_bytes(Method::DELETE, &format!("/v1/snapshots/{id}"), None::<&()>)
                .await?;
            let gone = bothy_testkit::wait_until(Duration::from_secs(30), || async {
                !dst.data_dir().join("layers").join(&id).exists()
            })
            .await;
            if !gone {
                rep.notes
                    .push(format!("round {i}: the imported layer was not collected"));
            }
        }
        let t = Instant::now();
        let r = dst
            .client
            .import_snapshot(&ImportRequest {
                store: Some(store.clone()),
                manifest: e.manifest.clone(),
            })
            .await?;
        imp.push(secs_to_mibps(state_bytes, t.elapsed()));
        if r.already_present {
            rep.notes.push(format!(
                "round {i}: import found the snapshot already present"
            ));
        }

        let tarball = work.path().join(format!("r{i}.tar.zst"));
        let d = sh(&format!(
            "tar --xattrs --xattrs-include='*' -C {} -cf - . | zstd -3 -T1 -q -o {}",
            layer_dir.display(),
            tarball.display()
        ))?;
        base_pack.push(secs_to_mibps(state_bytes, d));
        let out = work.path().join(format!("r{i}"));
        std::fs::create_dir(&out)?;
        let d = sh(&format!(
            "zstd -dc -q {} | tar --xattrs --xattrs-include='*' -C {} -xf -",
            tarball.display(),
            out.display()
        ))?;
        base_unpack.push(secs_to_mibps(state_bytes, d));
        std::fs::remove_dir_all(&out)?;
        std::fs::remove_file(&tarball)?;
    }
    rep.rows.push(
        Row::new(
            format!(
                "export to S3 (moto): snapshot of {:.0} MiB → MiB/s of state",
                state_bytes as f64 / 1048576.0
            ),
            Stat::of(&exp, Unit::MiBps),
        )
        .baseline(Stat::of(&base_pack, Unit::MiBps)),
    );
    rep.rows.push(
        Row::new(
            "import from S3 into another daemon → MiB/s of state",
            Stat::of(&imp, Unit::MiBps),
        )
        .baseline(Stat::of(&base_unpack, Unit::MiBps)),
    );
    rep.rows.push(Row::new(
        "export again (everything in the store already)",
        Stat::durations(&again),
    ));
    rep.rows.push(Row::new(
        "archive size (zstd -3, chunked)",
        Stat::value(archive_bytes as f64 / 1048576.0, Unit::MiB),
    ));
    rep.notes.push(
        "baselines: `tar --xattrs | zstd -3 -T1` of the same layer directory to local disk, and `zstd -dc | tar -x` back".into(),
    );
    Ok(())
}
