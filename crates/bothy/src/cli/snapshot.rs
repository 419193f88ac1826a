//! `bothy snapshot NAME [--name N]`, `bothy snapshot ls|rm|info`, `bothy fork`, `bothy restore`.

use bothy_api::snapshot::{ForkRequest, SnapshotInfo};
use bothy_client::Client;

use super::output::{bytes, print_json, print_table, JsonFlag};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    cmd: Option<SnapshotCommand>,
    /// Sandbox to snapshot (running: a brief freeze; sleeping: no copy at all).
    #[arg(required = true)]
    sandbox: Option<String>,
    /// A unique name for the snapshot (usable wherever an id is).
    #[arg(long = "name")]
    snapshot_name: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Subcommand)]
enum SnapshotCommand {
    /// List snapshots (all, or those of one sandbox).
    Ls {
        sandbox: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete snapshots (their layers go once no sandbox uses them).
    Rm {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Show one snapshot.
    Info {
        snapshot: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(clap::Args)]
pub struct ForkArgs {
    /// Snapshot id or name.
    snapshot: String,
    /// New sandbox name (with --count: the prefix of NEW-1 … NEW-K).
    new: String,
    /// Create K forks, asleep until their first request.
    #[arg(long)]
    count: Option<usize>,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Sandbox to restore (keeps its name and settings; its changes since are discarded).
    sandbox: String,
    /// Snapshot id or name.
    snapshot: String,
    #[command(flatten)]
    out: JsonFlag,
}

fn table(list: &[SnapshotInfo]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone().unwrap_or_default(),
                s.sandbox.clone(),
                bytes(s.size_bytes),
                s.layers.len().to_string(),
                s.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAME", "SANDBOX", "SIZE", "LAYERS", "CREATED"],
        &rows,
    );
}

pub async fn snapshot(c: &Client, a: SnapshotArgs) -> anyhow::Result<i32> {
    match a.cmd {
        None => {
            let sandbox = a.sandbox.unwrap_or_default();
            let s = c
                .create_snapshot(&sandbox, a.snapshot_name.as_deref())
                .await?;
            if a.out.json {
                print_json(&s);
            } else {
                println!(
                    "{}{} of {} ({})",
                    s.id,
                    s.name
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    s.sandbox,
                    bytes(s.size_bytes)
                );
            }
        }
        Some(SnapshotCommand::Ls { sandbox, out }) => {
            let list = match sandbox {
                Some(s) => c.sandbox_snapshots(&s).await?,
                None => c.list_snapshots().await?,
            };
            if out.json {
                print_json(&list);
            } else {
                table(&list.snapshots);
            }
        }
        Some(SnapshotCommand::Rm { snapshots }) => {
            for s in snapshots {
                c.delete_snapshot(&s).await?;
                println!("{s} deleted");
            }
        }
        Some(SnapshotCommand::Info { snapshot, out }) => {
            let s = c.get_snapshot(&snapshot).await?;
            if out.json {
                print_json(&s);
            } else {
                table(std::slice::from_ref(&s));
                println!("layers: {}", s.layers.join(" "));
                if let Some(p) = &s.parent {
                    println!("parent: {p}");
                }
            }
        }
    }
    Ok(0)
}

pub async fn fork(c: &Client, a: ForkArgs) -> anyhow::Result<i32> {
    let infos = match a.count {
        Some(k) => {
            c.fork_many(
                &a.snapshot,
                &ForkRequest {
                    prefix: Some(a.new),
                    count: Some(k),
                    ..Default::default()
                },
            )
            .await?
            .sandboxes
        }
        None => vec![c.fork_snapshot(&a.snapshot, &a.new).await?],
    };
    if a.out.json {
        print_json(&infos);
    } else {
        for i in infos {
            println!("{} ({})", i.name, i.state.as_str());
        }
    }
    Ok(0)
}

pub async fn restore(c: &Client, a: RestoreArgs) -> anyhow::Result<i32> {
    let info = c.restore_sandbox(&a.sandbox, &a.snapshot).await?;
    if a.out.json {
        print_json(&info);
    } else {
        println!(
            "{} restored to {} ({})",
            info.name,
            a.snapshot,
            info.state.as_str()
        );
    }
    Ok(0)
}
