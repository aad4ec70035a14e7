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

use std::collections::BTreeSet;
use std::time::Duration;

use strata_catalog::{CatalogError, SCRUB_LEASE, SaveRecord};
use strata_core::{ChunkId, ChunkKey};

use crate::error::{Error, Result};
use crate::liveness::{SCRUB_LEASE_TTL, is_alive, with_heartbeat};
use crate::repository::Repository;
use crate::save::save_host;

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

/// How long a tombstone (a doomed entry whose object was deleted) is kept
/// after its delete returned, so saves avoid its key meanwhile (see
/// `docs/gc.md`: a scrub that was stopped may still have a delete in
/// flight).
const TOMBSTONE_KEEP_MS: i64 = 24 * 3600 * 1000;

const CHECKPOINT: &str = "scrub.checkpoint";

/// A scrub whose deletes fail this often stops: the store is not working.
pub const MAX_FAILED_DELETES: usize = 1000;

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
    /// Objects whose delete failed; they stay doomed and the next scrub
    /// tries again (at most [`MAX_FAILED_DELETES`] before scrub stops).
    pub failed: BTreeSet<ChunkKey>,
    /// The first of those failures, in words.
    pub first_failure: Option<String>,
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
        repo.host_id,
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
    // Renew only, never re-take: a scrub that lost its lease must stop,
    // and the fence makes it stop before its next delete.
    let renew = || {
        let now = repo.clock.now_ms();
        match cat.renew_lease(SCRUB_LEASE, &owner, now, now + ttl_ms) {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the scrub lease lapsed or was taken over"),
            Err(e) => tracing::warn!("renewing the scrub lease: {e}"),
        }
    };
    let out = with_heartbeat(SCRUB_LEASE_TTL / 3, renew, || run(repo, &owner, opts));
    let _ = cat.release_lease(SCRUB_LEASE, &owner);
    if let Ok(r) = &out
        && !opts.dry_run
    {
        crate::monitor::record_last(
            repo,
            crate::monitor::LAST_SCRUB,
            &format!("{} deleted, {} bytes freed", r.deleted, r.freed_bytes),
        );
    }
    out
}

fn run(repo: &Repository, owner: &str, opts: &ScrubOptions) -> Result<ScrubReport> {
    let cat = repo.catalog.as_ref();
    let grace_ms = opts.grace.as_millis().min(i64::MAX as u128) as i64;
    let mut report = ScrubReport {
        dry_run: opts.dry_run,
        ..ScrubReport::default()
    };
    let mut fence = Fence::new(repo, owner);

    // 1. Deletes an interrupted scrub began.
    if opts.dry_run {
        let mut after: Option<ChunkKey> = None;
        loop {
            let page = cat.doomed_page(after.as_ref(), opts.page)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key);
            report.deleted += page.len() as u64;
            report.freed_bytes += page.iter().map(|d| d.stored_len).sum::<u64>();
        }
    } else {
        drain_doomed(repo, &mut fence, opts.page, &mut report)?;
    }

    // 2. Saves that died: those that stopped renewing (dropped in one
    // transaction that checks the expiry again), and those whose process
    // on this host is gone.
    let now = repo.clock.now_ms();
    let this_host = save_host(repo);
    for s in cat.saves()? {
        let lapsed = s.expires_ms < now;
        if !lapsed && (s.host != this_host || is_alive(s.pid, s.process_start)) {
            continue;
        }
        if !lapsed && !opts.dry_run {
            cat.end_save(s.id)?;
        }
        report.expired_saves.push(s);
    }
    if !opts.dry_run {
        cat.expire_saves(now)?;
    }

    // Where an interrupted scrub stopped: `rows:<id>` inside the rows
    // pass, `objects` between the passes, `objects:<key>` inside the
    // objects pass. One key, so every move is one write.
    let checkpoint = if opts.dry_run {
        None
    } else {
        cat.repo_value(CHECKPOINT)?
    };
    report.resumed = checkpoint.is_some();
    let bad = |e: strata_core::IdError| {
        Error::Input(format!("the scrub checkpoint {CHECKPOINT} is invalid: {e}"))
    };
    let (rows_from, objects_from): (Option<Option<ChunkId>>, Option<ChunkKey>) =
        match checkpoint.as_deref() {
            None => (Some(None), None),
            Some(c) if c.starts_with("rows:") => (Some(Some(c[5..].parse().map_err(bad)?)), None),
            Some("objects") => (None, None),
            Some(c) if c.starts_with("objects:") => (None, Some(c[8..].parse().map_err(bad)?)),
            Some(c) => {
                return Err(Error::Input(format!(
                    "the scrub checkpoint {CHECKPOINT} is invalid: {c:?}"
                )));
            }
        };

    // 3. Catalog rows.
    if let Some(mut after) = rows_from {
        loop {
            let now = repo.clock.now_ms();
            let page = cat.scrub_rows(
                owner,
                after.as_ref(),
                opts.page,
                now,
                grace_ms,
                CHECKPOINT,
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
            } else {
                // Whatever the page reports (a retried page whose first
                // attempt committed reports nothing doomed), the doomed
                // table says what to delete.
                drain_doomed(repo, &mut fence, opts.page, &mut report)?;
            }
        }
        if !opts.dry_run {
            cat.set_scrub_checkpoint(owner, CHECKPOINT, Some("objects"))?;
        }
    }

    // 4. Store objects no row names.
    let mut after = objects_from;
    loop {
        let objects = repo.store.list_page(after.as_ref(), opts.page as usize)?;
        let Some(last) = objects.last() else { break };
        after = Some(last.key);
        report.objects_scanned += objects.len() as u64;
        let now = repo.clock.now_ms();
        let (mut old, mut young) = (Vec::new(), Vec::new());
        for o in &objects {
            let side = if o.modified_ms <= now - grace_ms {
                &mut old
            } else {
                &mut young
            };
            side.push((o.key, o.size));
        }
        let doomed = cat.doom_orphans(owner, &old, now, opts.dry_run)?;
        // Young objects no row names are waiting out their grace.
        report.kept_in_grace += cat.doom_orphans(owner, &young, now, true)?.len() as u64;
        if opts.dry_run {
            // Both lists are in key order.
            let mut sizes = old.iter().peekable();
            for k in &doomed {
                while sizes.next_if(|(key, _)| key < k).is_some() {}
                if let Some((_, size)) = sizes.next_if(|(key, _)| key == k) {
                    report.deleted += 1;
                    report.freed_bytes += size;
                }
            }
        } else {
            drain_doomed(repo, &mut fence, opts.page, &mut report)?;
            cat.set_scrub_checkpoint(owner, CHECKPOINT, Some(&format!("objects:{}", last.key)))?;
        }
    }
    if !opts.dry_run {
        cat.set_scrub_checkpoint(owner, CHECKPOINT, None)?;
        cat.forget_tombstones(repo.clock.now_ms() - TOMBSTONE_KEEP_MS)?;
    }
    Ok(report)
}

/// Stops a scrub from deleting once it may have lost its lease: before
/// every delete, the lease must have been confirmed in the catalog within
/// a third of its lifetime, timed by the boot-time clock (which keeps
/// counting while the process is stopped or the machine sleeps).
struct Fence<'a> {
    repo: &'a Repository,
    owner: &'a str,
    confirmed: Option<Duration>,
    /// How old a confirmation may be (a third of the lease).
    fresh_for: Duration,
}

fn boot_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl<'a> Fence<'a> {
    fn new(repo: &'a Repository, owner: &'a str) -> Self {
        Self {
            repo,
            owner,
            confirmed: None,
            fresh_for: SCRUB_LEASE_TTL / 3,
        }
    }

    /// Ok when this scrub may delete now.
    fn check(&mut self) -> Result<()> {
        let fresh = self
            .confirmed
            .is_some_and(|at| boot_time().saturating_sub(at) < self.fresh_for);
        if fresh {
            return Ok(());
        }
        let before = boot_time();
        let now = self.repo.clock.now_ms();
        let ttl_ms = SCRUB_LEASE_TTL.as_millis() as i64;
        // Renew, never re-take: if the lease lapsed even once, another
        // scrub may have run meanwhile, so this one stops.
        if self
            .repo
            .catalog
            .renew_lease(SCRUB_LEASE, self.owner, now, now + ttl_ms)?
        {
            self.confirmed = Some(before);
            Ok(())
        } else {
            Err(Error::Input(
                "this scrub's lease lapsed or was taken over (it was stopped or too slow); \
                 stopped before deleting more"
                    .into(),
            ))
        }
    }
}

/// Deletes every doomed object (this scrub's, or one an interrupted scrub
/// left) and retires its entry to a tombstone; saves keep avoiding a
/// tombstone's key for a day, so a delete of it still in flight in a scrub
/// that was stopped cannot meet a new upload under that key.
fn drain_doomed(
    repo: &Repository,
    fence: &mut Fence<'_>,
    page: u32,
    report: &mut ScrubReport,
) -> Result<()> {
    let cat = repo.catalog.as_ref();
    // A cursor, so an object whose delete fails does not stop the others;
    // it stays doomed, is not tried again in this run, and the next scrub
    // tries it again.
    let mut after: Option<ChunkKey> = None;
    loop {
        let doomed = cat.doomed_page(after.as_ref(), page)?;
        let Some(last) = doomed.last() else {
            return Ok(());
        };
        after = Some(last.key);
        let mut retire = Vec::with_capacity(doomed.len());
        let mut stop = None;
        for d in &doomed {
            if report.failed.contains(&d.key) {
                continue;
            }
            if let Err(e) = fence.check() {
                stop = Some(e);
                break;
            }
            match repo.store.delete(&d.key) {
                Ok(()) => {
                    report.deleted += 1;
                    report.freed_bytes += d.stored_len;
                    retire.push(d.key);
                }
                Err(e) => {
                    report.failed.insert(d.key);
                    report
                        .first_failure
                        .get_or_insert_with(|| format!("deleting chunk {}: {e}", d.key));
                    if report.failed.len() > MAX_FAILED_DELETES {
                        stop = Some(Error::system(
                            "scrub",
                            std::io::Error::other(format!(
                                "more than {MAX_FAILED_DELETES} deletes failed, stopped; first: {}",
                                report.first_failure.as_deref().unwrap_or("?")
                            )),
                        ));
                        break;
                    }
                }
            }
        }
        // Record what was deleted even when stopping, so a resumed scrub
        // neither repeats nor recounts it.
        cat.retire_doomed(&retire, repo.clock.now_ms())?;
        if let Some(e) = stop {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_stops_a_scrub_that_lost_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(&dir.path().join("repo"), &|_| {}).unwrap();
        let now = repo.clock.now_ms();
        repo.catalog
            .acquire_lease(SCRUB_LEASE, "a", now, now + 1_000)
            .unwrap();
        let mut fence = Fence::new(&repo, "a");
        fence.check().unwrap();
        assert!(fence.confirmed.is_some());
        // Fresh: no catalog call (a thief's lease would not be noticed yet).
        fence.check().unwrap();
        // "a" stalls past its lease; "b" takes it over.
        repo.catalog
            .acquire_lease(SCRUB_LEASE, "b", now + 2_000_000, now + 4_000_000)
            .unwrap();
        fence.fresh_for = Duration::ZERO;
        let err = fence.check().unwrap_err();
        assert!(
            err.to_string().contains("lapsed or was taken over"),
            "{err}"
        );
        // Even once "b" has finished and let the lease go, "a" may not take
        // it back on its own: it stays stopped.
        repo.catalog.release_lease(SCRUB_LEASE, "b").unwrap();
        assert!(fence.check().is_err());
    }
}
