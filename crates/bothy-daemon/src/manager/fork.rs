//! Forks: new sandboxes whose lower layers are a snapshot's and whose own layer starts empty.
//! Nothing is copied, so a fork costs the same whatever the size of the snapshot.

use std::sync::Arc;

use bothy_api::sandbox::{CreateSandbox, SandboxInfo, SandboxState, DEFAULT_SLEEP_AFTER_SECS};
use bothy_api::snapshot::{ForkRequest, MAX_FORK_COUNT};
use bothy_api::time::now_ms;
use bothy_api::{ErrorCode, SandboxName};
use bothy_store::meta::{SandboxRecord, SnapshotRecord};

use super::Manager;
use crate::error::DaemonError;

fn exists(name: &SandboxName) -> DaemonError {
    DaemonError::new(
        ErrorCode::Conflict,
        format!("a sandbox named {name:?} exists; fork into a new name, or restore it with POST /v1/sandboxes/{name}/restore"),
    )
}

fn record(name: &SandboxName, snap: &SnapshotRecord, spec: &CreateSandbox) -> SandboxRecord {
    let now = now_ms();
    SandboxRecord {
        env: spec.env.clone().unwrap_or_default(),
        keep_alive: spec.keep_alive.unwrap_or(false),
        layers: snap.layers.clone(),
        parent_snapshot: Some(snap.id.clone()),
        persist: spec.persist.unwrap_or(false),
        ..SandboxRecord::fresh(
            name.clone(),
            snap.image.clone(),
            SandboxState::Sleeping,
            spec.sleep_after.unwrap_or(DEFAULT_SLEEP_AFTER_SECS),
            now,
        )
    }
}

impl Manager {
    /// `PUT /v1/sandboxes/{name}` with `from_snapshot`: creates and starts the fork.
    pub(crate) async fn fork_one(
        self: &Arc<Self>,
        name: &SandboxName,
        spec: CreateSandbox,
        snapshot: &str,
    ) -> Result<SandboxInfo, DaemonError> {
        let network = self.network_for_new(spec.network.clone())?;
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        if self.load(&slot)?.is_some() {
            return Err(exists(name));
        }
        let rec = {
            let _layers = self.layers_lock.lock().await;
            let snap = self.get_snapshot(snapshot)?;
            if let Some(img) = &spec.image {
                if img != &snap.image {
                    return Err(DaemonError::invalid(format!(
                        "snapshot {} is of image {:?}, not {img:?}",
                        snap.id, snap.image
                    )));
                }
            }
            let mut rec = record(name, &snap, &spec);
            rec.state = SandboxState::Creating;
            self.insert(&slot, &rec, &network)?;
            rec
        };
        match self.start_locked(&slot, rec).await {
            Ok(running) => {
                // The snapshot's /etc/resolv.conf may predate proxy mode.
                if self.net.addr_of(name).is_some() {
                    self.write_resolv_conf(&running).await;
                }
                let rec = slot.record().expect("saved by start");
                let mut info = self.to_info(&slot, &rec, None);
                info.created = Some(true);
                Ok(info)
            }
            Err(e) => {
                let _ = self.store.delete_sandbox(name);
                let _ = std::fs::remove_dir_all(self.layout.sandbox(name).root);
                {
                    let mut inner = slot.inner();
                    inner.record = None;
                    inner.running = None;
                }
                drop(_lock);
                self.forget_slot(name);
                Err(e)
            }
        }
    }

    /// `POST /v1/snapshots/{id}/fork`: N forks at once, created asleep (each wakes on its
    /// first request). All or nothing: if one name is taken, none is created.
    pub async fn fork_many(
        self: &Arc<Self>,
        snapshot: &str,
        req: ForkRequest,
    ) -> Result<Vec<SandboxInfo>, DaemonError> {
        let names: Vec<String> = match (req.names, req.prefix, req.count) {
            (Some(n), None, None) => n,
            (None, Some(p), Some(c)) => (1..=c).map(|i| format!("{p}-{i}")).collect(),
            _ => {
                return Err(DaemonError::invalid(
                    "give either `names`, or `prefix` and `count`",
                ))
            }
        };
        if names.is_empty() || names.len() > MAX_FORK_COUNT {
            return Err(DaemonError::invalid(format!(
                "a fork creates 1 to {MAX_FORK_COUNT} sandboxes"
            )));
        }
        let mut parsed = Vec::with_capacity(names.len());
        for n in &names {
            parsed.push(SandboxName::new(n.clone())?);
        }
        parsed.sort();
        let before = parsed.len();
        parsed.dedup();
        if parsed.len() != before {
            return Err(DaemonError::invalid("a name is given twice"));
        }
        // Slot locks in name order (two batch forks cannot deadlock), then the layers lock.
        let slots: Vec<_> = parsed.iter().map(|n| self.slot(n)).collect();
        let mut guards = Vec::with_capacity(slots.len());
        for s in &slots {
            guards.push(s.lifecycle.lock().await);
        }
        let result = async {
            for s in &slots {
                if self.load(s)?.is_some() {
                    return Err(exists(&s.name));
                }
            }
            let _layers = self.layers_lock.lock().await;
            let snap = self.get_snapshot(snapshot)?;
            let spec = CreateSandbox::default();
            let network = self.network_for_new(None)?;
            let mut done: Vec<&Arc<super::Slot>> = Vec::new();
            for s in &slots {
                let rec = record(&s.name, &snap, &spec);
                if let Err(e) = self.insert(s, &rec, &network) {
                    for d in done {
                        let _ = self.store.delete_sandbox(&d.name);
                        let mut inner = d.inner();
                        inner.record = None;
                    }
                    return Err(e);
                }
                done.push(s);
            }
            Ok(slots
                .iter()
                .filter_map(|s| s.record().map(|r| self.to_info(s, &r, None)))
                .collect::<Vec<_>>())
        }
        .await;
        drop(guards);
        if result.is_err() {
            for n in &parsed {
                if self.slot(n).record().is_none() {
                    self.forget_slot(n);
                }
            }
        }
        result
    }

    /// Inserts a new record (refused if the name was taken meanwhile) and caches it.
    /// Also records the fork's network config.
    fn insert(
        &self,
        slot: &super::Slot,
        rec: &SandboxRecord,
        network: &bothy_api::network::NetworkConfig,
    ) -> Result<(), DaemonError> {
        let inserted = self
            .store
            .insert_sandbox(rec)
            .map_err(|e| DaemonError::internal("create sandbox record", &e))?;
        if !inserted {
            return Err(exists(&rec.name));
        }
        if let Err(e) = self.store.put_network(&rec.name, network) {
            let _ = self.store.delete_sandbox(&rec.name);
            return Err(DaemonError::internal("write network config", &e));
        }
        self.cache_record(slot, rec.clone());
        Ok(())
    }
}
