//! An in-memory store, for tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use strata_core::ChunkKey;

use crate::{ChunkStore, Result, StoreError, StoredObject};

/// Chunks in a map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    chunks: Mutex<BTreeMap<ChunkKey, (Vec<u8>, i64)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ChunkKey, (Vec<u8>, i64)>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChunkStore for MemoryStore {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        self.map().insert(*id, (data.to_vec(), now_ms()));
        Ok(())
    }

    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        self.map()
            .get(id)
            .map(|(d, _)| d.clone())
            .ok_or(StoreError::NotFound(*id))
    }

    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        Ok(self.map().get(id).map(|(d, _)| d.len() as u64))
    }

    fn delete(&self, id: &ChunkKey) -> Result<()> {
        self.map().remove(id);
        Ok(())
    }

    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        let map = self.map();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(map
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, (d, t))| StoredObject {
                key: *k,
                size: d.len() as u64,
                modified_ms: *t,
            })
            .collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
