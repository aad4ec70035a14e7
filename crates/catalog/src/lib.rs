//! The catalog: everything but chunk bytes. Projects, streams, manifests
//! and the set of chunks that committed streams reference.
//!
//! A stream becomes visible in one transaction together with its manifest
//! and the chunks it was first to store ([`Catalog::commit_stream`]), after
//! those chunks are durable in the chunk store; a stream is never half
//! there. Backends: [`SqliteCatalog`] (the embedded default).

mod decorators;
mod sqlite;

pub use decorators::{FaultyCatalog, RetryingCatalog};
pub use sqlite::SqliteCatalog;

use strata_core::{ChunkId, ManifestEntry, ProjectId, SnapshotId, StreamId, StreamInfo};

/// A result with [`CatalogError`].
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What went wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed.
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
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
    /// A project name is taken.
    #[error("a project named {0:?} already exists")]
    NameTaken(String),
    /// Something stored does not parse.
    #[error("catalog holds an invalid value: {0}")]
    Invalid(String),
    /// A failure that may pass (a dropped connection, a restart).
    #[error("catalog {op}: {why} (transient)")]
    Transient {
        /// The operation.
        op: &'static str,
        /// What happened.
        why: String,
    },
}

impl strata_core::Transient for CatalogError {
    /// Busy or locked databases and explicit transient failures may pass;
    /// everything else is permanent.
    fn is_transient(&self) -> bool {
        match self {
            CatalogError::Transient { .. } => true,
            CatalogError::Db(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
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
}

/// A chunk a stream was first to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChunk {
    /// The chunk.
    pub id: ChunkId,
    /// Plaintext length.
    pub len: u32,
    /// Stored (encoded) length.
    pub stored_len: u32,
}

/// Where metadata lives.
pub trait Catalog: Send + Sync {
    /// The repository's id, made when the catalog was created.
    ///
    /// # Errors
    /// When the backend fails.
    fn repo_id(&self) -> Result<String>;

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

    /// True when a committed stream already stored `id`.
    ///
    /// # Errors
    /// When the backend fails.
    fn has_chunk(&self, id: &ChunkId) -> Result<bool>;

    /// Commits a stream, its manifest and the chunks it was first to store,
    /// in one transaction. Chunks another save committed meanwhile are kept
    /// as they are. Idempotent: committing a stream that is already there
    /// with the same record succeeds (a retried commit whose first attempt
    /// did commit); the same id with another record is an error.
    ///
    /// # Errors
    /// When the backend fails; nothing is committed then.
    fn commit_stream(
        &self,
        stream: &StreamInfo,
        manifest: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<()>;

    /// Every stream of a project, by end snapshot.
    ///
    /// # Errors
    /// When the backend fails.
    fn streams(&self, project: ProjectId) -> Result<Vec<StreamInfo>>;

    /// Deletes streams of `project` and their manifests in one transaction;
    /// streams already gone are skipped (so a retry is harmless). Chunk
    /// records stay (scrub decides).
    ///
    /// # Errors
    /// When the backend fails; nothing is deleted then.
    fn delete_streams(&self, project: ProjectId, streams: &[StreamId]) -> Result<()>;

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

    /// Up to `limit` manifest entries of `stream` from position `from`.
    ///
    /// # Errors
    /// When the backend fails.
    fn manifest_page(&self, stream: StreamId, from: u64, limit: u32) -> Result<Vec<ManifestEntry>>;
}
