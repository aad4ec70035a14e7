//! A fault-injecting store, for tests: at a configurable rate, calls fail
//! with a transient error either before the inner call (nothing happened)
//! or after it (it happened, but the caller is told it failed), and every
//! call can be delayed. Deterministic for a given seed.

use std::time::Duration;

use strata_core::ChunkKey;
use strata_core::faults::FaultDice;

use crate::{ChunkStore, Result, StoreError, StoredObject};

/// Wraps a store and makes it unreliable.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    dice: FaultDice,
    latency: Duration,
}

impl<S: ChunkStore> FaultyStore<S> {
    /// Fails a share `rate` (0.0–1.0) of calls, half before and half after
    /// the inner call, drawing from a generator seeded with `seed`.
    pub fn new(inner: S, rate: f64, seed: u64) -> Self {
        Self {
            inner,
            dice: FaultDice::new(rate, seed),
            latency: Duration::ZERO,
        }
    }

    /// Delays every call by up to `latency` (uniformly).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.dice.injected()
    }

    fn call<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let delay = self.dice.uniform(self.latency.as_nanos() as u64);
        if delay > 0 {
            std::thread::sleep(Duration::from_nanos(delay));
        }
        self.dice.run(f, |when| StoreError::Transient {
            op,
            why: format!("injected fault {when} the call"),
        })
    }
}

impl<S: ChunkStore> ChunkStore for FaultyStore<S> {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        self.call("put", || self.inner.put(id, data))
    }
    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        self.call("get", || self.inner.get(id))
    }
    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        self.call("size", || self.inner.size(id))
    }
    fn delete(&self, id: &ChunkKey) -> Result<()> {
        self.call("delete", || self.inner.delete(id))
    }
    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        self.call("list", || self.inner.list_page(after, limit))
    }
    fn flush(&self) -> Result<()> {
        self.call("flush", || self.inner.flush())
    }
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    fn io_parallelism(&self) -> Option<usize> {
        self.inner.io_parallelism()
    }
}
