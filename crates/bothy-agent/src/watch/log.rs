//! The event log of one watch, and the readers (clients) that follow it.
//!
//! Each watch numbers its events 1, 2, 3, … and keeps the last [`LOG_CAPACITY`] in a ring.
//! A client is nothing but a position in that ring ([`Reader`]): that is its bounded queue.
//! When the ring overtakes a slow client, the client gets an explicit `overflow` and continues
//! from the oldest event still held; a reconnecting client whose cursor has left the ring gets
//! `resync`. Nothing is ever dropped without the client being told.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bothy_api::watch::{WatchEvent, WatchEventKind};

use super::filter::{ClientFilter, Globs};

/// Events kept per watch (the retention window, counted in events).
pub const LOG_CAPACITY: usize = 65_536;

/// What makes two watches the same: they share inotify watches and their event log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// Canonical absolute path of the watched directory.
    pub root: PathBuf,
    pub recursive: bool,
    /// Sorted exclude globs.
    pub excludes: Vec<String>,
}

/// One logged event. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub kind: WatchEventKind,
    pub path: Arc<Path>,
    pub from: Option<Arc<Path>>,
    pub is_dir: bool,
    pub reason: Option<&'static str>,
}

struct Ring {
    entries: VecDeque<Entry>,
    /// Seq of the newest entry (0 = none yet).
    head: u64,
    stopped: bool,
}

/// A watch: its key, its excludes, its log, and who uses it.
pub struct Watch {
    pub id: String,
    pub key: WatchKey,
    pub excludes: Globs,
    ring: Mutex<Ring>,
    head_tx: tokio::sync::watch::Sender<u64>,
    /// Open streams. The hub drops a watch only when this is 0 and it has been idle long enough.
    pub(super) users: AtomicUsize,
    pub(super) last_used: Mutex<Instant>,
}

impl Watch {
    pub fn new(id: String, key: WatchKey, excludes: Globs) -> Self {
        Self {
            id,
            key,
            excludes,
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                head: 0,
                stopped: false,
            }),
            head_tx: tokio::sync::watch::Sender::new(0),
            users: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `path` is inside this watch (not the root itself), below its excludes.
    pub fn covers(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.key.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        if !self.key.recursive && rel.components().count() > 1 {
            return false;
        }
        !self.excludes.excludes(rel)
    }

    /// Whether directory `dir` needs an inotify watch for this watch.
    pub fn wants_dir(&self, dir: &Path) -> bool {
        dir == self.key.root || (self.key.recursive && self.covers(dir))
    }

    /// Appends events (seq is assigned here) and wakes the readers.
    pub fn append(&self, events: impl IntoIterator<Item = Entry>) {
        let head = {
            let mut ring = self.ring();
            for mut e in events {
                ring.head += 1;
                e.seq = ring.head;
                if e.kind == WatchEventKind::Stopped {
                    ring.stopped = true;
                }
                ring.entries.push_back(e);
                if ring.entries.len() > LOG_CAPACITY {
                    ring.entries.pop_front();
                }
            }
            ring.head
        };
        self.head_tx.send_replace(head);
    }

    pub fn head(&self) -> u64 {
        self.ring().head
    }

    pub fn is_stopped(&self) -> bool {
        self.ring().stopped
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    pub fn cursor(&self, seq: u64) -> String {
        format!("{}:{seq}", self.id)
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether events after `seq` are all still held.
    pub fn holds_after(&self, seq: u64) -> bool {
        let ring = self.ring();
        seq <= ring.head && ring.entries.front().is_none_or(|f| f.seq <= seq + 1)
    }

    pub fn root_str(&self) -> String {
        self.key.root.to_string_lossy().into_owned()
    }

    /// A watch-level event (not logged) for one client.
    pub fn control(
        &self,
        kind: WatchEventKind,
        seq: u64,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> WatchEvent {
        WatchEvent {
            kind,
            path: self.root_str(),
            from: None,
            is_dir: true,
            cursor: self.cursor(seq),
            resumed: None,
            reason: reason.map(str::to_string),
            message: message.map(str::to_string),
        }
    }
}

/// A cursor as clients send it back: `<watch id>:<seq>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub watch_id: String,
    pub seq: u64,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Self> {
        let (id, seq) = s.trim().rsplit_once(':')?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Self {
            watch_id: id.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

pub fn message_for(reason: &str) -> &'static str {
    match reason {
        "kernel_queue" => "the kernel's event queue overflowed; events were lost: rescan the directory, then keep consuming events",
        "client_lag" => "this client fell behind the retention window; events were lost: rescan the directory, then keep consuming events",
        "watch_limit" => "a directory could not be watched (inotify watch limit); its changes are not reported: rescan the directory",
        "expired" => "the cursor is older than the retention window: rescan the directory, then keep consuming events",
        "unknown_cursor" => "the cursor belongs to no current watch (it expired or the sandbox restarted): rescan the directory, then keep consuming events",
        "deleted" => "the watched directory was deleted",
        "moved" => "the watched directory was moved away",
        "unmounted" => "the watched directory's file system was unmounted",
        "failed" => "the watch service failed; reconnect with the last cursor (expect resync)",
        _ => "rescan the directory",
    }
}

/// One client's position in a watch's log, with its filter. Holding a reader counts as use.
pub struct Reader {
    pub watch: Arc<Watch>,
    /// Seq of the last event this client has been given (or skipped by its filter).
    pub pos: u64,
    filter: ClientFilter,
    pub done: bool,
}

impl Reader {
    /// `watch.users` must already count this reader (see `Hub::acquire`).
    pub fn new(watch: Arc<Watch>, pos: u64, filter: ClientFilter) -> Self {
        Self {
            watch,
            pos,
            filter,
            done: false,
        }
    }

    /// Up to `max` events after the current position, filtered; reports a lag as `overflow`.
    /// Sets `done` once the watch's `stopped` event has been delivered.
    pub fn read(&mut self, max: usize) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        let ring = self.watch.ring();
        let Some(first) = ring.entries.front().map(|e| e.seq) else {
            return out;
        };
        if self.pos + 1 < first {
            out.push(self.watch.control(
                WatchEventKind::Overflow,
                first - 1,
                Some("client_lag"),
                Some(message_for("client_lag")),
            ));
            self.pos = first - 1;
        }
        let start = (self.pos + 1 - first) as usize;
        for e in ring.entries.iter().skip(start) {
            if out.len() >= max {
                break;
            }
            self.pos = e.seq;
            let rel = e.path.strip_prefix(&self.watch.key.root).unwrap_or(&e.path);
            let from_rel = e
                .from
                .as_deref()
                .map(|f| f.strip_prefix(&self.watch.key.root).unwrap_or(f));
            if !self.filter.wants(e.kind, rel, from_rel) {
                continue;
            }
            if e.kind == WatchEventKind::Stopped {
                self.done = true;
            }
            out.push(WatchEvent {
                kind: e.kind,
                path: e.path.to_string_lossy().into_owned(),
                from: e.from.as_ref().map(|f| f.to_string_lossy().into_owned()),
                is_dir: e.is_dir,
                cursor: self.watch.cursor(e.seq),
                resumed: None,
                reason: e.reason.map(str::to_string),
                message: e.reason.map(|r| message_for(r).to_string()),
            });
            if self.done {
                break;
            }
        }
        out
    }

    /// Whether more events wait after the position.
    pub fn behind(&self) -> bool {
        self.watch.head() > self.pos
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.watch.touch();
        self.watch.users.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Arc<Watch> {
        let key = WatchKey {
            root: "/w".into(),
            recursive: true,
            excludes: vec![".git".into()],
        };
        Arc::new(Watch::new(
            "abc".into(),
            key,
            Globs::new(&[".git".to_string()]).unwrap(),
        ))
    }

    fn entry(kind: WatchEventKind, path: &str) -> Entry {
        Entry {
            seq: 0,
            kind,
            path: Arc::from(Path::new(path)),
            from: None,
            is_dir: false,
            reason: None,
        }
    }

    fn reader(w: &Arc<Watch>, pos: u64) -> Reader {
        w.users.fetch_add(1, Ordering::AcqRel);
        Reader::new(w.clone(), pos, ClientFilter::new(&[], None).unwrap())
    }

    #[test]
    fn covers_respects_root_recursion_and_excludes() {
        let w = watch();
        assert!(w.covers(Path::new("/w/a")));
        assert!(w.covers(Path::new("/w/a/b/c")));
        assert!(!w.covers(Path::new("/w")));
        assert!(!w.covers(Path::new("/wx/a")));
        assert!(!w.covers(Path::new("/w/.git/HEAD")));
        assert!(w.wants_dir(Path::new("/w")));
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(
            Cursor::parse("abc12:42"),
            Some(Cursor {
                watch_id: "abc12".into(),
                seq: 42
            })
        );
        assert!(Cursor::parse("x").is_none());
        assert!(Cursor::parse(":1").is_none());
        assert!(Cursor::parse("a/b:1").is_none());
        assert!(Cursor::parse("a:-1").is_none());
    }

    #[test]
    fn lagging_reader_gets_overflow_not_silence() {
        let w = watch();
        let mut r = reader(&w, 0);
        w.append((0..LOG_CAPACITY + 10).map(|i| entry(WatchEventKind::Create, &format!("/w/{i}"))));
        let got = r.read(5);
        assert_eq!(got[0].kind, WatchEventKind::Overflow);
        assert_eq!(got[0].reason.as_deref(), Some("client_lag"));
        assert_eq!(got[1].path, "/w/10");
        assert_eq!(got[1].cursor, "abc:11");
        assert!(!w.holds_after(0));
        assert!(w.holds_after(10));
        assert!(r.behind());
        drop(r);
        assert_eq!(w.users.load(Ordering::Acquire), 0);
    }

    #[test]
    fn stopped_ends_the_reader() {
        let w = watch();
        let mut r = reader(&w, 0);
        w.append([
            entry(WatchEventKind::Delete, "/w/a"),
            entry(WatchEventKind::Stopped, "/w"),
        ]);
        let got = r.read(100);
        assert_eq!(got.len(), 2);
        assert!(r.done);
        assert!(w.is_stopped());
    }
}
