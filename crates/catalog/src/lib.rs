//! The catalog: everything but chunk bytes. Projects, streams, manifests
//! and the set of chunks that committed streams reference.
//!
//! A stream becomes visible in one transaction together with its manifest
//! and the chunks it was first to store ([`Catalog::commit_stream`]), after
//! those chunks are durable in the chunk store; a stream is never half
//! there. The protocol is written once ([`sql::SqlCatalog`]) over a small
//! transaction trait; backends are dialect adapters: [`SqliteCatalog`]
//! (the embedded default) and [`PostgresCatalog`] (the distributed one).

#[cfg(feature = "conformance")]
pub mod conformance;
mod decorators;
pub mod fleet;
pub mod sql;

pub use decorators::{CatalogHook, FaultyCatalog, HookedCatalog, RetryingCatalog};
pub use fleet::{
    Fence, HostInfo, HostRecord, HostReport, HostState, Placement, PlacementState, ProjectUsage,
    Rejection, RepoStats, Request,
};
pub use sql::SqlCatalog;
pub use sql::postgres::{Postgres, PostgresCatalog};
pub use sql::sqlite::{Sqlite, SqliteCatalog};

/// The name of the lease a running scrub holds.
pub const SCRUB_LEASE: &str = "scrub";

use strata_core::{
    ChunkId, ChunkKey, ChunkLookup, ManifestEntry, ProjectId, SaveId, SnapshotId, StreamId,
    StreamInfo,
};

/// A result with [`CatalogError`].
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What went wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database behind the catalog failed (built by each dialect
    /// adapter, so no backend's error type leaks into this one).
    #[error("catalog database, {op}: {source}{}", if *transient { " (transient)" } else { "" })]
    Backend {
        /// The catalog call that failed.
        op: &'static str,
        /// True when the failure may pass (busy, locked, a lost
        /// serialisation race, a dropped connection).
        transient: bool,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The catalog was written by a newer strata.
    #[error(
        "catalog schema version {found} is newer than this strata understands ({supported}); upgrade strata"
    )]
    TooNew {
        /// The schema version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The catalog's configuration is wrong: its URL, TLS material or
    /// password file. The message says which (never a secret).
    #[error("{0}")]
    Config(String),
    /// The catalog's role may not do this (a compute host's role running
    /// trim or scrub, say): nothing was changed.
    #[error(
        "catalog {op}: permission denied ({why}); nothing was changed. Trim, scrub and forget-fork need the maintenance role, schema changes the owner's"
    )]
    PermissionDenied {
        /// The catalog call refused.
        op: &'static str,
        /// The database's words.
        why: String,
    },
    /// A project name is taken.
    #[error("a project named {0:?} already exists")]
    NameTaken(String),
    /// Something stored does not parse.
    #[error("catalog holds an invalid value: {0}")]
    Invalid(String),
    /// The save's record is gone: scrub expired it (the save stopped
    /// renewing it in time) or the save ended. Its intents no longer protect
    /// anything, so it must not commit.
    #[error(
        "save {0} outlived its intent (scrub expired it, or it was ended); nothing was committed, save again"
    )]
    SaveGone(SaveId),
    /// The snapshot an incremental starts from is no longer in the
    /// catalog (a trim deleted its stream while the save ran).
    #[error(
        "the snapshot {0} this save started from was deleted (trimmed) while it ran; nothing was committed, save again"
    )]
    BaseGone(SnapshotId),
    /// The snapshot an incremental starts from is still in the catalog but
    /// no longer restorable: a stream of its chain is gone. Building on it
    /// would commit a stream no restore can reach.
    #[error(
        "the snapshot {0} this save started from can no longer be restored (a stream of its chain was deleted); nothing was committed, save again (a full stream)"
    )]
    BaseUnreachable(SnapshotId),
    /// A delete of streams would take away the start of a stream that
    /// stays (one committed after the delete was planned): refused, nothing
    /// deleted; plan again.
    #[error(
        "stream {stream} starts at snapshot {start}, which this delete would remove (it was committed after the plan was made); nothing was deleted, plan again"
    )]
    StartNeeded {
        /// The stream that would lose its start.
        stream: StreamId,
        /// Its start snapshot.
        start: SnapshotId,
    },
    /// Another scrub holds the scrub lease.
    #[error("another scrub ({owner}) is running, its lease ends at {expires_ms} ms")]
    LeaseHeld {
        /// Who holds it.
        owner: String,
        /// When it runs out unless renewed.
        expires_ms: i64,
    },
    /// This scrub's lease ran out and another took it.
    #[error("this scrub lost its lease to {0}; stopped")]
    LeaseLost(String),
    /// No host of that id is registered.
    #[error(
        "no host {0:?} is registered (see `strata hosts list`; `strata hosts add` registers one)"
    )]
    UnknownHost(String),
    /// A host of that id is registered already.
    #[error("a host {0:?} is registered already")]
    HostExists(String),
    /// The host named cannot take a project now.
    #[error("host {host} cannot take project {project}: {why}")]
    HostUnavailable {
        /// The host.
        host: String,
        /// The project.
        project: ProjectId,
        /// Why (disabled, draining, full, down).
        why: String,
    },
    /// No registered host can take the project.
    #[error("no host can take project {project}: {why}")]
    NoHost {
        /// The project.
        project: ProjectId,
        /// What the hosts lack.
        why: String,
    },
    /// The project is open on another host than the one asked for.
    #[error(
        "project {project} is open on host {host}; move it with `strata move`, or close it first"
    )]
    AlreadyOpen {
        /// The project.
        project: ProjectId,
        /// The host holding its lease.
        host: String,
        /// When that lease runs out unless renewed.
        expires_ms: i64,
    },
    /// The project is not open anywhere.
    #[error("project {0} is not open on any host")]
    NotOpen(ProjectId),
    /// A host still has projects: it cannot be removed.
    #[error(
        "host {host} still holds {projects} project(s) or is the target of a move; drain it (`strata hosts drain`) and wait until it is disabled"
    )]
    HostBusy {
        /// The host.
        host: String,
        /// How many projects hold it.
        projects: u64,
    },
    /// A commit or hand-over by a host (or a save) that does not hold the
    /// project's lease under its current token: refused and recorded
    /// (`docs/fleet.md`).
    #[error("project {project}: {who} was refused: {why}; nothing was committed")]
    Fenced {
        /// The project.
        project: ProjectId,
        /// Who tried ("host h1 (token 4)", "a save holding no lease").
        who: String,
        /// What the lease says now.
        why: String,
    },
    /// A failure that may pass (a dropped connection, a restart).
    #[error("catalog {op}: {why} (transient)")]
    Transient {
        /// The operation.
        op: &'static str,
        /// What happened.
        why: String,
    },
}

impl CatalogError {
    /// The message with the project id `id` replaced by its name, for
    /// people (the catalog's errors name projects by id).
    pub fn naming(&self, id: ProjectId, name: &str) -> String {
        self.to_string().replace(&id.to_string(), name)
    }
}

impl strata_core::Transient for CatalogError {
    /// Busy or locked databases and explicit transient failures may pass;
    /// everything else is permanent.
    fn is_transient(&self) -> bool {
        match self {
            CatalogError::Transient { .. } => true,
            CatalogError::Backend { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its unique name.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
}

/// A project with totals, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSummary {
    /// The project.
    pub project: Project,
    /// Number of streams.
    pub streams: u64,
    /// The newest snapshot (by id), if any.
    pub newest: Option<SnapshotId>,
    /// Sum of the streams' lengths.
    pub bytes: u64,
    /// Sum of the stored bytes its streams were first to write.
    pub stored_bytes: u64,
    /// The engine its newest stream was made with, which its next save
    /// keeps (`None` before its first save). The engine is recorded with
    /// each stream; the project's is read from them, so the two cannot
    /// disagree.
    pub engine: Option<String>,
}

/// A chunk a stream was first to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChunk {
    /// The chunk.
    pub id: ChunkId,
    /// The generation it was uploaded under.
    pub generation: u32,
    /// Plaintext length.
    pub len: u32,
    /// Stored (encoded) length.
    pub stored_len: u32,
}

impl NewChunk {
    /// Where its bytes live.
    pub fn key(&self) -> ChunkKey {
        ChunkKey::new(self.id, self.generation)
    }
}

/// A running save, as its catalog record (`docs/gc.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveRecord {
    /// Its id.
    pub id: SaveId,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When that process started (clock ticks since boot, from
    /// `/proc/PID/stat`), so a reused pid is not mistaken for it; 0 if unknown.
    pub process_start: u64,
    /// When the save began (ms since the epoch).
    pub started_ms: i64,
    /// When its intents expire unless renewed (ms since the epoch).
    pub expires_ms: i64,
    /// The project lease the save holds (`None` for a project open on no
    /// host): its commit is refused unless this is still the lease's
    /// current grant ([`Catalog::commit_stream`]).
    pub fence: Option<Fence>,
}

/// What one page of [`Catalog::scrub_rows`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsPage {
    /// The last chunk id looked at; `None` when the page was empty (the
    /// pass is done).
    pub last: Option<ChunkId>,
    /// Chunk rows looked at.
    pub scanned: u64,
    /// Rows a committed stream or a live intent names.
    pub referenced: u64,
    /// Unreferenced rows still inside the grace period.
    pub waiting: u64,
    /// Rows doomed (deleted from the catalog; their objects are listed in
    /// the doomed table until deleted). In a dry run: rows that would be.
    pub doomed: u64,
    /// Stored bytes of the doomed rows.
    pub doomed_bytes: u64,
}

/// A store object scrub is deleting: recorded before the delete, removed
/// after it (`docs/gc.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// The object.
    pub key: ChunkKey,
    /// The scrub that doomed it; empty for a tombstone (deleted, kept so
    /// saves still avoid the key).
    pub scrub: String,
    /// When (ms since the epoch).
    pub since_ms: i64,
    /// Its stored size, when known.
    pub stored_len: u64,
}

/// Where metadata lives. Methods are grouped by what they serve: the
/// repository, projects, saves, streams, chunk rows, scrub, leases, the
/// fleet. Every
/// method is one transaction and safe to repeat (see the decorators).
pub trait Catalog: Send + Sync {
    // ---- The repository ----

    /// The repository's id, made when the catalog was created.
    ///
    /// # Errors
    /// When the backend fails.
    fn repo_id(&self) -> Result<String>;

    /// A repository-wide setting or checkpoint, by key.
    ///
    /// # Errors
    /// When the backend fails.
    fn repo_value(&self, key: &str) -> Result<Option<String>>;

    /// Sets (or with `None` clears) a repository-wide value.
    ///
    /// # Errors
    /// When the backend fails.
    fn set_repo_value(&self, key: &str, value: Option<&str>) -> Result<()>;

    // ---- Projects ----

    /// Creates a project.
    ///
    /// # Errors
    /// [`CatalogError::NameTaken`] when the name is used.
    fn create_project(&self, name: &str, created_ms: i64) -> Result<Project>;

    /// The project called `name`.
    ///
    /// # Errors
    /// When the backend fails.
    fn project_by_name(&self, name: &str) -> Result<Option<Project>>;

    /// The project with id `id`.
    ///
    /// # Errors
    /// When the backend fails.
    fn project(&self, id: ProjectId) -> Result<Option<Project>>;

    /// Every project with its totals, by name.
    ///
    /// # Errors
    /// When the backend fails.
    fn projects(&self) -> Result<Vec<ProjectSummary>>;

    /// The project's own retention policy (TOML), if it has one.
    ///
    /// # Errors
    /// When the backend fails.
    fn retention(&self, project: ProjectId) -> Result<Option<String>>;

    /// Sets (or with `None` clears) the project's retention policy (TOML).
    ///
    /// # Errors
    /// When the backend fails.
    fn set_retention(&self, project: ProjectId, policy: Option<&str>) -> Result<()>;

    // ---- Saves: records, intents, expiry (`docs/gc.md`) ----

    /// Records a running save. Idempotent for the same record.
    ///
    /// # Errors
    /// When the backend fails.
    fn begin_save(&self, save: &SaveRecord) -> Result<()>;

    /// Moves the save's expiry to `expires_ms`; false when its record is
    /// gone (scrub expired it, or it ended).
    ///
    /// # Errors
    /// When the backend fails.
    fn renew_save(&self, save: SaveId, expires_ms: i64) -> Result<bool>;

    /// In one transaction: records the save's intent to use every chunk of
    /// `ids`, then says for each whether a committed stream stored it
    /// (reuse it) or under which generation to upload it (one that no
    /// object being deleted has). The heart of `docs/gc.md`: an intent is
    /// recorded before the lookup, in the same serialised transaction.
    ///
    /// # Errors
    /// [`CatalogError::SaveGone`] when the save's record is gone.
    fn claim_chunks(&self, save: SaveId, ids: &[ChunkId]) -> Result<Vec<ChunkLookup>>;

    /// Ends a save that will not commit: drops its intents and record.
    /// Ending an ended save is not an error.
    ///
    /// # Errors
    /// When the backend fails.
    fn end_save(&self, save: SaveId) -> Result<()>;

    /// Every running save's record.
    ///
    /// # Errors
    /// When the backend fails.
    fn saves(&self) -> Result<Vec<SaveRecord>>;

    /// Drops the saves whose records expired before `now_ms`, with their
    /// intents; returns them (for reports: a retried call whose first
    /// attempt did drop them returns fewer).
    ///
    /// # Errors
    /// When the backend fails.
    fn expire_saves(&self, now_ms: i64) -> Result<Vec<SaveRecord>>;

    // ---- Streams and manifests ----

    /// Commits a stream, its manifest and the chunks it uploaded, in one
    /// transaction, and ends `save` (drops its intents and record) in the
    /// same transaction. Chunks another save committed meanwhile are kept
    /// as they are (under their generation). Idempotent: committing a
    /// stream that is already there with the same record succeeds (a
    /// retried commit whose first attempt did commit); the same id with
    /// another record is an error.
    ///
    /// # Errors
    /// [`CatalogError::SaveGone`] when the save's record is gone (its
    /// intents may not have protected what it reuses);
    /// [`CatalogError::BaseGone`] when an incremental's start snapshot is no
    /// longer the end of a stream of the project;
    /// [`CatalogError::BaseUnreachable`] when it is, but no chain from a
    /// full stream reaches it; [`CatalogError::Fenced`] when the project is
    /// open on a host and the save does not hold that lease's current,
    /// unexpired grant (at the stream's `created_ms`), or the save holds a
    /// lease the project no longer has (the refusal is recorded,
    /// [`Catalog::rejections`]); backend failures. Nothing is committed then.
    fn commit_stream(
        &self,
        save: SaveId,
        stream: &StreamInfo,
        manifest: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<()>;

    /// Every stream of a project, by end snapshot.
    ///
    /// # Errors
    /// When the backend fails.
    fn streams(&self, project: ProjectId) -> Result<Vec<StreamInfo>>;

    /// Up to `limit` manifest entries of `stream` from position `from`.
    ///
    /// # Errors
    /// When the backend fails.
    fn manifest_page(&self, stream: StreamId, from: u64, limit: u32) -> Result<Vec<ManifestEntry>>;

    /// Deletes streams of `project` and their manifests in one transaction;
    /// streams already gone are skipped (so a retry is harmless). Chunk
    /// records stay (scrub decides). The same transaction re-validates the
    /// plan the caller made from an earlier read: no stream that stays may
    /// lose its start (`docs/invariants.md`, invariant 7), whatever was
    /// committed since.
    ///
    /// # Errors
    /// [`CatalogError::StartNeeded`] when a stream that stays starts at a
    /// snapshot that only deleted streams end at; backend failures.
    /// Nothing is deleted then.
    fn delete_streams(&self, project: ProjectId, streams: &[StreamId]) -> Result<()>;

    // ---- Chunk rows, for check ----

    /// The committed chunk row of `id`, if any.
    ///
    /// # Errors
    /// When the backend fails.
    fn chunk(&self, id: &ChunkId) -> Result<Option<NewChunk>>;

    /// Up to `limit` known chunks with ids above `after`, in id order.
    ///
    /// # Errors
    /// When the backend fails.
    fn chunks_page(&self, after: Option<&ChunkId>, limit: u32) -> Result<Vec<NewChunk>>;

    /// Up to `limit` manifest entries (stream, position, chunk) that name a
    /// chunk the catalog does not know.
    ///
    /// # Errors
    /// When the backend fails.
    fn unknown_chunk_refs(&self, limit: u32) -> Result<Vec<(StreamId, u64, ChunkId)>>;

    /// Up to `limit` (project, stream) pairs whose manifests name `chunk`.
    ///
    /// # Errors
    /// When the backend fails.
    fn streams_using(&self, chunk: &ChunkId, limit: u32) -> Result<Vec<(ProjectId, StreamId)>>;

    // ---- Scrub (`docs/gc.md`) ----

    /// One transaction of scrub's pass over chunk rows (`docs/gc.md`): up
    /// to `limit` rows with ids above `after`. A row that a manifest or a
    /// live intent names loses its unreferenced mark; an unreferenced row
    /// gets one (at `now_ms`) if it had none; an unreferenced row marked at
    /// or before `now_ms - grace_ms` is doomed: deleted and recorded in the
    /// doomed table under `scrub`. Stores `checkpoint_key = last id` in the
    /// same transaction (as `rows:<hex>`). Fails unless `scrub` holds the
    /// scrub lease. A dry run writes nothing and reports what would happen.
    ///
    /// # Errors
    /// [`CatalogError::LeaseLost`]; backend failures.
    #[allow(clippy::too_many_arguments)]
    fn scrub_rows(
        &self,
        scrub: &str,
        after: Option<&ChunkId>,
        limit: u32,
        now_ms: i64,
        grace_ms: i64,
        checkpoint_key: &str,
        dry_run: bool,
    ) -> Result<RowsPage>;

    /// Dooms the store objects of `candidates` (with their sizes) that no
    /// chunk row names with that generation and no live intent names by
    /// id, in one transaction; returns those doomed (in a dry run, those
    /// that would be). A tombstone of the same key is doomed anew (the
    /// object came back). Fails unless `scrub` holds the scrub lease.
    ///
    /// # Errors
    /// [`CatalogError::LeaseLost`]; backend failures.
    fn doom_orphans(
        &self,
        scrub: &str,
        candidates: &[(ChunkKey, u64)],
        now_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<ChunkKey>>;

    /// Up to `limit` doomed objects with keys above `after`, by key, that
    /// still wait for their delete (tombstones are not listed).
    ///
    /// # Errors
    /// When the backend fails.
    fn doomed_page(&self, after: Option<&ChunkKey>, limit: u32) -> Result<Vec<Doomed>>;

    /// Turns doomed objects whose deletes returned into tombstones (their
    /// `scrub` becomes empty, `since_ms` becomes `now_ms`): saves keep
    /// avoiding their keys until [`Catalog::forget_tombstones`], so a
    /// delete of the same key still in flight elsewhere cannot meet a new
    /// upload (`docs/gc.md`).
    ///
    /// # Errors
    /// When the backend fails.
    fn retire_doomed(&self, keys: &[ChunkKey], now_ms: i64) -> Result<()>;

    /// Forgets tombstones retired before `before_ms`; returns how many.
    ///
    /// # Errors
    /// When the backend fails.
    fn forget_tombstones(&self, before_ms: i64) -> Result<u64>;

    /// Sets (or clears) scrub's checkpoint `key`, in a transaction that
    /// fails unless `scrub` holds the scrub lease.
    ///
    /// # Errors
    /// [`CatalogError::LeaseLost`]; backend failures.
    fn set_scrub_checkpoint(&self, scrub: &str, key: &str, value: Option<&str>) -> Result<()>;

    // ---- Leases ----

    /// Takes (or renews) the lease `name` for `owner` until `expires_ms`,
    /// if it is free, expired at `now_ms`, or already `owner`'s.
    ///
    /// # Errors
    /// [`CatalogError::LeaseHeld`] when someone else holds it.
    fn acquire_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<()>;

    /// Extends the lease `name` to `expires_ms` only if `owner` holds it
    /// and it has not expired at `now_ms`; false otherwise (it lapsed or
    /// someone else took it). Unlike [`Catalog::acquire_lease`] it never
    /// takes a free lease: a holder that may have lost it must stop.
    ///
    /// # Errors
    /// When the backend fails.
    fn renew_lease(&self, name: &str, owner: &str, now_ms: i64, expires_ms: i64) -> Result<bool>;

    /// Gives the lease `name` up if `owner` holds it.
    ///
    /// # Errors
    /// When the backend fails.
    fn release_lease(&self, name: &str, owner: &str) -> Result<()>;
    // ---- The fleet: hosts, placement, the project lease (`docs/fleet.md`) ----

    /// Registers a host.
    ///
    /// # Errors
    /// [`CatalogError::HostExists`]; backend failures.
    fn add_host(&self, host: &HostRecord) -> Result<()>;

    /// Every host with what it holds, by id.
    ///
    /// # Errors
    /// When the backend fails.
    fn hosts(&self) -> Result<Vec<HostInfo>>;

    /// Sets a host's state. Draining asks every project it holds to move
    /// to a host placement chooses (granting at once those whose lease ran
    /// out) and disables the host when it holds none; the placements it
    /// changed are returned (a held one left without `move_to` found no
    /// host with room: drain again later).
    ///
    /// # Errors
    /// [`CatalogError::UnknownHost`]; backend failures.
    fn set_host_state(
        &self,
        host: &str,
        state: HostState,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Placement>>;

    /// Removes a host that holds no project and is no move's target, with
    /// its local copies' records.
    ///
    /// # Errors
    /// [`CatalogError::UnknownHost`], [`CatalogError::HostBusy`]; backend
    /// failures.
    fn remove_host(&self, host: &str) -> Result<()>;

    /// An agent's heartbeat: records it and its report, renews until
    /// `now_ms + lease_ms` every lease the host holds that has not run out
    /// (a lapsed one is never revived: it may have been granted again), and
    /// returns the placements that name the host (held, or moving to it).
    ///
    /// # Errors
    /// [`CatalogError::UnknownHost`]; backend failures.
    fn heartbeat(
        &self,
        host: &str,
        report: &HostReport,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Placement>>;

    /// The placements that name `host` (held, or moving to it), as a
    /// heartbeat returns them, read only: what an agent polls between
    /// heartbeats.
    ///
    /// # Errors
    /// When the backend fails.
    fn placements_of(&self, host: &str) -> Result<Vec<Placement>>;

    /// Records that `host` has a local copy of `project` at `snapshot`
    /// (`None`: it has none any more). Placement prefers such hosts.
    ///
    /// # Errors
    /// [`CatalogError::UnknownHost`]; backend failures.
    fn set_copy(
        &self,
        host: &str,
        project: ProjectId,
        snapshot: Option<&SnapshotId>,
        now_ms: i64,
    ) -> Result<()>;

    /// The hosts with a local copy of `project`, and the snapshot each has.
    ///
    /// # Errors
    /// When the backend fails.
    fn copies(&self, project: ProjectId) -> Result<Vec<(String, SnapshotId)>>;

    /// A project's placement, if it was ever opened.
    ///
    /// # Errors
    /// When the backend fails.
    fn placement(&self, project: ProjectId) -> Result<Option<Placement>>;

    /// Every placement that is not closed, by project.
    ///
    /// # Errors
    /// When the backend fails.
    fn placements(&self) -> Result<Vec<Placement>>;

    /// Asks for a project to be opened, closed or moved (`docs/fleet.md`:
    /// how a host is chosen, what a lapsed lease allows), granting a lease
    /// of `lease_ms` where it grants one. Repeating a request that went
    /// through changes nothing. `None`: a close of a project never opened.
    ///
    /// # Errors
    /// [`CatalogError::UnknownHost`], [`CatalogError::HostUnavailable`],
    /// [`CatalogError::NoHost`], [`CatalogError::AlreadyOpen`],
    /// [`CatalogError::NotOpen`]; backend failures.
    fn request(
        &self,
        project: ProjectId,
        request: &Request,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Placement>>;

    /// The lease holder lets the project go: to nobody (`to: None`, after
    /// its last save on close) or to host `to` under a new token (a move's
    /// cut-over), in one transaction. A draining host left with nothing is
    /// disabled in the same transaction.
    ///
    /// # Errors
    /// [`CatalogError::Fenced`] unless `from` holds the lease under `token`
    /// and it has not run out at `now_ms` (recorded);
    /// [`CatalogError::HostUnavailable`] when `to` is not enabled; backend
    /// failures.
    fn hand_over(
        &self,
        project: ProjectId,
        from: &Fence,
        to: Option<&str>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Placement>;

    /// The newest refused commits and hand-overs, newest first.
    ///
    /// # Errors
    /// When the backend fails.
    fn rejections(&self, limit: u32) -> Result<Vec<Rejection>>;

    // ---- The monitor ----

    /// Per project, the stored bytes of the chunks only it names and of
    /// those it shares with other projects (a scan of every manifest).
    ///
    /// # Errors
    /// When the backend fails.
    fn usage(&self) -> Result<Vec<ProjectUsage>>;

    /// The repository's chunk totals and garbage awaiting scrub.
    ///
    /// # Errors
    /// When the backend fails.
    fn stats(&self) -> Result<RepoStats>;
}
