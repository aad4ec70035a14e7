//! The SQLite catalog (the embedded default).
//!
//! One file, WAL journal, `synchronous=FULL` so a commit that returned
//! survives a power cut, a busy timeout so several strata processes can
//! share it. The schema version is `PRAGMA user_version`; [`MIGRATIONS`]
//! brings an older catalog up to date in one transaction each, and a newer
//! catalog is refused.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Transaction;
use rusqlite::{Connection, OptionalExtension, params};
use strata_core::{
    ChunkId, ChunkKey, ChunkLookup, ManifestEntry, ProjectId, SaveId, SnapshotId, StreamId,
    StreamInfo,
};

use crate::{
    Catalog, CatalogError, Doomed, NewChunk, Project, ProjectSummary, Result, RowsPage,
    SCRUB_LEASE, SaveRecord,
};

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
"#,
];

/// True (a row) when snapshot `?2` of project `?1` is reachable: walking
/// from it backwards through the streams that end at each snapshot, some
/// full stream is met. `UNION` keeps the walk finite.
const REACHABLE: &str = "
WITH RECURSIVE up(snap) AS (
    SELECT ?2
    UNION
    SELECT s.start_snap FROM streams s JOIN up ON s.end_snap = up.snap
    WHERE s.project = ?1 AND s.start_snap IS NOT NULL
)
SELECT 1 FROM streams s JOIN up ON s.end_snap = up.snap
WHERE s.project = ?1 AND s.start_snap IS NULL LIMIT 1";

/// A catalog in a SQLite file.
#[derive(Debug)]
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    /// Opens (creating and migrating as needed) the catalog at `path`.
    ///
    /// # Errors
    /// When the database cannot be opened or is newer than this build.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// A catalog in memory, for tests.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(CatalogError::TooNew { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another process may have migrated meanwhile.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(sql)?;
            if i == 0 {
                tx.execute(
                    "INSERT INTO repo (key, value) VALUES ('id', ?1)",
                    params![uuid::Uuid::new_v4().to_string()],
                )?;
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| CatalogError::Invalid(e.to_string()))
}

fn chunk_id(b: &[u8]) -> Result<ChunkId> {
    ChunkId::from_slice(b).map_err(|e| CatalogError::Invalid(e.to_string()))
}

type StreamRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
);

/// The columns of a stream row, in [`StreamRow`] order.
const STREAM_COLUMNS: &str = "id, project, start_snap, end_snap, engine, bytes, chunks, new_bytes, \
     new_stored_bytes, created_ms, host, parent_snap";

fn stream_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn stream_from_row(r: StreamRow) -> Result<StreamInfo> {
    Ok(StreamInfo {
        id: parse(&r.0)?,
        project: parse(&r.1)?,
        start: r.2.as_deref().map(parse::<SnapshotId>).transpose()?,
        end: parse(&r.3)?,
        parent: r.11.as_deref().map(parse::<SnapshotId>).transpose()?,
        engine: r.4,
        bytes: r.5 as u64,
        chunks: r.6 as u64,
        new_bytes: r.7 as u64,
        new_stored_bytes: r.8 as u64,
        created_ms: r.9,
        host: r.10,
    })
}

/// Fails unless `scrub` holds the scrub lease.
fn check_lease(tx: &Transaction<'_>, scrub: &str) -> Result<()> {
    let owner: Option<String> = tx
        .query_row(
            "SELECT owner FROM leases WHERE name = ?1",
            params![SCRUB_LEASE],
            |r| r.get(0),
        )
        .optional()?;
    match owner {
        Some(o) if o == scrub => Ok(()),
        Some(o) => Err(CatalogError::LeaseLost(o)),
        None => Err(CatalogError::LeaseLost("nobody".into())),
    }
}

/// A transaction of scrub's: a read-only one for a dry run, else a write
/// transaction that fails unless `scrub` holds the scrub lease.
fn scrub_tx<'c>(conn: &'c mut Connection, scrub: &str, dry_run: bool) -> Result<Transaction<'c>> {
    if dry_run {
        return Ok(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?);
    }
    durable(conn)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    check_lease(&tx, scrub)?;
    Ok(tx)
}

/// Makes sure the next transaction on `conn` is synced on commit: commits
/// of streams and scrub's dooms must survive a power cut.
fn durable(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

fn save_exists(tx: &Transaction<'_>, save: SaveId) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM saves WHERE id = ?1")?
        .exists(params![save.to_string()])?)
}

fn drop_save(tx: &Transaction<'_>, save: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM intents WHERE save = ?1")?
        .execute(params![save])?;
    tx.prepare_cached("DELETE FROM saves WHERE id = ?1")?
        .execute(params![save])?;
    Ok(())
}

fn save_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, i64, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn save_from_row(r: (String, String, i64, i64, i64, i64)) -> Result<SaveRecord> {
    Ok(SaveRecord {
        id: parse(&r.0)?,
        host: r.1,
        pid: r.2 as u32,
        process_start: r.3 as u64,
        started_ms: r.4,
        expires_ms: r.5,
    })
}

impl SqliteCatalog {
    /// Runs `f` with `synchronous=NORMAL`: for writes that need isolation
    /// but not durability (a save's intents and renewals die with the
    /// save's host anyway; the commit that follows is `FULL` and syncs
    /// everything before it).
    fn relaxed<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        /// Puts `synchronous=FULL` back however `f` ends (a panic too);
        /// the writes that must be durable also set it themselves
        /// ([`durable`]), so a failure here cannot weaken them.
        struct Full<'a>(MutexGuard<'a, Connection>);
        impl Drop for Full<'_> {
            fn drop(&mut self) {
                let _ = self.0.pragma_update(None, "synchronous", "FULL");
            }
        }
        let mut conn = Full(self.conn());
        conn.0.pragma_update(None, "synchronous", "NORMAL")?;
        f(&mut conn.0)
    }
}

impl Catalog for SqliteCatalog {
    fn repo_id(&self) -> Result<String> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM repo WHERE key = 'id'", [], |r| r.get(0))?)
    }

    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project> {
        let p = Project {
            id: ProjectId::random(),
            name: name.to_string(),
            created_ms,
        };
        let r = self.conn().execute(
            "INSERT INTO projects (id, name, created_ms) VALUES (?1, ?2, ?3)",
            params![p.id.to_string(), p.name, p.created_ms],
        );
        match r {
            Ok(_) => Ok(p),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(CatalogError::NameTaken(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        let row: Option<(String, String, i64)> = self
            .conn()
            .query_row(
                "SELECT id, name, created_ms FROM projects WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(id, name, created_ms)| {
            Ok(Project {
                id: parse(&id)?,
                name,
                created_ms,
            })
        })
        .transpose()
    }

    fn project(&self, id: ProjectId) -> Result<Option<Project>> {
        let row: Option<(String, i64)> = self
            .conn()
            .query_row(
                "SELECT name, created_ms FROM projects WHERE id = ?1",
                params![id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(name, created_ms)| Project {
            id,
            name,
            created_ms,
        }))
    }

    fn projects(&self) -> Result<Vec<ProjectSummary>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT p.id, p.name, p.created_ms, COUNT(s.id), MAX(s.end_snap),
                    COALESCE(SUM(s.bytes), 0), COALESCE(SUM(s.new_stored_bytes), 0)
             FROM projects p LEFT JOIN streams s ON s.project = p.id
             GROUP BY p.id ORDER BY p.name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, created_ms, n, newest, bytes, stored) = row?;
            out.push(ProjectSummary {
                project: Project {
                    id: parse(&id)?,
                    name,
                    created_ms,
                },
                streams: n as u64,
                newest: newest.as_deref().map(parse).transpose()?,
                bytes: bytes as u64,
                stored_bytes: stored as u64,
            });
        }
        Ok(out)
    }

    fn begin_save(&self, save: &SaveRecord) -> Result<()> {
        self.relaxed(|conn| {
            conn.execute(
                "INSERT OR IGNORE INTO saves (id, host, pid, process_start, started_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    save.id.to_string(),
                    save.host,
                    save.pid,
                    save.process_start as i64,
                    save.started_ms,
                    save.expires_ms
                ],
            )?;
            Ok(())
        })
    }

    fn renew_save(&self, save: SaveId, expires_ms: i64) -> Result<bool> {
        self.relaxed(|conn| {
            Ok(conn.execute(
                "UPDATE saves SET expires_ms = MAX(expires_ms, ?2) WHERE id = ?1",
                params![save.to_string(), expires_ms],
            )? == 1)
        })
    }

    fn claim_chunks(&self, save: SaveId, ids: &[ChunkId]) -> Result<Vec<ChunkLookup>> {
        self.relaxed(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !save_exists(&tx, save)? {
                return Err(CatalogError::SaveGone(save));
            }
            let mut out = Vec::with_capacity(ids.len());
            {
                let sid = save.to_string();
                let mut intend = tx.prepare_cached(
                    "INSERT OR IGNORE INTO intents (save, chunk) VALUES (?1, ?2)",
                )?;
                let mut stored =
                    tx.prepare_cached("SELECT generation FROM chunks WHERE id = ?1")?;
                let mut doomed =
                    tx.prepare_cached("SELECT MAX(generation) FROM doomed WHERE chunk = ?1")?;
                for id in ids {
                    // The intent first, then the lookup, in one transaction.
                    intend.execute(params![sid, &id.0[..]])?;
                    let g: Option<u32> = stored
                        .query_row(params![&id.0[..]], |r| r.get(0))
                        .optional()?;
                    out.push(match g {
                        Some(generation) => ChunkLookup::Stored { generation },
                        None => {
                            let max: Option<u32> =
                                doomed.query_row(params![&id.0[..]], |r| r.get(0))?;
                            ChunkLookup::Upload {
                                generation: max.map_or(0, |m| m + 1),
                            }
                        }
                    });
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn end_save(&self, save: SaveId) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        drop_save(&tx, &save.to_string())?;
        tx.commit()?;
        Ok(())
    }

    fn saves(&self) -> Result<Vec<SaveRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, host, pid, process_start, started_ms, expires_ms FROM saves ORDER BY id",
        )?;
        let rows = st.query_map([], save_row)?;
        rows.map(|r| save_from_row(r?)).collect()
    }

    fn expire_saves(&self, now_ms: i64) -> Result<Vec<SaveRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let expired = {
            let mut st = tx.prepare(
                "SELECT id, host, pid, process_start, started_ms, expires_ms FROM saves
                 WHERE expires_ms < ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![now_ms], save_row)?;
            rows.map(|r| save_from_row(r?))
                .collect::<Result<Vec<_>>>()?
        };
        for s in &expired {
            drop_save(&tx, &s.id.to_string())?;
        }
        tx.commit()?;
        Ok(expired)
    }

    fn commit_stream(
        &self,
        save: SaveId,
        s: &StreamInfo,
        manifest: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<()> {
        let mut conn = self.conn();
        durable(&conn)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // A retry of a commit that went through: nothing to do.
        let existing: Option<StreamRow> = tx
            .query_row(
                &format!("SELECT {STREAM_COLUMNS} FROM streams WHERE id = ?1"),
                params![s.id.to_string()],
                stream_row,
            )
            .optional()?;
        if let Some(row) = existing {
            return if stream_from_row(row)? == *s {
                Ok(())
            } else {
                Err(CatalogError::Invalid(format!(
                    "stream id {} is already committed with another record",
                    s.id
                )))
            };
        }
        // Only a save whose intents still stand may commit.
        if !save_exists(&tx, save)? {
            return Err(CatalogError::SaveGone(save));
        }
        // An incremental needs its start, restorable: a trim running beside
        // the save may have deleted the stream that ends there, or one
        // further up its chain.
        if let Some(start) = &s.start {
            let (p, st) = (s.project.to_string(), start.to_string());
            let there = tx
                .prepare_cached("SELECT 1 FROM streams WHERE project = ?1 AND end_snap = ?2")?
                .exists(params![p, st])?;
            if !there {
                return Err(CatalogError::BaseGone(start.clone()));
            }
            if !tx.prepare_cached(REACHABLE)?.exists(params![p, st])? {
                return Err(CatalogError::BaseUnreachable(start.clone()));
            }
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (id, generation, len, stored_len, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for c in new_chunks {
                ins.execute(params![
                    &c.id.0[..],
                    c.generation,
                    c.len,
                    c.stored_len,
                    s.created_ms
                ])?;
            }
            tx.execute(
                "INSERT INTO streams (id, project, start_snap, end_snap, engine, bytes, chunks,
                                      new_bytes, new_stored_bytes, created_ms, host, parent_snap)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    s.id.to_string(),
                    s.project.to_string(),
                    s.start.as_ref().map(|x| x.to_string()),
                    s.end.to_string(),
                    s.engine,
                    s.bytes as i64,
                    s.chunks as i64,
                    s.new_bytes as i64,
                    s.new_stored_bytes as i64,
                    s.created_ms,
                    s.host,
                    s.parent.as_ref().map(|x| x.to_string()),
                ],
            )?;
            let mut m = tx.prepare_cached(
                "INSERT INTO manifests (stream, seq, chunk, len) VALUES (?1, ?2, ?3, ?4)",
            )?;
            // A chunk named again is no longer waiting for scrub's grace.
            let mut unmark = tx.prepare_cached(
                "UPDATE chunks SET unref_since_ms = NULL WHERE id = ?1 AND unref_since_ms IS NOT NULL",
            )?;
            let mut known = tx.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
            let sid = s.id.to_string();
            for (i, e) in manifest.iter().enumerate() {
                m.execute(params![sid, i as i64, &e.id.0[..], e.len])?;
                unmark.execute(params![&e.id.0[..]])?;
            }
            // Every chunk the manifest names must be committed now: reused
            // ones were protected by the intents, new ones are inserted above.
            for c in manifest {
                if !known.exists(params![&c.id.0[..]])? {
                    return Err(CatalogError::Invalid(format!(
                        "stream {} names chunk {} that neither a committed stream nor this save stored",
                        s.id, c.id
                    )));
                }
            }
            drop_save(&tx, &save.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn streams(&self, project: ProjectId) -> Result<Vec<StreamInfo>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {STREAM_COLUMNS} FROM streams WHERE project = ?1 ORDER BY end_snap, created_ms"
        ))?;
        let rows = st.query_map(params![project.to_string()], stream_row)?;
        rows.map(|r| stream_from_row(r?)).collect()
    }

    fn delete_streams(&self, project: ProjectId, streams: &[StreamId]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let p = project.to_string();
        {
            let mut end_of =
                tx.prepare_cached("SELECT end_snap FROM streams WHERE id = ?1 AND project = ?2")?;
            let mut m = tx.prepare_cached("DELETE FROM manifests WHERE stream = ?1")?;
            let mut s = tx.prepare_cached("DELETE FROM streams WHERE id = ?1")?;
            let mut ends = Vec::new();
            for id in streams {
                let sid = id.to_string();
                let end: Option<String> =
                    end_of.query_row(params![sid, p], |r| r.get(0)).optional()?;
                if let Some(end) = end {
                    m.execute(params![sid])?;
                    s.execute(params![sid])?;
                    ends.push(end);
                }
            }
            // The plan was made from an earlier read: a stream committed
            // since may start at a snapshot it deletes. No stream that
            // stays may lose its start; dropping `tx` rolls back.
            let mut still_ends =
                tx.prepare_cached("SELECT 1 FROM streams WHERE project = ?1 AND end_snap = ?2")?;
            let mut starts_at = tx.prepare_cached(
                "SELECT id FROM streams WHERE project = ?1 AND start_snap = ?2 LIMIT 1",
            )?;
            for end in ends {
                if still_ends.exists(params![p, end])? {
                    continue;
                }
                let orphan: Option<String> = starts_at
                    .query_row(params![p, end], |r| r.get(0))
                    .optional()?;
                if let Some(stream) = orphan {
                    return Err(CatalogError::StartNeeded {
                        stream: parse(&stream)?,
                        start: parse(&end)?,
                    });
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn retention(&self, project: ProjectId) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT retention FROM projects WHERE id = ?1",
                params![project.to_string()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    fn set_retention(&self, project: ProjectId, policy: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE projects SET retention = ?2 WHERE id = ?1",
            params![project.to_string(), policy],
        )?;
        Ok(())
    }

    fn chunks_page(&self, after: Option<&ChunkId>, limit: u32) -> Result<Vec<NewChunk>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, len, stored_len, generation FROM chunks WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let after: &[u8] = after.map_or(&[], |a| &a.0[..]);
        let rows = st.query_map(params![after, limit], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })?;
        rows.map(|r| {
            let (id, len, stored_len, generation) = r?;
            Ok(NewChunk {
                id: chunk_id(&id)?,
                generation,
                len,
                stored_len,
            })
        })
        .collect()
    }

    fn unknown_chunk_refs(&self, limit: u32) -> Result<Vec<(StreamId, u64, ChunkId)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT m.stream, m.seq, m.chunk FROM manifests m
             LEFT JOIN chunks c ON c.id = m.chunk WHERE c.id IS NULL
             ORDER BY m.stream, m.seq LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (s, seq, c) = r?;
            Ok((parse(&s)?, seq as u64, chunk_id(&c)?))
        })
        .collect()
    }

    fn streams_using(&self, chunk: &ChunkId, limit: u32) -> Result<Vec<(ProjectId, StreamId)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT s.project, s.id FROM manifests m JOIN streams s ON s.id = m.stream
             WHERE m.chunk = ?1 ORDER BY s.project, s.id LIMIT ?2",
        )?;
        let rows = st.query_map(params![&chunk.0[..], limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (p, s) = r?;
            Ok((parse(&p)?, parse(&s)?))
        })
        .collect()
    }

    fn manifest_page(&self, stream: StreamId, from: u64, limit: u32) -> Result<Vec<ManifestEntry>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT m.chunk, m.len, COALESCE(c.generation, 0) FROM manifests m
             LEFT JOIN chunks c ON c.id = m.chunk
             WHERE m.stream = ?1 AND m.seq >= ?2 ORDER BY m.seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![stream.to_string(), from as i64, limit], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (id, len, generation) = r?;
            Ok(ManifestEntry {
                id: chunk_id(&id)?,
                len,
                generation,
            })
        })
        .collect()
    }

    fn acquire_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held: Option<(String, i64)> = tx
            .query_row(
                "SELECT owner, expires_ms FROM leases WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((other, until)) = held
            && other != owner
            && until >= now_ms
        {
            return Err(CatalogError::LeaseHeld {
                owner: other,
                expires_ms: until,
            });
        }
        tx.execute(
            "INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET owner = ?2, expires_ms = ?3",
            params![name, owner, expires_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn renew_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE leases SET expires_ms = ?4 WHERE name = ?1 AND owner = ?2 AND expires_ms >= ?3",
            params![name, owner, now_ms, expires_ms],
        )? == 1)
    }

    fn chunk(&self, id: &ChunkId) -> Result<Option<NewChunk>> {
        let conn = self.conn();
        let mut st =
            conn.prepare_cached("SELECT len, stored_len, generation FROM chunks WHERE id = ?1")?;
        Ok(st
            .query_row(params![&id.0[..]], |r| {
                Ok(NewChunk {
                    id: *id,
                    len: r.get(0)?,
                    stored_len: r.get(1)?,
                    generation: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn set_scrub_checkpoint(&self, scrub: &str, key: &str, value: Option<&str>) -> Result<()> {
        let mut conn = self.conn();
        let tx = scrub_tx(&mut conn, scrub, false)?;
        match value {
            Some(v) => tx.execute(
                "INSERT INTO repo (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, v],
            )?,
            None => tx.execute("DELETE FROM repo WHERE key = ?1", params![key])?,
        };
        tx.commit()?;
        Ok(())
    }

    fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
            params![name, owner],
        )?;
        Ok(())
    }

    fn repo_value(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM repo WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_repo_value(&self, key: &str, value: Option<&str>) -> Result<()> {
        let conn = self.conn();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO repo (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, v],
            )?,
            None => conn.execute("DELETE FROM repo WHERE key = ?1", params![key])?,
        };
        Ok(())
    }

    fn scrub_rows(
        &self,
        scrub: &str,
        after: Option<&ChunkId>,
        limit: u32,
        now_ms: i64,
        grace_ms: i64,
        checkpoint_key: &str,
        dry_run: bool,
    ) -> Result<RowsPage> {
        let mut conn = self.conn();
        let tx = scrub_tx(&mut conn, scrub, dry_run)?;
        let mut page = RowsPage::default();
        {
            let mut rows = tx.prepare_cached(
                "SELECT id, generation, stored_len, unref_since_ms FROM chunks
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let after: &[u8] = after.map_or(&[], |a| &a.0[..]);
            let batch = rows
                .query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut named =
                tx.prepare_cached("SELECT 1 FROM manifests WHERE chunk = ?1 LIMIT 1")?;
            let mut intended =
                tx.prepare_cached("SELECT 1 FROM intents WHERE chunk = ?1 LIMIT 1")?;
            let mut set_mark =
                tx.prepare_cached("UPDATE chunks SET unref_since_ms = ?2 WHERE id = ?1")?;
            let mut doom = tx.prepare_cached(
                "INSERT OR IGNORE INTO doomed (chunk, generation, scrub, since_ms, stored_len)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            for (id, generation, stored_len, mark) in batch {
                page.scanned += 1;
                page.last = Some(chunk_id(&id)?);
                if named.exists(params![id])? || intended.exists(params![id])? {
                    page.referenced += 1;
                    if mark.is_some() && !dry_run {
                        set_mark.execute(params![id, Option::<i64>::None])?;
                    }
                    continue;
                }
                let since = mark.unwrap_or(now_ms);
                if since > now_ms - grace_ms {
                    page.waiting += 1;
                    if mark.is_none() && !dry_run {
                        set_mark.execute(params![id, since])?;
                    }
                    continue;
                }
                page.doomed += 1;
                page.doomed_bytes += stored_len as u64;
                if !dry_run {
                    doom.execute(params![id, generation, scrub, now_ms, stored_len])?;
                    delete.execute(params![id])?;
                }
            }
            if !dry_run && let Some(last) = &page.last {
                tx.execute(
                    "INSERT INTO repo (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = ?2",
                    params![checkpoint_key, format!("rows:{}", last.to_hex())],
                )?;
            }
        }
        tx.commit()?;
        Ok(page)
    }

    fn doom_orphans(
        &self,
        scrub: &str,
        candidates: &[(ChunkKey, u64)],
        now_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<ChunkKey>> {
        let mut conn = self.conn();
        let tx = scrub_tx(&mut conn, scrub, dry_run)?;
        let mut out = Vec::new();
        {
            let mut row =
                tx.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1 AND generation = ?2")?;
            let mut intended =
                tx.prepare_cached("SELECT 1 FROM intents WHERE chunk = ?1 LIMIT 1")?;
            // A tombstone's key may hold an object again (a late upload of
            // a save that expired meanwhile): doom it anew.
            let mut doom = tx.prepare_cached(
                "INSERT INTO doomed (chunk, generation, scrub, since_ms, stored_len)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(chunk, generation) DO UPDATE SET scrub = ?3, since_ms = ?4, stored_len = ?5",
            )?;
            for (key, size) in candidates {
                let id = &key.id.0[..];
                if row.exists(params![id, key.generation])? || intended.exists(params![id])? {
                    continue;
                }
                if !dry_run {
                    doom.execute(params![id, key.generation, scrub, now_ms, *size as i64])?;
                }
                out.push(*key);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn doomed_page(&self, after: Option<&ChunkKey>, limit: u32) -> Result<Vec<Doomed>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT chunk, generation, scrub, since_ms, stored_len FROM doomed
             WHERE scrub <> '' AND (chunk, generation) > (?1, ?2)
             ORDER BY chunk, generation LIMIT ?3",
        )?;
        let (id, generation): (&[u8], i64) =
            after.map_or((&[], -1), |k| (&k.id.0[..], i64::from(k.generation)));
        let rows = st.query_map(params![id, generation, limit], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (id, generation, scrub, since_ms, stored_len) = r?;
            Ok(Doomed {
                key: ChunkKey::new(chunk_id(&id)?, generation),
                scrub,
                since_ms,
                stored_len: stored_len as u64,
            })
        })
        .collect()
    }

    fn retire_doomed(&self, keys: &[ChunkKey], now_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE doomed SET scrub = '', since_ms = ?3 WHERE chunk = ?1 AND generation = ?2",
            )?;
            for k in keys {
                st.execute(params![&k.id.0[..], k.generation, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn forget_tombstones(&self, before_ms: i64) -> Result<u64> {
        Ok(self.conn().execute(
            "DELETE FROM doomed WHERE scrub = '' AND since_ms < ?1",
            params![before_ms],
        )? as u64)
    }
}
