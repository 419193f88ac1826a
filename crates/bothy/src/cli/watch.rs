//! `bothy watch NAME [PATH]`: prints file changes in a sandbox as they happen, one per line
//! (`--json`: one JSON event per line). Reconnects with its cursor if the connection drops, so
//! nothing is missed in between (or it says `resync`); exits when the directory goes.

use std::io::Write;
use std::time::Duration;

use bothy_api::watch::{WatchEvent, WatchEventKind};
use bothy_client::watch::WatchOptions;
use bothy_client::Client;

#[derive(clap::Args)]
pub struct Args {
    /// Sandbox name.
    pub name: String,
    /// Directory to watch (default /workspace; relative paths are under /workspace).
    pub path: Option<String>,
    /// Only report paths matching this glob (repeatable). A glob without `/` matches the file
    /// name (`*.rs`), one with `/` the path relative to the directory (`src/**`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Do not watch what matches this glob (repeatable). Replaces the defaults (.git,
    /// node_modules); `--exclude ''` watches everything.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only these change types, comma-separated: create,modify,delete,move,attrib.
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub events: Vec<String>,
    /// Only the directory's direct entries.
    #[arg(long)]
    pub no_recursive: bool,
    /// Resume after this cursor (printed with --json).
    #[arg(long)]
    pub cursor: Option<String>,
    /// One JSON event per line (with cursors), instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    let mut events = Vec::new();
    for e in &a.events {
        match WatchEventKind::parse(e.trim()) {
            Some(k) if k.is_change() => events.push(k),
            _ => anyhow::bail!(
                "unknown event type {e:?} (expected create, modify, delete, move or attrib)"
            ),
        }
    }
    let mut opts = WatchOptions {
        path: a.path.clone(),
        include: a.include.clone(),
        exclude: (!a.exclude.is_empty()).then(|| {
            a.exclude
                .iter()
                .filter(|g| !g.is_empty())
                .cloned()
                .collect()
        }),
        events,
        recursive: a.no_recursive.then_some(false),
        cursor: a.cursor.clone(),
    };
    let mut reconnects = 0u32;
    loop {
        let mut stream = match c.watch(&a.name, &opts).await {
            Ok(s) => s,
            // A 4xx is final; a lost daemon gets a few tries (it may be restarting).
            Err(e) if e.code().is_some() || reconnects >= 5 => return Err(e.into()),
            Err(_) => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(reconnects))).await;
                continue;
            }
        };
        loop {
            let ev = match stream.next().await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            reconnects = 0;
            // `ready` carries the position after which events follow (the cursor resumed
            // from, or the head after a resync), so every event's cursor is the resume point.
            opts.cursor = Some(ev.cursor.clone());
            print_event(&ev, a.json);
            if ev.kind == WatchEventKind::Stopped {
                if ev.reason.as_deref() == Some("failed") {
                    break; // the agent's watch service restarted: reconnect
                }
                return Ok(0);
            }
        }
        if reconnects >= 5 {
            anyhow::bail!("the watch stream keeps closing");
        }
        // A sandbox put to sleep ends the stream; reconnecting would wake it again.
        if let Ok(info) = c.get_sandbox(&a.name).await {
            if info.state == bothy_api::sandbox::SandboxState::Sleeping {
                eprintln!(
                    "bothy watch: {} went to sleep; resume with --cursor {}",
                    a.name,
                    opts.cursor.as_deref().unwrap_or("")
                );
                return Ok(1);
            }
        }
        reconnects += 1;
        eprintln!(
            "bothy watch: stream closed, resuming from {}",
            opts.cursor.as_deref().unwrap_or("the start")
        );
    }
}

fn print_event(ev: &WatchEvent, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string(ev).unwrap_or_default());
        let _ = out.flush();
        return;
    }
    let slash = if ev.is_dir && ev.kind.is_change() {
        "/"
    } else {
        ""
    };
    match ev.kind {
        WatchEventKind::Ready => eprintln!("watching {}", ev.path),
        WatchEventKind::Move => {
            let from = ev.from.as_deref().unwrap_or("?");
            let _ = writeln!(out, "move    {from}{slash} -> {}{slash}", ev.path);
        }
        k if k.is_change() => {
            let _ = writeln!(out, "{:<7} {}{slash}", k.as_str(), ev.path);
        }
        k => {
            let reason = ev.reason.as_deref().unwrap_or("");
            let msg = ev.message.as_deref().unwrap_or("");
            eprintln!("{} ({reason}): {msg}", k.as_str());
        }
    }
    let _ = out.flush();
}
