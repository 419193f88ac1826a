//! Background processes and preview URLs: `bothy start`, `ps`, `logs`, `kill`, `wait`,
//! `expose`, `ports`, `unexpose`.

use std::io::Write;
use std::time::Duration;

use bothy_api::preview::ExposeRequest;
use bothy_api::process::{
    HttpCheck, LogChunkEvent, LogExitEvent, LogTruncatedEvent, ProcessInfo, ProcessStart,
    RestartPolicy, StreamSel, WaitExit, WaitLog, WaitPort,
};
use bothy_api::{ApiError, Data, Encoding};
use bothy_client::Client;

use super::command::CommandArgs;
use super::output::{print_json, print_table, JsonFlag};

#[derive(clap::Args)]
pub struct StartArgs {
    /// Sandbox name.
    pub name: String,
    /// Process id (a DNS label); generated if absent.
    #[arg(long)]
    pub id: Option<String>,
    /// `on-wake`: start the process again every time the sandbox wakes (a service).
    #[arg(long, value_parser = parse_restart)]
    pub restart: Option<RestartPolicy>,
    #[command(flatten)]
    pub run: CommandArgs,
    /// Start from this session's directory and environment.
    #[arg(long)]
    pub session: Option<String>,
    /// Cap on the log kept (stdout and stderr together), in bytes.
    #[arg(long)]
    pub log_limit: Option<u64>,
    #[command(flatten)]
    pub out: JsonFlag,
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    RestartPolicy::parse(s).ok_or_else(|| format!("{s:?}: expected never or on-wake"))
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Sandbox name.
    pub name: String,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct ProcArgs {
    /// Sandbox name.
    pub name: String,
    /// Process id.
    pub id: String,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub p: ProcArgs,
    /// Follow: keep printing output until the process ends (reconnects if cut off).
    #[arg(long, short)]
    pub follow: bool,
    /// Start at this cursor (bytes of output already seen).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
}

#[derive(clap::Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub p: ProcArgs,
    /// Signal name or number (default TERM).
    #[arg(long, short)]
    pub signal: Option<String>,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub p: ProcArgs,
    /// Wait until this port accepts connections.
    #[arg(long, conflicts_with_all = ["log", "exit"])]
    pub port: Option<u16>,
    /// With --port: wait for an HTTP answer in 200-399 at this path.
    #[arg(long, requires = "port")]
    pub http: Option<String>,
    /// Wait for a line of output matching this regex.
    #[arg(long, conflicts_with = "exit")]
    pub log: Option<String>,
    /// Wait for the process to end.
    #[arg(long)]
    pub exit: bool,
    /// Give up after this many seconds (default 30).
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct ExposeArgs {
    /// Sandbox name.
    pub name: String,
    /// Port inside the sandbox.
    pub port: u16,
    /// Give the port a new token (the old URL stops working).
    #[arg(long)]
    pub rotate: bool,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct UnexposeArgs {
    /// Sandbox name.
    pub name: String,
    pub port: u16,
}

pub async fn start(c: &Client, a: StartArgs) -> anyhow::Result<i32> {
    let cmd = a.run.resolve()?;
    let req = ProcessStart {
        id: a.id,
        argv: cmd.argv,
        shell: cmd.shell,
        env: cmd.env,
        cwd: cmd.cwd,
        session: a.session,
        restart: a.restart.unwrap_or_default(),
        log_limit: a.log_limit,
        stdin: None,
    };
    let p = c.start_process(&a.name, &req).await?;
    if a.out.json {
        print_json(&p);
    } else {
        println!("{}", p.id);
    }
    if p.status == bothy_api::process::ProcessStatus::Failed {
        eprintln!("bothy: {}", p.reason.unwrap_or_default());
        return Ok(1);
    }
    Ok(0)
}

fn command_of(p: &ProcessInfo) -> String {
    match (&p.argv, &p.shell) {
        (Some(a), _) => a.join(" "),
        (None, Some(s)) => s.clone(),
        _ => String::new(),
    }
}

pub async fn ps(c: &Client, name: String, out: JsonFlag) -> anyhow::Result<i32> {
    let list = c.list_processes(&name).await?;
    if out.json {
        print_json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .processes
        .iter()
        .map(|p| {
            let exit = match (p.exit_code, p.signal) {
                (Some(c), _) => c.to_string(),
                (None, Some(s)) => format!("sig {s}"),
                _ => "-".into(),
            };
            vec![
                p.id.clone(),
                p.status.as_str().to_string(),
                p.pid.map_or("-".into(), |p| p.to_string()),
                exit,
                p.started_at.clone(),
                command_of(p),
            ]
        })
        .collect();
    print_table(
        &["ID", "STATUS", "PID", "EXIT", "STARTED", "COMMAND"],
        &rows,
    );
    Ok(0)
}

fn decode(data: String, encoding: Encoding) -> anyhow::Result<Vec<u8>> {
    Data { data, encoding }
        .decode()
        .map_err(|e| anyhow::anyhow!("bad output chunk: {e}"))
}

pub async fn logs(c: &Client, a: LogsArgs) -> anyhow::Result<i32> {
    let (name, id) = (&a.p.name, &a.p.id);
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    if !a.follow {
        let l = c.process_logs(name, id, a.since).await?;
        if l.dropped_bytes > 0 {
            eprintln!(
                "bothy: {} bytes of older output were dropped (log cap)",
                l.dropped_bytes
            );
        }
        out.write_all(&l.stdout.decode()?)?;
        err.write_all(&l.stderr.decode()?)?;
        return Ok(0);
    }
    // Follow, reconnecting from the last cursor seen if the stream is cut off.
    let mut cursor = a.since;
    let mut failures = 0;
    loop {
        let mut stream = match c.stream_logs(name, id, cursor).await {
            Ok(s) => s,
            Err(e) if e.code().is_none() && failures < 10 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let ev = match stream.next().await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            match ev.event.as_str() {
                "stdout" | "stderr" => {
                    let chunk: LogChunkEvent = ev.json()?;
                    cursor = chunk.cursor;
                    let bytes = decode(chunk.data, chunk.encoding)?;
                    if ev.event == "stdout" {
                        out.write_all(&bytes)?;
                        out.flush()?;
                    } else {
                        err.write_all(&bytes)?;
                        err.flush()?;
                    }
                }
                "truncated" => {
                    let t: LogTruncatedEvent = ev.json()?;
                    cursor = t.cursor;
                    eprintln!(
                        "bothy: {} bytes of older output were dropped (log cap)",
                        t.dropped_bytes
                    );
                }
                "exit" => {
                    let x: LogExitEvent = ev.json()?;
                    return Ok(x.exit_code.unwrap_or_else(|| 128 + x.signal.unwrap_or(0)));
                }
                "error" => {
                    let e: ApiError = ev.json()?;
                    anyhow::bail!("{}: {}", e.code.as_str(), e.message);
                }
                _ => {}
            }
        }
        failures += 1;
        if failures > 10 {
            anyhow::bail!("the log stream keeps failing; last cursor {cursor}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn kill(c: &Client, a: KillArgs) -> anyhow::Result<i32> {
    let p = c
        .kill_process(&a.p.name, &a.p.id, a.signal.as_deref())
        .await?;
    if a.out.json {
        print_json(&p);
    }
    Ok(0)
}

pub async fn wait(c: &Client, a: WaitArgs) -> anyhow::Result<i32> {
    let timeout_ms = a.timeout.map(|s| (s * 1000.0) as u64);
    let (name, id) = (&a.p.name, &a.p.id);
    if let Some(port) = a.port {
        let r = c
            .wait_port(
                name,
                id,
                &WaitPort {
                    port,
                    http: a.http.map(|path| HttpCheck {
                        path,
                        ..Default::default()
                    }),
                    timeout_ms,
                    interval_ms: None,
                },
            )
            .await?;
        if a.out.json {
            print_json(&r);
        }
    } else if let Some(pattern) = a.log {
        let r = c
            .wait_log(
                name,
                id,
                &WaitLog {
                    pattern,
                    stream: StreamSel::Both,
                    timeout_ms,
                },
            )
            .await?;
        if a.out.json {
            print_json(&r);
        } else {
            std::io::stdout().write_all(&r.line.decode()?)?;
            println!();
        }
    } else if a.exit {
        let p = c.wait_exit(name, id, &WaitExit { timeout_ms }).await?;
        if a.out.json {
            print_json(&p);
        }
        return Ok(p.exit_code.unwrap_or_else(|| 128 + p.signal.unwrap_or(0)));
    } else {
        anyhow::bail!("wait for what? give --port, --log or --exit");
    }
    Ok(0)
}

pub async fn expose(c: &Client, a: ExposeArgs) -> anyhow::Result<i32> {
    let p = c
        .expose_port(
            &a.name,
            &ExposeRequest {
                port: a.port,
                rotate: a.rotate,
            },
        )
        .await?;
    if a.out.json {
        print_json(&p);
    } else {
        println!("{}", p.url);
    }
    Ok(0)
}

pub async fn ports(c: &Client, name: String, out: JsonFlag) -> anyhow::Result<i32> {
    let list = c.list_ports(&name).await?;
    if out.json {
        print_json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .ports
        .iter()
        .map(|p| vec![p.port.to_string(), p.url.clone(), p.created_at.clone()])
        .collect();
    print_table(&["PORT", "URL", "CREATED"], &rows);
    Ok(0)
}

pub async fn unexpose(c: &Client, a: UnexposeArgs) -> anyhow::Result<i32> {
    c.unexpose_port(&a.name, a.port).await?;
    Ok(0)
}
