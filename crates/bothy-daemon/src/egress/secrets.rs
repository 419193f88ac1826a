//! Secrets: stored in SQLite, served to the proxy from memory (it asks on every request).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bothy_api::egress::SecretInfo;
use bothy_api::time::{now_ms, rfc3339_ms};
use bothy_store::meta::MetaError;
use bothy_store::secrets::{SecretRecord, SecretStore};

/// Largest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Secrets {
    store: Arc<dyn SecretStore>,
    cache: Arc<RwLock<HashMap<String, SecretRecord>>>,
}

impl Secrets {
    pub fn load(store: Arc<dyn SecretStore>) -> Result<Self, MetaError> {
        let cache = store
            .list_secrets()?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        Ok(Self {
            store,
            cache: Arc::new(RwLock::new(cache)),
        })
    }

    /// The value of a secret, for the proxy only.
    pub fn get(&self, name: &str) -> Option<String> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(name).map(|r| r.value.clone())
    }

    /// Sets a secret (write-through); returns its listing and whether it was new.
    pub fn put(&self, name: &str, value: &str) -> Result<(SecretInfo, bool), MetaError> {
        let now = now_ms();
        // The write lock spans the store write so the cache and the store agree.
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.store.put_secret(name, value, now)?;
        let created = cache.get(name).map(|r| r.created_at_ms);
        let rec = SecretRecord {
            name: name.to_string(),
            value: value.to_string(),
            created_at_ms: created.unwrap_or(now),
            updated_at_ms: now,
        };
        let info = info(&rec);
        cache.insert(name.to_string(), rec);
        Ok((info, created.is_none()))
    }

    /// Returns whether the secret existed.
    pub fn delete(&self, name: &str) -> Result<bool, MetaError> {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let existed = self.store.delete_secret(name)?;
        cache.remove(name);
        Ok(existed)
    }

    /// Names and timestamps, by name; never values.
    pub fn list(&self) -> Vec<SecretInfo> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SecretInfo> = cache.values().map(info).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn info(r: &SecretRecord) -> SecretInfo {
    SecretInfo {
        name: r.name.clone(),
        created_at: rfc3339_ms(r.created_at_ms),
        updated_at: rfc3339_ms(r.updated_at_ms),
    }
}
