//! The catalog protocol, written once for every SQL dialect
//! (`docs/gc.md`, `docs/chains.md`). Each method is one transaction.

use std::collections::HashSet;
use strata_core::{
    ChunkId, ChunkKey, ChunkLookup, ManifestEntry, ProjectId, SaveId, SnapshotId, StreamId,
    StreamInfo,
};

use super::{Dialect, Mode, Row, Tx, Value, fleet};
use crate::{
    Catalog, CatalogError, Doomed, Fence, HostInfo, HostRecord, HostReport, HostState, NewChunk,
    Placement, Project, ProjectSummary, ProjectUsage, Rejection, RepoStats, Request, Result,
    RowsPage, SCRUB_LEASE, SaveRecord,
};

/// A catalog on a SQL database: the protocol over a [`Dialect`].
#[derive(Debug)]
pub struct SqlCatalog<D> {
    pub(crate) db: D,
}

pub(super) fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| CatalogError::Invalid(e.to_string()))
}

/// Rows per page of the range reads below.
const RANGE_PAGE: u32 = 1000;

/// Which of `candidates` (a page of the store's listing) have a chunk row
/// of their generation, and which have an intent: range reads over the
/// candidates' span of ids, a page at a time, keeping only what names a
/// candidate (memory: the candidates), instead of two statements per
/// candidate, each a round trip over a network.
#[allow(clippy::type_complexity)]
fn rows_and_intents_among<T: Tx>(
    tx: &mut T,
    candidates: &[(ChunkKey, u64)],
) -> Result<(HashSet<(ChunkId, i64)>, HashSet<ChunkId>)> {
    let wanted: HashSet<ChunkId> = candidates.iter().map(|(k, _)| k.id).collect();
    let (mut rows, mut intents) = (HashSet::new(), HashSet::new());
    let (Some(lo), Some(hi)) = (wanted.iter().min(), wanted.iter().max()) else {
        return Ok((rows, intents));
    };
    for (first, next, is_rows) in [
        (
            "SELECT id, generation FROM chunks WHERE id >= ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
            "SELECT id, generation FROM chunks WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
            true,
        ),
        (
            "SELECT DISTINCT chunk FROM intents WHERE chunk >= ?1 AND chunk <= ?2
             ORDER BY chunk LIMIT ?3",
            "SELECT DISTINCT chunk FROM intents WHERE chunk > ?1 AND chunk <= ?2
             ORDER BY chunk LIMIT ?3",
            false,
        ),
    ] {
        let mut from = blob(lo);
        let mut sql = first;
        loop {
            let page = tx.query(sql, &[from, blob(hi), RANGE_PAGE.into()])?;
            for r in &page {
                let id = chunk_id(r.blob(0)?)?;
                if wanted.contains(&id) {
                    if is_rows {
                        rows.insert((id, r.int(1)?));
                    } else {
                        intents.insert(id);
                    }
                }
            }
            match page.last() {
                Some(r) if page.len() == RANGE_PAGE as usize => {
                    from = Value::Blob(r.blob(0)?.to_vec());
                    sql = next;
                }
                _ => break,
            }
        }
    }
    Ok((rows, intents))
}

fn chunk_id(b: &[u8]) -> Result<ChunkId> {
    ChunkId::from_slice(b).map_err(|e| CatalogError::Invalid(e.to_string()))
}

fn blob(id: &ChunkId) -> Value {
    Value::Blob(id.0.to_vec())
}

/// The columns of a stream row, in [`stream_from_row`] order.
const STREAM_BY_ID: &str = "SELECT id, project, start_snap, end_snap, engine, bytes, chunks, \
     new_bytes, new_stored_bytes, created_ms, host, parent_snap FROM streams WHERE id = ?1";
const STREAMS_OF: &str = "SELECT id, project, start_snap, end_snap, engine, bytes, chunks, \
     new_bytes, new_stored_bytes, created_ms, host, parent_snap FROM streams \
     WHERE project = ?1 ORDER BY end_snap, created_ms";

fn stream_from_row(r: &Row) -> Result<StreamInfo> {
    Ok(StreamInfo {
        id: parse(&r.text(0)?)?,
        project: parse(&r.text(1)?)?,
        start: r.opt_text(2)?.as_deref().map(parse).transpose()?,
        end: parse(&r.text(3)?)?,
        engine: r.text(4)?,
        bytes: r.int(5)? as u64,
        chunks: r.int(6)? as u64,
        new_bytes: r.int(7)? as u64,
        new_stored_bytes: r.int(8)? as u64,
        created_ms: r.int(9)?,
        host: r.text(10)?,
        parent: r.opt_text(11)?.as_deref().map(parse).transpose()?,
    })
}

fn save_from_row(r: &Row) -> Result<SaveRecord> {
    Ok(SaveRecord {
        id: parse(&r.text(0)?)?,
        host: r.text(1)?,
        pid: r.int(2)? as u32,
        process_start: r.int(3)? as u64,
        started_ms: r.int(4)?,
        expires_ms: r.int(5)?,
        fence: match (r.opt_text(6)?, r.opt_int(7)?) {
            (Some(host), Some(token)) => Some(Fence {
                host,
                token: token as u64,
            }),
            _ => None,
        },
    })
}

/// A row when snapshot `?2` of project `?1` is reachable: walking from it
/// backwards through the streams that end at each snapshot, some full
/// stream is met. `UNION` keeps the walk finite.
const REACHABLE: &str = "
WITH RECURSIVE up(snap) AS (
    SELECT CAST(?2 AS TEXT)
    UNION
    SELECT s.start_snap FROM streams s JOIN up ON s.end_snap = up.snap
    WHERE s.project = ?1 AND s.start_snap IS NOT NULL
)
SELECT 1 FROM streams s JOIN up ON s.end_snap = up.snap
WHERE s.project = ?1 AND s.start_snap IS NULL LIMIT 1";

const SAVE_BY_ID: &str = "SELECT id, host, pid, process_start, started_ms, expires_ms, \
     fence_host, fence_token FROM saves WHERE id = ?1";

const ENDS_AT: &str = "SELECT 1 FROM streams WHERE project = ?1 AND end_snap = ?2";

const SET_REPO_VALUE: &str = "INSERT INTO repo (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = ?2";

fn save_exists(tx: &mut impl Tx, save: SaveId) -> Result<bool> {
    tx.exists(
        "SELECT 1 FROM saves WHERE id = ?1",
        &[save.to_string().into()],
    )
}

fn drop_save(tx: &mut impl Tx, save: &str) -> Result<()> {
    tx.exec("DELETE FROM intents WHERE save = ?1", &[save.into()])?;
    tx.exec("DELETE FROM saves WHERE id = ?1", &[save.into()])?;
    Ok(())
}

/// Fails unless `scrub` holds the scrub lease.
fn check_lease(tx: &mut impl Tx, scrub: &str) -> Result<()> {
    let owner = tx.one(
        "SELECT owner FROM leases WHERE name = ?1",
        &[SCRUB_LEASE.into()],
    )?;
    match owner {
        Some(r) if r.text(0)? == scrub => Ok(()),
        Some(r) => Err(CatalogError::LeaseLost(r.text(0)?)),
        None => Err(CatalogError::LeaseLost("nobody".into())),
    }
}

/// What scrub's pass over chunk rows does with one row: keep it (a
/// manifest or a live intent names it), let it wait out the grace period
/// (marked unreferenced at `mark`), or doom it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    Wait,
    Doom,
}

/// The keep/wait/doom rule (`docs/gc.md`): a row nothing names is doomed
/// once it has been unreferenced (since `mark`, or since now) for `grace_ms`.
fn verdict(referenced: bool, mark: Option<i64>, now_ms: i64, grace_ms: i64) -> Verdict {
    if referenced {
        Verdict::Keep
    } else if mark.unwrap_or(now_ms) > now_ms - grace_ms {
        Verdict::Wait
    } else {
        Verdict::Doom
    }
}

impl<D: Dialect> SqlCatalog<D> {
    /// A transaction of scrub's: a read-only one for a dry run, else a
    /// durable write transaction that fails unless `scrub` holds the lease.
    fn scrub_tx<T>(
        &self,
        op: &'static str,
        scrub: &str,
        dry_run: bool,
        f: impl FnOnce(&mut D::Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mode = if dry_run { Mode::Read } else { Mode::Write };
        self.db.transaction(mode, op, |tx| {
            if !dry_run {
                check_lease(tx, scrub)?;
            }
            f(tx)
        })
    }
}

impl<D: Dialect> Catalog for SqlCatalog<D> {
    fn repo_id(&self) -> Result<String> {
        self.db.transaction(Mode::Read, "repo_id", |tx| {
            tx.one("SELECT value FROM repo WHERE key = 'id'", &[])?
                .ok_or_else(|| CatalogError::Invalid("the catalog has no repository id".into()))?
                .text(0)
        })
    }

    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project> {
        let p = Project {
            id: ProjectId::random(),
            name: name.to_string(),
            created_ms,
        };
        let inserted = self.db.transaction(Mode::Write, "create_project", |tx| {
            tx.insert_unique(
                "INSERT INTO projects (id, name, created_ms) VALUES (?1, ?2, ?3)",
                &[p.id.to_string().into(), name.into(), created_ms.into()],
            )
        })?;
        if inserted {
            Ok(p)
        } else {
            Err(CatalogError::NameTaken(name.to_string()))
        }
    }

    fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        self.db.transaction(Mode::Read, "project_by_name", |tx| {
            tx.one(
                "SELECT id, name, created_ms FROM projects WHERE name = ?1",
                &[name.into()],
            )?
            .map(|r| {
                Ok(Project {
                    id: parse(&r.text(0)?)?,
                    name: r.text(1)?,
                    created_ms: r.int(2)?,
                })
            })
            .transpose()
        })
    }

    fn project(&self, id: ProjectId) -> Result<Option<Project>> {
        self.db.transaction(Mode::Read, "project", |tx| {
            tx.one(
                "SELECT name, created_ms FROM projects WHERE id = ?1",
                &[id.to_string().into()],
            )?
            .map(|r| {
                Ok(Project {
                    id,
                    name: r.text(0)?,
                    created_ms: r.int(1)?,
                })
            })
            .transpose()
        })
    }

    fn projects(&self) -> Result<Vec<ProjectSummary>> {
        self.db.transaction(Mode::Read, "projects", |tx| {
            tx.query(
                "SELECT p.id, p.name, p.created_ms, CAST(COUNT(s.id) AS BIGINT), MAX(s.end_snap),
                        CAST(COALESCE(SUM(s.bytes), 0) AS BIGINT),
                        CAST(COALESCE(SUM(s.new_stored_bytes), 0) AS BIGINT),
                        (SELECT n.engine FROM streams n WHERE n.project = p.id
                         ORDER BY n.end_snap DESC, n.created_ms DESC, n.id DESC LIMIT 1)
                 FROM projects p LEFT JOIN streams s ON s.project = p.id
                 GROUP BY p.id, p.name, p.created_ms ORDER BY p.name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ProjectSummary {
                    project: Project {
                        id: parse(&r.text(0)?)?,
                        name: r.text(1)?,
                        created_ms: r.int(2)?,
                    },
                    streams: r.int(3)? as u64,
                    newest: r.opt_text(4)?.as_deref().map(parse).transpose()?,
                    bytes: r.int(5)? as u64,
                    stored_bytes: r.int(6)? as u64,
                    engine: r.opt_text(7)?,
                })
            })
            .collect()
        })
    }

    fn begin_save(&self, save: &SaveRecord) -> Result<()> {
        self.db.transaction(Mode::WriteRelaxed, "begin_save", |tx| {
            tx.exec(
                "INSERT INTO saves (id, host, pid, process_start, started_ms, expires_ms,
                                    fence_host, fence_token)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                &[
                    save.id.to_string().into(),
                    save.host.as_str().into(),
                    save.pid.into(),
                    save.process_start.into(),
                    save.started_ms.into(),
                    save.expires_ms.into(),
                    save.fence.as_ref().map(|f| f.host.as_str()).into(),
                    save.fence.as_ref().map(|f| f.token).into(),
                ],
            )?;
            Ok(())
        })
    }

    fn renew_save(&self, save: SaveId, expires_ms: i64) -> Result<bool> {
        self.db.transaction(Mode::WriteRelaxed, "renew_save", |tx| {
            Ok(tx.exec(
                "UPDATE saves SET expires_ms = CASE WHEN expires_ms > ?2 THEN expires_ms ELSE ?2 END
                 WHERE id = ?1",
                &[save.to_string().into(), expires_ms.into()],
            )? == 1)
        })
    }

    fn claim_chunks(&self, save: SaveId, ids: &[ChunkId]) -> Result<Vec<ChunkLookup>> {
        self.db
            .transaction(Mode::WriteRelaxed, "claim_chunks", |tx| {
                if !save_exists(tx, save)? {
                    return Err(CatalogError::SaveGone(save));
                }
                let sid = Value::from(save.to_string());
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    // The intent first, then the lookup, in one transaction.
                    tx.exec(
                        "INSERT INTO intents (save, chunk) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        &[sid.clone(), blob(id)],
                    )?;
                    let stored =
                        tx.one("SELECT generation FROM chunks WHERE id = ?1", &[blob(id)])?;
                    out.push(match stored {
                        Some(r) => ChunkLookup::Stored {
                            generation: r.u32(0)?,
                        },
                        None => {
                            let max = tx
                                .one(
                                    "SELECT MAX(generation) FROM doomed WHERE chunk = ?1",
                                    &[blob(id)],
                                )?
                                .map(|r| r.opt_int(0))
                                .transpose()?
                                .flatten();
                            ChunkLookup::Upload {
                                generation: max.map_or(0, |m| m as u32 + 1),
                            }
                        }
                    });
                }
                Ok(out)
            })
    }

    fn end_save(&self, save: SaveId) -> Result<()> {
        self.db.transaction(Mode::Write, "end_save", |tx| {
            drop_save(tx, &save.to_string())
        })
    }

    fn saves(&self) -> Result<Vec<SaveRecord>> {
        self.db.transaction(Mode::Read, "saves", |tx| {
            tx.query(
                "SELECT id, host, pid, process_start, started_ms, expires_ms, fence_host, fence_token FROM saves ORDER BY id",
                &[],
            )?
            .iter()
            .map(save_from_row)
            .collect()
        })
    }

    fn expire_saves(&self, now_ms: i64) -> Result<Vec<SaveRecord>> {
        self.db.transaction(Mode::Write, "expire_saves", |tx| {
            let expired = tx
                .query(
                    "SELECT id, host, pid, process_start, started_ms, expires_ms, fence_host, fence_token FROM saves
                     WHERE expires_ms < ?1 ORDER BY id",
                    &[now_ms.into()],
                )?
                .iter()
                .map(save_from_row)
                .collect::<Result<Vec<_>>>()?;
            for s in &expired {
                drop_save(tx, &s.id.to_string())?;
            }
            Ok(expired)
        })
    }

    fn commit_stream(
        &self,
        save: SaveId,
        s: &StreamInfo,
        manifest: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<()> {
        let mut fence = None;
        let r = self.db.transaction(Mode::Write, "commit_stream", |tx| {
            // A retry of a commit that went through: nothing to do.
            if let Some(row) = tx.one(STREAM_BY_ID, &[s.id.to_string().into()])? {
                return if stream_from_row(&row)? == *s {
                    Ok(())
                } else {
                    Err(CatalogError::Invalid(format!(
                        "stream id {} is already committed with another record",
                        s.id
                    )))
                };
            }
            // Only a save whose intents still stand may commit.
            let Some(record) = tx
                .query(SAVE_BY_ID, &[save.to_string().into()])?
                .first()
                .map(save_from_row)
                .transpose()?
            else {
                return Err(CatalogError::SaveGone(save));
            };
            // Only the holder of the project's lease, under its current
            // token, before it runs out (docs/fleet.md).
            fence = record.fence;
            if let Some(e) = fleet::fence_refusal(tx, s.project, fence.as_ref(), s.created_ms)? {
                return Err(e);
            }
            let project = Value::from(s.project.to_string());
            // An incremental needs its start, restorable: a trim running
            // beside the save may have deleted the stream that ends there,
            // or one further up its chain.
            if let Some(start) = &s.start {
                let st = Value::from(start.to_string());
                if !tx.exists(ENDS_AT, &[project.clone(), st.clone()])? {
                    return Err(CatalogError::BaseGone(start.clone()));
                }
                if !tx.exists(REACHABLE, &[project.clone(), st])? {
                    return Err(CatalogError::BaseUnreachable(start.clone()));
                }
            }
            for c in new_chunks {
                tx.exec(
                    "INSERT INTO chunks (id, generation, len, stored_len, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    &[
                        blob(&c.id),
                        c.generation.into(),
                        c.len.into(),
                        c.stored_len.into(),
                        s.created_ms.into(),
                    ],
                )?;
            }
            tx.exec(
                "INSERT INTO streams (id, project, start_snap, end_snap, engine, bytes, chunks,
                                      new_bytes, new_stored_bytes, created_ms, host, parent_snap)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                &[
                    s.id.to_string().into(),
                    project,
                    s.start.as_ref().map(ToString::to_string).into(),
                    s.end.to_string().into(),
                    s.engine.as_str().into(),
                    s.bytes.into(),
                    s.chunks.into(),
                    s.new_bytes.into(),
                    s.new_stored_bytes.into(),
                    s.created_ms.into(),
                    s.host.as_str().into(),
                    s.parent.as_ref().map(ToString::to_string).into(),
                ],
            )?;
            let sid = Value::from(s.id.to_string());
            for (i, e) in manifest.iter().enumerate() {
                tx.exec(
                    "INSERT INTO manifests (stream, seq, chunk, len) VALUES (?1, ?2, ?3, ?4)",
                    &[sid.clone(), (i as i64).into(), blob(&e.id), e.len.into()],
                )?;
                // A chunk named again is no longer waiting for scrub's grace.
                tx.exec(
                    "UPDATE chunks SET unref_since_ms = NULL
                     WHERE id = ?1 AND unref_since_ms IS NOT NULL",
                    &[blob(&e.id)],
                )?;
            }
            // Every chunk the manifest names must be committed now: reused
            // ones were protected by the intents, new ones are inserted above.
            for c in manifest {
                if !tx.exists("SELECT 1 FROM chunks WHERE id = ?1", &[blob(&c.id)])? {
                    return Err(CatalogError::Invalid(format!(
                        "stream {} names chunk {} that neither a committed stream nor this save stored",
                        s.id, c.id
                    )));
                }
            }
            drop_save(tx, &save.to_string())
        });
        if let Err(e) = &r {
            fleet::record_refusal(&self.db, s.project, fence.as_ref(), s.created_ms, e);
        }
        r
    }

    fn streams(&self, project: ProjectId) -> Result<Vec<StreamInfo>> {
        self.db.transaction(Mode::Read, "streams", |tx| {
            tx.query(STREAMS_OF, &[project.to_string().into()])?
                .iter()
                .map(stream_from_row)
                .collect()
        })
    }

    fn delete_streams(&self, project: ProjectId, streams: &[StreamId]) -> Result<()> {
        self.db.transaction(Mode::Write, "delete_streams", |tx| {
            let p = Value::from(project.to_string());
            let mut ends = Vec::new();
            for id in streams {
                let sid = Value::from(id.to_string());
                let end = tx.one(
                    "SELECT end_snap FROM streams WHERE id = ?1 AND project = ?2",
                    &[sid.clone(), p.clone()],
                )?;
                if let Some(end) = end {
                    tx.exec(
                        "DELETE FROM manifests WHERE stream = ?1",
                        std::slice::from_ref(&sid),
                    )?;
                    tx.exec("DELETE FROM streams WHERE id = ?1", &[sid])?;
                    ends.push(end.text(0)?);
                }
            }
            // The plan was made from an earlier read: a stream committed
            // since may start at a snapshot it deletes. No stream that
            // stays may lose its start; an error rolls everything back.
            for end in ends {
                let e = Value::from(end.as_str());
                if tx.exists(ENDS_AT, &[p.clone(), e.clone()])? {
                    continue;
                }
                let orphan = tx.one(
                    "SELECT id FROM streams WHERE project = ?1 AND start_snap = ?2 LIMIT 1",
                    &[p.clone(), e],
                )?;
                if let Some(stream) = orphan {
                    return Err(CatalogError::StartNeeded {
                        stream: parse(&stream.text(0)?)?,
                        start: parse::<SnapshotId>(&end)?,
                    });
                }
            }
            Ok(())
        })
    }

    fn retention(&self, project: ProjectId) -> Result<Option<String>> {
        self.db.transaction(Mode::Read, "retention", |tx| {
            tx.one(
                "SELECT retention FROM projects WHERE id = ?1",
                &[project.to_string().into()],
            )?
            .map(|r| r.opt_text(0))
            .transpose()
            .map(Option::flatten)
        })
    }

    fn set_retention(&self, project: ProjectId, policy: Option<&str>) -> Result<()> {
        self.db.transaction(Mode::Write, "set_retention", |tx| {
            tx.exec(
                "UPDATE projects SET retention = ?2 WHERE id = ?1",
                &[project.to_string().into(), policy.into()],
            )?;
            Ok(())
        })
    }

    fn chunks_page(&self, after: Option<&ChunkId>, limit: u32) -> Result<Vec<NewChunk>> {
        self.db.transaction(Mode::Read, "chunks_page", |tx| {
            let after = Value::Blob(after.map_or(Vec::new(), |a| a.0.to_vec()));
            tx.query(
                "SELECT id, len, stored_len, generation FROM chunks WHERE id > ?1
                 ORDER BY id LIMIT ?2",
                &[after, limit.into()],
            )?
            .iter()
            .map(|r| {
                Ok(NewChunk {
                    id: chunk_id(r.blob(0)?)?,
                    len: r.u32(1)?,
                    stored_len: r.u32(2)?,
                    generation: r.u32(3)?,
                })
            })
            .collect()
        })
    }

    fn unknown_chunk_refs(&self, limit: u32) -> Result<Vec<(StreamId, u64, ChunkId)>> {
        self.db.transaction(Mode::Read, "unknown_chunk_refs", |tx| {
            tx.query(
                "SELECT m.stream, m.seq, m.chunk FROM manifests m
                 LEFT JOIN chunks c ON c.id = m.chunk WHERE c.id IS NULL
                 ORDER BY m.stream, m.seq LIMIT ?1",
                &[limit.into()],
            )?
            .iter()
            .map(|r| Ok((parse(&r.text(0)?)?, r.int(1)? as u64, chunk_id(r.blob(2)?)?)))
            .collect()
        })
    }

    fn streams_using(&self, chunk: &ChunkId, limit: u32) -> Result<Vec<(ProjectId, StreamId)>> {
        self.db.transaction(Mode::Read, "streams_using", |tx| {
            tx.query(
                "SELECT DISTINCT s.project, s.id FROM manifests m JOIN streams s ON s.id = m.stream
                 WHERE m.chunk = ?1 ORDER BY s.project, s.id LIMIT ?2",
                &[blob(chunk), limit.into()],
            )?
            .iter()
            .map(|r| Ok((parse(&r.text(0)?)?, parse(&r.text(1)?)?)))
            .collect()
        })
    }

    fn manifest_page(&self, stream: StreamId, from: u64, limit: u32) -> Result<Vec<ManifestEntry>> {
        self.db.transaction(Mode::Read, "manifest_page", |tx| {
            tx.query(
                "SELECT m.chunk, m.len, COALESCE(c.generation, 0) FROM manifests m
                 LEFT JOIN chunks c ON c.id = m.chunk
                 WHERE m.stream = ?1 AND m.seq >= ?2 ORDER BY m.seq LIMIT ?3",
                &[stream.to_string().into(), from.into(), limit.into()],
            )?
            .iter()
            .map(|r| {
                Ok(ManifestEntry {
                    id: chunk_id(r.blob(0)?)?,
                    len: r.u32(1)?,
                    generation: r.u32(2)?,
                })
            })
            .collect()
        })
    }

    fn acquire_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<()> {
        self.db.transaction(Mode::Write, "acquire_lease", |tx| {
            let held = tx.one(
                "SELECT owner, expires_ms FROM leases WHERE name = ?1",
                &[name.into()],
            )?;
            if let Some(r) = held {
                let (other, until) = (r.text(0)?, r.int(1)?);
                if other != owner && until >= now_ms {
                    return Err(CatalogError::LeaseHeld {
                        owner: other,
                        expires_ms: until,
                    });
                }
            }
            tx.exec(
                "INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET owner = ?2, expires_ms = ?3",
                &[name.into(), owner.into(), expires_ms.into()],
            )?;
            Ok(())
        })
    }

    fn renew_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<bool> {
        self.db.transaction(Mode::Write, "renew_lease", |tx| {
            Ok(tx.exec(
                "UPDATE leases SET expires_ms = ?4
                 WHERE name = ?1 AND owner = ?2 AND expires_ms >= ?3",
                &[name.into(), owner.into(), now_ms.into(), expires_ms.into()],
            )? == 1)
        })
    }

    fn chunk(&self, id: &ChunkId) -> Result<Option<NewChunk>> {
        self.db.transaction(Mode::Read, "chunk", |tx| {
            tx.one(
                "SELECT len, stored_len, generation FROM chunks WHERE id = ?1",
                &[blob(id)],
            )?
            .map(|r| {
                Ok(NewChunk {
                    id: *id,
                    len: r.u32(0)?,
                    stored_len: r.u32(1)?,
                    generation: r.u32(2)?,
                })
            })
            .transpose()
        })
    }

    fn set_scrub_checkpoint(&self, scrub: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.scrub_tx("set_scrub_checkpoint", scrub, false, |tx| {
            match value {
                Some(v) => tx.exec(SET_REPO_VALUE, &[key.into(), v.into()])?,
                None => tx.exec("DELETE FROM repo WHERE key = ?1", &[key.into()])?,
            };
            Ok(())
        })
    }

    fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        self.db.transaction(Mode::Write, "release_lease", |tx| {
            tx.exec(
                "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                &[name.into(), owner.into()],
            )?;
            Ok(())
        })
    }

    fn repo_value(&self, key: &str) -> Result<Option<String>> {
        self.db.transaction(Mode::Read, "repo_value", |tx| {
            tx.one("SELECT value FROM repo WHERE key = ?1", &[key.into()])?
                .map(|r| r.text(0))
                .transpose()
        })
    }

    fn set_repo_value(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.db.transaction(Mode::Write, "set_repo_value", |tx| {
            match value {
                Some(v) => tx.exec(SET_REPO_VALUE, &[key.into(), v.into()])?,
                None => tx.exec("DELETE FROM repo WHERE key = ?1", &[key.into()])?,
            };
            Ok(())
        })
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
        self.scrub_tx("scrub_rows", scrub, dry_run, |tx| {
            let mut page = RowsPage::default();
            let after = Value::Blob(after.map_or(Vec::new(), |a| a.0.to_vec()));
            // One statement per page, not two per chunk: over a network
            // each is a round trip (a million chunks took minutes).
            let batch = tx.query(
                "SELECT c.id, c.generation, c.stored_len, c.unref_since_ms,
                        CASE WHEN EXISTS (SELECT 1 FROM manifests m WHERE m.chunk = c.id)
                               OR EXISTS (SELECT 1 FROM intents i WHERE i.chunk = c.id)
                             THEN 1 ELSE 0 END
                 FROM chunks c WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
                &[after, limit.into()],
            )?;
            for r in &batch {
                let id = Value::Blob(r.blob(0)?.to_vec());
                let (generation, stored_len, mark) = (r.int(1)?, r.int(2)?, r.opt_int(3)?);
                page.scanned += 1;
                page.last = Some(chunk_id(r.blob(0)?)?);
                let referenced = r.int(4)? != 0;
                const MARK: &str = "UPDATE chunks SET unref_since_ms = ?2 WHERE id = ?1";
                match verdict(referenced, mark, now_ms, grace_ms) {
                    Verdict::Keep => {
                        page.referenced += 1;
                        if mark.is_some() && !dry_run {
                            tx.exec(MARK, &[id, Value::Null])?;
                        }
                    }
                    Verdict::Wait => {
                        page.waiting += 1;
                        if mark.is_none() && !dry_run {
                            tx.exec(MARK, &[id, now_ms.into()])?;
                        }
                    }
                    Verdict::Doom => {
                        page.doomed += 1;
                        page.doomed_bytes += stored_len as u64;
                        if !dry_run {
                            tx.exec(
                                "INSERT INTO doomed (chunk, generation, scrub, since_ms, stored_len)
                                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                                &[
                                    id.clone(),
                                    generation.into(),
                                    scrub.into(),
                                    now_ms.into(),
                                    stored_len.into(),
                                ],
                            )?;
                            tx.exec("DELETE FROM chunks WHERE id = ?1", &[id])?;
                        }
                    }
                }
            }
            if !dry_run && let Some(last) = &page.last {
                tx.exec(
                    SET_REPO_VALUE,
                    &[
                        checkpoint_key.into(),
                        format!("rows:{}", last.to_hex()).into(),
                    ],
                )?;
            }
            Ok(page)
        })
    }

    fn doom_orphans(
        &self,
        scrub: &str,
        candidates: &[(ChunkKey, u64)],
        now_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<ChunkKey>> {
        self.scrub_tx("doom_orphans", scrub, dry_run, |tx| {
            let mut out = Vec::new();
            let (rows, intents) = rows_and_intents_among(tx, candidates)?;
            for (key, size) in candidates {
                let id = blob(&key.id);
                if rows.contains(&(key.id, i64::from(key.generation))) || intents.contains(&key.id)
                {
                    continue;
                }
                if !dry_run {
                    // A tombstone's key may hold an object again (a late
                    // upload of a save that expired meanwhile): doom it anew.
                    tx.exec(
                        "INSERT INTO doomed (chunk, generation, scrub, since_ms, stored_len)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (chunk, generation)
                         DO UPDATE SET scrub = ?3, since_ms = ?4, stored_len = ?5",
                        &[
                            id,
                            key.generation.into(),
                            scrub.into(),
                            now_ms.into(),
                            (*size).into(),
                        ],
                    )?;
                }
                out.push(*key);
            }
            Ok(out)
        })
    }

    fn doomed_page(&self, after: Option<&ChunkKey>, limit: u32) -> Result<Vec<Doomed>> {
        self.db.transaction(Mode::Read, "doomed_page", |tx| {
            let (id, generation): (Vec<u8>, i64) = after.map_or((Vec::new(), -1), |k| {
                (k.id.0.to_vec(), i64::from(k.generation))
            });
            tx.query(
                "SELECT chunk, generation, scrub, since_ms, stored_len FROM doomed
                 WHERE scrub <> '' AND (chunk, generation) > (?1, ?2)
                 ORDER BY chunk, generation LIMIT ?3",
                &[Value::Blob(id), generation.into(), limit.into()],
            )?
            .iter()
            .map(|r| {
                Ok(Doomed {
                    key: ChunkKey::new(chunk_id(r.blob(0)?)?, r.u32(1)?),
                    scrub: r.text(2)?,
                    since_ms: r.int(3)?,
                    stored_len: r.int(4)? as u64,
                })
            })
            .collect()
        })
    }

    fn retire_doomed(&self, keys: &[ChunkKey], now_ms: i64) -> Result<()> {
        self.db.transaction(Mode::Write, "retire_doomed", |tx| {
            for k in keys {
                tx.exec(
                    "UPDATE doomed SET scrub = '', since_ms = ?3 WHERE chunk = ?1 AND generation = ?2",
                    &[blob(&k.id), k.generation.into(), now_ms.into()],
                )?;
            }
            Ok(())
        })
    }

    fn forget_tombstones(&self, before_ms: i64) -> Result<u64> {
        self.db.transaction(Mode::Write, "forget_tombstones", |tx| {
            tx.exec(
                "DELETE FROM doomed WHERE scrub = '' AND since_ms < ?1",
                &[before_ms.into()],
            )
        })
    }
    fn add_host(&self, host: &HostRecord) -> Result<()> {
        fleet::add_host(&self.db, host)
    }

    fn hosts(&self) -> Result<Vec<HostInfo>> {
        fleet::hosts(&self.db)
    }

    fn set_host_state(
        &self,
        host: &str,
        state: HostState,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Placement>> {
        fleet::set_host_state(&self.db, host, state, now_ms, lease_ms)
    }

    fn remove_host(&self, host: &str) -> Result<()> {
        fleet::remove_host(&self.db, host)
    }

    fn heartbeat(
        &self,
        host: &str,
        report: &HostReport,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Placement>> {
        fleet::heartbeat(&self.db, host, report, now_ms, lease_ms)
    }

    fn set_copy(
        &self,
        host: &str,
        project: ProjectId,
        snapshot: Option<&SnapshotId>,
        now_ms: i64,
    ) -> Result<()> {
        fleet::set_copy(&self.db, host, project, snapshot, now_ms)
    }

    fn placements_of(&self, host: &str) -> Result<Vec<Placement>> {
        fleet::placements_of(&self.db, host)
    }

    fn copies(&self, project: ProjectId) -> Result<Vec<(String, SnapshotId)>> {
        fleet::copies(&self.db, project)
    }

    fn placement(&self, project: ProjectId) -> Result<Option<Placement>> {
        fleet::get_placement(&self.db, project)
    }

    fn placements(&self) -> Result<Vec<Placement>> {
        fleet::placements(&self.db)
    }

    fn request(
        &self,
        project: ProjectId,
        request: &Request,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Placement>> {
        fleet::request(&self.db, project, request, now_ms, lease_ms)
    }

    fn hand_over(
        &self,
        project: ProjectId,
        from: &Fence,
        to: Option<&str>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Placement> {
        fleet::hand_over(&self.db, project, from, to, now_ms, lease_ms)
    }

    fn rejections(&self, limit: u32) -> Result<Vec<Rejection>> {
        fleet::rejections(&self.db, limit)
    }

    fn usage(&self) -> Result<Vec<ProjectUsage>> {
        fleet::usage(&self.db)
    }

    fn stats(&self) -> Result<RepoStats> {
        fleet::stats(&self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::{Verdict, verdict};

    #[test]
    fn keep_wait_doom() {
        assert_eq!(verdict(true, Some(0), 10_000, 1_000), Verdict::Keep);
        assert_eq!(verdict(false, None, 10_000, 1_000), Verdict::Wait);
        assert_eq!(verdict(false, Some(9_500), 10_000, 1_000), Verdict::Wait);
        assert_eq!(verdict(false, Some(9_000), 10_000, 1_000), Verdict::Doom);
        // No grace: unreferenced rows go at once.
        assert_eq!(verdict(false, None, 10_000, 0), Verdict::Doom);
    }
}
