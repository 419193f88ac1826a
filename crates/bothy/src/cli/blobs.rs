//! `bothy export`, `bothy import`, `bothy evict`: transfers to and from blob stores, with a
//! progress bar on a terminal and plain progress lines otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use bothy_api::blob::{
    EvictRequest, EvictResult, ExportRequest, ExportResult, ImportRequest, ImportResult,
    TransferProgress,
};
use bothy_client::Client;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Snapshot id or name.
    pub snapshot: String,
    /// Blob store (one configured on the daemon with --blob-store; default: its first).
    #[arg(long)]
    pub store: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Manifest digest (sha256:…) printed by `bothy export`.
    pub manifest: String,
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct EvictArgs {
    /// Sandbox name.
    pub name: String,
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Shows progress: a redrawn bar on a terminal (stderr), one line per phase change and per
/// ~10% otherwise.
struct Progress {
    tty: bool,
    started: Instant,
    last: Option<(String, String, u64)>,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, p: &TransferProgress) {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let width = 30usize;
            let filled = (pct as usize * width / 100).min(width);
            let _ = write!(
                err,
                "\r\x1b[K{:<8} {:<22} [{}{}] {:>3}% {} / {}{}",
                p.phase,
                short(&p.item),
                "=".repeat(filled),
                " ".repeat(width - filled),
                pct,
                mib(p.done),
                mib(p.total),
                if p.skipped > 0 {
                    format!(" ({} already there)", mib(p.skipped))
                } else {
                    String::new()
                }
            );
            let _ = err.flush();
        } else {
            let step = pct / 10;
            let key = (p.phase.clone(), p.item.clone(), step);
            if self.last.as_ref() != Some(&key) {
                let _ = writeln!(
                    err,
                    "{} {} {}% {} / {} (skipped {})",
                    p.phase,
                    p.item,
                    pct,
                    mib(p.done),
                    mib(p.total),
                    mib(p.skipped)
                );
                self.last = Some(key);
            }
        }
    }

    fn finish(&self) {
        if self.tty && self.last.is_none() {
            eprint!("\r\x1b[K");
        } else if self.tty {
            eprintln!();
        }
        let _ = self.started;
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(22)]
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub async fn export(c: &Client, a: ExportArgs) -> anyhow::Result<i32> {
    let mut p = Progress::new();
    let body = ExportRequest { store: a.store };
    let path = format!("/v1/snapshots/{}/export", a.snapshot);
    let r: ExportResult = c.transfer(&path, &body, |e| p.update(e)).await?;
    p.finish();
    if a.json {
        super::output::print_json(&r);
    } else {
        eprintln!(
            "exported {} to {}: {} uploaded, {} already there",
            r.snapshot,
            r.store,
            mib(r.uploaded_bytes),
            mib(r.skipped_bytes)
        );
        println!("{}", r.manifest);
    }
    Ok(0)
}

pub async fn import(c: &Client, a: ImportArgs) -> anyhow::Result<i32> {
    let mut p = Progress::new();
    let body = ImportRequest {
        store: a.store,
        manifest: a.manifest,
    };
    let r: ImportResult = c
        .transfer("/v1/snapshots/import", &body, |e| p.update(e))
        .await?;
    p.finish();
    if a.json {
        super::output::print_json(&r);
    } else {
        if r.already_present {
            eprintln!("already here");
        } else {
            eprintln!("imported: {} downloaded", mib(r.downloaded_bytes));
        }
        println!("{}", r.snapshot.id);
    }
    Ok(0)
}

pub async fn evict(c: &Client, a: EvictArgs) -> anyhow::Result<i32> {
    let mut p = Progress::new();
    let body = EvictRequest { store: a.store };
    let path = format!("/v1/sandboxes/{}/evict", a.name);
    let r: EvictResult = c.transfer(&path, &body, |e| p.update(e)).await?;
    p.finish();
    if a.json {
        super::output::print_json(&r);
    } else {
        println!(
            "evicted {} to {} ({}, {} uploaded); it comes back on its next request",
            r.name,
            r.store,
            mib(r.size_bytes),
            mib(r.uploaded_bytes)
        );
    }
    Ok(0)
}
