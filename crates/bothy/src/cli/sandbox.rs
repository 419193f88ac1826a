//! Sandbox commands: get, ls, info, sleep, wake, rm, status.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use bothy_api::sandbox::{CreateSandbox, SandboxInfo};
use bothy_client::Client;

use super::output::{bytes, print_json, print_table, JsonFlag};

#[derive(clap::Args)]
pub struct NameArgs {
    /// Sandbox name.
    pub name: String,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// Sandbox name (a DNS label: lowercase letters, digits, hyphens).
    pub name: String,
    /// Image to create it from (default: host).
    #[arg(long)]
    pub image: Option<String>,
    /// Environment for every command in the sandbox (repeatable): --env KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Seconds of inactivity before the sandbox sleeps (default 600).
    #[arg(long)]
    pub sleep_after: Option<u64>,
    /// Never put the sandbox to sleep for inactivity.
    #[arg(long)]
    pub keep_alive: bool,
    /// Network mode of a new sandbox: `proxy` (default where the host supports it) or `none`.
    #[arg(long, value_parser = ["proxy", "none"])]
    pub net: Option<String>,
    /// Push the sandbox's disk to the daemon's blob store each time it sleeps.
    #[arg(long)]
    pub persist: bool,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(clap::Args)]
pub struct RmArgs {
    pub name: String,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Wait up to this many seconds for the daemon to come up.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    #[command(flatten)]
    pub out: JsonFlag,
}

pub fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--env {p:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn print_info(info: &SandboxInfo) {
    let mut rows = vec![
        ("name", info.name.to_string()),
        ("state", info.state.as_str().to_string()),
        ("image", info.image.clone()),
        ("created", info.created_at.clone()),
        ("last activity", info.last_activity_at.clone()),
        (
            "sleep after",
            if info.keep_alive {
                "never (keep_alive)".into()
            } else {
                format!("{} s", info.sleep_after)
            },
        ),
    ];
    if let Some(d) = info.disk_used_bytes {
        rows.push(("disk used", bytes(d)));
    }
    if let Some(p) = info.pid {
        rows.push(("pid", p.to_string()));
    }
    if let Some(n) = &info.network {
        let mut s = n.mode.as_str().to_string();
        if let Some(a) = &n.address {
            s.push_str(&format!(" ({a})"));
        }
        rows.push(("network", s));
    }
    if !info.env.is_empty() {
        let env: Vec<String> = info.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("env", env.join(" ")));
    }
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
}

pub async fn get(c: &Client, a: GetArgs) -> anyhow::Result<i32> {
    let spec = CreateSandbox {
        image: a.image,
        env: if a.env.is_empty() {
            None
        } else {
            Some(parse_env(&a.env)?)
        },
        sleep_after: a.sleep_after,
        keep_alive: a.keep_alive.then_some(true),
        from_snapshot: None,
        network: a.net.map(|m| bothy_api::network::NetworkConfig {
            mode: if m == "none" {
                bothy_api::network::NetworkMode::None
            } else {
                bothy_api::network::NetworkMode::Proxy
            },
            policy: Default::default(),
        }),
        persist: a.persist.then_some(true),
    };
    let info = c.put_sandbox(&a.name, &spec).await?;
    if a.out.json {
        print_json(&info);
    } else {
        let verb = if info.created == Some(true) {
            "created"
        } else {
            "ready"
        };
        println!("{} {verb} ({})", info.name, info.state.as_str());
    }
    Ok(0)
}

pub async fn ls(c: &Client, a: JsonFlag) -> anyhow::Result<i32> {
    let list = c.list_sandboxes().await?;
    if a.json {
        print_json(&list);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .sandboxes
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.state.as_str().to_string(),
                s.image.clone(),
                s.last_activity_at.clone(),
            ]
        })
        .collect();
    print_table(&["NAME", "STATE", "IMAGE", "LAST ACTIVITY"], &rows);
    Ok(0)
}

pub async fn info(c: &Client, a: NameArgs) -> anyhow::Result<i32> {
    let info = c.get_sandbox(&a.name).await?;
    if a.out.json {
        print_json(&info);
    } else {
        print_info(&info);
    }
    Ok(0)
}

pub async fn sleep(c: &Client, a: NameArgs) -> anyhow::Result<i32> {
    let info = c.sleep_sandbox(&a.name).await?;
    if a.out.json {
        print_json(&info);
    } else {
        println!("{} {}", info.name, info.state.as_str());
    }
    Ok(0)
}

pub async fn wake(c: &Client, a: NameArgs) -> anyhow::Result<i32> {
    let info = c.wake_sandbox(&a.name).await?;
    if a.out.json {
        print_json(&info);
    } else {
        println!("{} {}", info.name, info.state.as_str());
    }
    Ok(0)
}

pub async fn rm(c: &Client, a: RmArgs) -> anyhow::Result<i32> {
    if !a.force {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to destroy {:?} without --force (stdin is not a terminal to ask)",
                a.name
            );
        }
        eprint!("Destroy sandbox {:?} and its disk? [y/N] ", a.name);
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("not destroyed");
            return Ok(1);
        }
    }
    c.delete_sandbox(&a.name).await?;
    println!("{} destroyed", a.name);
    Ok(0)
}

pub async fn status(c: &Client, a: StatusArgs) -> anyhow::Result<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait);
    loop {
        match c
            .json::<bothy_api::sandbox::Health>(http::Method::GET, "/v1/health", None::<&()>)
            .await
        {
            Ok(h) => {
                if a.out.json {
                    print_json(&h);
                } else {
                    println!(
                        "bothy {} up (runtime {}, {} running)",
                        h.version, h.runtime, h.sandboxes_running
                    );
                }
                return Ok(0);
            }
            Err(bothy_client::ClientError::Connect { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
