//! `bothy backup NAME DIR`, `bothy backup ls|rm`, `bothy restore-backup ID NAME [DIR]`.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use bothy_api::backup::{CreateBackup, Progress, RestoreBackup, Ttl};
use bothy_client::Client;

use super::output::{bytes, print_json, print_table, JsonFlag};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The sandbox.
    name: Option<String>,
    /// The directory to back up (relative paths are under /workspace).
    dir: Option<String>,
    /// Leave out matching paths (repeatable): `node_modules`, `*.log`, `build/out`.
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// Also leave out what the tree's .gitignore files ignore.
    #[arg(long)]
    gitignore: bool,
    /// How long to keep the backup: 90s, 30m, 12h, 7d (default 7d).
    #[arg(long)]
    ttl: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List backups.
    Ls(JsonFlag),
    /// Delete a backup.
    Rm { id: String },
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup id (bk-…).
    id: String,
    /// The sandbox to restore into.
    name: String,
    /// Where to restore (default: the directory that was backed up). Its contents are replaced.
    dir: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    match (a.command, a.name, a.dir) {
        (Some(Command::Ls(out)), _, _) => {
            let list = c.list_backups().await?;
            if out.json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .backups
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.clone(),
                            b.sandbox.clone(),
                            b.path.clone(),
                            bytes(b.size_bytes),
                            b.created_at.clone(),
                            b.expires_at.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["ID", "SANDBOX", "PATH", "SIZE", "CREATED", "EXPIRES"],
                    &rows,
                );
            }
            Ok(0)
        }
        (Some(Command::Rm { id }), _, _) => {
            c.delete_backup(&id).await?;
            eprintln!("deleted {id}");
            Ok(0)
        }
        (None, Some(name), Some(dir)) => {
            let req = CreateBackup {
                path: dir.clone(),
                exclude: a.exclude,
                gitignore: a.gitignore,
                ttl: a.ttl.map(Ttl::Text),
            };
            let what = format!("backing up {name}:{dir}");
            let mut bar = Bar::new(what);
            let b = c.create_backup_progress(&name, &req, |p| bar.show(p)).await;
            bar.finish(b.is_ok());
            let b = b?;
            if a.out.json {
                print_json(&b);
            } else {
                println!(
                    "{}  {}:{}  {}  expires {}",
                    b.id,
                    b.sandbox,
                    b.path,
                    bytes(b.size_bytes),
                    b.expires_at
                );
            }
            Ok(0)
        }
        (None, _, _) => anyhow::bail!("give NAME DIR to back up, or `ls` / `rm ID`"),
    }
}

pub async fn restore(c: &Client, a: RestoreArgs) -> anyhow::Result<i32> {
    let req = RestoreBackup {
        sandbox: a.name.clone(),
        path: a.dir,
    };
    let what = format!("restoring {} into {}", a.id, a.name);
    let mut bar = Bar::new(what);
    let r = c
        .restore_backup_progress(&a.id, &req, |p| bar.show(p))
        .await;
    bar.finish(r.is_ok());
    let r = r?;
    if a.out.json {
        print_json(&r);
    } else {
        println!(
            "restored {} into {}:{} ({} entries, {})",
            r.backup,
            r.sandbox,
            r.path,
            r.entries,
            bytes(r.bytes)
        );
    }
    Ok(0)
}

/// Progress on stderr: one line redrawn in place on a terminal; otherwise a line per phase and
/// one at the end.
struct Bar {
    what: String,
    tty: bool,
    start: Instant,
    phase: String,
}

impl Bar {
    fn new(what: String) -> Self {
        Self {
            what,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            phase: String::new(),
        }
    }

    fn show(&mut self, p: &Progress) {
        let secs = self.start.elapsed().as_secs_f64();
        let done = match p.total {
            Some(t) if t > 0 => format!(
                "{} / {} ({:.0}%)",
                bytes(p.bytes),
                bytes(t),
                p.bytes as f64 * 100.0 / t as f64
            ),
            _ => bytes(p.bytes),
        };
        if self.tty {
            eprint!("\r\x1b[K{} … {}: {done}, {secs:.1} s", self.what, p.phase);
            let _ = std::io::stderr().flush();
        } else if p.phase != self.phase {
            eprintln!("{} … {}", self.what, p.phase);
        }
        self.phase = p.phase.clone();
    }

    fn finish(&self, ok: bool) {
        let secs = self.start.elapsed().as_secs_f64();
        let how = if ok { "done" } else { "failed" };
        if self.tty {
            eprintln!("\r\x1b[K{} … {how} in {secs:.1} s", self.what);
        } else {
            eprintln!("{}: {how} in {secs:.1} s", self.what);
        }
    }
}
