//! `bothy exec NAME -- CMD…`: streams output live, forwards stdin, exits with the command's
//! exit code (128 + N when ended by signal N).

use std::io::{IsTerminal, Read, Write};

use bothy_api::exec::{ExecRequest, ExitEvent, StartEvent};
use bothy_api::{ApiError, Data};
use bothy_client::Client;

use super::command::CommandArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Sandbox name.
    pub name: String,
    #[command(flatten)]
    pub run: CommandArgs,
    /// Kill the command after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Run in this session (its cwd and environment carry over between commands).
    #[arg(long)]
    pub session: Option<String>,
    /// Print the whole result as JSON at the end instead of streaming.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    let cmd = a.run.resolve()?;
    // Forward stdin when it is piped or redirected (a terminal is not read).
    let stdin = if std::io::stdin().is_terminal() {
        None
    } else {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Some(Data::encode(&buf))
    };
    let req = ExecRequest {
        argv: cmd.argv,
        shell: cmd.shell,
        env: cmd.env,
        cwd: cmd.cwd,
        timeout_ms: a.timeout.map(|s| (s * 1000.0) as u64),
        stdin_encoding: stdin.as_ref().map(|d| d.encoding),
        stdin: stdin.map(|d| d.data),
        session: a.session,
    };
    if a.json {
        let r = c.exec(&a.name, &req).await?;
        super::output::print_json(&r);
        return Ok(r.exit_code.unwrap_or_else(|| 128 + r.signal.unwrap_or(0)));
    }
    let mut stream = c.exec_stream(&a.name, &req).await?;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    while let Some(ev) = stream.next().await? {
        match ev.event.as_str() {
            "start" => {
                let _: StartEvent = ev.json()?;
            }
            "stdout" | "stderr" => {
                let d: Data = ev.json()?;
                let bytes = d
                    .decode()
                    .map_err(|e| anyhow::anyhow!("bad output chunk: {e}"))?;
                if ev.event == "stdout" {
                    out.write_all(&bytes)?;
                    out.flush()?;
                } else {
                    err.write_all(&bytes)?;
                    err.flush()?;
                }
            }
            "exit" => {
                let x: ExitEvent = ev.json()?;
                if x.timed_out {
                    eprintln!("bothy: command timed out and was killed");
                }
                return Ok(x.exit_code.unwrap_or_else(|| 128 + x.signal.unwrap_or(0)));
            }
            "error" => {
                let e: ApiError = ev.json()?;
                anyhow::bail!("{}: {}", e.code.as_str(), e.message);
            }
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the command's exit was reported")
}
