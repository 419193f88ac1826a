//! Secrets for the egress proxy: named values that the proxy adds to requests on their way out.
//!
//! Stored in the daemon's SQLite database (mode 0600). Values leave this module only towards the
//! daemon's in-memory cache that the proxy reads; the API lists names and timestamps only.

use rusqlite::params;

use crate::meta::{Result, SqliteStore};

/// A stored secret. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    pub value: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}

pub trait SecretStore: Send + Sync + 'static {
    /// Sets a secret, creating it or replacing its value (keeping its creation time).
    fn put_secret(&self, name: &str, value: &str, at_ms: i64) -> Result<()>;
    /// Returns whether the secret existed.
    fn delete_secret(&self, name: &str) -> Result<bool>;
    /// Every secret, with its value, by name.
    fn list_secrets(&self) -> Result<Vec<SecretRecord>>;
}

impl SecretStore for SqliteStore {
    fn put_secret(&self, name: &str, value: &str, at_ms: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO secrets (name, value, created_at_ms, updated_at_ms) VALUES (?1,?2,?3,?3) \
             ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at_ms=excluded.updated_at_ms",
            params![name, value, at_ms],
        )?;
        Ok(())
    }

    fn delete_secret(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM secrets WHERE name = ?1", [name])?;
        Ok(n == 1)
    }

    fn list_secrets(&self) -> Result<Vec<SecretRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT name, value, created_at_ms, updated_at_ms FROM secrets ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(SecretRecord {
                name: r.get(0)?,
                value: r.get(1)?,
                created_at_ms: r.get(2)?,
                updated_at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn put_replace_list_delete() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.put_secret("tok", "v1", 10).unwrap();
        s.put_secret("tok", "v2", 20).unwrap();
        s.put_secret("a", "x", 30).unwrap();
        let l = s.list_secrets().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "a");
        assert_eq!(
            (l[1].value.as_str(), l[1].created_at_ms, l[1].updated_at_ms),
            ("v2", 10, 20)
        );
        assert!(!format!("{:?}", l[1]).contains("v2"));
        assert!(s.delete_secret("tok").unwrap());
        assert!(!s.delete_secret("tok").unwrap());
        assert_eq!(s.list_secrets().unwrap().len(), 1);
    }

    #[test]
    fn the_database_and_its_side_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        s.put_secret("tok", "v", 1).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("state.db{suffix}"));
            if let Ok(m) = std::fs::metadata(&p) {
                assert_eq!(
                    m.mode() & 0o077,
                    0,
                    "{} is mode {:o}",
                    p.display(),
                    m.mode()
                );
            }
        }
    }
}
