//! `bothy shell NAME [--terminal ID]`: the local terminal attached to a terminal in a sandbox.
//!
//! Puts the local terminal in raw mode (restored on every way out: exit, detach, error, panic,
//! SIGTERM/SIGHUP), forwards keystrokes and window-size changes (SIGWINCH), and exits with the
//! remote program's exit code (128 + N when a signal ended it). **Detach** with `Ctrl-]` then
//! `d`: the terminal keeps running; `bothy shell NAME --terminal ID` joins it again (`Ctrl-]`
//! twice sends one `Ctrl-]`). A dropped connection is resumed from the last cursor seen, so
//! nothing is lost or repeated on the screen.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bothy_api::terminal::ws::{Control, ServerFrame};
use bothy_api::terminal::{CreateTerminal, Protocol};
use bothy_client::terminals::{AttachOptions, TerminalSocket};
use bothy_client::Client;
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::sandbox::parse_env;

/// First key of the detach sequence (`Ctrl-]`); the second is `d`.
const ESCAPE: u8 = 0x1d;
const DETACH: u8 = b'd';
/// Reconnection attempts after a dropped connection, before giving up.
const RECONNECTS: u32 = 5;

#[derive(clap::Args)]
pub struct Args {
    /// Sandbox name.
    pub name: String,
    /// Join this existing terminal instead of starting a new one.
    #[arg(long, short = 't', value_name = "ID")]
    pub terminal: Option<String>,
    /// Environment variable for a new terminal (repeatable): --env KEY=VALUE.
    #[arg(
        long = "env",
        short = 'e',
        value_name = "KEY=VALUE",
        conflicts_with = "terminal"
    )]
    pub env: Vec<String>,
    /// Working directory of a new terminal (relative to /workspace unless absolute).
    #[arg(long, short = 'w', conflicts_with = "terminal")]
    pub cwd: Option<String>,
    /// Program to run instead of a login shell.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

enum Outcome {
    Exited(i32),
    Detached,
    /// SIGTERM or SIGHUP to us: leave the remote terminal running.
    Signalled(i32),
    Lost(String),
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    let size = local_size();
    let id = match a.terminal {
        Some(id) => {
            c.get_terminal(&a.name, &id).await?;
            id
        }
        None => {
            let mut env = parse_env(&a.env)?;
            if let Ok(t) = std::env::var("TERM") {
                env.entry("TERM".into()).or_insert(t);
            }
            let req = CreateTerminal {
                command: (!a.cmd.is_empty()).then_some(a.cmd),
                cwd: a.cwd,
                env,
                cols: Some(size.0),
                rows: Some(size.1),
                buffer_bytes: None,
            };
            c.create_terminal(&a.name, &req).await?.id
        }
    };

    let raw = RawMode::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut input = spawn_stdin_reader(stop.clone());
    let outcome = attach_loop(c, &a.name, &id, &mut input).await;
    stop.store(true, Ordering::Relaxed);
    drop(raw);
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(Outcome::Exited(code)) => Ok(code),
        Ok(Outcome::Detached) => {
            eprintln!(
                "\r\n[detached from terminal {id}; rejoin with: bothy shell {} --terminal {id}]",
                a.name
            );
            Ok(0)
        }
        Ok(Outcome::Signalled(sig)) => {
            eprintln!("\r\n[left terminal {id} running]");
            Ok(128 + sig)
        }
        Ok(Outcome::Lost(why)) => {
            anyhow::bail!("lost the connection to terminal {id}: {why}")
        }
        Err(e) => Err(e),
    }
}

async fn attach_loop(
    c: &Client,
    name: &str,
    id: &str,
    input: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut cursor: Option<String> = None;
    let mut escape = false;
    let mut failures = 0;
    loop {
        let opts = AttachOptions {
            protocol: Protocol::Cursor,
            cursor: cursor.clone(),
            size: Some(local_size()),
        };
        let mut ws = match c.attach_terminal(name, id, &opts).await {
            Ok(ws) => ws,
            Err(e) if failures > 0 && failures < RECONNECTS && e.code().is_none() => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let session = Session {
            ws: &mut ws,
            cursor: &mut cursor,
            escape: &mut escape,
        };
        let outcome = session
            .run(input, &mut winch, &mut term, &mut hup, &mut failures)
            .await;
        match outcome {
            Outcome::Lost(why) if failures < RECONNECTS => {
                failures += 1;
                tracing::debug!("connection lost ({why}); reconnecting");
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
            }
            other => return Ok(other),
        }
    }
}

struct Session<'a> {
    ws: &'a mut TerminalSocket,
    cursor: &'a mut Option<String>,
    escape: &'a mut bool,
}

impl Session<'_> {
    async fn run(
        self,
        input: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        winch: &mut tokio::signal::unix::Signal,
        term: &mut tokio::signal::unix::Signal,
        hup: &mut tokio::signal::unix::Signal,
        failures: &mut u32,
    ) -> Outcome {
        let mut pending: Option<String> = None;
        let mut input_open = true;
        loop {
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        let mut out = std::io::stdout().lock();
                        if out.write_all(&b).and_then(|()| out.flush()).is_err() {
                            return Outcome::Lost("cannot write to stdout".into());
                        }
                        if let Some(c) = pending.take() {
                            *self.cursor = Some(c);
                        }
                    }
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerFrame>(&t) {
                        Ok(ServerFrame::Chunk { cursor, .. }) => pending = Some(cursor),
                        Ok(ServerFrame::Ready { cursor }) => {
                            *self.cursor = Some(cursor);
                            *failures = 0;
                        }
                        Ok(ServerFrame::Exit { code, signal, .. }) => {
                            return Outcome::Exited(code.unwrap_or_else(|| 128 + signal.unwrap_or(0)));
                        }
                        Ok(ServerFrame::Truncated { .. }) => {
                            let _ = std::io::stdout().write_all(b"\r\n[bothy: some output was lost]\r\n");
                        }
                        Ok(ServerFrame::Error { message, .. }) => {
                            let _ = write!(std::io::stderr(), "\r\n[bothy: {message}]\r\n");
                        }
                        Err(_) => {}
                    },
                    Some(Ok(Message::Close(_))) | None => return Outcome::Lost("closed".into()),
                    Some(Err(e)) => return Outcome::Lost(e.to_string()),
                    Some(Ok(_)) => {}
                },
                data = input.recv(), if input_open => {
                    let Some(data) = data else {
                        input_open = false;
                        continue;
                    };
                    let mut out = Vec::with_capacity(data.len());
                    for b in data {
                        if std::mem::take(self.escape) {
                            match b {
                                DETACH => return Outcome::Detached,
                                ESCAPE => out.push(ESCAPE),
                                other => out.extend_from_slice(&[ESCAPE, other]),
                            }
                        } else if b == ESCAPE {
                            *self.escape = true;
                        } else {
                            out.push(b);
                        }
                    }
                    if !out.is_empty() && self.ws.send(Message::Binary(out.into())).await.is_err() {
                        return Outcome::Lost("send failed".into());
                    }
                }
                _ = winch.recv() => {
                    let (cols, rows) = local_size();
                    let msg = serde_json::to_string(&Control::Resize { cols, rows }).unwrap_or_default();
                    if self.ws.send(Message::Text(msg.into())).await.is_err() {
                        return Outcome::Lost("send failed".into());
                    }
                }
                _ = term.recv() => return Outcome::Signalled(libc::SIGTERM),
                _ = hup.recv() => return Outcome::Signalled(libc::SIGHUP),
            }
        }
    }
}

/// The local terminal's size, or 80x24 when there is none.
fn local_size() -> (u16, u16) {
    for fd in [rustix::stdio::stdout(), rustix::stdio::stdin()] {
        if let Ok(ws) = termios::tcgetwinsize(fd) {
            if ws.ws_col > 0 && ws.ws_row > 0 {
                return (ws.ws_col, ws.ws_row);
            }
        }
    }
    (80, 24)
}

/// Raw mode on stdin while it lives (only when stdin is a terminal).
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Option<Self>> {
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        let fd = rustix::stdio::stdin();
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Reads stdin on a plain thread (blocking reads would keep the async runtime from shutting
/// down), polling so it notices `stop` within 100 ms. The channel closes at end of input.
fn spawn_stdin_reader(stop: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = rustix::stdio::stdin();
        let mut buf = [0u8; 4096];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [rustix::event::PollFd::new(
                &stdin,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
            // Unbuffered: a buffered reader could keep bytes that poll no longer reports.
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(_) => break,
            }
        }
    });
    rx
}
