//! Get-or-create.

use std::sync::Arc;

use bothy_api::sandbox::{CreateSandbox, SandboxInfo, SandboxState, DEFAULT_SLEEP_AFTER_SECS};
use bothy_api::time::now_ms;
use bothy_api::{ErrorCode, SandboxName};
use bothy_store::meta::SandboxRecord;

use super::Manager;
use crate::error::DaemonError;
use crate::images::HOST_IMAGE;

/// Longest accepted `sleep_after`: 30 days (use `keep_alive` for "never").
const MAX_SLEEP_AFTER_SECS: u64 = 30 * 24 * 3600;

fn validate(spec: &CreateSandbox) -> Result<(), DaemonError> {
    if let Some(s) = spec.sleep_after {
        if s == 0 || s > MAX_SLEEP_AFTER_SECS {
            return Err(DaemonError::invalid(format!(
                "sleep_after must be between 1 and {MAX_SLEEP_AFTER_SECS} seconds (use keep_alive to never sleep)"
            )));
        }
    }
    if let Some(env) = &spec.env {
        bothy_api::command::validate_env(env)?;
    }
    Ok(())
}

impl Manager {
    /// Returns the sandbox `name`, waking it if it sleeps and creating it if it does not exist.
    /// The bool is true if this call created it.
    pub async fn get_or_create(
        self: &Arc<Self>,
        name: &SandboxName,
        spec: CreateSandbox,
    ) -> Result<(SandboxInfo, bool), DaemonError> {
        validate(&spec)?;
        if let Some(n) = &spec.network {
            self.check_network(n)?;
        }
        if let Some(snap) = spec.from_snapshot.clone() {
            return self
                .fork_one(name, spec, &snap)
                .await
                .map(|info| (info, true));
        }
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        if let Some(mut rec) = self.load(&slot)? {
            if let Some(img) = &spec.image {
                if img != &rec.image {
                    return Err(DaemonError::new(
                        ErrorCode::Conflict,
                        format!(
                            "sandbox {name:?} exists with image {:?}, not {img:?}; delete it first to change its image",
                            rec.image
                        ),
                    ));
                }
            }
            let mut changed = false;
            let mut env_changed = false;
            if let Some(env) = spec.env {
                if env != rec.env {
                    rec.env = env;
                    changed = true;
                    env_changed = true;
                }
            }
            if let Some(s) = spec.sleep_after {
                changed |= s != rec.sleep_after_secs;
                rec.sleep_after_secs = s;
            }
            if let Some(k) = spec.keep_alive {
                changed |= k != rec.keep_alive;
                rec.keep_alive = k;
            }
            if let Some(p) = spec.persist {
                changed |= p != rec.persist;
                rec.persist = p;
            }
            if changed {
                self.save(&slot, rec.clone())?;
            }
            if let Some(n) = spec.network {
                let old = self.network_of(name)?;
                if n != old {
                    self.store
                        .put_network(name, &n)
                        .map_err(|e| DaemonError::internal("write network config", &e))?;
                    if let Some(running) = slot.running() {
                        self.apply_network(&slot, &running, &old, &n).await?;
                    }
                }
            }
            match slot.running() {
                Some(running) if env_changed => self.push_env(&running, &rec).await?,
                Some(_) => {}
                None => {
                    self.start_locked(&slot, rec.clone()).await?;
                }
            }
            slot.touch();
            return Ok((self.to_info(&slot, &rec, None), false));
        }

        let image = self
            .images
            .get(spec.image.as_deref().unwrap_or(HOST_IMAGE))?;
        let network = self.network_for_new(spec.network)?;
        let now = now_ms();
        let rec = SandboxRecord {
            env: spec.env.unwrap_or_default(),
            keep_alive: spec.keep_alive.unwrap_or(false),
            persist: spec.persist.unwrap_or(false),
            ..SandboxRecord::fresh(
                name.clone(),
                image.name.clone(),
                SandboxState::Creating,
                spec.sleep_after.unwrap_or(DEFAULT_SLEEP_AFTER_SECS),
                now,
            )
        };
        let inserted = self
            .store
            .insert_sandbox(&rec)
            .map_err(|e| DaemonError::internal("create sandbox record", &e))?;
        if !inserted {
            return Err(DaemonError::new(
                ErrorCode::Conflict,
                format!("sandbox {name:?} was created concurrently; retry"),
            ));
        }
        self.save(&slot, rec.clone())?;
        let started = match self.store.put_network(name, &network) {
            Ok(()) => self.start_locked(&slot, rec).await,
            Err(e) => Err(DaemonError::internal("write network config", &e)),
        };
        if let Ok(running) = &started {
            if self.net.addr_of(name).is_some() {
                self.write_resolv_conf(running).await;
            }
        }
        if started.is_err() && slot.running().is_some() {
            let _ = self.stop_locked(&slot).await;
        }
        match started {
            Ok(_) => {
                let rec = slot.record().expect("saved by start");
                let mut info = self.to_info(&slot, &rec, None);
                info.created = Some(true);
                Ok((info, true))
            }
            Err(e) => {
                // Leave nothing behind: a failed create is as if it never happened.
                let _ = self.store.delete_sandbox(name);
                let dir = self.layout.sandbox(name).root;
                let _ = std::fs::remove_dir_all(dir);
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
}
