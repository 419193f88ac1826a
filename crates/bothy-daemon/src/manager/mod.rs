//! Sandbox lifecycle: `creating → running ⇄ sleeping → destroyed`.
//!
//! Each name has a [`Slot`]. Lifecycle operations on one name are serialized by the slot's
//! async mutex, so N concurrent get-or-creates of a new name create exactly one sandbox;
//! data-plane requests on a running sandbox do not take it (fast path). SQLite is the source of
//! truth for records; the slot caches the record and the live [`Running`] handle.
//!
//! One operation per file: [`create`], [`start`] (create and wake), [`stop`] (sleep),
//! [`destroy`], [`reconcile`] (after a daemon restart), [`idle`] (sleep after inactivity),
//! [`exit_watch`] (an init that died on its own).

pub mod create;
pub mod destroy;
pub mod evict;
pub mod exit_watch;
pub mod fork;
pub mod idle;
pub mod network;
pub mod reconcile;
pub mod restore;
pub mod snapshot;
pub mod start;
pub mod stop;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bothy_api::sandbox::{SandboxInfo, SandboxState};
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_api::SandboxName;
use bothy_runtime::{Limits, Runtime, Started};
use bothy_store::meta::{MetaStore, SandboxRecord};
use bothy_store::Layout;

use crate::agent_conn::AgentConn;
use crate::error::DaemonError;
use crate::images::Images;

/// Everything the lifecycle needs.
pub struct Manager {
    pub(crate) store: Arc<dyn MetaStore>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) layout: Layout,
    pub(crate) images: Images,
    pub(crate) agent_binary: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) net: Arc<crate::net::Network>,
    slots: Mutex<HashMap<SandboxName, Arc<Slot>>>,
    /// Serializes changes to which layers are referenced (snapshot, fork, restore, delete,
    /// import) with their garbage collection. Taken after a slot's lifecycle lock, never
    /// before.
    pub(crate) layers_lock: tokio::sync::Mutex<()>,
    /// Snapshot chains longer than this are flattened into one layer.
    max_layer_depth: AtomicUsize,
    /// Blob stores for export, import, evict and persist.
    pub(crate) blobs: crate::blobs::BlobStores,
}

/// Default of `--max-layer-depth`.
pub const DEFAULT_MAX_LAYER_DEPTH: usize = 8;

/// A live sandbox: how to reach its agent and which process is its init.
#[derive(Clone)]
pub struct Running {
    pub started: Started,
    pub agent: AgentConn,
}

impl Running {
    /// PUTs `body` to the agent at `uri` and requires a success status. `what` names the
    /// action in errors ("write /etc/resolv.conf"); a refusal is `sandbox_unavailable`.
    pub(crate) async fn agent_put(
        &self,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        what: &str,
    ) -> Result<(), DaemonError> {
        let mut req = http::Request::put(uri);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(axum::body::Body::from(body))
            .map_err(|e| DaemonError::internal("build request", &e))?;
        let resp = self
            .agent
            .send(req)
            .await
            .map_err(|e| DaemonError::internal(what, &e))?;
        if !resp.status().is_success() {
            return Err(DaemonError::new(
                bothy_api::ErrorCode::SandboxUnavailable,
                format!("the sandbox agent refused to {what} ({})", resp.status()),
            ));
        }
        Ok(())
    }
}

pub struct Slot {
    pub name: SandboxName,
    /// Serializes create/wake/sleep/destroy of this name.
    lifecycle: tokio::sync::Mutex<()>,
    inner: Mutex<SlotInner>,
    /// Open requests and streams (activity that keeps the sandbox awake).
    active: AtomicUsize,
    last_activity_ms: AtomicI64,
}

#[derive(Default)]
struct SlotInner {
    /// Cached record; `None` until loaded or when the sandbox does not exist.
    record: Option<SandboxRecord>,
    loaded: bool,
    running: Option<Running>,
}

impl Slot {
    fn new(name: SandboxName) -> Self {
        Self {
            name,
            lifecycle: tokio::sync::Mutex::new(()),
            inner: Mutex::new(SlotInner::default()),
            active: AtomicUsize::new(0),
            last_activity_ms: AtomicI64::new(0),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn running(&self) -> Option<Running> {
        self.inner().running.clone()
    }

    pub fn record(&self) -> Option<SandboxRecord> {
        self.inner().record.clone()
    }

    /// Marks activity now and holds the sandbox awake until the guard is dropped.
    pub fn activity(self: &Arc<Self>) -> ActivityGuard {
        self.touch();
        self.active.fetch_add(1, Ordering::AcqRel);
        ActivityGuard(self.clone())
    }

    pub fn touch(&self) {
        self.last_activity_ms.fetch_max(now_ms(), Ordering::AcqRel);
    }

    pub fn active_count(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn last_activity_ms(&self) -> i64 {
        self.last_activity_ms.load(Ordering::Acquire)
    }
}

/// Keeps a sandbox awake while held (an open request, stream or WebSocket).
pub struct ActivityGuard(Arc<Slot>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Manager {
    pub fn new(
        store: Arc<dyn MetaStore>,
        runtime: Arc<dyn Runtime>,
        layout: Layout,
        images: Images,
        agent_binary: PathBuf,
        limits: Limits,
        net: Arc<crate::net::Network>,
    ) -> Arc<Self> {
        let layout_for_blobs = layout.clone();
        Arc::new(Self {
            store,
            runtime,
            layout,
            images,
            agent_binary,
            limits,
            net,
            slots: Mutex::new(HashMap::new()),
            layers_lock: tokio::sync::Mutex::new(()),
            max_layer_depth: AtomicUsize::new(DEFAULT_MAX_LAYER_DEPTH),
            blobs: crate::blobs::BlobStores::new(&layout_for_blobs),
        })
    }

    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    pub fn net(&self) -> &Arc<crate::net::Network> {
        &self.net
    }

    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Sets how many snapshot layers a chain may have before it is flattened (at least 1).
    pub fn set_max_layer_depth(&self, depth: usize) {
        self.max_layer_depth.store(depth.max(1), Ordering::Relaxed);
    }

    pub fn max_layer_depth(&self) -> usize {
        self.max_layer_depth.load(Ordering::Relaxed)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Caches a record that was just written to the store (in a transaction of its own).
    pub(crate) fn cache_record(&self, slot: &Slot, rec: SandboxRecord) {
        let mut inner = slot.inner();
        inner.record = Some(rec);
        inner.loaded = true;
    }

    /// The slot of `name`, created empty if there is none yet.
    pub(crate) fn slot(&self, name: &SandboxName) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Slot::new(name.clone())))
            .clone()
    }

    pub(crate) fn forget_slot(&self, name: &SandboxName) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Loads the slot's record from the store if not cached yet. Call with the lifecycle lock.
    pub(crate) fn load(&self, slot: &Slot) -> Result<Option<SandboxRecord>, DaemonError> {
        {
            let inner = slot.inner();
            if inner.loaded {
                return Ok(inner.record.clone());
            }
        }
        let rec = self
            .store
            .get_sandbox(&slot.name)
            .map_err(|e| DaemonError::internal("read sandbox record", &e))?;
        let mut inner = slot.inner();
        inner.record = rec.clone();
        inner.loaded = true;
        if let Some(r) = &rec {
            slot.last_activity_ms
                .fetch_max(r.last_activity_ms, Ordering::AcqRel);
        }
        Ok(rec)
    }

    /// Writes the record to the store and the cache.
    pub(crate) fn save(&self, slot: &Slot, rec: SandboxRecord) -> Result<(), DaemonError> {
        self.store
            .update_sandbox(&rec)
            .map_err(|e| DaemonError::internal("write sandbox record", &e))?;
        let mut inner = slot.inner();
        inner.record = Some(rec);
        inner.loaded = true;
        Ok(())
    }

    pub(crate) fn set_running(&self, slot: &Slot, running: Option<Running>) {
        slot.inner().running = running;
    }

    /// The running sandbox `name`, woken if it sleeps. Data-plane requests come through here.
    pub async fn ensure_running(
        self: &Arc<Self>,
        name: &SandboxName,
    ) -> Result<(Arc<Slot>, Running), DaemonError> {
        let slot = self.slot(name);
        if let Some(r) = slot.running() {
            return Ok((slot, r));
        }
        let running = {
            let _lock = slot.lifecycle.lock().await;
            if let Some(r) = slot.running() {
                r
            } else {
                match self.load(&slot)? {
                    Some(rec) => self.start_locked(&slot, rec).await?,
                    None => {
                        drop(_lock);
                        self.forget_slot(name);
                        return Err(DaemonError::not_found(name));
                    }
                }
            }
        };
        Ok((slot, running))
    }

    /// What the API says about `name`.
    pub async fn info(
        &self,
        name: &SandboxName,
        with_disk: bool,
    ) -> Result<SandboxInfo, DaemonError> {
        let slot = self.slot(name);
        // A transition in progress (a sleep, a wake) finishes first, so what a client reads here
        // is never older than what it has seen happen: a stream that ended because its sandbox is
        // being put to sleep is followed by `sleeping`, not by a stale `running`.
        drop(slot.lifecycle.lock().await);
        let rec = match slot.record() {
            Some(r) => Some(r),
            None => self
                .store
                .get_sandbox(name)
                .map_err(|e| DaemonError::internal("read sandbox record", &e))?,
        };
        let Some(rec) = rec else {
            if slot.record().is_none() && slot.running().is_none() {
                self.forget_slot(name);
            }
            return Err(DaemonError::not_found(name));
        };
        let disk = if with_disk {
            let dir = self.layout.sandbox(name).disk();
            Some(
                tokio::task::spawn_blocking(move || crate::images::dir_size(&dir))
                    .await
                    .unwrap_or(0),
            )
        } else {
            None
        };
        Ok(self.to_info(&slot, &rec, disk))
    }

    pub(crate) fn to_info(
        &self,
        slot: &Slot,
        rec: &SandboxRecord,
        disk: Option<u64>,
    ) -> SandboxInfo {
        let running = slot.running();
        SandboxInfo {
            name: rec.name.clone(),
            state: if running.is_some() {
                SandboxState::Running
            } else {
                rec.state
            },
            image: rec.image.clone(),
            created_at: rfc3339_ms(rec.created_at_ms),
            last_activity_at: rfc3339_ms(rec.last_activity_ms.max(slot.last_activity_ms())),
            sleep_after: rec.sleep_after_secs,
            keep_alive: rec.keep_alive,
            env: rec.env.clone(),
            disk_used_bytes: disk,
            pid: running.map(|r| r.started.pid),
            network: self
                .network_of(&rec.name)
                .ok()
                .map(|c| self.network_info(&rec.name, c)),
            created: None,
            evicted: crate::blobs::evict::is_evicted(&self.layout, &rec.name),
            persist: rec.persist,
        }
    }

    pub async fn list(&self) -> Result<Vec<SandboxInfo>, DaemonError> {
        let recs = self
            .store
            .list_sandboxes()
            .map_err(|e| DaemonError::internal("list sandboxes", &e))?;
        let slots: HashMap<SandboxName, Arc<Slot>> = self
            .slots()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        Ok(recs
            .iter()
            .map(|r| match slots.get(&r.name) {
                Some(s) => self.to_info(s, r, None),
                None => self.to_info(&Slot::new(r.name.clone()), r, None),
            })
            .collect())
    }

    /// Marks activity on `name` if the daemon knows it (egress traffic counts).
    pub fn touch(&self, name: &SandboxName) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(s) = slot {
            s.touch();
        }
    }

    pub fn running_count(&self) -> usize {
        self.slots()
            .iter()
            .filter(|s| s.running().is_some())
            .count()
    }

    /// Persists in-memory activity times (on shutdown and from the idle loop).
    pub fn flush_activity(&self) {
        for slot in self.slots() {
            let at = slot.last_activity_ms();
            if at > 0 {
                let _ = self.store.set_last_activity(&slot.name, at);
            }
        }
    }
}
