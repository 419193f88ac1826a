//! `bothy agent`: the in-sandbox data plane (normally started by the runtime, not by hand).

use bothy_agent::server::Listen;
use bothy_api::agent::AgentConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Agent configuration (JSON), written by the daemon.
    #[arg(long)]
    config: String,
    /// Listen on this unix socket path instead of the inherited fd 3 (for debugging).
    #[arg(long)]
    listen: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> i32 {
    let config: AgentConfig = match serde_json::from_str(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bothy agent: bad --config: {e}");
            return 2;
        }
    };
    let listen = match a.listen {
        Some(p) => Listen::Path(p),
        None => Listen::InheritedFd,
    };
    match bothy_agent::run(config, listen) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bothy agent: {e}");
            1
        }
    }
}
