//! Streams and manifests as the catalog records them.

use serde::{Deserialize, Serialize};

use crate::{ChunkId, ChunkKey, ProjectId, SnapshotId, StreamId};

/// Whether a stream stands alone or applies on top of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Rebuilds its end snapshot from the empty state.
    Full,
    /// Takes its start snapshot to its end snapshot.
    Incremental,
}

impl StreamKind {
    /// `"full"` or `"incremental"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Full => "full",
            StreamKind::Incremental => "incremental",
        }
    }
}

/// A committed stream: an edge from `start` (none for a full stream) to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's id.
    pub id: StreamId,
    /// The project it belongs to.
    pub project: ProjectId,
    /// The snapshot it applies on top of; `None` for a full stream.
    pub start: Option<SnapshotId>,
    /// The snapshot it produces.
    pub end: SnapshotId,
    /// The snapshot the saved directory held before this stream: its
    /// lineage parent. Equal to `start` for an incremental; for a full
    /// stream written by a rebase, the snapshot it replaces the chain of;
    /// `None` for a first save. Forks are told apart by it.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// The engine that produced it (`native`, `zfs`, `btrfs`).
    pub engine: String,
    /// Length of the stream in bytes (plaintext, before chunking).
    pub bytes: u64,
    /// Number of chunks in its manifest (with repetitions).
    pub chunks: u64,
    /// Plaintext bytes of the chunks this stream was first to store.
    pub new_bytes: u64,
    /// Stored (compressed) bytes of the chunks this stream was first to store.
    pub new_stored_bytes: u64,
    /// When it was committed, in milliseconds since the epoch.
    pub created_ms: i64,
    /// The host that wrote it.
    pub host: String,
}

impl StreamInfo {
    /// Full or incremental, from `start`.
    pub fn kind(&self) -> StreamKind {
        if self.start.is_some() {
            StreamKind::Incremental
        } else {
            StreamKind::Full
        }
    }
}

/// One entry of a manifest: the chunk and its plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Its plaintext length in bytes.
    pub len: u32,
    /// The generation its bytes are stored under. Read back from the
    /// catalog, this is the committed chunk's; a save's own value is only
    /// what it uploaded or reused (the catalog keeps the committed one).
    pub generation: u32,
}

impl ManifestEntry {
    /// Where the entry's bytes live.
    pub fn key(&self) -> ChunkKey {
        ChunkKey::new(self.id, self.generation)
    }
}

/// What a save learns about a chunk when it records its intent to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkLookup {
    /// A committed stream stored it under this generation; reuse it.
    Stored {
        /// The committed generation.
        generation: u32,
    },
    /// Not stored: upload it under this generation, one no delete in
    /// flight can touch.
    Upload {
        /// The generation to upload under.
        generation: u32,
    },
}
