//! Command-line interface. Every command except `serve` and `agent` is a client of the
//! daemon's API, found through `--url` / `BOTHY_URL` (`unix:PATH` or `http://HOST:PORT`, with
//! `BOTHY_TOKEN` as bearer token); default: the unix socket of the default data directory.

mod agent;
mod backup;
mod blobs;
mod command;
mod cp;
mod egress;
mod exec;
mod git;
mod image;
mod net;
mod output;
mod processes;
mod run;
mod sandbox;
mod serve;
mod session;
mod shell;
mod snapshot;
mod watch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bothy",
    version,
    about = "Persistent, isolated, named Linux sandboxes for AI agents",
    long_about = "Persistent, isolated, named Linux sandboxes for AI agents.\n\n\
        Start the daemon with `bothy serve`; every other command talks to it.\n\
        A sandbox is asked for by name: `bothy get demo` creates it, wakes it, or just returns it."
)]
pub struct Cli {
    /// Daemon URL: unix:PATH or http://HOST:PORT.
    #[arg(long, global = true, env = "BOTHY_URL", default_value = bothy_client::DEFAULT_URL)]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(serve::Args),
    /// Get a sandbox: create it if it does not exist, wake it if it sleeps.
    Get(sandbox::GetArgs),
    /// List sandboxes.
    Ls(output::JsonFlag),
    /// Show a sandbox (state, image, times, disk used).
    Info(sandbox::NameArgs),
    /// Run a command in a sandbox; streams its output and exits with its exit code.
    Exec(exec::Args),
    /// Run Python, JavaScript or TypeScript in a persistent interpreter context of a sandbox.
    Run(run::Args),
    /// Copy files between the host and a sandbox: `bothy cp ./a demo:/workspace/a`.
    Cp(cp::Args),
    /// Put a sandbox to sleep (stop its processes, keep its disk).
    Sleep(sandbox::NameArgs),
    /// Wake a sleeping sandbox.
    Wake(sandbox::NameArgs),
    /// Destroy a sandbox and its disk.
    Rm(sandbox::RmArgs),
    /// Attach this terminal to a shell in a sandbox (detach: Ctrl-] then d).
    Shell(shell::Args),
    /// Images: list, import.
    #[command(subcommand)]
    Image(image::Command),
    /// Watch a directory in a sandbox and print its changes as they happen.
    Watch(watch::Args),
    /// Start a background process: `bothy start demo --id web -- python3 -m http.server`.
    Start(processes::StartArgs),
    /// List a sandbox's background processes.
    Ps(processes::PsArgs),
    /// Print a process's output (`-f` follows it until it ends).
    Logs(processes::LogsArgs),
    /// Signal a process's whole tree (default TERM).
    Kill(processes::KillArgs),
    /// Wait for a process: a port, a log line, or its exit.
    Wait(processes::WaitArgs),
    /// Expose a port of a sandbox; prints its preview URL.
    Expose(processes::ExposeArgs),
    /// List a sandbox's exposed ports.
    Ports(processes::PsArgs),
    /// Stop exposing a port (its URL stops working).
    Unexpose(processes::UnexposeArgs),
    /// Sessions: named contexts whose cwd and environment carry over (`exec --session`).
    #[command(subcommand)]
    Session(session::Command),
    /// Back up a directory of a sandbox (`bothy backup demo /workspace --exclude node_modules`),
    /// or list (`ls`) / delete (`rm ID`) backups.
    Backup(backup::Args),
    /// Restore a backup into a sandbox (replaces the directory's contents).
    RestoreBackup(backup::RestoreArgs),
    /// Secrets the egress proxy injects into requests (never shown after being set).
    #[command(subcommand)]
    Secret(egress::SecretCommand),
    /// Show a sandbox's egress log: every request and connection through the egress proxy.
    EgressLog(egress::LogArgs),
    /// Show a sandbox's network (`bothy net NAME`) or change it (`bothy net set NAME ...`).
    Net(net::Args),
    /// git inside a sandbox: `bothy git clone NAME URL [DIR]`.
    #[command(subcommand)]
    Git(git::Command),
    /// Export a snapshot to a blob store; prints the manifest digest to import it elsewhere.
    Export(blobs::ExportArgs),
    /// Import a snapshot from a blob store by its manifest digest; prints its id.
    Import(blobs::ImportArgs),
    /// Move a sandbox's disk to a blob store (it sleeps; its next request pulls it back).
    Evict(blobs::EvictArgs),
    /// Snapshot a sandbox (`bothy snapshot NAME [--name N]`), or `snapshot ls|rm|info`.
    Snapshot(snapshot::SnapshotArgs),
    /// Create a sandbox from a snapshot (`--count K`: K of them, NEW-1 … NEW-K).
    Fork(snapshot::ForkArgs),
    /// Put a sandbox back to a snapshot's state.
    Restore(snapshot::RestoreArgs),
    /// Show whether the daemon is up (optionally wait for it).
    Status(sandbox::StatusArgs),
    /// The in-sandbox agent (run by the runtime as each sandbox's PID 1).
    #[command(hide = true)]
    Agent(agent::Args),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Command::Agent(args) = cli.command {
        return agent::run(args);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::run(a).await.map(|()| 0),
            cmd => {
                let client = client(&cli.url)?;
                run_client(cmd, client).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn client(url: &str) -> anyhow::Result<bothy_client::Client> {
    Ok(bothy_client::Client::new(
        url,
        std::env::var("BOTHY_TOKEN").ok(),
    )?)
}

async fn run_client(cmd: Command, c: bothy_client::Client) -> anyhow::Result<i32> {
    match cmd {
        Command::Get(a) => sandbox::get(&c, a).await,
        Command::Ls(a) => sandbox::ls(&c, a).await,
        Command::Info(a) => sandbox::info(&c, a).await,
        Command::Exec(a) => exec::run(&c, a).await,
        Command::Run(a) => run::run(&c, a).await,
        Command::Cp(a) => cp::run(&c, a).await,
        Command::Sleep(a) => sandbox::sleep(&c, a).await,
        Command::Wake(a) => sandbox::wake(&c, a).await,
        Command::Rm(a) => sandbox::rm(&c, a).await,
        Command::Image(a) => image::run(&c, a).await,
        Command::Shell(a) => shell::run(&c, a).await,
        Command::Status(a) => sandbox::status(&c, a).await,
        Command::Watch(a) => watch::run(&c, a).await,
        Command::Start(a) => processes::start(&c, a).await,
        Command::Ps(a) => processes::ps(&c, a.name, a.out).await,
        Command::Logs(a) => processes::logs(&c, a).await,
        Command::Kill(a) => processes::kill(&c, a).await,
        Command::Wait(a) => processes::wait(&c, a).await,
        Command::Expose(a) => processes::expose(&c, a).await,
        Command::Ports(a) => processes::ports(&c, a.name, a.out).await,
        Command::Unexpose(a) => processes::unexpose(&c, a).await,
        Command::Session(a) => session::run(&c, a).await,
        Command::Backup(a) => backup::run(&c, a).await,
        Command::RestoreBackup(a) => backup::restore(&c, a).await,
        Command::Secret(a) => egress::secret(&c, a).await,
        Command::EgressLog(a) => egress::log(&c, a).await,
        Command::Net(a) => net::run(&c, a).await,
        Command::Git(a) => git::run(&c, a).await,
        Command::Export(a) => blobs::export(&c, a).await,
        Command::Import(a) => blobs::import(&c, a).await,
        Command::Evict(a) => blobs::evict(&c, a).await,
        Command::Snapshot(a) => snapshot::snapshot(&c, a).await,
        Command::Fork(a) => snapshot::fork(&c, a).await,
        Command::Restore(a) => snapshot::restore(&c, a).await,
        Command::Serve(_) | Command::Agent(_) => unreachable!("handled in main"),
    }
}
