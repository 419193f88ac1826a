//! The hub: one inotify instance for the whole agent, driven by one thread.
//!
//! Why a thread and not a task: following a tree costs blocking directory walks (a `git clone`
//! or `cp -r` lands thousands of directories at once); on the agent's single-threaded runtime
//! those would stall every other request. The thread owns the inotify fd, the registry
//! (watch descriptor ↔ directory) and the pending batch; the async side only reads the per-watch
//! logs ([`Watch`]) and asks for new watches over a channel (woken through an eventfd).
//!
//! One instance per agent because `fs.inotify.max_user_instances` is small (128 per user on
//! the machines we run on) and shared by every sandbox. Watches with the same key share the
//! inotify watches and the event log; overlapping keys share inotify watches.
//!
//! Semantics:
//! - A directory that appears (created, or moved in from outside the watch) is watched first and
//!   then listed; what the listing finds is reported as `create` (so `mkdir -p a/b/c && touch
//!   a/b/c/f` reports all four). A real event for a path already reported by a listing is
//!   dropped, so each path is reported once (in a rare race, twice; never zero times).
//! - `IN_MOVED_FROM`/`IN_MOVED_TO` with one cookie become one `move`; an unpaired
//!   `IN_MOVED_FROM` (nothing follows within [`MOVE_WAIT`]) is a `delete`.
//! - Events are held until the directory has been quiet for [`COALESCE_QUIET`], at most
//!   [`COALESCE`] after the first one, and an event identical in type and path to the previous
//!   event for that path in the batch is merged into it. (An isolated change is delivered after
//!   ~2 ms; a burst is cut into 10 ms batches.) Different types are never merged, so
//!   `create, modify, delete` stays three events.
//! - `IN_Q_OVERFLOW` becomes `overflow` for every watch, after which every tree is walked again
//!   to pick up directories whose creation was lost.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bothy_api::watch::WatchEventKind;
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::io::Errno;

use super::filter::Globs;
use super::log::{Entry, Watch, WatchKey};

/// How long events are held for coalescing.
pub const COALESCE: Duration = Duration::from_millis(10);
/// A batch is delivered early once no event came for this long.
pub const COALESCE_QUIET: Duration = Duration::from_millis(2);
/// How long an `IN_MOVED_FROM` waits for its `IN_MOVED_TO`.
pub const MOVE_WAIT: Duration = Duration::from_millis(2);
/// A watch nobody streams or polls is dropped after this long.
pub const IDLE_TTL: Duration = Duration::from_secs(300);
/// Distinct watches (keys) one agent keeps at most; each holds up to a full event log.
pub const MAX_WATCHES: usize = 256;
/// Pending events beyond which the batch is flushed early.
const MAX_PENDING: usize = 50_000;
/// A listed path whose real `IN_CREATE` has not come within this long is forgotten.
const SYNTH_TTL: Duration = Duration::from_secs(5);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::EXCL_UNLINK);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot start inotify")]
    Start(#[source] std::io::Error),
    #[error("cannot watch {path}")]
    Root {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("too many distinct watches ({MAX_WATCHES}); close some or share one")]
    TooMany,
    #[error("the watch service stopped")]
    Gone,
}

/// The watches that exist, shared by the hub thread and the handlers.
#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Watch>>,
    live: HashMap<WatchKey, Arc<Watch>>,
}

enum Cmd {
    Open {
        key: WatchKey,
        excludes: Globs,
        reply: tokio::sync::oneshot::Sender<Result<Arc<Watch>, HubError>>,
    },
}

/// Handle on the hub thread. Dropping it stops the thread.
pub struct Hub {
    cmd_tx: mpsc::Sender<Cmd>,
    wake: Arc<OwnedFd>,
    table: Arc<Mutex<Table>>,
    /// Cleared when the thread ends (a panic included), so the service can start another.
    alive: Arc<AtomicBool>,
}

impl Hub {
    pub fn start() -> Result<Self, HubError> {
        let io = |e: Errno| HubError::Start(e.into());
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .map_err(io)?;
        let wake =
            Arc::new(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).map_err(io)?);
        let table = Arc::new(Mutex::new(Table::default()));
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let state = State {
            alive: alive.clone(),
            fd,
            wake: wake.clone(),
            cmds: cmd_rx,
            table: table.clone(),
            keys: Vec::new(),
            wds: HashMap::new(),
            by_path: HashMap::new(),
            pending: Vec::new(),
            pending_since: None,
            pending_last: None,
            last_by_path: HashMap::new(),
            moves: HashMap::new(),
            synth: HashMap::new(),
            limit_reported: false,
        };
        std::thread::Builder::new()
            .name("bothy-watch".into())
            .spawn(move || state.run())
            .map_err(HubError::Start)?;
        Ok(Self {
            cmd_tx,
            wake,
            table,
            alive,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(&self) {
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    /// The live watch for `key`, created (tree fully watched) if needed, counted as used by
    /// one more client: the caller must hand it to a [`super::log::Reader`].
    pub async fn open(&self, key: WatchKey, excludes: Globs) -> Result<Arc<Watch>, HubError> {
        loop {
            if let Some(w) = self.acquire_live(&key) {
                return Ok(w);
            }
            let (reply, rx) = tokio::sync::oneshot::channel();
            self.cmd_tx
                .send(Cmd::Open {
                    key: key.clone(),
                    excludes: excludes.clone(),
                    reply,
                })
                .map_err(|_| HubError::Gone)?;
            self.kick();
            let w = rx.await.map_err(|_| HubError::Gone)??;
            if self.acquire(&w) {
                return Ok(w);
            }
        }
    }

    fn acquire_live(&self, key: &WatchKey) -> Option<Arc<Watch>> {
        let t = self.table();
        let w = t.live.get(key)?.clone();
        w.users.fetch_add(1, Ordering::AcqRel);
        w.touch();
        Some(w)
    }

    fn acquire(&self, w: &Arc<Watch>) -> bool {
        let t = self.table();
        if !t.by_id.contains_key(&w.id) {
            return false;
        }
        w.users.fetch_add(1, Ordering::AcqRel);
        w.touch();
        true
    }

    /// The watch with this id (live or stopped, until it expires), counted as used.
    pub fn acquire_id(&self, id: &str) -> Option<Arc<Watch>> {
        let t = self.table();
        let w = t.by_id.get(id)?.clone();
        w.users.fetch_add(1, Ordering::AcqRel);
        w.touch();
        Some(w)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The thread sees the channel closed once woken.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.cmd_tx, tx));
        self.kick();
    }
}

/// A hub-level event waiting for the coalescing window to end.
enum Pending {
    Change {
        kind: WatchEventKind,
        path: Arc<Path>,
        is_dir: bool,
        /// Listed entries of a directory moved within the tree: only for watches that did not
        /// already see the source (this is where the entry was before the move).
        unless_covers: Option<PathBuf>,
    },
    /// An `IN_MOVED_FROM` still waiting for its pair.
    MoveFrom {
        from: Arc<Path>,
        is_dir: bool,
    },
    Move {
        from: Arc<Path>,
        to: Arc<Path>,
        is_dir: bool,
    },
    Overflow {
        reason: &'static str,
    },
    Stopped {
        watch_id: String,
        reason: &'static str,
    },
}

struct KeyState {
    watch: Arc<Watch>,
    root_wd: i32,
    stopping: bool,
}

/// How a walk reports what it finds.
enum Emit {
    Nothing,
    All,
    /// Entries of `to` that were at the same place under `from` before a move.
    UnlessCovered {
        from: PathBuf,
        to: PathBuf,
    },
}

struct State {
    alive: Arc<AtomicBool>,
    fd: OwnedFd,
    wake: Arc<OwnedFd>,
    cmds: mpsc::Receiver<Cmd>,
    table: Arc<Mutex<Table>>,
    keys: Vec<KeyState>,
    wds: HashMap<i32, Arc<Path>>,
    by_path: HashMap<Arc<Path>, i32>,
    pending: Vec<Pending>,
    pending_since: Option<Instant>,
    /// When the newest pending event came.
    pending_last: Option<Instant>,
    /// Type of the last pending event per path (`None`: a move, never merged).
    last_by_path: HashMap<Arc<Path>, Option<WatchEventKind>>,
    /// Unpaired `IN_MOVED_FROM` by cookie: index in `pending`, when seen.
    moves: HashMap<u32, (usize, Instant)>,
    /// Paths reported by a listing, whose real `IN_CREATE` may still come.
    synth: HashMap<Arc<Path>, Instant>,
    limit_reported: bool,
}

impl State {
    fn run(mut self) {
        // Aligned for `inotify_event` by `Reader::new`.
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 256 * 1024];
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let now = Instant::now();
            let mut deadline = next_housekeeping;
            if let (Some(s), Some(l)) = (self.pending_since, self.pending_last) {
                deadline = deadline.min(s + COALESCE).min(l + COALESCE_QUIET);
            }
            if let Some(m) = self.moves.values().map(|(_, at)| *at).min() {
                deadline = deadline.min(m + MOVE_WAIT);
            }
            let timeout = deadline.saturating_duration_since(now);
            let ts = rustix::event::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: timeout.subsec_nanos() as i64,
            };
            let (inotify_ready, wake_ready) = {
                let mut fds = [
                    PollFd::new(&self.fd, PollFlags::IN),
                    PollFd::new(&*self.wake, PollFlags::IN),
                ];
                match poll(&mut fds, Some(&ts)) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => {
                        tracing::error!("watch: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if wake_ready {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&*self.wake, &mut b);
            }
            loop {
                match self.cmds.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if inotify_ready {
                self.read_events(&mut buf);
            }
            let now = Instant::now();
            self.tick(now);
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING;
            }
        }
    }

    /// Delivers the pending batch if its time has come (see the module docs).
    fn tick(&mut self, now: Instant) {
        self.resolve_moves(Some(now));
        let (due, overdue) = match (self.pending_since, self.pending_last) {
            (Some(s), Some(l)) => {
                let overdue = now >= s + COALESCE || self.pending.len() >= MAX_PENDING;
                (overdue || now >= l + COALESCE_QUIET, overdue)
            }
            _ => (false, false),
        };
        if due {
            if overdue {
                // A stream of moves out of the tree must not hold the batch back forever:
                // a pair split across the cap is reported as delete + create.
                self.resolve_moves(None);
            }
            if self.moves.is_empty() {
                self.flush();
            }
        }
    }

    fn read_events(&mut self, buf: &mut [MaybeUninit<u8>]) {
        let fd = self.fd.try_clone();
        let Ok(fd) = fd else { return };
        let mut reader = inotify::Reader::new(fd.as_fd(), buf);
        // Bounded, so a flood cannot starve flushes and commands (stopping only when the
        // buffer is drained: events left in it would be lost).
        let mut n = 0usize;
        loop {
            if n >= 100_000 && reader.is_buffer_empty() {
                return;
            }
            n += 1;
            match reader.next() {
                Ok(ev) => {
                    let (wd, mask, cookie) = (ev.wd(), ev.events(), ev.cookie());
                    let name = ev.file_name().map(CStr::to_bytes).map(<[u8]>::to_vec);
                    self.raw(wd, mask, cookie, name.as_deref());
                }
                Err(Errno::AGAIN) | Err(Errno::INTR) => return,
                Err(e) => {
                    tracing::error!("watch: inotify read failed: {e}");
                    return;
                }
            }
            if self.pending.len() >= MAX_PENDING {
                self.resolve_moves(None);
                self.flush();
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open {
                key,
                excludes,
                reply,
            } => {
                let _ = reply.send(self.open(key, excludes));
            }
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&mut self, key: WatchKey, excludes: Globs) -> Result<Arc<Watch>, HubError> {
        if let Some(w) = self.table().live.get(&key) {
            return Ok(w.clone());
        }
        if self.table().by_id.len() >= MAX_WATCHES {
            return Err(HubError::TooMany);
        }
        let root: Arc<Path> = Arc::from(key.root.as_path());
        let root_wd = self.add_watch(&root).map_err(|e| HubError::Root {
            path: root.to_string_lossy().into_owned(),
            source: e.into(),
        })?;
        let id = format!("{:016x}", rand::random::<u64>());
        let watch = Arc::new(Watch::new(id.clone(), key.clone(), excludes));
        self.keys.push(KeyState {
            watch: watch.clone(),
            root_wd,
            stopping: false,
        });
        {
            let mut t = self.table();
            t.by_id.insert(id, watch.clone());
            t.live.insert(key, watch.clone());
        }
        self.ensure_tree(&root, Emit::Nothing);
        Ok(watch)
    }

    fn add_watch(&mut self, dir: &Path) -> Result<i32, Errno> {
        let wd = inotify::add_watch(&self.fd, dir, MASK)?;
        let path: Arc<Path> = Arc::from(dir);
        if let Some(old) = self.wds.insert(wd, path.clone()) {
            if *old != *dir {
                self.by_path.remove(&old);
            }
        }
        self.by_path.insert(path, wd);
        Ok(wd)
    }

    fn forget_wd(&mut self, wd: i32) {
        if let Some(p) = self.wds.remove(&wd) {
            if self.by_path.get(&p) == Some(&wd) {
                self.by_path.remove(&p);
            }
        }
    }

    fn wanted_dir(&self, dir: &Path) -> bool {
        self.keys
            .iter()
            .any(|k| !k.stopping && k.watch.wants_dir(dir))
    }

    /// Watches `dir` and every wanted directory below it, reporting entries as `emit` says.
    /// Stays on one file system, like `find -xdev`: a mount inside the tree (`/proc` under a
    /// watch of `/`) is reported as a directory but not followed.
    fn ensure_tree(&mut self, dir: &Path, emit: Emit) {
        use std::os::unix::fs::MetadataExt;
        let mut stack: Vec<(PathBuf, Option<u64>)> = vec![(dir.to_path_buf(), None)];
        while let Some((d, parent_dev)) = stack.pop() {
            if !self.wanted_dir(&d) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&d) else {
                continue;
            };
            if parent_dev.is_some_and(|p| p != meta.dev()) {
                continue;
            }
            match self.add_watch(&d) {
                Ok(_) => {}
                Err(Errno::NOSPC) => {
                    tracing::warn!("watch: inotify watch limit reached at {}", d.display());
                    if !self.limit_reported {
                        self.limit_reported = true;
                        self.push(Pending::Overflow {
                            reason: "watch_limit",
                        });
                    }
                    continue;
                }
                // Gone or replaced by a file since it was seen: its own events say so.
                Err(_) => continue,
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for ent in entries.flatten() {
                let p = ent.path();
                let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
                let unless = match &emit {
                    Emit::Nothing => None,
                    Emit::All => Some(None),
                    Emit::UnlessCovered { from, to } => {
                        Some(p.strip_prefix(to).ok().map(|rel| from.join(rel)))
                    }
                };
                if let Some(unless_covers) = unless {
                    let path: Arc<Path> = Arc::from(p.as_path());
                    self.synth.insert(path.clone(), Instant::now());
                    self.push_change(WatchEventKind::Create, path, is_dir, unless_covers);
                }
                if is_dir {
                    stack.push((p, Some(meta.dev())));
                }
            }
        }
    }

    fn push(&mut self, p: Pending) {
        self.pending.push(p);
        let now = Instant::now();
        self.pending_since.get_or_insert(now);
        self.pending_last = Some(now);
    }

    fn push_change(
        &mut self,
        kind: WatchEventKind,
        path: Arc<Path>,
        is_dir: bool,
        unless_covers: Option<PathBuf>,
    ) {
        if unless_covers.is_none() && self.last_by_path.get(&path) == Some(&Some(kind)) {
            return; // coalesced: same type as the previous event for this path
        }
        self.last_by_path.insert(path.clone(), Some(kind));
        self.push(Pending::Change {
            kind,
            path,
            is_dir,
            unless_covers,
        });
    }

    fn raw(&mut self, wd: i32, mask: ReadFlags, cookie: u32, name: Option<&[u8]>) {
        if mask.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.overflow();
            return;
        }
        if mask.contains(ReadFlags::IGNORED) {
            self.forget_wd(wd);
            return;
        }
        let Some(dir) = self.wds.get(&wd).cloned() else {
            return;
        };
        let Some(name) = name else {
            // Events about the watched directory itself; the parent reports the rest.
            let reason = if mask.contains(ReadFlags::DELETE_SELF) {
                "deleted"
            } else if mask.contains(ReadFlags::MOVE_SELF) {
                "moved"
            } else if mask.contains(ReadFlags::UNMOUNT) {
                "unmounted"
            } else {
                return;
            };
            self.stop_roots(wd, reason);
            return;
        };
        let path: Arc<Path> = Arc::from(dir.join(OsStr::from_bytes(name)).as_path());
        let is_dir = mask.contains(ReadFlags::ISDIR);
        if mask.contains(ReadFlags::CREATE) {
            if self.synth.remove(&path).is_some() {
                return; // already reported by the listing of its directory
            }
            self.push_change(WatchEventKind::Create, path.clone(), is_dir, None);
            if is_dir {
                self.ensure_tree(&path, Emit::All);
            }
        } else if mask.contains(ReadFlags::CLOSE_WRITE) {
            self.push_change(WatchEventKind::Modify, path, is_dir, None);
        } else if mask.contains(ReadFlags::ATTRIB) {
            self.push_change(WatchEventKind::Attrib, path, is_dir, None);
        } else if mask.contains(ReadFlags::DELETE) {
            self.synth.remove(&path);
            self.push_change(WatchEventKind::Delete, path, is_dir, None);
        } else if mask.contains(ReadFlags::MOVED_FROM) {
            self.synth.remove(&path);
            self.last_by_path.insert(path.clone(), None);
            self.moves
                .insert(cookie, (self.pending.len(), Instant::now()));
            self.push(Pending::MoveFrom { from: path, is_dir });
        } else if mask.contains(ReadFlags::MOVED_TO) {
            self.moved_to(cookie, path, is_dir);
        }
    }

    fn moved_to(&mut self, cookie: u32, to: Arc<Path>, is_dir: bool) {
        self.synth.remove(&to);
        let Some((idx, _)) = self.moves.remove(&cookie) else {
            // Moved in from outside every watched directory.
            self.push_change(WatchEventKind::Create, to.clone(), is_dir, None);
            if is_dir {
                self.ensure_tree(&to, Emit::All);
            }
            return;
        };
        let Some(Pending::MoveFrom { from, .. }) = self.pending.get(idx) else {
            return;
        };
        let from = from.clone();
        self.pending[idx] = Pending::Move {
            from: from.clone(),
            to: to.clone(),
            is_dir,
        };
        self.last_by_path.insert(to.clone(), None);
        if is_dir {
            self.rename_subtree(&from, &to);
            let needs_walk = self
                .keys
                .iter()
                .any(|k| !k.stopping && k.watch.wants_dir(&to) && !k.watch.wants_dir(&from));
            self.prune();
            if needs_walk {
                self.ensure_tree(
                    &to,
                    Emit::UnlessCovered {
                        from: from.to_path_buf(),
                        to: to.to_path_buf(),
                    },
                );
            }
        }
    }

    /// Unpaired moves older than [`MOVE_WAIT`] (all of them with `None`) become deletes.
    fn resolve_moves(&mut self, now: Option<Instant>) {
        let due: Vec<u32> = self
            .moves
            .iter()
            .filter(|(_, (_, at))| now.is_none_or(|n| n >= *at + MOVE_WAIT))
            .map(|(c, _)| *c)
            .collect();
        for cookie in due {
            let Some((idx, _)) = self.moves.remove(&cookie) else {
                continue;
            };
            if let Some(Pending::MoveFrom { from, is_dir }) = self.pending.get(idx) {
                let (from, is_dir) = (from.clone(), *is_dir);
                if is_dir {
                    // It lives outside the watch now: stop following it.
                    self.remove_subtree(&from);
                }
                self.pending[idx] = Pending::Change {
                    kind: WatchEventKind::Delete,
                    path: from,
                    is_dir,
                    unless_covers: None,
                };
            }
        }
    }

    fn under<'a>(p: &'a Path, prefix: &Path) -> Option<&'a Path> {
        p.strip_prefix(prefix).ok()
    }

    fn rename_subtree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(i32, PathBuf)> = self
            .wds
            .iter()
            .filter_map(|(wd, p)| Self::under(p, from).map(|rel| (*wd, to.join(rel))))
            .collect();
        for (wd, new) in moved {
            let new: Arc<Path> = Arc::from(new.as_path());
            if let Some(old) = self.wds.insert(wd, new.clone()) {
                if self.by_path.get(&old) == Some(&wd) {
                    self.by_path.remove(&old);
                }
            }
            self.by_path.insert(new, wd);
        }
    }

    fn remove_subtree(&mut self, dir: &Path) {
        let gone: Vec<i32> = self
            .wds
            .iter()
            .filter(|(_, p)| Self::under(p, dir).is_some())
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = inotify::remove_watch(&self.fd, wd);
            self.forget_wd(wd);
        }
    }

    /// Drops inotify watches no watch wants any more.
    fn prune(&mut self) {
        let gone: Vec<i32> = self
            .wds
            .iter()
            .filter(|(wd, p)| {
                !self.wanted_dir(p) && !self.keys.iter().any(|k| !k.stopping && k.root_wd == **wd)
            })
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            let _ = inotify::remove_watch(&self.fd, wd);
            self.forget_wd(wd);
        }
    }

    fn stop_roots(&mut self, wd: i32, reason: &'static str) {
        let mut stopped = Vec::new();
        for k in self.keys.iter_mut() {
            if k.root_wd == wd && !k.stopping {
                k.stopping = true;
                stopped.push(k.watch.clone());
            }
        }
        for w in stopped {
            {
                let mut t = self.table();
                if t.live.get(&w.key).is_some_and(|l| l.id == w.id) {
                    t.live.remove(&w.key);
                }
            }
            self.push(Pending::Stopped {
                watch_id: w.id.clone(),
                reason,
            });
        }
    }

    fn overflow(&mut self) {
        tracing::warn!("watch: inotify queue overflow");
        self.resolve_moves(None);
        self.synth.clear();
        self.push(Pending::Overflow {
            reason: "kernel_queue",
        });
        let roots: Vec<PathBuf> = self
            .keys
            .iter()
            .filter(|k| !k.stopping)
            .map(|k| k.watch.key.root.clone())
            .collect();
        for r in roots {
            self.ensure_tree(&r, Emit::Nothing);
        }
    }

    /// Hands the pending batch to every watch it concerns.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.pending_since = None;
        self.pending_last = None;
        self.last_by_path.clear();
        for k in &self.keys {
            let w = &k.watch;
            let mut out = Vec::new();
            let entry = |kind, path: &Arc<Path>, from: Option<&Arc<Path>>, is_dir, reason| Entry {
                seq: 0,
                kind,
                path: path.clone(),
                from: from.cloned(),
                is_dir,
                reason,
            };
            let root: Arc<Path> = Arc::from(w.key.root.as_path());
            for p in &pending {
                match p {
                    Pending::Change {
                        kind,
                        path,
                        is_dir,
                        unless_covers,
                    } => {
                        if w.covers(path) && !unless_covers.as_ref().is_some_and(|f| w.covers(f)) {
                            out.push(entry(*kind, path, None, *is_dir, None));
                        }
                    }
                    Pending::MoveFrom { from, is_dir } => {
                        if w.covers(from) {
                            out.push(entry(WatchEventKind::Delete, from, None, *is_dir, None));
                        }
                    }
                    Pending::Move { from, to, is_dir } => match (w.covers(from), w.covers(to)) {
                        (true, true) => {
                            out.push(entry(WatchEventKind::Move, to, Some(from), *is_dir, None))
                        }
                        (true, false) => {
                            out.push(entry(WatchEventKind::Delete, from, None, *is_dir, None))
                        }
                        (false, true) => {
                            out.push(entry(WatchEventKind::Create, to, None, *is_dir, None))
                        }
                        (false, false) => {}
                    },
                    Pending::Overflow { reason } => out.push(entry(
                        WatchEventKind::Overflow,
                        &root,
                        None,
                        true,
                        Some(reason),
                    )),
                    Pending::Stopped { watch_id, reason } => {
                        if *watch_id == w.id {
                            out.push(entry(
                                WatchEventKind::Stopped,
                                &root,
                                None,
                                true,
                                Some(reason),
                            ))
                        }
                    }
                }
            }
            if !out.is_empty() {
                w.append(out);
            }
        }
        if self.keys.iter().any(|k| k.stopping) {
            self.keys.retain(|k| !k.stopping);
            self.prune();
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.synth
            .retain(|_, at| now.duration_since(*at) < SYNTH_TTL);
        let expired: Vec<String> = {
            let mut t = self.table();
            let ids: Vec<String> = t
                .by_id
                .values()
                .filter(|w| {
                    w.users.load(Ordering::Acquire) == 0
                        && now
                            .duration_since(*w.last_used.lock().unwrap_or_else(|e| e.into_inner()))
                            >= IDLE_TTL
                })
                .map(|w| w.id.clone())
                .collect();
            for id in &ids {
                if let Some(w) = t.by_id.remove(id) {
                    if t.live.get(&w.key).is_some_and(|l| l.id == w.id) {
                        t.live.remove(&w.key);
                    }
                }
            }
            ids
        };
        if !expired.is_empty() && self.pending.is_empty() {
            self.keys.retain(|k| !expired.contains(&k.watch.id));
            self.prune();
        } else if !expired.is_empty() {
            // Let the batch reach them first; they go at the next round.
            for k in self.keys.iter_mut() {
                if expired.contains(&k.watch.id) {
                    k.stopping = true;
                }
            }
        }
    }
}

/// However the thread ends (a bug that panics included), every open stream is told with
/// `stopped` (`failed`) rather than left waiting on a dead watch; clients reconnect and get a
/// fresh hub (and `resync`).
impl Drop for State {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        for k in &self.keys {
            k.watch.append([Entry {
                seq: 0,
                kind: WatchEventKind::Stopped,
                path: Arc::from(k.watch.key.root.as_path()),
                from: None,
                is_dir: true,
                reason: Some("failed"),
            }]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub state without its thread, so a test decides when events are read.
    fn state() -> State {
        let fd =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        let wake = Arc::new(eventfd(0, EventfdFlags::NONBLOCK).unwrap());
        let (_tx, cmds) = mpsc::channel();
        State {
            alive: Arc::new(AtomicBool::new(true)),
            fd,
            wake,
            cmds,
            table: Arc::default(),
            keys: Vec::new(),
            wds: HashMap::new(),
            by_path: HashMap::new(),
            pending: Vec::new(),
            pending_since: None,
            pending_last: None,
            last_by_path: HashMap::new(),
            moves: HashMap::new(),
            synth: HashMap::new(),
            limit_reported: false,
        }
    }

    fn key(root: &Path) -> (WatchKey, Globs) {
        let key = WatchKey {
            root: root.to_path_buf(),
            recursive: true,
            excludes: vec![],
        };
        (key, Globs::new(&[]).unwrap())
    }

    fn pump(st: &mut State) {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 256 * 1024];
        st.read_events(&mut buf);
        std::thread::sleep(MOVE_WAIT);
        st.resolve_moves(Some(Instant::now()));
        st.flush();
    }

    #[test]
    fn kernel_queue_overflow_is_reported_and_the_tree_is_followed_again() {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        if max > 200_000 {
            eprintln!("skipping: max_queued_events is {max}, too large to overflow cheaply");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let mut st = state();
        let (k, g) = key(&root);
        let w = st.open(k, g).unwrap();
        // Nobody reads while more events than the kernel queues happen, including a new
        // directory whose own creation event is lost.
        for i in 0..(max / 2 + 100) {
            std::fs::File::create(root.join(format!("f{i}"))).unwrap();
        }
        std::fs::create_dir(root.join("late")).unwrap();
        pump(&mut st);
        let head = w.head();
        let mut overflow = false;
        {
            let mut r = super::super::log::Reader::new(
                w.clone(),
                0,
                super::super::filter::ClientFilter::new(&[], None).unwrap(),
            );
            w.users.fetch_add(1, Ordering::AcqRel);
            while r.behind() {
                for e in r.read(10_000) {
                    if e.kind == WatchEventKind::Overflow {
                        assert_eq!(e.reason.as_deref(), Some("kernel_queue"));
                        overflow = true;
                    }
                }
            }
        }
        assert!(overflow, "{head} events and no overflow");
        // The directory whose creation was lost is watched after the overflow's rescan.
        std::fs::write(root.join("late/x"), b"").unwrap();
        pump(&mut st);
        let mut r = super::super::log::Reader::new(
            w.clone(),
            head,
            super::super::filter::ClientFilter::new(&[], None).unwrap(),
        );
        w.users.fetch_add(1, Ordering::AcqRel);
        let after = r.read(100);
        assert!(
            after
                .iter()
                .any(|e| e.kind == WatchEventKind::Create && e.path.ends_with("/late/x")),
            "{after:?}"
        );
    }

    #[test]
    fn moves_out_in_a_row_do_not_hold_the_batch_back() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let mut st = state();
        let (k, g) = key(&root);
        let w = st.open(k, g).unwrap();
        let root_wd = *st.by_path.get(root.as_path()).unwrap();
        st.raw(root_wd, ReadFlags::CREATE, 0, Some(b"marker"));
        // Moves out keep arriving, each younger than MOVE_WAIT when the loop looks.
        let mut cookie = 1;
        let deadline = Instant::now() + COALESCE + Duration::from_millis(5);
        while Instant::now() < deadline {
            st.raw(root_wd, ReadFlags::MOVED_FROM, cookie, Some(b"gone"));
            cookie += 1;
            st.tick(Instant::now());
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            w.head() > 0,
            "the batch was held back past the coalescing cap"
        );
    }

    #[test]
    fn a_dying_hub_stops_its_streams() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let mut st = state();
        let alive = st.alive.clone();
        let (k, g) = key(&root);
        let w = st.open(k, g).unwrap();
        drop(st);
        assert!(!alive.load(Ordering::Acquire));
        assert!(w.is_stopped());
        let mut r = super::super::log::Reader::new(
            w.clone(),
            0,
            super::super::filter::ClientFilter::new(&[], None).unwrap(),
        );
        w.users.fetch_add(1, Ordering::AcqRel);
        let ev = r.read(10);
        assert_eq!(ev[0].kind, WatchEventKind::Stopped);
        assert_eq!(ev[0].reason.as_deref(), Some("failed"));
        assert!(r.done);
    }

    #[test]
    fn registry_follows_moves_and_forgets_what_leaves() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let root = base.join("w");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut st = state();
        let (k, g) = key(&root);
        st.open(k, g).unwrap();
        assert_eq!(st.wds.len(), 3);
        std::fs::rename(root.join("a"), root.join("c")).unwrap();
        pump(&mut st);
        let mut paths: Vec<_> = st.wds.values().map(|p| p.to_path_buf()).collect();
        paths.sort();
        assert_eq!(paths, vec![root.clone(), root.join("c"), root.join("c/b")]);
        std::fs::rename(root.join("c"), base.join("out")).unwrap();
        pump(&mut st);
        pump(&mut st); // the IN_IGNORED of the removed watches
        assert_eq!(st.wds.len(), 1);
        assert_eq!(st.by_path.len(), 1);
    }
}
