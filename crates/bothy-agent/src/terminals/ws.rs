//! One WebSocket client of a terminal, in either framing (see `bothy_api::terminal::ws`).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bothy_api::terminal::ws::{Control, ExitStatus, ServerFrame};
use bothy_api::terminal::{check_size, Protocol};
use bytes::Bytes;

use super::ring::Read;
use super::terminal::Terminal;
use crate::reaper::ExitInfo;

/// Largest output frame sent to a client.
const MAX_FRAME: usize = 64 * 1024;

/// Where the client starts and how it wants its frames.
pub struct Attach {
    pub protocol: Protocol,
    /// Resume after this cursor; `None` replays the whole buffer.
    pub cursor: Option<u64>,
}

/// Serves one client until it leaves or the terminal exits.
pub async fn serve(mut socket: WebSocket, term: Arc<Terminal>, attach: Attach) {
    let _guard = term.attach();
    let mut rx = term.subscribe();
    let mut cursor = attach.cursor.unwrap_or_else(|| term.buffer_start());
    let proto = attach.protocol;

    // Replay what the client missed, then `ready`.
    if send_output(&mut socket, &term, proto, &mut cursor)
        .await
        .is_err()
    {
        return;
    }
    let ready = ServerFrame::Ready {
        cursor: cursor.to_string(),
    };
    if send_frame(&mut socket, &ready).await.is_err() {
        return;
    }

    loop {
        // The exit goes out once the client has every byte written before it.
        let snap = term.snapshot();
        if let Some(exit) = snap.exit {
            if cursor >= snap.end {
                send_exit(&mut socket, proto, cursor, exit).await;
                return;
            }
        }
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                match msg {
                    Message::Binary(data) => {
                        if let Err(e) = term.write_input(&data).await {
                            tracing::debug!(terminal = %term.id, "input write failed: {e}");
                        }
                    }
                    Message::Text(text) => {
                        if let Err(message) = control(&term, text.as_str()) {
                            let f = ServerFrame::Error { code: "invalid_request".into(), message };
                            if send_frame(&mut socket, &f).await.is_err() {
                                return;
                            }
                        }
                    }
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if send_output(&mut socket, &term, proto, &mut cursor).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_exit(socket: &mut WebSocket, proto: Protocol, cursor: u64, exit: ExitInfo) {
    let cursor_framing = proto == Protocol::Cursor;
    let f = ServerFrame::Exit {
        code: exit.code,
        signal: exit.signal,
        cursor: cursor_framing.then(|| cursor.to_string()),
        exit: cursor_framing.then_some(ExitStatus {
            code: exit.code,
            signal: exit.signal,
            timed_out: false,
        }),
    };
    let _ = send_frame(socket, &f).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "terminal exited".into(),
        })))
        .await;
}

/// Applies a control message; the error is the message for the client's `error` frame.
fn control(term: &Arc<Terminal>, text: &str) -> Result<(), String> {
    let c: Control = serde_json::from_str(text).map_err(|e| {
        format!("invalid control message: {e} (expected resize, interrupt or terminate)")
    })?;
    match c {
        Control::Resize { cols, rows } => {
            check_size(cols, rows).map_err(|e| e.message)?;
            term.resize(cols, rows)
                .map_err(|e| format!("resize failed: {e}"))?;
        }
        Control::Interrupt => term.interrupt(),
        Control::Terminate => term.terminate(),
    }
    Ok(())
}

/// Sends everything from `cursor` to the end of the output, advancing `cursor`.
async fn send_output(
    socket: &mut WebSocket,
    term: &Terminal,
    proto: Protocol,
    cursor: &mut u64,
) -> Result<(), axum::Error> {
    loop {
        match term.read_from(*cursor, MAX_FRAME) {
            Read::Bytes { data, next } => {
                if data.is_empty() {
                    return Ok(());
                }
                if proto == Protocol::Cursor {
                    let f = ServerFrame::Chunk {
                        cursor: next.to_string(),
                        byte_length: data.len(),
                    };
                    send_frame(socket, &f).await?;
                }
                socket.send(Message::Binary(Bytes::from(data))).await?;
                *cursor = next;
            }
            Read::Truncated { start } => {
                let f = ServerFrame::Truncated {
                    cursor: start.to_string(),
                };
                send_frame(socket, &f).await?;
                *cursor = start;
            }
            // Checked when the client attached, and the end only grows.
            Read::Ahead { end } => {
                *cursor = end;
                return Ok(());
            }
        }
    }
}

async fn send_frame(socket: &mut WebSocket, f: &ServerFrame) -> Result<(), axum::Error> {
    let text = serde_json::to_string(f).unwrap_or_else(|_| r#"{"type":"error"}"#.into());
    socket.send(Message::Text(text.into())).await
}
