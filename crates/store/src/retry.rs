//! Retries of transient store failures: exponential backoff with full
//! jitter, bounded in attempts and in total time.
//!
//! Every [`ChunkStore`] operation is idempotent (chunks are content
//! addressed: a repeated `put` writes the same bytes, a repeated `delete`
//! finds nothing), so every operation may be retried; only errors that say
//! "try again" ([`StoreError::is_transient`]) are. The delay before attempt
//! `n + 1` is uniform in `[0, min(cap, base × 2ⁿ⁻¹)]` ("full jitter", which
//! spreads a fleet of clients best after a shared failure). This is a loop
//! of our own rather than backon's: backon's jitter adds `U(0, delay)` to
//! the delay instead, and its defaults bring in an async runtime.

use strata_core::ChunkKey;
pub use strata_core::RetryPolicy;
use strata_core::retry::Transient;

use crate::{ChunkStore, Result, StoreError, StoredObject};

/// A store whose calls are retried under a [`RetryPolicy`].
#[derive(Debug)]
pub struct RetryingStore<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: ChunkStore> RetryingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

impl<S: ChunkStore> ChunkStore for RetryingStore<S> {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        self.policy.run("put", || self.inner.put(id, data))
    }
    fn put_bytes(&self, id: &ChunkKey, data: bytes::Bytes) -> Result<()> {
        self.policy
            .run("put", || self.inner.put_bytes(id, data.clone()))
    }
    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        self.policy.run("get", || self.inner.get(id))
    }
    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        self.policy.run("size", || self.inner.size(id))
    }
    fn delete(&self, id: &ChunkKey) -> Result<()> {
        self.policy.run("delete", || self.inner.delete(id))
    }
    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        self.policy
            .run("list", || self.inner.list_page(after, limit))
    }
    fn flush(&self) -> Result<()> {
        self.policy.run("flush", || self.inner.flush())
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn io_parallelism(&self) -> Option<usize> {
        self.inner.io_parallelism()
    }
}

/// Whether an I/O error is worth retrying.
pub(crate) fn transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        Interrupted | WouldBlock | TimedOut | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

impl Transient for StoreError {
    /// True when trying again may succeed: timeouts, interrupted calls,
    /// reset connections, a backend saying "slow down". A missing chunk, a
    /// full disk or a permission error is permanent.
    fn is_transient(&self) -> bool {
        match self {
            StoreError::Transient { .. } => true,
            StoreError::Backend { transient, .. } => *transient,
            StoreError::Io { source, .. } => transient_io(source),
            StoreError::NotFound(_) | StoreError::Config(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_core::{ChunkId, ChunkKey, Transient};

    use crate::StoreError;

    #[test]
    fn backend_errors_say_whether_to_retry_and_name_the_chunk() {
        let key = ChunkKey::from(ChunkId::of(b"x"));
        let e = |transient| StoreError::Backend {
            op: "get",
            key: Some(key),
            transient,
            source: "503 Slow Down".into(),
        };
        assert!(e(true).is_transient());
        assert!(!e(false).is_transient());
        let text = e(true).to_string();
        assert!(
            text.contains(&key.to_string()) && text.contains("(transient)"),
            "{text}"
        );
        assert!(!e(false).to_string().contains("transient"));
    }
}
