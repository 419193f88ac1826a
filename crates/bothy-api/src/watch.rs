//! File watching under `/v1/sandboxes/{name}/watch`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET watch?path=P` | SSE stream of [`WatchEvent`]s (`id:` = cursor, `event:` = type) |
//! | `GET watch/changes?path=P&cursor=C` | polling form: [`WatchChanges`] since a cursor |
//!
//! Query parameters of both: `path` (directory, default `/workspace`), `recursive` (default
//! true), `include` and `exclude` (globs, repeatable; a glob without `/` matches any path
//! component, one with `/` the path relative to the watched directory; giving any `exclude`
//! replaces the defaults [`DEFAULT_EXCLUDES`], and `exclude=` alone disables them), `events`
//! (comma-separated types to deliver), `cursor` (resume; for SSE also the `Last-Event-ID`
//! header). The polling form also takes `limit` (events per reply) and `wait_ms` (long-poll).

use serde::{Deserialize, Serialize};

/// Directories not watched unless the client overrides `exclude`.
pub const DEFAULT_EXCLUDES: &[&str] = &[".git", "node_modules"];

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventKind {
    /// The watch is in place: nothing that happens after this is missed. First event of a
    /// stream (and of the first poll). `resumed` says whether replay from the cursor follows.
    Ready,
    /// A file or directory appeared (also reported for entries found in a directory that was
    /// created or moved in before its own watch existed).
    Create,
    /// A file opened for writing was closed (one event per close, not per write).
    Modify,
    Delete,
    /// A rename with both ends under the watch: `from` → `path`. A rename out of the watch is a
    /// `delete`, into it a `create`.
    Move,
    /// Permissions, ownership, timestamps or link count changed.
    Attrib,
    /// Events were lost (kernel queue overflow, a client too slow for the retention window, or
    /// the watch limit): rescan the directory, then keep consuming events.
    Overflow,
    /// The cursor given on resume is outside the retention window (or unknown, e.g. the agent
    /// restarted): rescan, then keep consuming events.
    Resync,
    /// The watched directory was deleted, moved away or unmounted (or, `failed`, the watch
    /// service broke: reconnect); the stream ends.
    Stopped,
}

impl WatchEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Create => "create",
            Self::Modify => "modify",
            Self::Delete => "delete",
            Self::Move => "move",
            Self::Attrib => "attrib",
            Self::Overflow => "overflow",
            Self::Resync => "resync",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ready" => Self::Ready,
            "create" => Self::Create,
            "modify" => Self::Modify,
            "delete" => Self::Delete,
            "move" => Self::Move,
            "attrib" => Self::Attrib,
            "overflow" => Self::Overflow,
            "resync" => Self::Resync,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }

    /// Events about a path, as opposed to events about the watch itself. Only these can be
    /// filtered out by the client's `events=` list.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Modify | Self::Delete | Self::Move | Self::Attrib
        )
    }
}

/// One event of a watch (the `data:` of an SSE event, or an element of [`WatchChanges`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventKind,
    /// Absolute path in the sandbox. For a `move`, the destination; for watch-level events, the
    /// watched directory.
    pub path: String,
    /// Source of a `move`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub is_dir: bool,
    /// Resume point: reconnect with `cursor=` this value to get what follows.
    pub cursor: String,
    /// For `ready`: whether events since the client's cursor follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// Machine reason of `overflow`, `resync` and `stopped` (`kernel_queue`, `client_lag`,
    /// `watch_limit`, `expired`, `unknown_cursor`, `deleted`, `moved`, `unmounted`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do about it, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Reply of `GET watch/changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChanges {
    /// Pass this as `cursor` on the next poll.
    pub cursor: String,
    pub events: Vec<WatchEvent>,
    /// More events are already waiting (the reply hit `limit`).
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() {
        let e = WatchEvent {
            kind: WatchEventKind::Move,
            path: "/workspace/b".into(),
            from: Some("/workspace/a".into()),
            is_dir: false,
            cursor: "w1:7".into(),
            resumed: None,
            reason: None,
            message: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"move","path":"/workspace/b","from":"/workspace/a","is_dir":false,"cursor":"w1:7"}"#
        );
        for k in ["ready", "create", "move", "stopped", "resync"] {
            assert_eq!(WatchEventKind::parse(k).unwrap().as_str(), k);
        }
        assert!(WatchEventKind::parse("nope").is_none());
    }
}
