//! The SQLite dialect (the embedded default).
//!
//! One file, WAL journal, `synchronous=FULL` so a commit that returned
//! survives a power cut (`NORMAL` for [`Mode::WriteRelaxed`]), a busy
//! timeout so several strata processes can share it. Write transactions are
//! `BEGIN IMMEDIATE`: SQLite serialises them, which the protocol's checks
//! need. The schema version is `PRAGMA user_version`; [`MIGRATIONS`] brings
//! an older catalog up to date in one transaction each, and a newer catalog
//! is refused.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{Dialect, Mode, Row, SqlCatalog, Tx, Value};
use crate::{CatalogError, Result};

/// Schema migrations; entry `i` takes version `i` to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE repo (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE streams (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects(id),
    start_snap TEXT,
    end_snap TEXT NOT NULL,
    engine TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    new_bytes INTEGER NOT NULL,
    new_stored_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX streams_by_project ON streams(project, end_snap);
CREATE TABLE chunks (
    id BLOB PRIMARY KEY,
    len INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE manifests (
    stream TEXT NOT NULL REFERENCES streams(id),
    seq INTEGER NOT NULL,
    chunk BLOB NOT NULL,
    len INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE streams ADD COLUMN parent_snap TEXT;
UPDATE streams SET parent_snap = start_snap;
ALTER TABLE projects ADD COLUMN retention TEXT;
"#,
    r#"
CREATE INDEX manifests_by_chunk ON manifests(chunk);
"#,
    // Save intents and scrub (docs/gc.md).
    r#"
ALTER TABLE chunks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN unref_since_ms INTEGER;
CREATE TABLE saves (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE intents (
    save TEXT NOT NULL REFERENCES saves(id),
    chunk BLOB NOT NULL,
    PRIMARY KEY (save, chunk)
) WITHOUT ROWID;
CREATE INDEX intents_by_chunk ON intents(chunk);
CREATE TABLE doomed (
    chunk BLOB NOT NULL,
    generation INTEGER NOT NULL,
    scrub TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    PRIMARY KEY (chunk, generation)
) WITHOUT ROWID;
CREATE INDEX doomed_live ON doomed(chunk, generation) WHERE scrub <> '';
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
"#, // The fleet: hosts, placement, the project lease (docs/fleet.md).
    r#"
ALTER TABLE saves ADD COLUMN fence_host TEXT;
ALTER TABLE saves ADD COLUMN fence_token INTEGER;
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    max_projects INTEGER NOT NULL,
    max_bytes INTEGER NOT NULL,
    heartbeat_ms INTEGER,
    agent_version TEXT,
    added_ms INTEGER NOT NULL,
    cache_bytes INTEGER NOT NULL DEFAULT 0,
    cache_budget INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE placements (
    project TEXT PRIMARY KEY REFERENCES projects(id),
    state TEXT NOT NULL,
    host TEXT REFERENCES hosts(id),
    token INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    move_to TEXT REFERENCES hosts(id),
    last_host TEXT
);
CREATE INDEX placements_by_host ON placements(host);
CREATE INDEX placements_by_target ON placements(move_to);
CREATE TABLE host_copies (
    host TEXT NOT NULL REFERENCES hosts(id),
    project TEXT NOT NULL REFERENCES projects(id),
    snapshot TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (host, project)
);
CREATE INDEX host_copies_by_project ON host_copies(project);
CREATE TABLE rejections (
    at_ms INTEGER NOT NULL,
    project TEXT NOT NULL,
    host TEXT NOT NULL,
    token INTEGER NOT NULL,
    why TEXT NOT NULL,
    PRIMARY KEY (project, at_ms, host, token)
);
CREATE INDEX rejections_by_time ON rejections(at_ms);
"#,
];

/// A SQLite database file (or one in memory) as a [`Dialect`].
#[derive(Debug)]
pub struct Sqlite {
    conn: Mutex<Connection>,
}

/// The catalog in a SQLite file: the SQL protocol on the SQLite dialect.
pub type SqliteCatalog = SqlCatalog<Sqlite>;

/// A failure of SQLite in the catalog call `op`: transient when the
/// database was busy or locked by another process.
fn backend(op: &'static str, e: rusqlite::Error) -> CatalogError {
    let transient = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    CatalogError::Backend {
        op,
        transient,
        source: Box::new(e),
    }
}

impl SqlCatalog<Sqlite> {
    /// Opens (creating and migrating as needed) the catalog at `path`.
    ///
    /// # Errors
    /// When the database cannot be opened or is newer than this build.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| backend("open", e))?;
        Self::setup(conn)
    }

    /// A catalog in memory, for tests.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory().map_err(|e| backend("open", e))?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        let e = |e| backend("open", e);
        conn.busy_timeout(Duration::from_secs(30)).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(e)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(e)?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(CatalogError::TooNew { found, supported });
        }
        let m = |e| backend("migrate", e);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(m)?;
            // Another process may have migrated meanwhile.
            let now: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(m)?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(sql).map_err(m)?;
            if i == 0 {
                tx.execute(
                    "INSERT INTO repo (key, value) VALUES ('id', ?1)",
                    params![uuid::Uuid::new_v4().to_string()],
                )
                .map_err(m)?;
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(m)?;
            tx.commit().map_err(m)?;
        }
        Ok(SqlCatalog {
            db: Sqlite {
                conn: Mutex::new(conn),
            },
        })
    }
}

impl Sqlite {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

/// A transaction on the SQLite dialect.
pub struct SqliteTx<'a> {
    tx: rusqlite::Transaction<'a>,
    op: &'static str,
}

impl SqliteTx<'_> {
    fn run(&mut self, sql: &'static str, params: &[Value]) -> rusqlite::Result<usize> {
        self.tx
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))
    }
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &'static str, params: &[Value]) -> Result<u64> {
        let op = self.op;
        self.run(sql, params)
            .map(|n| n as u64)
            .map_err(|e| backend(op, e))
    }

    fn query(&mut self, sql: &'static str, params: &[Value]) -> Result<Vec<Row>> {
        let op = self.op;
        let e = |e| backend(op, e);
        let mut st = self.tx.prepare_cached(sql).map_err(e)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params)).map_err(e)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(e)? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i).map_err(e)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    ValueRef::Real(f) => Value::Int(f as i64),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn insert_unique(&mut self, sql: &'static str, params: &[Value]) -> Result<bool> {
        match self.run(sql, params) {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(backend(self.op, e)),
        }
    }
}

impl Dialect for Sqlite {
    type Tx<'a> = SqliteTx<'a>;

    fn transaction<T>(
        &self,
        mode: Mode,
        op: &'static str,
        f: impl FnOnce(&mut SqliteTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn();
        let e = |e| backend(op, e);
        // Set on every write, so a relaxed transaction that ended badly
        // cannot weaken the durable ones after it.
        match mode {
            Mode::Read => {}
            Mode::Write => conn.pragma_update(None, "synchronous", "FULL").map_err(e)?,
            Mode::WriteRelaxed => conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(e)?,
        }
        let behavior = match mode {
            Mode::Read => TransactionBehavior::Deferred,
            Mode::Write | Mode::WriteRelaxed => TransactionBehavior::Immediate,
        };
        let result = (|| {
            let tx = conn.transaction_with_behavior(behavior).map_err(e)?;
            let mut t = SqliteTx { tx, op };
            let out = f(&mut t)?;
            t.tx.commit().map_err(e)?;
            Ok(out)
        })();
        if mode == Mode::WriteRelaxed {
            let _ = conn.pragma_update(None, "synchronous", "FULL");
        }
        result
    }
}
