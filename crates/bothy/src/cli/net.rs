//! `bothy net NAME` (show a sandbox's network) and `bothy net set NAME …` (change it at once).

use anyhow::Context;
use bothy_api::network::{EgressPolicy, NetworkConfig, NetworkInfo, NetworkMode, PolicyAction};
use bothy_client::Client;

use super::output::{print_json, JsonFlag};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Sandbox name (show its network).
    name: Option<String>,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Change a sandbox's network mode or egress policy; applies at once, without a restart.
    /// Lists given here replace the stored ones; what is not given is kept.
    Set(SetArgs),
}

#[derive(clap::Args)]
struct SetArgs {
    name: String,
    /// `proxy` (a link to the host; all traffic through the egress proxy) or `none` (loopback
    /// only).
    #[arg(long, value_parser = ["proxy", "none"])]
    mode: Option<String>,
    /// Host glob to allow (repeat; `*.example.com`, `db.internal:5432`). Replaces the list.
    #[arg(long = "allow", value_name = "GLOB")]
    allow: Vec<String>,
    /// Host glob to deny (repeat). Replaces the list.
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// What happens to hosts no entry matches.
    #[arg(long, value_parser = ["allow", "deny"])]
    default: Option<String>,
    /// A JSON egress policy (`{"deny": [...], "allow": [...], "rules": [...], "default": ...}`)
    /// replacing the whole policy; `--allow`/`--deny`/`--default` then apply on top.
    #[arg(long, value_name = "FILE")]
    policy_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    out: JsonFlag,
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    match (a.cmd, a.name) {
        (Some(Cmd::Set(s)), _) => set(c, s).await,
        (None, Some(name)) => {
            let info = c.get_network(&name).await?;
            show(&info, a.out.json);
            Ok(0)
        }
        (None, None) => {
            anyhow::bail!("usage: bothy net NAME | bothy net set NAME [--mode proxy|none] ...")
        }
    }
}

async fn set(c: &Client, s: SetArgs) -> anyhow::Result<i32> {
    let current = c.get_network(&s.name).await?;
    let mut cfg = NetworkConfig {
        mode: current.mode,
        policy: current.policy,
    };
    if let Some(f) = &s.policy_file {
        let bytes = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
        cfg.policy = serde_json::from_slice::<EgressPolicy>(&bytes)
            .with_context(|| format!("{} is not an egress policy", f.display()))?;
    }
    if let Some(m) = &s.mode {
        cfg.mode = if m == "proxy" {
            NetworkMode::Proxy
        } else {
            NetworkMode::None
        };
    }
    if !s.allow.is_empty() {
        cfg.policy.allow = s.allow;
    }
    if !s.deny.is_empty() {
        cfg.policy.deny = s.deny;
    }
    if let Some(d) = &s.default {
        cfg.policy.default = if d == "deny" {
            PolicyAction::Deny
        } else {
            PolicyAction::Allow
        };
    }
    let info = c.put_network(&s.name, &cfg).await?;
    show(&info, s.out.json);
    Ok(0)
}

fn show(info: &NetworkInfo, json: bool) {
    if json {
        print_json(info);
        return;
    }
    println!("{:<10} {}", "mode", info.mode.as_str());
    if let Some(a) = &info.address {
        println!("{:<10} {a}", "address");
    }
    if let Some(g) = &info.gateway {
        println!("{:<10} {g} (DNS)", "gateway");
    }
    let p = &info.policy;
    if !p.deny.is_empty() {
        println!("{:<10} {}", "deny", p.deny.join(" "));
    }
    if !p.allow.is_empty() {
        println!("{:<10} {}", "allow", p.allow.join(" "));
    }
    for r in &p.rules {
        let mut parts = vec![r.host.clone()];
        if let Some(u) = &r.upstream {
            parts.push(format!("-> {u}"));
        }
        for (h, v) in &r.headers {
            match (&v.secret, &v.value) {
                (Some(s), _) => parts.push(format!("{h}: <secret {s}>")),
                (None, Some(v)) => parts.push(format!("{h}: {v}")),
                _ => {}
            }
        }
        println!("{:<10} {}", "rule", parts.join("  "));
    }
    println!(
        "{:<10} {}",
        "default",
        match p.default {
            PolicyAction::Allow => "allow",
            PolicyAction::Deny => "deny",
        }
    );
}
