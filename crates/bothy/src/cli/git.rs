//! `bothy git clone NAME URL [DIR]`: clone inside the sandbox, progress on stderr.

use std::io::Write;

use bothy_api::git::{CheckoutDone, CheckoutRequest};
use bothy_api::{ApiError, Data};
use bothy_client::Client;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Clone a repository inside a sandbox (through its egress proxy in `proxy` mode, where a
    /// rule can add the git host's token).
    Clone(CloneArgs),
}

#[derive(clap::Args)]
pub struct CloneArgs {
    name: String,
    /// Repository URL (`https://…`, `http://…`, `ssh://…`, `git://…`, `user@host:path`).
    /// (Not named `url`: that is the global daemon address.)
    #[arg(value_name = "URL")]
    repo: String,
    /// Target directory in the sandbox (relative = under /workspace; default: the repository's
    /// name).
    dir: Option<String>,
    #[arg(long, short)]
    branch: Option<String>,
    /// Shallow clone with this many commits.
    #[arg(long)]
    depth: Option<u32>,
}

#[derive(serde::Deserialize)]
struct Progress {
    data: Data,
}

pub async fn run(c: &Client, cmd: Command) -> anyhow::Result<i32> {
    let Command::Clone(a) = cmd;
    let req = CheckoutRequest {
        url: a.repo,
        branch: a.branch,
        depth: a.depth,
        dir: a.dir,
    };
    let mut s = c.git_checkout(&a.name, &req).await?;
    let mut err = std::io::stderr();
    while let Some(ev) = s.next().await? {
        match ev.event.as_str() {
            "progress" => {
                let p: Progress = ev.json()?;
                let _ = err.write_all(&p.data.decode()?);
                let _ = err.flush();
            }
            "done" => {
                let d: CheckoutDone = ev.json()?;
                println!("{} {}", d.dir, d.commit);
                return Ok(0);
            }
            "error" => {
                let e: ApiError = ev.json()?;
                eprintln!("error: {} ({})", e.message, e.code.as_str());
                return Ok(1);
            }
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before git finished")
}
