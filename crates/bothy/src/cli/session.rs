//! `bothy session create|ls|rm`: named execution contexts (`bothy exec --session ID`).

use bothy_api::session::SessionCreate;
use bothy_client::Client;

use super::output::{print_json, print_table, JsonFlag};
use super::sandbox::parse_env;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a session; prints its id.
    Create {
        /// Sandbox name.
        name: String,
        /// Session id (a DNS label); generated if absent.
        #[arg(long)]
        id: Option<String>,
        /// Starting directory (default /workspace).
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        /// Environment variable (repeatable): --env KEY=VALUE.
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List sessions.
    Ls {
        /// Sandbox name.
        name: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete a session.
    Rm {
        /// Sandbox name.
        name: String,
        /// Session id.
        id: String,
    },
}

pub async fn run(c: &Client, cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Create {
            name,
            id,
            cwd,
            env,
            out,
        } => {
            let s = c
                .create_session(
                    &name,
                    &SessionCreate {
                        id,
                        cwd,
                        env: parse_env(&env)?,
                    },
                )
                .await?;
            if out.json {
                print_json(&s);
            } else {
                println!("{}", s.id);
            }
        }
        Command::Ls { name, out } => {
            let list = c.list_sessions(&name).await?;
            if out.json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.cwd.clone(),
                            s.last_exit_code.to_string(),
                            if s.busy { "busy" } else { "idle" }.to_string(),
                            s.created_at.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "CWD", "LAST EXIT", "STATE", "CREATED"], &rows);
            }
        }
        Command::Rm { name, id } => c.delete_session(&name, &id).await?,
    }
    Ok(0)
}
