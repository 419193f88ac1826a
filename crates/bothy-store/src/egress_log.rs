//! The egress log's rows (`egress_log` table): per sandbox, the latest entries of its egress
//! proxy traffic as JSON, in the order they were written. Deleting the sandbox deletes them.

use bothy_api::SandboxName;
use rusqlite::params;

use crate::meta::{Result, SqliteStore};

pub trait EgressLogStore: Send + Sync + 'static {
    /// Appends `(sandbox, entry JSON)` rows in one transaction (rows of sandboxes that no longer
    /// exist are skipped), then keeps only the newest `keep` of each sandbox written to.
    fn append_egress_log(&self, rows: &[(SandboxName, String)], keep: usize) -> Result<()>;
    /// The newest `limit` entries of a sandbox, oldest first.
    fn egress_log(&self, name: &SandboxName, limit: usize) -> Result<Vec<String>>;
}

impl EgressLogStore for SqliteStore {
    fn append_egress_log(&self, rows: &[(SandboxName, String)], keep: usize) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO egress_log (sandbox, entry) \
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM sandboxes WHERE name = ?1)",
            )?;
            for (name, entry) in rows {
                insert.execute(params![name.as_str(), entry])?;
            }
            let mut trim = tx.prepare_cached(
                "DELETE FROM egress_log WHERE sandbox = ?1 AND id <= \
                 (SELECT id FROM egress_log WHERE sandbox = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?;
            let mut names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                trim.execute(params![name, keep as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn egress_log(&self, name: &SandboxName, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT entry FROM (SELECT id, entry FROM egress_log WHERE sandbox = ?1 \
             ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = st.query_map(params![name.as_str(), limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaStore, SandboxRecord};
    use bothy_api::sandbox::SandboxState;

    fn sandbox(s: &SqliteStore, name: &str) -> SandboxName {
        let name = SandboxName::new(name).unwrap();
        s.insert_sandbox(&SandboxRecord::fresh(
            name.clone(),
            "host".into(),
            SandboxState::Creating,
            600,
            1,
        ))
        .unwrap();
        name
    }

    #[test]
    fn keeps_the_newest_in_order_and_goes_with_the_sandbox() {
        let s = SqliteStore::open_in_memory().unwrap();
        let (a, b) = (sandbox(&s, "a"), sandbox(&s, "b"));
        let gone = SandboxName::new("gone").unwrap();
        let rows: Vec<_> = (0..5)
            .map(|i| (a.clone(), format!("a{i}")))
            .chain([(b.clone(), "b0".to_string()), (gone.clone(), "x".into())])
            .collect();
        s.append_egress_log(&rows, 3).unwrap();
        assert_eq!(s.egress_log(&a, 10).unwrap(), ["a2", "a3", "a4"]);
        assert_eq!(s.egress_log(&a, 2).unwrap(), ["a3", "a4"]);
        assert_eq!(s.egress_log(&b, 10).unwrap(), ["b0"]);
        assert!(s.egress_log(&gone, 10).unwrap().is_empty());
        s.delete_sandbox(&a).unwrap();
        assert!(s.egress_log(&a, 10).unwrap().is_empty());
        assert_eq!(s.egress_log(&b, 10).unwrap(), ["b0"]);
    }
}
