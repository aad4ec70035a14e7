//! Chunk stores: where chunk bytes live, keyed by [`ChunkKey`] (a chunk id
//! and a generation, `docs/gc.md`).
//!
//! A store is immutable and content-addressed: `put` of an id that exists
//! writes the same bytes again, so every call is idempotent and safe to
//! retry. The bytes a store keeps are already encoded (compressed, checked)
//! by `strata-chunk`; a store never looks inside them.
//!
//! Backends: [`FileStore`] (the embedded default, a local directory),
//! [`S3Store`] (an S3 bucket: Garage in the distributed deployment) and
//! [`MemoryStore`] (tests). Decorators: [`RetryingStore`] retries transient
//! failures with backoff and full jitter; [`FaultyStore`] injects failures
//! and latency (tests); [`CachedStore`] keeps a host's local, bounded
//! cache of chunks in front of a shared store; [`HookedStore`] runs a test's hook before puts,
//! deletes and listings. Listings come back in id order, one page at a
//! time, so a scan of millions of chunks keeps memory flat.

mod cache;
#[cfg(feature = "conformance")]
pub mod conformance;
mod faulty;
mod file;
mod hooked;
mod memory;
mod retry;
mod s3;

pub use cache::{CacheStats, CachedStore};
pub use faulty::FaultyStore;
pub use file::FileStore;
pub use hooked::{Hook, HookedStore};
pub use memory::MemoryStore;
pub use retry::{RetryPolicy, RetryingStore};
pub use s3::S3Store;
pub use strata_core::Transient;

use std::io;
use std::path::PathBuf;

pub use strata_core::ChunkKey;

/// A result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A failure that may pass: a timeout, a reset, "slow down".
    #[error("chunk store {op}: {why} (transient)")]
    Transient {
        /// The operation.
        op: &'static str,
        /// What the backend said.
        why: String,
    },
    /// The store's configuration is wrong: its URL, TLS material or
    /// credentials file. The message says which (never a secret).
    #[error("{0}")]
    Config(String),
    /// The chunk is not in the store.
    #[error("chunk {0} is missing from the chunk store")]
    NotFound(ChunkKey),
    /// A remote backend failed (an object store, a chunk database): named
    /// by the operation and, when there is one, the chunk, since there is
    /// no local path to name. Built inside each backend, so no backend's
    /// error type leaks into this one.
    #[error(
        "chunk store {op}{}: {source}{}",
        key.map(|k| format!(" of chunk {k}")).unwrap_or_default(),
        if *transient { " (transient)" } else { "" }
    )]
    Backend {
        /// The store call that failed.
        op: &'static str,
        /// The chunk it was about, if one.
        key: Option<ChunkKey>,
        /// True when the failure may pass (a timeout, a reset, 503 "slow
        /// down", a node restarting).
        transient: bool,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The local file system failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// True when the device is out of space (the operation will not succeed
    /// by retrying).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

/// One object a store listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: ChunkKey,
    /// Its stored size in bytes.
    pub size: u64,
    /// When it was last written (ms since the epoch); scrub's grace period
    /// for objects no catalog row names counts from here.
    pub modified_ms: i64,
}

/// Where chunk bytes live.
pub trait ChunkStore: Send + Sync {
    /// Stores `data` under `id`, replacing nothing that differs (ids are
    /// content hashes). When it returns, the chunk is written; it is durable
    /// after the next [`ChunkStore::flush`].
    ///
    /// # Errors
    /// When the backend fails (a full disk, say).
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()>;

    /// [`ChunkStore::put`] of bytes the caller gives away: a store that
    /// sends them elsewhere (S3) need not copy them, and a retry clones a
    /// reference, not the bytes. Wrappers forward it.
    ///
    /// # Errors
    /// As [`ChunkStore::put`].
    fn put_bytes(&self, id: &ChunkKey, data: bytes::Bytes) -> Result<()> {
        self.put(id, &data)
    }

    /// The stored bytes of `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent, or a backend error.
    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>>;

    /// The stored size of `id`, `None` when absent.
    ///
    /// # Errors
    /// When the backend fails.
    fn size(&self, id: &ChunkKey) -> Result<Option<u64>>;

    /// Removes `id`; removing an absent chunk is not an error.
    ///
    /// # Errors
    /// When the backend fails.
    fn delete(&self, id: &ChunkKey) -> Result<()>;

    /// Up to `limit` objects with keys greater than `after` (all when
    /// `None`), in key order.
    ///
    /// # Errors
    /// When the backend fails.
    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>>;

    /// Makes every chunk put so far durable.
    ///
    /// # Errors
    /// When the backend fails.
    fn flush(&self) -> Result<()>;

    /// Where the store is, for messages.
    fn describe(&self) -> String;

    /// How many calls to have in flight at once to keep this store busy:
    /// `None` for a local store (the pipelines' CPU-sized defaults fit), a
    /// larger number for a store across a network, whose latency only
    /// parallel requests hide. Decorators pass it through.
    fn io_parallelism(&self) -> Option<usize> {
        None
    }
}

/// A boxed or shared store is a store (the agent keeps its cache's handle
/// to read its figures while the repository uses it).
macro_rules! deref_store {
    ($($ptr:ident),*) => {$(
        impl<S: ChunkStore + ?Sized> ChunkStore for $ptr<S> {
            fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
                (**self).put(id, data)
            }
            fn put_bytes(&self, id: &ChunkKey, data: bytes::Bytes) -> Result<()> {
                (**self).put_bytes(id, data)
            }
            fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
                (**self).get(id)
            }
            fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
                (**self).size(id)
            }
            fn delete(&self, id: &ChunkKey) -> Result<()> {
                (**self).delete(id)
            }
            fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
                (**self).list_page(after, limit)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn io_parallelism(&self) -> Option<usize> {
                (**self).io_parallelism()
            }
        }
    )*};
}

use std::sync::Arc;
deref_store!(Box, Arc);
