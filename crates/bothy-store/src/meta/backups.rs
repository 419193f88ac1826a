//! Backup records (`backups` table): one directory of a sandbox, archived in the blob store.

use rusqlite::{params, Connection, OptionalExtension};

use super::{MetaError, Result};

/// A directory backup. It does not reference its sandbox (a backup outlives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    pub sandbox: String,
    pub path: String,
    pub exclude: Vec<String>,
    pub gitignore: bool,
    /// Key of the archive in the blob store.
    pub blob_key: String,
    /// sha256 of the archive, hex.
    pub sha256: String,
    pub size_bytes: u64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// Its objects were removed after it expired; the record stays a while so that asking for
    /// it says "expired" rather than "no such backup".
    pub swept: bool,
}

const COLS: &str =
    "id, sandbox, path, exclude, gitignore, blob_key, sha256, size_bytes, created_at_ms, expires_at_ms, swept";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<BackupRecord>> {
    let id: String = row.get(0)?;
    let exclude: String = row.get(3)?;
    let exclude = match serde_json::from_str(&exclude) {
        Ok(e) => e,
        Err(e) => {
            return Ok(Err(MetaError::Corrupt {
                what: format!("backup {id:?}"),
                detail: e.to_string(),
            }))
        }
    };
    Ok(Ok(BackupRecord {
        id,
        sandbox: row.get(1)?,
        path: row.get(2)?,
        exclude,
        gitignore: row.get(4)?,
        blob_key: row.get(5)?,
        sha256: row.get(6)?,
        size_bytes: row.get::<_, i64>(7)? as u64,
        created_at_ms: row.get(8)?,
        expires_at_ms: row.get(9)?,
        swept: row.get(10)?,
    }))
}

pub(super) fn put(conn: &Connection, r: &BackupRecord) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO backups ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"),
        params![
            r.id,
            r.sandbox,
            r.path,
            serde_json::to_string(&r.exclude).unwrap_or_else(|_| "[]".into()),
            r.gitignore,
            r.blob_key,
            r.sha256,
            r.size_bytes as i64,
            r.created_at_ms,
            r.expires_at_ms,
            r.swept,
        ],
    )?;
    Ok(())
}

pub(super) fn mark_swept(conn: &Connection, id: &str) -> Result<()> {
    conn.execute("UPDATE backups SET swept = 1 WHERE id = ?1", [id])?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<BackupRecord>> {
    let mut st = conn.prepare_cached(&format!("SELECT {COLS} FROM backups WHERE id = ?1"))?;
    st.query_row([id], from_row).optional()?.transpose()
}

pub(super) fn list(conn: &Connection) -> Result<Vec<BackupRecord>> {
    super::query_parsed(
        conn,
        &format!("SELECT {COLS} FROM backups ORDER BY created_at_ms, id"),
        [],
        from_row,
    )
}

pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM backups WHERE id = ?1", [id])? == 1)
}

#[cfg(test)]
mod tests {
    use super::super::{MetaStore, SqliteStore};
    use super::*;

    #[test]
    fn backups_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let rec = BackupRecord {
            id: "bk-0123456789abcdef".into(),
            sandbox: "web".into(),
            path: "/workspace".into(),
            exclude: vec!["node_modules".into()],
            gitignore: true,
            blob_key: "backups/bk-0123456789abcdef.tar.gz".into(),
            sha256: "ab".repeat(32),
            size_bytes: 42,
            created_at_ms: 1,
            expires_at_ms: 2,
            swept: false,
        };
        {
            let s = SqliteStore::open(&db).unwrap();
            s.put_backup(&rec).unwrap();
            assert!(s.put_backup(&rec).is_err(), "ids are unique");
        }
        let s = SqliteStore::open(&db).unwrap();
        assert_eq!(s.get_backup(&rec.id).unwrap(), Some(rec.clone()));
        assert_eq!(s.list_backups().unwrap(), vec![rec.clone()]);
        s.mark_backup_swept(&rec.id).unwrap();
        assert!(s.get_backup(&rec.id).unwrap().unwrap().swept);
        assert!(s.delete_backup(&rec.id).unwrap());
        assert!(!s.delete_backup(&rec.id).unwrap());
        assert_eq!(s.get_backup(&rec.id).unwrap(), None);
    }
}
