//! The fleet's part of the protocol (`docs/fleet.md`): hosts, placement
//! and the project lease, each call one serialisable write (or read)
//! transaction, so two operators or agents racing on one project see one
//! order of grants and tokens.

use strata_core::{ProjectId, SnapshotId};

use super::protocol::parse;
use super::{Dialect, Mode, Row, Tx, Value};
use crate::{
    CatalogError, Fence, HostInfo, HostRecord, HostReport, HostState, Placement, PlacementState,
    ProjectUsage, Rejection, RepoStats, Request, Result,
};

/// A query of placement rows, in [`placement_from_row`] order, with the
/// clauses given.
macro_rules! placements_where {
    ($clauses:literal) => {
        concat!(
            "SELECT project, state, host, token, since_ms, expires_ms, move_to, last_host \
             FROM placements ",
            $clauses
        )
    };
}

/// A query of host rows, in [`host_from_row`] order, with the clauses given.
macro_rules! hosts_where {
    ($clauses:literal) => {
        concat!(
            "SELECT id, address, zone, state, max_projects, max_bytes, heartbeat_ms, \
             agent_version, added_ms, cache_bytes, cache_budget, last_error FROM hosts ",
            $clauses
        )
    };
}

const PLACEMENT_OF: &str = placements_where!("WHERE project = ?1");

/// The placements a query of [`placements_where`] returns.
fn placements_of_query(
    tx: &mut impl Tx,
    sql: &'static str,
    params: &[Value],
) -> Result<Vec<Placement>> {
    tx.query(sql, params)?
        .iter()
        .map(placement_from_row)
        .collect()
}

fn placement_from_row(r: &Row) -> Result<Placement> {
    Ok(Placement {
        project: parse(&r.text(0)?)?,
        state: parse(&r.text(1)?)?,
        host: r.opt_text(2)?,
        token: r.int(3)? as u64,
        since_ms: r.int(4)?,
        expires_ms: r.int(5)?,
        move_to: r.opt_text(6)?,
        last_host: r.opt_text(7)?,
    })
}

fn host_from_row(r: &Row) -> Result<HostRecord> {
    Ok(HostRecord {
        id: r.text(0)?,
        address: r.text(1)?,
        zone: r.text(2)?,
        state: parse(&r.text(3)?)?,
        max_projects: r.int(4)? as u64,
        max_bytes: r.int(5)? as u64,
        heartbeat_ms: r.opt_int(6)?,
        agent_version: r.opt_text(7)?,
        added_ms: r.int(8)?,
        cache_bytes: r.int(9)? as u64,
        cache_budget: r.int(10)? as u64,
        last_error: r.opt_text(11)?,
    })
}

const HOST_BY_ID: &str = hosts_where!("WHERE id = ?1");

fn host(tx: &mut impl Tx, id: &str) -> Result<HostRecord> {
    tx.one(HOST_BY_ID, &[id.into()])?
        .as_ref()
        .map(host_from_row)
        .transpose()?
        .ok_or_else(|| CatalogError::UnknownHost(id.to_string()))
}

fn placement(tx: &mut impl Tx, project: ProjectId) -> Result<Option<Placement>> {
    tx.one(PLACEMENT_OF, &[project.to_string().into()])?
        .as_ref()
        .map(placement_from_row)
        .transpose()
}

fn placement_values(p: &Placement) -> [Value; 8] {
    [
        p.project.to_string().into(),
        p.state.as_str().into(),
        p.host.clone().into(),
        p.token.into(),
        p.since_ms.into(),
        p.expires_ms.into(),
        p.move_to.clone().into(),
        p.last_host.clone().into(),
    ]
}

/// Writes a placement row whole (insert or replace): operators' requests.
fn put(tx: &mut impl Tx, p: &Placement) -> Result<()> {
    tx.exec(
        "INSERT INTO placements (project, state, host, token, since_ms, expires_ms, move_to, last_host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (project) DO UPDATE SET state = ?2, host = ?3, token = ?4, since_ms = ?5,
             expires_ms = ?6, move_to = ?7, last_host = ?8",
        &placement_values(p),
    )?;
    Ok(())
}

/// Rewrites an existing placement row: a host's hand-over, which may
/// change placements but never create one (the host role has no INSERT).
fn update(tx: &mut impl Tx, p: &Placement) -> Result<()> {
    tx.exec(
        "UPDATE placements SET state = ?2, host = ?3, token = ?4, since_ms = ?5,
             expires_ms = ?6, move_to = ?7, last_host = ?8
         WHERE project = ?1",
        &placement_values(p),
    )?;
    Ok(())
}

/// The bytes a project counts for against a host's `max_bytes`: the
/// length of its newest full stream (0 before its first save).
const PROJECT_BYTES: &str = "SELECT CAST(COALESCE((SELECT s.bytes FROM streams s \
     WHERE s.project = ?1 AND s.start_snap IS NULL ORDER BY s.end_snap DESC LIMIT 1), 0) AS BIGINT)";

/// Per host: the projects it holds and their bytes (bounded by hosts).
const LOAD: &str = "SELECT x.host, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(x.sz), 0) AS BIGINT)
     FROM (SELECT p.host AS host,
                  COALESCE((SELECT s.bytes FROM streams s
                            WHERE s.project = p.project AND s.start_snap IS NULL
                            ORDER BY s.end_snap DESC LIMIT 1), 0) AS sz
           FROM placements p WHERE p.state <> 'closed' AND p.host IS NOT NULL) x
     GROUP BY x.host";

const HOSTS: &str = hosts_where!("ORDER BY id");

/// Why `h` cannot take a project of `bytes` now, if it cannot. A host is
/// down when its agent has been heard from, but not within `lease_ms` (its
/// leases would have run out); one never heard from may be run without an
/// agent, so it is not.
fn unfit(
    h: &HostRecord,
    open: u64,
    open_bytes: u64,
    bytes: u64,
    now_ms: i64,
    lease_ms: i64,
) -> Option<String> {
    if h.state != HostState::Enabled {
        return Some(format!("it is {}", h.state));
    }
    if let Some(t) = h.heartbeat_ms
        && t < now_ms - lease_ms
    {
        return Some(format!(
            "it is down (its agent was last heard from {} s ago)",
            (now_ms - t) / 1000
        ));
    }
    if open >= h.max_projects {
        return Some(format!(
            "it is full ({open} of {} projects)",
            h.max_projects
        ));
    }
    if h.max_bytes > 0 && open_bytes.saturating_add(bytes) > h.max_bytes {
        return Some(format!(
            "it has no room ({open_bytes} of {} bytes held, the project needs {bytes})",
            h.max_bytes
        ));
    }
    None
}

/// Every host with its load.
fn hosts_with_load(tx: &mut impl Tx) -> Result<Vec<(HostRecord, u64, u64)>> {
    let mut load = std::collections::HashMap::new();
    for r in tx.query(LOAD, &[])? {
        load.insert(r.text(0)?, (r.int(1)? as u64, r.int(2)? as u64));
    }
    tx.query(HOSTS, &[])?
        .iter()
        .map(|r| {
            let h = host_from_row(r)?;
            let (n, b) = load.get(&h.id).copied().unwrap_or((0, 0));
            Ok((h, n, b))
        })
        .collect()
}

/// The host `project` goes to: `on` if it can take it, else the best
/// enabled host with room (not `exclude`): one with a local copy of the
/// project first, then one in the zone of `near` (the host it was last
/// on), then an agent heard from over one never heard from, then the
/// fewest projects, then by id.
fn choose(
    tx: &mut impl Tx,
    project: ProjectId,
    on: Option<&str>,
    exclude: Option<&str>,
    near: Option<&str>,
    now_ms: i64,
    lease_ms: i64,
) -> Result<String> {
    let bytes = tx
        .one(PROJECT_BYTES, &[project.to_string().into()])?
        .map_or(Ok(0), |r| r.int(0))? as u64;
    let hosts = hosts_with_load(tx)?;
    if let Some(on) = on {
        let Some((h, n, b)) = hosts.iter().find(|(h, ..)| h.id == on) else {
            return Err(CatalogError::UnknownHost(on.to_string()));
        };
        return match unfit(h, *n, *b, bytes, now_ms, lease_ms) {
            Some(why) => Err(CatalogError::HostUnavailable {
                host: on.to_string(),
                project,
                why,
            }),
            None => Ok(on.to_string()),
        };
    }
    let cached: std::collections::HashSet<String> = tx
        .query(
            "SELECT host FROM host_copies WHERE project = ?1",
            &[project.to_string().into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    let zone = near.and_then(|n| {
        hosts
            .iter()
            .find(|(h, ..)| h.id == n)
            .map(|(h, ..)| h.zone.clone())
    });
    let mut why = Vec::new();
    let best = hosts
        .iter()
        .filter(|(h, n, b)| {
            if Some(h.id.as_str()) == exclude {
                return false;
            }
            match unfit(h, *n, *b, bytes, now_ms, lease_ms) {
                Some(w) => {
                    why.push(format!("{}: {w}", h.id));
                    false
                }
                None => true,
            }
        })
        .min_by_key(|(h, n, _)| {
            (
                !cached.contains(&h.id),
                zone.as_deref() != Some(h.zone.as_str()),
                h.heartbeat_ms.is_none(),
                *n,
                h.id.clone(),
            )
        });
    match best {
        Some((h, ..)) => Ok(h.id.clone()),
        None => Err(CatalogError::NoHost {
            project,
            why: if why.is_empty() {
                "no host is registered (strata hosts add)".into()
            } else {
                why.join("; ")
            },
        }),
    }
}

/// A new grant of the lease to `host`: the next token.
fn grant(
    prev: Option<&Placement>,
    project: ProjectId,
    host: String,
    now_ms: i64,
    lease_ms: i64,
) -> Placement {
    let last_host = prev.and_then(|p| p.host.clone().or_else(|| p.last_host.clone()));
    Placement {
        project,
        state: PlacementState::Open,
        host: Some(host),
        token: prev.map_or(0, |p| p.token) + 1,
        since_ms: now_ms,
        expires_ms: now_ms + lease_ms,
        move_to: None,
        last_host,
    }
}

/// Disables `host` if it is draining and holds nothing any more.
fn finish_drain(tx: &mut impl Tx, host: &str) -> Result<()> {
    let held = tx.exists(
        "SELECT 1 FROM placements WHERE host = ?1 AND state <> 'closed'",
        &[host.into()],
    )?;
    if !held {
        tx.exec(
            "UPDATE hosts SET state = 'disabled' WHERE id = ?1 AND state = 'draining'",
            &[host.into()],
        )?;
    }
    Ok(())
}

/// Why `fence` (`None`: a save holding no lease) may not commit or hand
/// over for `project` at `now_ms`, if it may not.
pub(super) fn fence_refusal(
    tx: &mut impl Tx,
    project: ProjectId,
    fence: Option<&Fence>,
    now_ms: i64,
) -> Result<Option<CatalogError>> {
    let p = placement(tx, project)?;
    let held = p.as_ref().filter(|p| p.state != PlacementState::Closed);
    let who = match fence {
        Some(f) => format!("host {} (lease token {})", f.host, f.token),
        None => "a save holding no lease".to_string(),
    };
    let why = match (held, fence) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            "the project was closed on every host since the lease was granted".to_string()
        }
        (Some(p), None) => format!(
            "the project is open on host {} (token {}); save it there, or close it first",
            p.host.as_deref().unwrap_or("?"),
            p.token
        ),
        (Some(p), Some(f)) => {
            if p.host.as_deref() != Some(f.host.as_str()) || p.token != f.token {
                format!(
                    "the lease was granted again, to host {} (token {})",
                    p.host.as_deref().unwrap_or("?"),
                    p.token
                )
            } else if p.expires_ms < now_ms {
                format!(
                    "the lease ran out {} ms before (at {} ms) and was not renewed",
                    now_ms - p.expires_ms,
                    p.expires_ms
                )
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(CatalogError::Fenced { project, who, why }))
}

/// Records a refusal (its own transaction: the refused one rolled back).
pub(super) fn record_refusal<D: Dialect>(
    db: &D,
    project: ProjectId,
    fence: Option<&Fence>,
    at_ms: i64,
    err: &CatalogError,
) {
    let CatalogError::Fenced { why, .. } = err else {
        return;
    };
    let r = db.transaction(Mode::Write, "record_rejection", |tx| {
        tx.exec(
            "INSERT INTO rejections (at_ms, project, host, token, why) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            &[
                at_ms.into(),
                project.to_string().into(),
                fence.map_or("", |f| f.host.as_str()).into(),
                fence.map_or(0, |f| f.token).into(),
                why.as_str().into(),
            ],
        )
    });
    if let Err(e) = r {
        tracing::warn!("recording the refusal of a commit for project {project}: {e}");
    }
}

pub(super) fn add_host<D: Dialect>(db: &D, h: &HostRecord) -> Result<()> {
    let inserted = db.transaction(Mode::Write, "add_host", |tx| {
        tx.insert_unique(
            "INSERT INTO hosts (id, address, zone, state, max_projects, max_bytes, heartbeat_ms,
                                agent_version, added_ms, cache_bytes, cache_budget, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            &[
                h.id.as_str().into(),
                h.address.as_str().into(),
                h.zone.as_str().into(),
                h.state.as_str().into(),
                h.max_projects.into(),
                h.max_bytes.into(),
                h.heartbeat_ms.into(),
                h.agent_version.clone().into(),
                h.added_ms.into(),
                h.cache_bytes.into(),
                h.cache_budget.into(),
                h.last_error.clone().into(),
            ],
        )
    })?;
    if inserted {
        return Ok(());
    }
    // A retry whose first attempt went through finds its own record.
    let same = db.transaction(Mode::Read, "add_host", |tx| host(tx, &h.id))? == *h;
    if same {
        Ok(())
    } else {
        Err(CatalogError::HostExists(h.id.clone()))
    }
}

pub(super) fn hosts<D: Dialect>(db: &D) -> Result<Vec<HostInfo>> {
    db.transaction(Mode::Read, "hosts", |tx| {
        let mut copies = std::collections::HashMap::new();
        for r in tx.query(
            "SELECT host, CAST(COUNT(*) AS BIGINT) FROM host_copies GROUP BY host",
            &[],
        )? {
            copies.insert(r.text(0)?, r.int(1)? as u64);
        }
        Ok(hosts_with_load(tx)?
            .into_iter()
            .map(|(host, open, open_bytes)| HostInfo {
                copies: copies.get(&host.id).copied().unwrap_or(0),
                host,
                open,
                open_bytes,
            })
            .collect())
    })
}

/// The placements `host` holds (any state but closed), by project.
fn held_by(tx: &mut impl Tx, host: &str) -> Result<Vec<Placement>> {
    placements_of_query(
        tx,
        placements_where!("WHERE host = ?1 AND state <> 'closed' ORDER BY project"),
        &[host.into()],
    )
}

pub(super) fn set_host_state<D: Dialect>(
    db: &D,
    id: &str,
    state: HostState,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<Placement>> {
    db.transaction(Mode::Write, "set_host_state", |tx| {
        host(tx, id)?;
        tx.exec(
            "UPDATE hosts SET state = ?2 WHERE id = ?1",
            &[id.into(), state.as_str().into()],
        )?;
        if state == HostState::Draining {
            for p in held_by(tx, id)? {
                let lapsed = p.holder(now_ms).is_none();
                if !lapsed && p.move_to.is_some() {
                    continue; // already asked to move
                }
                let to = match choose(tx, p.project, None, Some(id), Some(id), now_ms, lease_ms) {
                    Ok(to) => to,
                    Err(CatalogError::NoHost { .. }) => continue, // drain again later
                    Err(e) => return Err(e),
                };
                put(
                    tx,
                    &if lapsed {
                        // Nobody serves it: grant it elsewhere now, from
                        // its last saved snapshot.
                        grant(Some(&p), p.project, to, now_ms, lease_ms)
                    } else {
                        Placement {
                            move_to: Some(to),
                            state: PlacementState::Open,
                            ..p
                        }
                    },
                )?;
            }
            finish_drain(tx, id)?;
            // What it holds now, and what this drain granted elsewhere (at
            // `now_ms`, so a retried call returns the same list).
            return placements_of_query(
                tx,
                placements_where!(
                    "WHERE (host = ?1 AND state <> 'closed')
                        OR (last_host = ?1 AND since_ms = ?2 AND host <> ?1)
                     ORDER BY project"
                ),
                &[id.into(), now_ms.into()],
            );
        }
        Ok(Vec::new())
    })
}

pub(super) fn remove_host<D: Dialect>(db: &D, id: &str) -> Result<()> {
    db.transaction(Mode::Write, "remove_host", |tx| {
        if tx.one(HOST_BY_ID, &[id.into()])?.is_none() {
            // Removing a removed host (a retry) changes nothing.
            return Ok(());
        }
        let n = tx
            .one(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM placements
                 WHERE (host = ?1 AND state <> 'closed') OR move_to = ?1",
                &[id.into()],
            )?
            .map_or(Ok(0), |r| r.int(0))?;
        if n > 0 {
            return Err(CatalogError::HostBusy {
                host: id.to_string(),
                projects: n as u64,
            });
        }
        tx.exec("DELETE FROM host_copies WHERE host = ?1", &[id.into()])?;
        tx.exec(
            "UPDATE placements SET host = NULL WHERE host = ?1",
            &[id.into()],
        )?;
        tx.exec("DELETE FROM hosts WHERE id = ?1", &[id.into()])?;
        Ok(())
    })
}

pub(super) fn heartbeat<D: Dialect>(
    db: &D,
    id: &str,
    report: &HostReport,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<Placement>> {
    db.transaction(Mode::Write, "heartbeat", |tx| {
        host(tx, id)?;
        tx.exec(
            "UPDATE hosts SET heartbeat_ms = ?2, agent_version = ?3, cache_bytes = ?4,
                              cache_budget = ?5, last_error = ?6
             WHERE id = ?1",
            &[
                id.into(),
                now_ms.into(),
                report.agent_version.as_str().into(),
                report.cache_bytes.into(),
                report.cache_budget.into(),
                report.last_error.clone().into(),
            ],
        )?;
        tx.exec(
            "UPDATE placements SET expires_ms = ?3
             WHERE host = ?1 AND state <> 'closed' AND expires_ms >= ?2 AND expires_ms < ?3",
            &[id.into(), now_ms.into(), (now_ms + lease_ms).into()],
        )?;
        naming(tx, id)
    })
}

/// The placements that name host `id`: held by it, or moving to it.
fn naming(tx: &mut impl Tx, id: &str) -> Result<Vec<Placement>> {
    placements_of_query(
        tx,
        placements_where!(
            "WHERE (host = ?1 AND state <> 'closed') OR move_to = ?1 ORDER BY project"
        ),
        &[id.into()],
    )
}

pub(super) fn placements_of<D: Dialect>(db: &D, id: &str) -> Result<Vec<Placement>> {
    db.transaction(Mode::Read, "placements_of", |tx| naming(tx, id))
}

pub(super) fn set_copy<D: Dialect>(
    db: &D,
    id: &str,
    project: ProjectId,
    snapshot: Option<&SnapshotId>,
    now_ms: i64,
) -> Result<()> {
    db.transaction(Mode::Write, "set_copy", |tx| {
        host(tx, id)?;
        let pid = Value::from(project.to_string());
        match snapshot {
            Some(s) => tx.exec(
                "INSERT INTO host_copies (host, project, snapshot, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (host, project) DO UPDATE SET snapshot = ?3, at_ms = ?4",
                &[id.into(), pid, s.to_string().into(), now_ms.into()],
            )?,
            None => tx.exec(
                "DELETE FROM host_copies WHERE host = ?1 AND project = ?2",
                &[id.into(), pid],
            )?,
        };
        Ok(())
    })
}

pub(super) fn copies<D: Dialect>(db: &D, project: ProjectId) -> Result<Vec<(String, SnapshotId)>> {
    db.transaction(Mode::Read, "copies", |tx| {
        tx.query(
            "SELECT host, snapshot FROM host_copies WHERE project = ?1 ORDER BY host",
            &[project.to_string().into()],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?, parse(&r.text(1)?)?)))
        .collect()
    })
}

pub(super) fn get_placement<D: Dialect>(db: &D, project: ProjectId) -> Result<Option<Placement>> {
    db.transaction(Mode::Read, "placement", |tx| placement(tx, project))
}

pub(super) fn placements<D: Dialect>(db: &D) -> Result<Vec<Placement>> {
    db.transaction(Mode::Read, "placements", |tx| {
        placements_of_query(
            tx,
            placements_where!("WHERE state <> 'closed' ORDER BY project"),
            &[],
        )
    })
}

pub(super) fn request<D: Dialect>(
    db: &D,
    project: ProjectId,
    req: &Request,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Placement>> {
    db.transaction(Mode::Write, "request", |tx| {
        if !tx.exists(
            "SELECT 1 FROM projects WHERE id = ?1",
            &[project.to_string().into()],
        )? {
            return Err(CatalogError::Invalid(format!(
                "no project has id {project}"
            )));
        }
        let prev = placement(tx, project)?;
        let live = prev.as_ref().filter(|p| p.holder(now_ms).is_some());
        let next = match (req, live) {
            (Request::Open { on }, Some(p)) => {
                let host = p.host.clone().unwrap_or_default();
                if on.as_deref().is_some_and(|on| on != host) {
                    return Err(CatalogError::AlreadyOpen {
                        project,
                        host,
                        expires_ms: p.expires_ms,
                    });
                }
                // Opening what is open (or closing: the close is called
                // off) changes nothing else.
                Placement {
                    state: PlacementState::Open,
                    ..p.clone()
                }
            }
            (Request::Open { on }, None) => {
                let near = prev
                    .as_ref()
                    .and_then(|p| p.host.as_deref().or(p.last_host.as_deref()));
                let to = choose(tx, project, on.as_deref(), None, near, now_ms, lease_ms)?;
                grant(prev.as_ref(), project, to, now_ms, lease_ms)
            }
            (Request::Close, Some(p)) => Placement {
                state: PlacementState::Closing,
                move_to: None,
                ..p.clone()
            },
            (Request::Close, None) => match &prev {
                None => return Ok(None),
                Some(p) if p.state == PlacementState::Closed => return Ok(prev),
                // Its lease ran out: nobody holds anything to save.
                Some(p) => Placement {
                    state: PlacementState::Closed,
                    host: None,
                    move_to: None,
                    last_host: p.host.clone().or_else(|| p.last_host.clone()),
                    since_ms: now_ms,
                    ..p.clone()
                },
            },
            (Request::Move { to }, Some(p)) => {
                if p.host.as_deref() == Some(to.as_str()) {
                    Placement {
                        move_to: None,
                        ..p.clone()
                    }
                } else if p.move_to.as_deref() == Some(to.as_str()) {
                    return Ok(Some(p.clone()));
                } else {
                    let to = choose(tx, project, Some(to), None, None, now_ms, lease_ms)?;
                    Placement {
                        state: PlacementState::Open,
                        move_to: Some(to),
                        ..p.clone()
                    }
                }
            }
            (Request::Move { to }, None) => match &prev {
                Some(p) if p.state != PlacementState::Closed => {
                    // Its lease ran out: the target takes it over from its
                    // last saved snapshot.
                    let to = choose(tx, project, Some(to), None, None, now_ms, lease_ms)?;
                    grant(Some(p), project, to, now_ms, lease_ms)
                }
                _ => return Err(CatalogError::NotOpen(project)),
            },
        };
        put(tx, &next)?;
        if let Some(h) = prev.as_ref().and_then(|p| p.host.as_deref())
            && next.host.as_deref() != Some(h)
        {
            finish_drain(tx, h)?;
        }
        Ok(Some(next))
    })
}

pub(super) fn hand_over<D: Dialect>(
    db: &D,
    project: ProjectId,
    from: &Fence,
    to: Option<&str>,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Placement> {
    let r = db.transaction(Mode::Write, "hand_over", |tx| {
        let prev = placement(tx, project)?;
        // A retry of a hand-over that went through finds it done.
        if let Some(p) = &prev {
            let done = match to {
                None => p.state == PlacementState::Closed && p.token == from.token,
                Some(to) => {
                    p.host.as_deref() == Some(to)
                        && p.token == from.token + 1
                        && p.last_host.as_deref() == Some(from.host.as_str())
                }
            };
            if done {
                return Ok(p.clone());
            }
        }
        if let Some(e) = fence_refusal(tx, project, Some(from), now_ms)? {
            return Err(e);
        }
        let p = prev.ok_or(CatalogError::NotOpen(project))?;
        let next = match to {
            None => Placement {
                state: PlacementState::Closed,
                host: None,
                since_ms: now_ms,
                move_to: None,
                last_host: Some(from.host.clone()),
                ..p
            },
            Some(to) => {
                let h = host(tx, to)?;
                if h.state != HostState::Enabled {
                    return Err(CatalogError::HostUnavailable {
                        host: to.to_string(),
                        project,
                        why: format!("it is {}", h.state),
                    });
                }
                grant(Some(&p), project, to.to_string(), now_ms, lease_ms)
            }
        };
        update(tx, &next)?;
        finish_drain(tx, &from.host)?;
        Ok(next)
    });
    if let Err(e) = &r {
        record_refusal(db, project, Some(from), now_ms, e);
    }
    r
}

pub(super) fn rejections<D: Dialect>(db: &D, limit: u32) -> Result<Vec<Rejection>> {
    db.transaction(Mode::Read, "rejections", |tx| {
        tx.query(
            "SELECT at_ms, project, host, token, why FROM rejections
             ORDER BY at_ms DESC, project, host, token LIMIT ?1",
            &[limit.into()],
        )?
        .iter()
        .map(|r| {
            Ok(Rejection {
                at_ms: r.int(0)?,
                project: parse(&r.text(1)?)?,
                host: r.text(2)?,
                token: r.int(3)? as u64,
                why: r.text(4)?,
            })
        })
        .collect()
    })
}

pub(super) fn usage<D: Dialect>(db: &D) -> Result<Vec<ProjectUsage>> {
    db.transaction(Mode::Read, "usage", |tx| {
        tx.query(
            "WITH pc AS (SELECT DISTINCT s.project AS project, m.chunk AS chunk
                         FROM manifests m JOIN streams s ON s.id = m.stream),
                  n AS (SELECT chunk, COUNT(*) AS projects FROM pc GROUP BY chunk)
             SELECT pc.project,
                    CAST(COALESCE(SUM(CASE WHEN n.projects = 1 THEN c.stored_len ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN n.projects > 1 THEN c.stored_len ELSE 0 END), 0) AS BIGINT)
             FROM pc JOIN n ON n.chunk = pc.chunk JOIN chunks c ON c.id = pc.chunk
             GROUP BY pc.project ORDER BY pc.project",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(ProjectUsage {
                project: parse(&r.text(0)?)?,
                unique_bytes: r.int(1)? as u64,
                shared_bytes: r.int(2)? as u64,
            })
        })
        .collect()
    })
}

pub(super) fn stats<D: Dialect>(db: &D) -> Result<RepoStats> {
    db.transaction(Mode::Read, "stats", |tx| {
        let c = tx
            .one(
                "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(len), 0) AS BIGINT),
                        CAST(COALESCE(SUM(stored_len), 0) AS BIGINT),
                        CAST(COALESCE(SUM(CASE WHEN unref_since_ms IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT),
                        CAST(COALESCE(SUM(CASE WHEN unref_since_ms IS NOT NULL THEN stored_len ELSE 0 END), 0) AS BIGINT)
                 FROM chunks",
                &[],
            )?
            .ok_or_else(|| CatalogError::Invalid("no chunk totals".into()))?;
        let d = tx
            .one(
                "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(stored_len), 0) AS BIGINT)
                 FROM doomed WHERE scrub <> ''",
                &[],
            )?
            .ok_or_else(|| CatalogError::Invalid("no doomed totals".into()))?;
        Ok(RepoStats {
            chunks: c.int(0)? as u64,
            bytes: c.int(1)? as u64,
            stored_bytes: c.int(2)? as u64,
            waiting_chunks: c.int(3)? as u64,
            waiting_bytes: c.int(4)? as u64,
            doomed: d.int(0)? as u64,
            doomed_bytes: d.int(1)? as u64,
        })
    })
}
