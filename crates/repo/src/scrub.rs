//! `scrub`: delete chunk bytes nothing needs, safely while saves run.
//!
//! The protocol and its proof are in `docs/gc.md`. In order, holding the
//! scrub lease (renewed while it runs):
//!
//! 1. finish deletes an earlier, interrupted scrub began (the doomed table);
//! 2. expire the saves that stopped renewing, and those whose process on
//!    this host is gone, with their intents;
//! 3. pass over the catalog's chunk rows in id order: unreferenced rows
//!    start (or continue) their grace period; rows unreferenced for the
//!    whole grace period are doomed, then their objects deleted;
//! 4. pass over the store's objects in key order: objects no row names,
//!    older than the grace period and named by no live intent are doomed,
//!    then deleted.
//!
//! Each page is one catalog transaction and one checkpoint, so an
//! interrupted scrub resumes where it stopped. Memory holds one page
//! (1,000 entries) whatever the number of chunks.

use std::time::Duration;

use strata_catalog::{CatalogError, SCRUB_LEASE, SaveRecord};
use strata_core::{ChunkId, ChunkKey};
use strata_store::StoredObject;

use crate::error::{Error, Result};
use crate::liveness::{SCRUB_LEASE_TTL, is_alive, with_heartbeat};
use crate::repository::Repository;
use crate::save::hostname;

/// Settings for [`scrub`].
#[derive(Debug, Clone, Copy)]
pub struct ScrubOptions {
    /// How long a chunk must stay unreferenced (and an object without a
    /// catalog row must have existed) before it is deleted.
    pub grace: Duration,
    /// Report what would be deleted; change nothing.
    pub dry_run: bool,
    /// Entries per page (and per catalog transaction).
    pub page: u32,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            dry_run: false,
            page: 1000,
        }
    }
}

/// The default grace period: an hour, so a restore that began before a
/// trim still finds its chunks.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How long another scrub's doomed entries are kept as tombstones after
/// their objects are deleted again (see `docs/gc.md`: a scrub that lost its
/// lease may still have a delete in flight).
const TOMBSTONE_KEEP_MS: i64 = 24 * 3600 * 1000;

const ROWS_CHECKPOINT: &str = "scrub.rows-after";
const OBJECTS_CHECKPOINT: &str = "scrub.objects-after";
const DONE: &str = "done";

/// What a scrub did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// True when it continued an interrupted scrub's passes.
    pub resumed: bool,
    /// Saves expired (stopped renewing, or their process is gone).
    pub expired_saves: Vec<SaveRecord>,
    /// Catalog chunk rows looked at.
    pub rows_scanned: u64,
    /// Store objects looked at.
    pub objects_scanned: u64,
    /// Chunks kept because a committed stream or a live intent names them.
    pub kept_referenced: u64,
    /// Unreferenced chunks or objects kept because their grace period has
    /// not passed.
    pub kept_in_grace: u64,
    /// Objects deleted (in a dry run: that would be).
    pub deleted: u64,
    /// Stored bytes freed (in a dry run: that would be).
    pub freed_bytes: u64,
    /// True for a dry run.
    pub dry_run: bool,
}

/// Scrubs the repository.
///
/// # Errors
/// [`Error::Input`] when another scrub holds the lease; catalog and store
/// failures (after retries). An interrupted scrub leaves a consistent
/// repository and resumes on the next run.
pub fn scrub(repo: &Repository, opts: &ScrubOptions) -> Result<ScrubReport> {
    let owner = format!(
        "{}:{}:{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let cat = repo.catalog.as_ref();
    let ttl_ms = SCRUB_LEASE_TTL.as_millis() as i64;
    if opts.dry_run {
        return run(repo, &owner, opts);
    }
    let now = repo.clock.now_ms();
    match cat.acquire_lease(SCRUB_LEASE, &owner, now, now + ttl_ms) {
        Ok(()) => {}
        Err(CatalogError::LeaseHeld { owner, expires_ms }) => {
            return Err(Error::Input(format!(
                "another scrub ({owner}) is running; its lease runs out in {} s unless it renews it",
                (expires_ms - now).max(0) / 1000
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let renew = || {
        let now = repo.clock.now_ms();
        if let Err(e) = cat.acquire_lease(SCRUB_LEASE, &owner, now, now + ttl_ms) {
            tracing::warn!("renewing the scrub lease: {e}");
        }
    };
    let out = with_heartbeat(SCRUB_LEASE_TTL / 3, renew, || run(repo, &owner, opts));
    let _ = cat.release_lease(SCRUB_LEASE, &owner);
    out
}

fn run(repo: &Repository, owner: &str, opts: &ScrubOptions) -> Result<ScrubReport> {
    let cat = repo.catalog.as_ref();
    let grace_ms = opts.grace.as_millis().min(i64::MAX as u128) as i64;
    let mut report = ScrubReport {
        dry_run: opts.dry_run,
        ..ScrubReport::default()
    };

    // 1. Deletes an interrupted scrub began.
    if opts.dry_run {
        let mut after: Option<ChunkKey> = None;
        loop {
            let page = cat.doomed_page(after.as_ref(), opts.page)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key);
            for d in page.iter().filter(|d| !d.scrub.is_empty()) {
                report.deleted += 1;
                report.freed_bytes += d.stored_len;
            }
        }
    } else {
        drain_doomed(repo, owner, opts.page, &mut report)?;
    }

    // 2. Saves that died.
    let now = repo.clock.now_ms();
    let this_host = hostname();
    for s in cat.saves()? {
        let dead = s.expires_ms < now || (s.host == this_host && !is_alive(s.pid, s.process_start));
        if !dead {
            continue;
        }
        if !opts.dry_run {
            if s.expires_ms < now {
                cat.expire_saves(now)?;
            } else {
                cat.end_save(s.id)?;
            }
        }
        report.expired_saves.push(s);
    }

    // 3. Catalog rows.
    let rows_from = if opts.dry_run {
        None
    } else {
        cat.repo_value(ROWS_CHECKPOINT)?
    };
    let objects_from = if opts.dry_run {
        None
    } else {
        cat.repo_value(OBJECTS_CHECKPOINT)?
    };
    report.resumed = rows_from.is_some() || objects_from.is_some();
    if rows_from.as_deref() != Some(DONE) {
        let mut after: Option<ChunkId> = match rows_from {
            Some(hex) => Some(hex.parse().map_err(|e| {
                Error::Input(format!(
                    "the scrub checkpoint {ROWS_CHECKPOINT} is invalid: {e}"
                ))
            })?),
            None => None,
        };
        loop {
            let now = repo.clock.now_ms();
            let page = cat.scrub_rows(
                owner,
                after.as_ref(),
                opts.page,
                now,
                grace_ms,
                ROWS_CHECKPOINT,
                opts.dry_run,
            )?;
            let Some(last) = page.last else { break };
            after = Some(last);
            report.rows_scanned += page.scanned;
            report.kept_referenced += page.referenced;
            report.kept_in_grace += page.waiting;
            if opts.dry_run {
                report.deleted += page.doomed;
                report.freed_bytes += page.doomed_bytes;
            } else if page.doomed > 0 {
                drain_doomed(repo, owner, opts.page, &mut report)?;
            }
        }
        if !opts.dry_run {
            cat.set_repo_value(ROWS_CHECKPOINT, Some(DONE))?;
        }
    }

    // 4. Store objects no row names.
    let mut after: Option<ChunkKey> = match objects_from {
        Some(text) => Some(text.parse().map_err(|e| {
            Error::Input(format!(
                "the scrub checkpoint {OBJECTS_CHECKPOINT} is invalid: {e}"
            ))
        })?),
        None => None,
    };
    loop {
        let objects = repo.store.list_page(after.as_ref(), opts.page as usize)?;
        let Some(last) = objects.last() else { break };
        after = Some(last.key);
        report.objects_scanned += objects.len() as u64;
        let now = repo.clock.now_ms();
        let (old, young): (Vec<&StoredObject>, Vec<&StoredObject>) = objects
            .iter()
            .partition(|o| o.modified_ms <= now - grace_ms);
        let candidates: Vec<(ChunkKey, u64)> = old.iter().map(|o| (o.key, o.size)).collect();
        let doomed = cat.doom_orphans(owner, &candidates, now, opts.dry_run)?;
        // Young objects no row names are waiting out their grace.
        let young: Vec<(ChunkKey, u64)> = young.iter().map(|o| (o.key, o.size)).collect();
        report.kept_in_grace += cat.doom_orphans(owner, &young, now, true)?.len() as u64;
        if opts.dry_run {
            report.deleted += doomed.len() as u64;
            report.freed_bytes += candidates
                .iter()
                .filter(|(k, _)| doomed.contains(k))
                .map(|(_, size)| size)
                .sum::<u64>();
        } else {
            if !doomed.is_empty() {
                drain_doomed(repo, owner, opts.page, &mut report)?;
            }
            cat.set_repo_value(OBJECTS_CHECKPOINT, Some(&last.key.to_string()))?;
        }
    }
    if !opts.dry_run {
        cat.set_repo_value(ROWS_CHECKPOINT, None)?;
        cat.set_repo_value(OBJECTS_CHECKPOINT, None)?;
    }
    Ok(report)
}

/// Deletes every doomed object, then forgets this scrub's entries. The
/// entries of another scrub (one that died or lost its lease) become
/// tombstones once their objects are deleted, and are forgotten after a
/// day: a delete that scrub may still have in flight cannot then meet a
/// new upload under the same key, since saves avoid doomed keys.
fn drain_doomed(repo: &Repository, owner: &str, page: u32, report: &mut ScrubReport) -> Result<()> {
    let cat = repo.catalog.as_ref();
    let mut after: Option<ChunkKey> = None;
    loop {
        let doomed = cat.doomed_page(after.as_ref(), page)?;
        let Some(last) = doomed.last() else {
            return Ok(());
        };
        after = Some(last.key);
        let now = repo.clock.now_ms();
        let (mut forget, mut retire) = (Vec::new(), Vec::new());
        let mut failed = None;
        for d in &doomed {
            if d.scrub.is_empty() {
                if d.since_ms < now - TOMBSTONE_KEEP_MS {
                    forget.push(d.key);
                }
                continue;
            }
            if let Err(e) = repo.store.delete(&d.key) {
                failed = Some(e);
                break;
            }
            report.deleted += 1;
            report.freed_bytes += d.stored_len;
            if d.scrub == owner {
                forget.push(d.key);
            } else {
                retire.push(d.key);
            }
        }
        // Record what was deleted even when a delete failed, so a resumed
        // scrub neither repeats nor recounts it.
        cat.undoom(&forget)?;
        cat.retire_doomed(&retire)?;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
}
