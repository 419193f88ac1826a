//! Typed calls for file watching (`/v1/sandboxes/{name}/watch`).

use bothy_api::watch::{WatchChanges, WatchEvent, WatchEventKind};
use http::Method;

use crate::{q, sse::SseStream, Client, ClientError};

/// What to watch and how; the query of both the stream and the polling form.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Directory (default `/workspace`; relative paths are under `/workspace`).
    pub path: Option<String>,
    /// Only report paths matching one of these globs.
    pub include: Vec<String>,
    /// `None`: the default excludes (`.git`, `node_modules`); `Some(vec![])`: none at all.
    pub exclude: Option<Vec<String>>,
    /// Only these change types (watch-level events always come).
    pub events: Vec<WatchEventKind>,
    /// `Some(false)`: only the directory's direct entries.
    pub recursive: Option<bool>,
    /// Resume after this cursor.
    pub cursor: Option<String>,
}

impl WatchOptions {
    /// The query string (without `?`).
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.path {
            parts.push(format!("path={}", q(p)));
        }
        for g in &self.include {
            parts.push(format!("include={}", q(g)));
        }
        match &self.exclude {
            None => {}
            Some(list) if list.is_empty() => parts.push("exclude=".into()),
            Some(list) => parts.extend(list.iter().map(|g| format!("exclude={}", q(g)))),
        }
        if !self.events.is_empty() {
            let list: Vec<&str> = self.events.iter().map(|k| k.as_str()).collect();
            parts.push(format!("events={}", q(&list.join(","))));
        }
        if let Some(r) = self.recursive {
            parts.push(format!("recursive={r}"));
        }
        if let Some(c) = &self.cursor {
            parts.push(format!("cursor={}", q(c)));
        }
        parts.join("&")
    }
}

/// An open watch stream.
pub struct WatchStream {
    inner: SseStream,
}

impl WatchStream {
    /// The next event; `None` when the stream ended (after `stopped`, or the connection closed).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        match self.inner.next().await? {
            None => Ok(None),
            Some(ev) => ev.json().map(Some),
        }
    }
}

impl Client {
    /// Opens a watch stream. The first event is `ready`.
    pub async fn watch(&self, name: &str, opts: &WatchOptions) -> Result<WatchStream, ClientError> {
        let path = format!("/v1/sandboxes/{name}/watch?{}", opts.query());
        let inner = self.sse(Method::GET, &path, None::<&()>).await?;
        Ok(WatchStream { inner })
    }

    /// The polling form: changes after `opts.cursor` (the first call, without a cursor, sets the
    /// watch up and returns `ready`). Waits up to `wait_ms` for something to happen.
    pub async fn watch_changes(
        &self,
        name: &str,
        opts: &WatchOptions,
        limit: Option<usize>,
        wait_ms: Option<u64>,
    ) -> Result<WatchChanges, ClientError> {
        let mut path = format!("/v1/sandboxes/{name}/watch/changes?{}", opts.query());
        if let Some(l) = limit {
            path.push_str(&format!("&limit={l}"));
        }
        if let Some(w) = wait_ms {
            path.push_str(&format!("&wait_ms={w}"));
        }
        self.json(Method::GET, &path, None::<&()>).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_every_option() {
        let o = WatchOptions {
            path: Some("/workspace/my dir".into()),
            include: vec!["*.rs".into()],
            exclude: Some(vec![]),
            events: vec![WatchEventKind::Create, WatchEventKind::Delete],
            recursive: Some(false),
            cursor: Some("ab:3".into()),
        };
        assert_eq!(
            o.query(),
            "path=%2Fworkspace%2Fmy%20dir&include=%2A%2Ers&exclude=&events=create%2Cdelete&recursive=false&cursor=ab%3A3"
        );
        assert_eq!(WatchOptions::default().query(), "");
    }
}
