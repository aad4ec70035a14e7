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

use std::time::{Duration, Instant};

use strata_core::ChunkId;

use crate::{ChunkStore, Result, StoreError};

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling of any delay.
    pub cap: Duration,
    /// Most attempts in all (the first included).
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 50 ms doubling to 5 s, at most 10 attempts within 2 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
            max_attempts: 10,
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails permanently, or the policy gives up
    /// (then the last error is returned).
    ///
    /// # Errors
    /// The first permanent error, or the last transient one.
    pub fn run<T>(&self, what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let mut attempt = 1u32;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_transient()
                        && attempt < self.max_attempts
                        && start.elapsed() < self.max_elapsed =>
                {
                    let ceiling = self
                        .base
                        .saturating_mul(1 << (attempt - 1).min(20))
                        .min(self.cap);
                    let delay = Duration::from_nanos(fastrand::u64(0..=ceiling.as_nanos() as u64));
                    tracing::debug!(what, attempt, ?delay, error = %e, "transient store failure; retrying");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

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
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        self.policy.run("put", || self.inner.put(id, data))
    }
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.policy.run("get", || self.inner.get(id))
    }
    fn size(&self, id: &ChunkId) -> Result<Option<u64>> {
        self.policy.run("size", || self.inner.size(id))
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.policy.run("delete", || self.inner.delete(id))
    }
    fn list_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        self.policy
            .run("list", || self.inner.list_page(after, limit))
    }
    fn flush(&self) -> Result<()> {
        self.policy.run("flush", || self.inner.flush())
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl<S: ChunkStore + ?Sized> ChunkStore for Box<S> {
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        (**self).put(id, data)
    }
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        (**self).get(id)
    }
    fn size(&self, id: &ChunkId) -> Result<Option<u64>> {
        (**self).size(id)
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        (**self).delete(id)
    }
    fn list_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        (**self).list_page(after, limit)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn describe(&self) -> String {
        (**self).describe()
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

impl StoreError {
    /// True when trying again may succeed: timeouts, interrupted calls,
    /// reset connections, a backend saying "slow down". A missing chunk, a
    /// full disk or a permission error is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Transient { .. } => true,
            StoreError::Io { source, .. } => transient_io(source),
            StoreError::NotFound(_) => false,
        }
    }
}
