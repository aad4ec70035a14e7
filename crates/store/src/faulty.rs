//! A fault-injecting store, for tests: at a configurable rate, calls fail
//! with a transient error either before the inner call (nothing happened)
//! or after it (it happened, but the caller is told it failed), and every
//! call can be delayed. Deterministic for a given seed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_core::ChunkId;

use crate::{ChunkStore, Result, StoreError};

/// Wraps a store and makes it unreliable.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    rate: f64,
    latency: Duration,
    rng: Mutex<fastrand::Rng>,
    injected: AtomicU64,
}

impl<S: ChunkStore> FaultyStore<S> {
    /// Fails a share `rate` (0.0–1.0) of calls, half before and half after
    /// the inner call, drawing from a generator seeded with `seed`.
    pub fn new(inner: S, rate: f64, seed: u64) -> Self {
        Self {
            inner,
            rate,
            latency: Duration::ZERO,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected: AtomicU64::new(0),
        }
    }

    /// Delays every call by up to `latency` (uniformly).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn call<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let (draw, delay) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (rng.f64(), rng.u64(0..=self.latency.as_nanos() as u64))
        };
        if delay > 0 {
            std::thread::sleep(Duration::from_nanos(delay));
        }
        let fault = |when: &str| {
            self.injected.fetch_add(1, Ordering::Relaxed);
            StoreError::Transient {
                op,
                why: format!("injected fault {when} the call"),
            }
        };
        if draw < self.rate / 2.0 {
            return Err(fault("before"));
        }
        let r = f()?;
        if draw < self.rate {
            return Err(fault("after"));
        }
        Ok(r)
    }
}

impl<S: ChunkStore> ChunkStore for FaultyStore<S> {
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        self.call("put", || self.inner.put(id, data))
    }
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.call("get", || self.inner.get(id))
    }
    fn size(&self, id: &ChunkId) -> Result<Option<u64>> {
        self.call("size", || self.inner.size(id))
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.call("delete", || self.inner.delete(id))
    }
    fn list_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        self.call("list", || self.inner.list_page(after, limit))
    }
    fn flush(&self) -> Result<()> {
        self.call("flush", || self.inner.flush())
    }
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}
