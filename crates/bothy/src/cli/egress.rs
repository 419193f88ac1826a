//! `bothy secret set|ls|rm` and `bothy egress-log`.

use std::io::Read;

use anyhow::Context;
use bothy_client::Client;

use super::output::{bytes, print_json, print_table, JsonFlag};

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret (the value is read from stdin unless --value is given; one trailing
    /// newline is dropped). It is never shown again: only the egress proxy uses it.
    Set {
        name: String,
        /// The value (visible in the process list and shell history: prefer stdin).
        #[arg(long)]
        value: Option<String>,
    },
    /// List secrets (names and times, never values).
    Ls(JsonFlag),
    /// Delete a secret.
    Rm { name: String },
}

pub async fn secret(c: &Client, cmd: SecretCommand) -> anyhow::Result<i32> {
    match cmd {
        SecretCommand::Set { name, value } => {
            let value = match value {
                Some(v) => v,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("read the secret from stdin")?;
                    if let Some(t) = s.strip_suffix('\n') {
                        s = t.strip_suffix('\r').unwrap_or(t).to_string();
                    }
                    s
                }
            };
            c.set_secret(&name, &value).await?;
            Ok(0)
        }
        SecretCommand::Ls(out) => {
            let list = c.list_secrets().await?;
            if out.json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .secrets
                .iter()
                .map(|s| vec![s.name.clone(), s.created_at.clone(), s.updated_at.clone()])
                .collect();
            print_table(&["NAME", "CREATED", "UPDATED"], &rows);
            Ok(0)
        }
        SecretCommand::Rm { name } => {
            c.delete_secret(&name).await?;
            Ok(0)
        }
    }
}

#[derive(clap::Args)]
pub struct LogArgs {
    name: String,
    /// Only the last N entries.
    #[arg(long, short = 'n')]
    limit: Option<usize>,
    #[command(flatten)]
    out: JsonFlag,
}

pub async fn log(c: &Client, a: LogArgs) -> anyhow::Result<i32> {
    let log = c.egress_log(&a.name, a.limit).await?;
    if a.out.json {
        print_json(&log);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = log
        .entries
        .iter()
        .map(|e| {
            let decision = serde_json::to_value(e.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            vec![
                e.time.clone(),
                decision,
                e.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                if e.method.is_empty() {
                    "-".into()
                } else {
                    e.method.clone()
                },
                format!("{}://{}:{}{}", e.scheme, e.host, e.port, e.path),
                bytes(e.bytes_up),
                bytes(e.bytes_down),
                e.rule.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME", "DECISION", "STATUS", "METHOD", "URL", "UP", "DOWN", "RULE",
        ],
        &rows,
    );
    Ok(0)
}
