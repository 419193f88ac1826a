//! Terminals: `/v1/sandboxes/{name}/terminals`.
//!
//! A terminal is a pseudo-terminal with a program on its slave side (an interactive login
//! shell by default). Its output goes into a server-side ring buffer addressed by absolute byte
//! cursors; WebSocket clients attach to it, several at a time, and a client that reconnects
//! with a cursor receives exactly the bytes it missed.
//!
//! | Method and path                         | Body / query                         | Reply            |
//! |-----------------------------------------|--------------------------------------|------------------|
//! | `POST   terminals`                      | [`CreateTerminal`]                   | 201 [`TerminalInfo`] |
//! | `GET    terminals`                      |                                      | [`TerminalList`] |
//! | `GET    terminals/{id}`                 |                                      | [`TerminalInfo`] |
//! | `POST   terminals/{id}/resize`          | [`Resize`]                           | [`TerminalInfo`] |
//! | `POST   terminals/{id}/kill`            | [`KillTerminal`] (optional)          | [`TerminalInfo`] |
//! | `DELETE terminals/{id}`                 |                                      | 204              |
//! | `GET    terminals/{id}/ws` (WebSocket)  | [`AttachQuery`]                      | 101              |
//!
//! The WebSocket frames are in [`ws`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Smallest and largest accepted terminal dimension (columns or rows).
pub const MIN_DIM: u16 = 1;
pub const MAX_DIM: u16 = 1000;

/// Default size of a terminal's output ring buffer, and its bounds.
pub const DEFAULT_BUFFER_BYTES: usize = 1024 * 1024;
pub const MIN_BUFFER_BYTES: usize = 256 * 1024;
pub const MAX_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Body of `POST terminals`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminal {
    /// Program and arguments. Default: an interactive login shell (`bash -l`, or `sh -l` where
    /// there is no bash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Working directory; relative to `/workspace` unless absolute. Default `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment on top of the sandbox's (`TERM=xterm-256color` unless given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Initial size (default 80x24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// Size of the output ring buffer in bytes (default 1 MiB, 256 KiB to 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<usize>,
}

impl CreateTerminal {
    /// Checks the request before anything starts.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(c) = &self.command {
            if c.is_empty() {
                return Err(ApiError::invalid("command is empty"));
            }
            if c.iter().any(|a| a.contains('\0')) {
                return Err(ApiError::invalid("command contains a NUL byte"));
            }
        }
        crate::command::validate_env(&self.env)?;
        check_size(self.cols.unwrap_or(80), self.rows.unwrap_or(24))?;
        if let Some(b) = self.buffer_bytes {
            if !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&b) {
                return Err(ApiError::invalid(format!(
                    "buffer_bytes must be between {MIN_BUFFER_BYTES} and {MAX_BUFFER_BYTES}"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a terminal size.
pub fn check_size(cols: u16, rows: u16) -> Result<(), ApiError> {
    let ok = |d: u16| (MIN_DIM..=MAX_DIM).contains(&d);
    if ok(cols) && ok(rows) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid dimensions {cols}x{rows}: cols and rows must be between {MIN_DIM} and {MAX_DIM}"
        )))
    }
}

/// Body of `POST terminals/{id}/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    pub cols: u16,
    pub rows: u16,
}

/// Body of `POST terminals/{id}/kill`. Without a signal the terminal's whole process tree gets
/// `SIGHUP` (what a closing terminal sends) and, if it is still alive 2 s later, `SIGKILL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillTerminal {
    /// A signal name (`INT`, `SIGTERM`) or number, sent to the whole process tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// What the API says about a terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalInfo {
    pub id: String,
    pub command: Vec<String>,
    pub cwd: String,
    /// The environment the request added (not the whole environment).
    pub env: BTreeMap<String, String>,
    pub cols: u16,
    pub rows: u16,
    pub pid: i32,
    /// RFC 3339 UTC time of creation.
    pub created_at: String,
    /// `running` or `exited`.
    pub status: TerminalStatus,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Number of the signal that ended it, if a signal did.
    pub signal: Option<i32>,
    /// Cursor after the last byte of output so far (decimal; see [`ws`]).
    pub cursor: String,
    /// Oldest cursor still in the ring buffer.
    pub buffer_start: String,
    pub buffer_bytes: usize,
    /// WebSocket clients attached now.
    pub clients: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    Running,
    Exited,
}

/// Reply of `GET terminals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalList {
    pub terminals: Vec<TerminalInfo>,
}

/// Which WebSocket framing a client speaks (see [`ws`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Cloudflare's stable xterm addon framing: raw binary output, `ready` after the replay.
    #[default]
    Stable,
    /// Cursor framing: every output chunk announced by a `chunk` frame carrying its cursor.
    Cursor,
}

/// Query of the WebSocket attach (`GET terminals/{id}/ws?protocol=cursor&cursor=1234`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachQuery {
    #[serde(default)]
    pub protocol: Protocol,
    /// Resume after this cursor: only later bytes are sent. Without it the whole buffer is
    /// replayed.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Resize the terminal on attach (both or neither).
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
}

/// WebSocket frames.
///
/// **Both framings.** Client → server: binary frames are keystrokes, written to the terminal
/// as they are; text frames are JSON control messages ([`ws::Control`]). A text frame that is
/// not a valid control message is answered with an `error` frame and the connection stays
/// open. Cursors are decimal strings: the absolute byte offset in the terminal's output.
///
/// **Stable** (`protocol=stable`, the default; Cloudflare's xterm addon works unchanged):
/// server → client binary frames are raw output; `{"type":"ready","cursor":"N"}` follows the
/// replay on every connect (N = cursor after the replayed bytes, so a client can count bytes
/// from there); `{"type":"truncated","cursor":"S"}` before the replay when bytes the client
/// asked for fell out of the buffer; `{"type":"exit","code":C,"signal":S}` then close 1000
/// when the program ends.
///
/// **Cursor** (`protocol=cursor`): every output chunk is `{"type":"chunk","cursor":"E",
/// "byteLength":N}` followed by one binary frame of N bytes, where E is the cursor *after* the
/// chunk (reconnect with `?cursor=E` to continue right after it); `ready`, `truncated` as above;
/// `{"type":"exit","code":C,"signal":S,"cursor":"E","exit":{"code":C,"signal":S,"timedOut":false}}` then close
/// 1000. Extra client messages: `{"type":"interrupt"}` (SIGINT to the foreground process
/// group), `{"type":"terminate"}` (ends the terminal). Both are accepted in stable framing too.
pub mod ws {
    use serde::{Deserialize, Serialize};

    /// A client → server control message (a text frame).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Control {
        Resize { cols: u16, rows: u16 },
        Interrupt,
        Terminate,
    }

    /// How the program ended, as the cursor framing reports it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ExitStatus {
        pub code: Option<i32>,
        pub signal: Option<i32>,
        pub timed_out: bool,
    }

    /// A server → client text frame.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum ServerFrame {
        Ready {
            cursor: String,
        },
        Chunk {
            cursor: String,
            #[serde(rename = "byteLength")]
            byte_length: usize,
        },
        Truncated {
            cursor: String,
        },
        /// The program ended. Stable framing sends `code` and `signal`; cursor framing also
        /// `cursor` and the `exit` object of Cloudflare's 1.0 framing.
        Exit {
            code: Option<i32>,
            signal: Option<i32>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            cursor: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            exit: Option<ExitStatus>,
        },
        Error {
            code: String,
            message: String,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::ws::{Control, ServerFrame};
    use super::*;

    #[test]
    fn control_messages_parse() {
        let c: Control = serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(
            c,
            Control::Resize {
                cols: 120,
                rows: 40
            }
        );
        let c: Control = serde_json::from_str(r#"{"type":"interrupt"}"#).unwrap();
        assert_eq!(c, Control::Interrupt);
        assert!(
            serde_json::from_str::<Control>(r#"{"type":"resize","cols":-1,"rows":2}"#).is_err()
        );
        assert!(serde_json::from_str::<Control>("not json").is_err());
    }

    #[test]
    fn frames_serialize_like_the_addon_expects() {
        let f = ServerFrame::Chunk {
            cursor: "10".into(),
            byte_length: 4,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"chunk","cursor":"10","byteLength":4}"#
        );
        let f = ServerFrame::Exit {
            code: Some(0),
            signal: None,
            cursor: Some("3".into()),
            exit: Some(ws::ExitStatus {
                code: Some(0),
                signal: None,
                timed_out: false,
            }),
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"exit","code":0,"signal":null,"cursor":"3","exit":{"code":0,"signal":null,"timedOut":false}}"#
        );
        let f = ServerFrame::Exit {
            code: Some(3),
            signal: None,
            cursor: None,
            exit: None,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"exit","code":3,"signal":null}"#
        );
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size(80, 24).is_ok());
        assert!(check_size(0, 24).is_err());
        assert!(check_size(80, 5000).is_err());
        let bad = CreateTerminal {
            command: Some(vec![]),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
