//! An in-memory store, for tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use strata_core::ChunkId;

use crate::{ChunkStore, Result, StoreError};

/// Chunks in a map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    chunks: Mutex<BTreeMap<ChunkId, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ChunkId, Vec<u8>>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChunkStore for MemoryStore {
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        self.map().insert(*id, data.to_vec());
        Ok(())
    }

    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.map().get(id).cloned().ok_or(StoreError::NotFound(*id))
    }

    fn size(&self, id: &ChunkId) -> Result<Option<u64>> {
        Ok(self.map().get(id).map(|d| d.len() as u64))
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.map().remove(id);
        Ok(())
    }

    fn list_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        let map = self.map();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(map
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| *k)
            .collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
