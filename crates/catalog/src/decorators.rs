//! Catalog decorators: [`RetryingCatalog`] retries transient failures
//! (exponential backoff, full jitter, bounded); [`FaultyCatalog`] injects
//! transient failures, before or after the inner call, for tests;
//! [`HookedCatalog`] runs a test hook before one operation.
//!
//! Every catalog call is safe to repeat: reads change nothing,
//! `commit_stream` recognises a stream it already committed, deleting and
//! setting are idempotent, and `create_project` is resolved by name when a
//! retry finds the project its earlier attempt created. Save records and
//! intents are inserted with "or ignore"; a repeated scrub page finds the
//! rows its first attempt doomed already gone and leaves their objects to
//! the doomed table, which scrub drains whatever happened.

use strata_core::faults::FaultDice;
use strata_core::{
    ChunkId, ChunkKey, ChunkLookup, ManifestEntry, ProjectId, RetryPolicy, SaveId, SnapshotId,
    StreamId, StreamInfo, Transient,
};

use crate::{
    Catalog, CatalogError, Doomed, Fence, HostInfo, HostRecord, HostReport, HostState, NewChunk,
    Placement, Project, ProjectSummary, ProjectUsage, Rejection, RepoStats, Request, Result,
    RowsPage, SaveRecord,
};

/// Implements every [`Catalog`] method but `create_project` by passing the
/// inner call through `self.via(name, call)`.
macro_rules! forward_catalog {
    () => {
        fn repo_id(&self) -> Result<String> {
            self.via("repo_id", || self.inner.repo_id())
        }
        fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
            self.via("project_by_name", || self.inner.project_by_name(name))
        }
        fn project(&self, id: ProjectId) -> Result<Option<Project>> {
            self.via("project", || self.inner.project(id))
        }
        fn projects(&self) -> Result<Vec<ProjectSummary>> {
            self.via("projects", || self.inner.projects())
        }
        fn begin_save(&self, save: &SaveRecord) -> Result<()> {
            self.via("begin_save", || self.inner.begin_save(save))
        }
        fn renew_save(&self, save: SaveId, expires_ms: i64) -> Result<bool> {
            self.via("renew_save", || self.inner.renew_save(save, expires_ms))
        }
        fn claim_chunks(&self, save: SaveId, ids: &[ChunkId]) -> Result<Vec<ChunkLookup>> {
            self.via("claim_chunks", || self.inner.claim_chunks(save, ids))
        }
        fn end_save(&self, save: SaveId) -> Result<()> {
            self.via("end_save", || self.inner.end_save(save))
        }
        fn saves(&self) -> Result<Vec<SaveRecord>> {
            self.via("saves", || self.inner.saves())
        }
        fn expire_saves(&self, now_ms: i64) -> Result<Vec<SaveRecord>> {
            self.via("expire_saves", || self.inner.expire_saves(now_ms))
        }
        fn commit_stream(
            &self,
            save: SaveId,
            s: &StreamInfo,
            m: &[ManifestEntry],
            c: &[NewChunk],
        ) -> Result<()> {
            self.via("commit_stream", || self.inner.commit_stream(save, s, m, c))
        }
        fn acquire_lease(
            &self,
            name: &str,
            owner: &str,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<()> {
            self.via("acquire_lease", || {
                self.inner.acquire_lease(name, owner, now_ms, expires_ms)
            })
        }
        fn renew_lease(
            &self,
            name: &str,
            owner: &str,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<bool> {
            self.via("renew_lease", || {
                self.inner.renew_lease(name, owner, now_ms, expires_ms)
            })
        }
        fn chunk(&self, id: &ChunkId) -> Result<Option<NewChunk>> {
            self.via("chunk", || self.inner.chunk(id))
        }
        fn set_scrub_checkpoint(&self, scrub: &str, key: &str, value: Option<&str>) -> Result<()> {
            self.via("set_scrub_checkpoint", || {
                self.inner.set_scrub_checkpoint(scrub, key, value)
            })
        }
        fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
            self.via("release_lease", || self.inner.release_lease(name, owner))
        }
        fn repo_value(&self, key: &str) -> Result<Option<String>> {
            self.via("repo_value", || self.inner.repo_value(key))
        }
        fn set_repo_value(&self, key: &str, value: Option<&str>) -> Result<()> {
            self.via("set_repo_value", || self.inner.set_repo_value(key, value))
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
            self.via("scrub_rows", || {
                self.inner.scrub_rows(
                    scrub,
                    after,
                    limit,
                    now_ms,
                    grace_ms,
                    checkpoint_key,
                    dry_run,
                )
            })
        }
        fn doom_orphans(
            &self,
            scrub: &str,
            candidates: &[(ChunkKey, u64)],
            now_ms: i64,
            dry_run: bool,
        ) -> Result<Vec<ChunkKey>> {
            self.via("doom_orphans", || {
                self.inner.doom_orphans(scrub, candidates, now_ms, dry_run)
            })
        }
        fn doomed_page(&self, after: Option<&ChunkKey>, limit: u32) -> Result<Vec<Doomed>> {
            self.via("doomed_page", || self.inner.doomed_page(after, limit))
        }
        fn retire_doomed(&self, keys: &[ChunkKey], now_ms: i64) -> Result<()> {
            self.via("retire_doomed", || self.inner.retire_doomed(keys, now_ms))
        }
        fn forget_tombstones(&self, before_ms: i64) -> Result<u64> {
            self.via("forget_tombstones", || {
                self.inner.forget_tombstones(before_ms)
            })
        }
        fn streams(&self, project: ProjectId) -> Result<Vec<StreamInfo>> {
            self.via("streams", || self.inner.streams(project))
        }
        fn delete_streams(&self, project: ProjectId, streams: &[StreamId]) -> Result<()> {
            self.via("delete_streams", || {
                self.inner.delete_streams(project, streams)
            })
        }
        fn retention(&self, project: ProjectId) -> Result<Option<String>> {
            self.via("retention", || self.inner.retention(project))
        }
        fn set_retention(&self, project: ProjectId, policy: Option<&str>) -> Result<()> {
            self.via("set_retention", || {
                self.inner.set_retention(project, policy)
            })
        }
        fn chunks_page(&self, after: Option<&ChunkId>, limit: u32) -> Result<Vec<NewChunk>> {
            self.via("chunks_page", || self.inner.chunks_page(after, limit))
        }
        fn unknown_chunk_refs(&self, limit: u32) -> Result<Vec<(StreamId, u64, ChunkId)>> {
            self.via("unknown_chunk_refs", || {
                self.inner.unknown_chunk_refs(limit)
            })
        }
        fn streams_using(&self, chunk: &ChunkId, limit: u32) -> Result<Vec<(ProjectId, StreamId)>> {
            self.via("streams_using", || self.inner.streams_using(chunk, limit))
        }
        fn manifest_page(
            &self,
            stream: StreamId,
            from: u64,
            limit: u32,
        ) -> Result<Vec<ManifestEntry>> {
            self.via("manifest_page", || {
                self.inner.manifest_page(stream, from, limit)
            })
        }
        fn add_host(&self, host: &HostRecord) -> Result<()> {
            self.via("add_host", || self.inner.add_host(host))
        }
        fn hosts(&self) -> Result<Vec<HostInfo>> {
            self.via("hosts", || self.inner.hosts())
        }
        fn set_host_state(
            &self,
            host: &str,
            state: HostState,
            now_ms: i64,
            lease_ms: i64,
        ) -> Result<Vec<Placement>> {
            self.via("set_host_state", || {
                self.inner.set_host_state(host, state, now_ms, lease_ms)
            })
        }
        fn remove_host(&self, host: &str) -> Result<()> {
            self.via("remove_host", || self.inner.remove_host(host))
        }
        fn heartbeat(
            &self,
            host: &str,
            report: &HostReport,
            now_ms: i64,
            lease_ms: i64,
        ) -> Result<Vec<Placement>> {
            self.via("heartbeat", || {
                self.inner.heartbeat(host, report, now_ms, lease_ms)
            })
        }
        fn set_copy(
            &self,
            host: &str,
            project: ProjectId,
            snapshot: Option<&SnapshotId>,
            now_ms: i64,
        ) -> Result<()> {
            self.via("set_copy", || {
                self.inner.set_copy(host, project, snapshot, now_ms)
            })
        }
        fn placements_of(&self, host: &str) -> Result<Vec<Placement>> {
            self.via("placements_of", || self.inner.placements_of(host))
        }
        fn copies(&self, project: ProjectId) -> Result<Vec<(String, SnapshotId)>> {
            self.via("copies", || self.inner.copies(project))
        }
        fn placement(&self, project: ProjectId) -> Result<Option<Placement>> {
            self.via("placement", || self.inner.placement(project))
        }
        fn placements(&self) -> Result<Vec<Placement>> {
            self.via("placements", || self.inner.placements())
        }
        fn request(
            &self,
            project: ProjectId,
            request: &Request,
            now_ms: i64,
            lease_ms: i64,
        ) -> Result<Option<Placement>> {
            self.via("request", || {
                self.inner.request(project, request, now_ms, lease_ms)
            })
        }
        fn hand_over(
            &self,
            project: ProjectId,
            from: &Fence,
            to: Option<&str>,
            now_ms: i64,
            lease_ms: i64,
        ) -> Result<Placement> {
            self.via("hand_over", || {
                self.inner.hand_over(project, from, to, now_ms, lease_ms)
            })
        }
        fn rejections(&self, limit: u32) -> Result<Vec<Rejection>> {
            self.via("rejections", || self.inner.rejections(limit))
        }
        fn usage(&self) -> Result<Vec<ProjectUsage>> {
            self.via("usage", || self.inner.usage())
        }
        fn stats(&self) -> Result<RepoStats> {
            self.via("stats", || self.inner.stats())
        }
    };
}

/// A catalog whose calls are retried under a [`RetryPolicy`].
#[derive(Debug)]
pub struct RetryingCatalog<C> {
    inner: C,
    policy: RetryPolicy,
}

impl<C: Catalog> RetryingCatalog<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    fn via<T>(&self, op: &'static str, f: impl FnMut() -> Result<T>) -> Result<T> {
        self.policy.run(op, f)
    }
}

impl<C: Catalog> Catalog for RetryingCatalog<C> {
    forward_catalog!();

    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project> {
        let mut failed_before = false;
        self.policy.run("create_project", || {
            match self.inner.create_project(name, created_ms) {
                // An earlier attempt may have created it and then failed to say so.
                Err(CatalogError::NameTaken(_)) if failed_before => {
                    match self.inner.project_by_name(name)? {
                        Some(p) if p.created_ms == created_ms => Ok(p),
                        _ => Err(CatalogError::NameTaken(name.to_string())),
                    }
                }
                Err(e) => {
                    failed_before |= e.is_transient();
                    Err(e)
                }
                ok => ok,
            }
        })
    }
}

/// Wraps a catalog and fails a share of its calls with transient errors,
/// half before the inner call and half after it (see
/// [`strata_core::faults`]). For tests.
#[derive(Debug)]
pub struct FaultyCatalog<C> {
    inner: C,
    dice: FaultDice,
}

impl<C: Catalog> FaultyCatalog<C> {
    /// Fails a share `rate` (0.0–1.0) of calls.
    pub fn new(inner: C, rate: f64, seed: u64) -> Self {
        Self {
            inner,
            dice: FaultDice::new(rate, seed),
        }
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.dice.injected()
    }

    fn via<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.dice.run(f, |when| CatalogError::Transient {
            op,
            why: format!("injected fault {when} the call"),
        })
    }
}

impl<C: Catalog> Catalog for FaultyCatalog<C> {
    forward_catalog!();

    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project> {
        self.via("create_project", || {
            self.inner.create_project(name, created_ms)
        })
    }
}

/// A hook run before a catalog call.
pub type CatalogHook = Box<dyn Fn() + Send + Sync>;

/// Wraps a catalog and runs a hook before every call of one operation
/// (by its method name), then makes the call. For tests: to hold a protocol
/// at a boundary deterministically, say a save that commits between a
/// trim's plan and its delete (`"delete_streams"`).
pub struct HookedCatalog<C> {
    inner: C,
    op: &'static str,
    hook: CatalogHook,
}

impl<C: Catalog> HookedCatalog<C> {
    /// Runs `hook` before each `op` call of `inner`.
    pub fn new(inner: C, op: &'static str, hook: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            inner,
            op,
            hook: Box::new(hook),
        }
    }

    fn via<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if op == self.op {
            (self.hook)();
        }
        f()
    }
}

impl<C> std::fmt::Debug for HookedCatalog<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedCatalog")
            .field("op", &self.op)
            .finish()
    }
}

impl<C: Catalog> Catalog for HookedCatalog<C> {
    forward_catalog!();

    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project> {
        self.via("create_project", || {
            self.inner.create_project(name, created_ms)
        })
    }
}
