//! Metadata: sandboxes and images, behind [`MetaStore`] (SQLite now; PostgreSQL for fleets).
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a crash of the daemon (even `kill -9`)
//! loses nothing that was committed, and a power loss at most the last transactions — never
//! consistency. Schema changes are an ordered list of migrations keyed by `user_version`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use bothy_api::network::NetworkConfig;
use bothy_api::sandbox::SandboxState;
use bothy_api::SandboxName;
use rusqlite::{params, Connection, OptionalExtension};

mod backups;
pub use backups::BackupRecord;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt record for {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A unique name (of a snapshot) is taken.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// Where a running sandbox's init is, so a restarted daemon can find it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeRef {
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub name: SandboxName,
    pub image: String,
    pub state: SandboxState,
    pub env: BTreeMap<String, String>,
    pub sleep_after_secs: u64,
    pub keep_alive: bool,
    pub created_at_ms: i64,
    pub last_activity_ms: i64,
    pub runtime: Option<RuntimeRef>,
    /// Snapshot layers under the sandbox's own upper and above its image's layers, lowest
    /// first (empty for a sandbox that was never snapshotted while asleep, forked or restored).
    pub layers: Vec<String>,
    /// The snapshot the sandbox's state descends from (its last snapshot, or the one it was
    /// forked or restored from).
    pub parent_snapshot: Option<String>,
    /// Push the disk to the blob store on every sleep.
    pub persist: bool,
}

impl SandboxRecord {
    /// A record of a new sandbox made at `at_ms`: no environment, no layers or parent, not
    /// kept alive, not persisted, not running.
    pub fn fresh(
        name: SandboxName,
        image: String,
        state: SandboxState,
        sleep_after_secs: u64,
        at_ms: i64,
    ) -> Self {
        Self {
            name,
            image,
            state,
            env: BTreeMap::new(),
            sleep_after_secs,
            keep_alive: false,
            created_at_ms: at_ms,
            last_activity_ms: at_ms,
            runtime: None,
            layers: Vec::new(),
            parent_snapshot: None,
            persist: false,
        }
    }
}

/// A layer made by a snapshot (or imported from a blob store): garbage-collected once no
/// sandbox and no snapshot lists it. Image layers are not recorded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub id: String,
    pub size_bytes: u64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    /// Optional unique name.
    pub name: Option<String>,
    /// The sandbox it was taken of (which may since have been deleted).
    pub sandbox: String,
    /// The image under its layers.
    pub image: String,
    pub parent: Option<String>,
    /// Its layers above the image's, lowest first (the last one is its own).
    pub layers: Vec<String>,
    /// Bytes of its own (top) layer.
    pub size_bytes: u64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    /// `host` or `imported`.
    pub kind: String,
    /// Layer ids, lowest first.
    pub layers: Vec<String>,
    pub created_at_ms: i64,
    pub size_bytes: u64,
}

/// The metadata a daemon keeps. Implementations are cheap to call from async code (each call
/// is a short transaction) and serialize writes themselves.
pub trait MetaStore: Send + Sync + 'static {
    fn get_sandbox(&self, name: &SandboxName) -> Result<Option<SandboxRecord>>;
    fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>>;
    /// Inserts a new record; returns false (and changes nothing) if the name exists.
    fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<bool>;
    /// Replaces an existing record.
    fn update_sandbox(&self, rec: &SandboxRecord) -> Result<()>;
    fn set_last_activity(&self, name: &SandboxName, at_ms: i64) -> Result<()>;
    fn delete_sandbox(&self, name: &SandboxName) -> Result<()>;

    fn get_image(&self, name: &str) -> Result<Option<ImageRecord>>;
    fn list_images(&self) -> Result<Vec<ImageRecord>>;
    fn put_image(&self, rec: &ImageRecord) -> Result<()>;

    /// Exposes a port of a sandbox (preview URL); replaces the token if it was exposed.
    fn put_port(&self, rec: &PortRecord) -> Result<()>;
    fn get_port(&self, name: &SandboxName, port: u16) -> Result<Option<PortRecord>>;
    fn list_ports(&self, name: &SandboxName) -> Result<Vec<PortRecord>>;
    /// Returns whether the port was exposed.
    fn delete_port(&self, name: &SandboxName, port: u16) -> Result<bool>;

    /// Records a layer made by a snapshot or an import (idempotent).
    fn put_layer(&self, rec: &LayerRecord) -> Result<()>;
    fn list_layers(&self) -> Result<Vec<LayerRecord>>;
    fn delete_layer(&self, id: &str) -> Result<()>;

    /// Records a snapshot, its new layers and (optionally) the updated record of its sandbox
    /// in one transaction: all or nothing. [`MetaError::NameTaken`] if the name is taken.
    fn commit_snapshot(
        &self,
        layers: &[LayerRecord],
        snap: &SnapshotRecord,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<()>;
    /// By id, or else by name.
    fn get_snapshot(&self, id_or_name: &str) -> Result<Option<SnapshotRecord>>;
    /// Oldest first.
    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>>;
    /// Returns whether it existed.
    fn delete_snapshot(&self, id: &str) -> Result<bool>;

    /// Records a directory backup (its archive is already in the blob store).
    fn put_backup(&self, rec: &BackupRecord) -> Result<()>;
    fn get_backup(&self, id: &str) -> Result<Option<BackupRecord>>;
    /// Oldest first, expired ones included (callers filter by `expires_at_ms`).
    fn list_backups(&self) -> Result<Vec<BackupRecord>>;
    /// Notes that an expired backup's objects are gone (its record stays a while).
    fn mark_backup_swept(&self, id: &str) -> Result<()>;
    /// Returns whether it existed.
    fn delete_backup(&self, id: &str) -> Result<bool>;
    /// A sandbox's network mode and egress policy; `None` for a sandbox created before
    /// networking existed (it keeps loopback only). Deleting the sandbox deletes it.
    fn get_network(&self, name: &SandboxName) -> Result<Option<NetworkConfig>>;
    fn put_network(&self, name: &SandboxName, cfg: &NetworkConfig) -> Result<()>;
}

/// An exposed port of a sandbox: `http://{port}-{sandbox}-{token}.{preview domain}`. Deleting
/// the sandbox deletes its exposures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRecord {
    pub sandbox: SandboxName,
    pub port: u16,
    pub token: String,
    pub created_at_ms: i64,
}

/// Migrations, applied in order; index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE sandboxes (
        name TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        state TEXT NOT NULL,
        env TEXT NOT NULL DEFAULT '{}',
        sleep_after_secs INTEGER NOT NULL,
        keep_alive INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        last_activity_ms INTEGER NOT NULL,
        pid INTEGER,
        start_time INTEGER
    );
    CREATE TABLE images (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        layers TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL
    );
"#,
    r#"
    CREATE TABLE ports (
        sandbox TEXT NOT NULL REFERENCES sandboxes(name) ON DELETE CASCADE,
        port INTEGER NOT NULL,
        token TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sandbox, port)
    );
"#,
    r#"
    ALTER TABLE sandboxes ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE sandboxes ADD COLUMN parent_snapshot TEXT;
    CREATE TABLE layers (
        id TEXT PRIMARY KEY,
        size_bytes INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        sandbox TEXT NOT NULL,
        image TEXT NOT NULL,
        parent TEXT,
        layers TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
"#,
    // Directory backups. `IF NOT EXISTS`: this migration may be reordered with others when
    // branches merge.
    r#"
    CREATE TABLE IF NOT EXISTS backups (
        id TEXT PRIMARY KEY,
        sandbox TEXT NOT NULL,
        path TEXT NOT NULL,
        exclude TEXT NOT NULL DEFAULT '[]',
        gitignore INTEGER NOT NULL DEFAULT 0,
        blob_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        swept INTEGER NOT NULL DEFAULT 0
    );
"#,
    // Secrets for the egress proxy (`crate::secrets`). The database file is mode 0600.
    r#"
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
"#,
    r#"
    CREATE TABLE sandbox_network (
        sandbox TEXT PRIMARY KEY REFERENCES sandboxes(name) ON DELETE CASCADE,
        config TEXT NOT NULL
    );
"#,
    r#"
    ALTER TABLE sandboxes ADD COLUMN persist INTEGER NOT NULL DEFAULT 0;
"#,
    // The egress log (`crate::egress_log`).
    r#"
    CREATE TABLE egress_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox TEXT NOT NULL REFERENCES sandboxes(name) ON DELETE CASCADE,
        entry TEXT NOT NULL
    );
    CREATE INDEX egress_log_by_sandbox ON egress_log (sandbox, id);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, readable by its owner only: it holds
    /// secrets. SQLite gives the `-wal` and `-shm` files the database file's mode.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        restrict_mode(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes the database and its side files (those that exist) mode 0600.
fn restrict_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(MetaError::Corrupt {
                    what: Path::new(&p).display().to_string(),
                    detail: format!("cannot make it private: {e}"),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

const SANDBOX_COLS: &str = "name, image, state, env, sleep_after_secs, keep_alive, created_at_ms, last_activity_ms, pid, start_time, layers, parent_snapshot, persist";

/// Runs a (cached) query whose rows each parse into a record or a corruption error, and
/// collects them; the first error of either kind is returned.
pub(crate) fn query_parsed<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    parse: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T>>,
) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(params, parse)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn sandbox_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<SandboxRecord>> {
    let name: String = row.get(0)?;
    let state: String = row.get(2)?;
    let env: String = row.get(3)?;
    let pid: Option<i32> = row.get(8)?;
    let start_time: Option<i64> = row.get(9)?;
    let layers: String = row.get(10)?;
    let corrupt = |detail: String| MetaError::Corrupt {
        what: format!("sandbox {name:?}"),
        detail,
    };
    let parsed = (|| {
        Ok(SandboxRecord {
            name: SandboxName::new(name.clone()).map_err(|e| corrupt(e.to_string()))?,
            image: row.get(1)?,
            state: SandboxState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
            env: serde_json::from_str(&env).map_err(|e| corrupt(e.to_string()))?,
            sleep_after_secs: row.get::<_, i64>(4)? as u64,
            keep_alive: row.get(5)?,
            created_at_ms: row.get(6)?,
            last_activity_ms: row.get(7)?,
            runtime: match (pid, start_time) {
                (Some(pid), Some(st)) => Some(RuntimeRef {
                    pid,
                    start_time: st as u64,
                }),
                _ => None,
            },
            layers: serde_json::from_str(&layers).map_err(|e| corrupt(e.to_string()))?,
            parent_snapshot: row.get(11)?,
            persist: row.get(12)?,
        })
    })();
    Ok(parsed)
}

impl MetaStore for SqliteStore {
    fn get_sandbox(&self, name: &SandboxName) -> Result<Option<SandboxRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {SANDBOX_COLS} FROM sandboxes WHERE name = ?1"
        ))?;
        st.query_row([name.as_str()], sandbox_from_row)
            .optional()?
            .transpose()
    }

    fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        query_parsed(
            &self.conn(),
            &format!("SELECT {SANDBOX_COLS} FROM sandboxes ORDER BY name"),
            [],
            sandbox_from_row,
        )
    }

    fn insert_sandbox(&self, r: &SandboxRecord) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            &format!(
                "INSERT OR IGNORE INTO sandboxes ({SANDBOX_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
            ),
            params![
                r.name.as_str(),
                r.image,
                r.state.as_str(),
                serde_json::to_string(&r.env).unwrap_or_else(|_| "{}".into()),
                r.sleep_after_secs as i64,
                r.keep_alive,
                r.created_at_ms,
                r.last_activity_ms,
                r.runtime.map(|x| x.pid),
                r.runtime.map(|x| x.start_time as i64),
                serde_json::to_string(&r.layers).unwrap_or_else(|_| "[]".into()),
                r.parent_snapshot,
                r.persist,
            ],
        )?;
        Ok(n == 1)
    }

    fn update_sandbox(&self, r: &SandboxRecord) -> Result<()> {
        update_sandbox(&self.conn(), r)
    }

    fn set_last_activity(&self, name: &SandboxName, at_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET last_activity_ms = max(last_activity_ms, ?2) WHERE name = ?1",
            params![name.as_str(), at_ms],
        )?;
        Ok(())
    }

    fn delete_sandbox(&self, name: &SandboxName) -> Result<()> {
        self.conn()
            .execute("DELETE FROM sandboxes WHERE name = ?1", [name.as_str()])?;
        Ok(())
    }

    fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT name, kind, layers, created_at_ms, size_bytes FROM images WHERE name = ?1",
        )?;
        st.query_row([name], image_from_row).optional()?.transpose()
    }

    fn list_images(&self) -> Result<Vec<ImageRecord>> {
        query_parsed(
            &self.conn(),
            "SELECT name, kind, layers, created_at_ms, size_bytes FROM images ORDER BY name",
            [],
            image_from_row,
        )
    }

    fn put_image(&self, r: &ImageRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO images (name, kind, layers, created_at_ms, size_bytes) VALUES (?1,?2,?3,?4,?5) \
             ON CONFLICT(name) DO UPDATE SET kind=excluded.kind, layers=excluded.layers, \
             created_at_ms=excluded.created_at_ms, size_bytes=excluded.size_bytes",
            params![
                r.name,
                r.kind,
                serde_json::to_string(&r.layers).unwrap_or_else(|_| "[]".into()),
                r.created_at_ms,
                r.size_bytes as i64
            ],
        )?;
        Ok(())
    }

    fn put_port(&self, r: &PortRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO ports (sandbox, port, token, created_at_ms) VALUES (?1,?2,?3,?4) \
             ON CONFLICT(sandbox, port) DO UPDATE SET token=excluded.token, \
             created_at_ms=excluded.created_at_ms",
            params![r.sandbox.as_str(), r.port as i64, r.token, r.created_at_ms],
        )?;
        Ok(())
    }

    fn get_port(&self, name: &SandboxName, port: u16) -> Result<Option<PortRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT sandbox, port, token, created_at_ms FROM ports WHERE sandbox = ?1 AND port = ?2",
        )?;
        st.query_row(params![name.as_str(), port as i64], port_from_row)
            .optional()?
            .transpose()
    }

    fn list_ports(&self, name: &SandboxName) -> Result<Vec<PortRecord>> {
        query_parsed(
            &self.conn(),
            "SELECT sandbox, port, token, created_at_ms FROM ports WHERE sandbox = ?1 ORDER BY port",
            [name.as_str()],
            port_from_row,
        )
    }

    fn delete_port(&self, name: &SandboxName, port: u16) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM ports WHERE sandbox = ?1 AND port = ?2",
            params![name.as_str(), port as i64],
        )?;
        Ok(n == 1)
    }

    fn get_network(&self, name: &SandboxName) -> Result<Option<NetworkConfig>> {
        let conn = self.conn();
        let mut st =
            conn.prepare_cached("SELECT config FROM sandbox_network WHERE sandbox = ?1")?;
        let Some(json) = st
            .query_row([name.as_str()], |r| r.get::<_, String>(0))
            .optional()?
        else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| MetaError::Corrupt {
                what: format!("network of sandbox {name:?}"),
                detail: e.to_string(),
            })
    }

    fn put_network(&self, name: &SandboxName, cfg: &NetworkConfig) -> Result<()> {
        let json = serde_json::to_string(cfg).map_err(|e| MetaError::Corrupt {
            what: format!("network of sandbox {name:?}"),
            detail: e.to_string(),
        })?;
        self.conn().execute(
            "INSERT INTO sandbox_network (sandbox, config) VALUES (?1, ?2) \
             ON CONFLICT(sandbox) DO UPDATE SET config = excluded.config",
            params![name.as_str(), json],
        )?;
        Ok(())
    }

    fn put_layer(&self, rec: &LayerRecord) -> Result<()> {
        put_layer(&self.conn(), rec)
    }

    fn list_layers(&self) -> Result<Vec<LayerRecord>> {
        let conn = self.conn();
        let mut st =
            conn.prepare_cached("SELECT id, size_bytes, created_at_ms FROM layers ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok(LayerRecord {
                id: r.get(0)?,
                size_bytes: r.get::<_, i64>(1)? as u64,
                created_at_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn delete_layer(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM layers WHERE id = ?1", [id])?;
        Ok(())
    }

    fn commit_snapshot(
        &self,
        layers: &[LayerRecord],
        snap: &SnapshotRecord,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for l in layers {
            put_layer(&tx, l)?;
        }
        let r = tx.execute(
            &format!("INSERT INTO snapshots ({SNAPSHOT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"),
            params![
                snap.id,
                snap.name,
                snap.sandbox,
                snap.image,
                snap.parent,
                serde_json::to_string(&snap.layers).unwrap_or_else(|_| "[]".into()),
                snap.size_bytes as i64,
                snap.created_at_ms,
            ],
        );
        match r {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(MetaError::NameTaken(
                    snap.name.clone().unwrap_or_else(|| snap.id.clone()),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(s) = sandbox {
            update_sandbox(&tx, s)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_snapshot(&self, id_or_name: &str) -> Result<Option<SnapshotRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {SNAPSHOT_COLS} FROM snapshots WHERE id = ?1 \
             UNION ALL SELECT {SNAPSHOT_COLS} FROM snapshots WHERE name = ?1 LIMIT 1"
        ))?;
        st.query_row([id_or_name], snapshot_from_row)
            .optional()?
            .transpose()
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        query_parsed(
            &self.conn(),
            &format!("SELECT {SNAPSHOT_COLS} FROM snapshots ORDER BY created_at_ms, id"),
            [],
            snapshot_from_row,
        )
    }

    fn delete_snapshot(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(n == 1)
    }

    fn put_backup(&self, rec: &BackupRecord) -> Result<()> {
        backups::put(&self.conn(), rec)
    }

    fn get_backup(&self, id: &str) -> Result<Option<BackupRecord>> {
        backups::get(&self.conn(), id)
    }

    fn list_backups(&self) -> Result<Vec<BackupRecord>> {
        backups::list(&self.conn())
    }

    fn mark_backup_swept(&self, id: &str) -> Result<()> {
        backups::mark_swept(&self.conn(), id)
    }

    fn delete_backup(&self, id: &str) -> Result<bool> {
        backups::delete(&self.conn(), id)
    }
}

fn update_sandbox(conn: &Connection, r: &SandboxRecord) -> Result<()> {
    conn.execute(
        "UPDATE sandboxes SET image=?2, state=?3, env=?4, sleep_after_secs=?5, keep_alive=?6, \
         created_at_ms=?7, last_activity_ms=?8, pid=?9, start_time=?10, layers=?11, \
         parent_snapshot=?12, persist=?13 WHERE name=?1",
        params![
            r.name.as_str(),
            r.image,
            r.state.as_str(),
            serde_json::to_string(&r.env).unwrap_or_else(|_| "{}".into()),
            r.sleep_after_secs as i64,
            r.keep_alive,
            r.created_at_ms,
            r.last_activity_ms,
            r.runtime.map(|x| x.pid),
            r.runtime.map(|x| x.start_time as i64),
            serde_json::to_string(&r.layers).unwrap_or_else(|_| "[]".into()),
            r.parent_snapshot,
            r.persist,
        ],
    )?;
    Ok(())
}

fn put_layer(conn: &Connection, r: &LayerRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO layers (id, size_bytes, created_at_ms) VALUES (?1,?2,?3) \
         ON CONFLICT(id) DO NOTHING",
        params![r.id, r.size_bytes as i64, r.created_at_ms],
    )?;
    Ok(())
}

const SNAPSHOT_COLS: &str = "id, name, sandbox, image, parent, layers, size_bytes, created_at_ms";

fn snapshot_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<SnapshotRecord>> {
    let id: String = row.get(0)?;
    let layers: String = row.get(5)?;
    let layers = match serde_json::from_str(&layers) {
        Ok(l) => l,
        Err(e) => {
            return Ok(Err(MetaError::Corrupt {
                what: format!("snapshot {id:?}"),
                detail: e.to_string(),
            }))
        }
    };
    Ok(Ok(SnapshotRecord {
        id,
        name: row.get(1)?,
        sandbox: row.get(2)?,
        image: row.get(3)?,
        parent: row.get(4)?,
        layers,
        size_bytes: row.get::<_, i64>(6)? as u64,
        created_at_ms: row.get(7)?,
    }))
}

fn port_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PortRecord>> {
    let name: String = row.get(0)?;
    let port: i64 = row.get(1)?;
    let corrupt = |detail: String| MetaError::Corrupt {
        what: format!("port {port} of sandbox {name:?}"),
        detail,
    };
    let sandbox = match SandboxName::new(name.clone()) {
        Ok(n) => n,
        Err(e) => return Ok(Err(corrupt(e.to_string()))),
    };
    let Ok(port) = u16::try_from(port) else {
        return Ok(Err(corrupt("port out of range".into())));
    };
    Ok(Ok(PortRecord {
        sandbox,
        port,
        token: row.get(2)?,
        created_at_ms: row.get(3)?,
    }))
}

fn image_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ImageRecord>> {
    let name: String = row.get(0)?;
    let layers: String = row.get(2)?;
    let layers = match serde_json::from_str(&layers) {
        Ok(l) => l,
        Err(e) => {
            return Ok(Err(MetaError::Corrupt {
                what: format!("image {name:?}"),
                detail: e.to_string(),
            }))
        }
    };
    Ok(Ok(ImageRecord {
        name,
        kind: row.get(1)?,
        layers,
        created_at_ms: row.get(3)?,
        size_bytes: row.get::<_, i64>(4)? as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> SandboxRecord {
        SandboxRecord {
            env: [("A".to_string(), "1".to_string())].into(),
            ..SandboxRecord::fresh(
                SandboxName::new(name).unwrap(),
                "host".into(),
                SandboxState::Creating,
                600,
                1,
            )
        }
    }

    #[test]
    fn snapshots_commit_atomically() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut r = rec("src");
        s.insert_sandbox(&r).unwrap();
        let layer = LayerRecord {
            id: "s-1".into(),
            size_bytes: 3,
            created_at_ms: 1,
        };
        let snap = SnapshotRecord {
            id: "snap-1".into(),
            name: Some("base".into()),
            sandbox: "src".into(),
            image: "host".into(),
            parent: None,
            layers: vec!["s-1".into()],
            size_bytes: 3,
            created_at_ms: 1,
        };
        r.layers = vec!["s-1".into()];
        r.parent_snapshot = Some("snap-1".into());
        s.commit_snapshot(std::slice::from_ref(&layer), &snap, Some(&r))
            .unwrap();
        assert_eq!(s.get_sandbox(&r.name).unwrap().unwrap(), r);
        assert_eq!(s.get_snapshot("snap-1").unwrap(), Some(snap.clone()));
        assert_eq!(s.get_snapshot("base").unwrap(), Some(snap.clone()));
        assert_eq!(s.list_layers().unwrap(), vec![layer.clone()]);
        // A taken name fails the whole transaction: no layer, no sandbox change.
        let snap2 = SnapshotRecord {
            id: "snap-2".into(),
            layers: vec!["s-2".into()],
            ..snap.clone()
        };
        let mut r2 = r.clone();
        r2.layers = vec!["s-2".into()];
        let l2 = LayerRecord {
            id: "s-2".into(),
            ..layer.clone()
        };
        assert!(matches!(
            s.commit_snapshot(&[l2], &snap2, Some(&r2)),
            Err(MetaError::NameTaken(_))
        ));
        assert_eq!(s.list_layers().unwrap().len(), 1);
        assert_eq!(s.get_sandbox(&r.name).unwrap().unwrap().layers, vec!["s-1"]);
        assert!(s.delete_snapshot("snap-1").unwrap());
        assert!(!s.delete_snapshot("snap-1").unwrap());
        assert_eq!(s.list_snapshots().unwrap(), vec![]);
        s.delete_layer("s-1").unwrap();
        assert!(s.list_layers().unwrap().is_empty());
    }

    #[test]
    fn network_belongs_to_its_sandbox() {
        use bothy_api::network::NetworkMode;
        let s = SqliteStore::open_in_memory().unwrap();
        let r = rec("net");
        s.insert_sandbox(&r).unwrap();
        assert_eq!(s.get_network(&r.name).unwrap(), None);
        let mut cfg = NetworkConfig::default();
        cfg.policy.deny.push("*.evil.test".into());
        s.put_network(&r.name, &cfg).unwrap();
        assert_eq!(s.get_network(&r.name).unwrap(), Some(cfg.clone()));
        cfg.mode = NetworkMode::None;
        s.put_network(&r.name, &cfg).unwrap();
        assert_eq!(
            s.get_network(&r.name).unwrap().unwrap().mode,
            NetworkMode::None
        );
        s.delete_sandbox(&r.name).unwrap();
        assert_eq!(s.get_network(&r.name).unwrap(), None);
    }

    #[test]
    fn ports_belong_to_their_sandbox() {
        let s = SqliteStore::open_in_memory().unwrap();
        let r = rec("web");
        s.insert_sandbox(&r).unwrap();
        let p = PortRecord {
            sandbox: r.name.clone(),
            port: 8080,
            token: "abcdefghijklmnop".into(),
            created_at_ms: 5,
        };
        s.put_port(&p).unwrap();
        assert_eq!(s.get_port(&r.name, 8080).unwrap(), Some(p.clone()));
        assert_eq!(s.get_port(&r.name, 8081).unwrap(), None);
        let p2 = PortRecord {
            token: "qrstuvwxyzabcdef".into(),
            ..p.clone()
        };
        s.put_port(&p2).unwrap();
        assert_eq!(s.list_ports(&r.name).unwrap(), vec![p2]);
        // A port of a sandbox that does not exist is refused.
        let ghost = PortRecord {
            sandbox: SandboxName::new("ghost").unwrap(),
            ..p.clone()
        };
        assert!(s.put_port(&ghost).is_err());
        // Updating the sandbox keeps its ports; deleting it removes them.
        s.update_sandbox(&r).unwrap();
        assert_eq!(s.list_ports(&r.name).unwrap().len(), 1);
        assert!(s.delete_port(&r.name, 8080).unwrap());
        assert!(!s.delete_port(&r.name, 8080).unwrap());
        s.put_port(&p).unwrap();
        s.delete_sandbox(&r.name).unwrap();
        assert!(s.list_ports(&r.name).unwrap().is_empty());
    }

    #[test]
    fn sandbox_crud() {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut r = rec("a");
        assert!(s.insert_sandbox(&r).unwrap());
        assert!(!s.insert_sandbox(&r).unwrap(), "second insert is refused");
        r.state = SandboxState::Running;
        r.runtime = Some(RuntimeRef {
            pid: 42,
            start_time: 7,
        });
        s.update_sandbox(&r).unwrap();
        assert_eq!(s.get_sandbox(&r.name).unwrap(), Some(r.clone()));
        s.set_last_activity(&r.name, 100).unwrap();
        s.set_last_activity(&r.name, 50).unwrap();
        assert_eq!(
            s.get_sandbox(&r.name).unwrap().unwrap().last_activity_ms,
            100
        );
        assert_eq!(s.list_sandboxes().unwrap().len(), 1);
        s.delete_sandbox(&r.name).unwrap();
        assert_eq!(s.get_sandbox(&r.name).unwrap(), None);
    }

    #[test]
    fn images_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put_image(&ImageRecord {
                name: "deb".into(),
                kind: "imported".into(),
                layers: vec!["sha256-ab".into()],
                created_at_ms: 5,
                size_bytes: 10,
            })
            .unwrap();
            s.insert_sandbox(&rec("b")).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.get_image("deb").unwrap().unwrap().layers,
            vec!["sha256-ab"]
        );
        assert_eq!(s.list_images().unwrap().len(), 1);
        assert!(s
            .get_sandbox(&SandboxName::new("b").unwrap())
            .unwrap()
            .is_some());
    }
}
