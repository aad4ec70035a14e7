//! [`CachedStore`]: a host's local cache of chunks in front of a shared
//! store, bounded by bytes with least-recently-used eviction
//! (`docs/fleet.md`). Reads that hit it fetch nothing; reads that miss
//! fetch from the store and keep a copy; puts write through.
//!
//! Each cached chunk is one file (`<key>`), its stored bytes followed by a
//! 32-byte BLAKE3 hash of them, checked on every read: the cache is not
//! made durable (it is disposable), so a file torn by a power cut or
//! damaged on disk is dropped and fetched again, never served. The
//! recency order lives in memory (one entry per cached chunk, bounded by
//! the budget over the smallest chunk), seeded at start from the files'
//! modification times, which a hit refreshes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use strata_core::ChunkKey;

use crate::{ChunkStore, Result, StoreError, StoredObject};

const HASH: usize = 32;

/// What the cache holds, by recency.
#[derive(Debug, Default)]
struct Lru {
    /// Each chunk's file size and recency stamp.
    by_key: HashMap<ChunkKey, (u64, u64)>,
    /// Chunks by recency stamp, oldest first.
    by_stamp: BTreeMap<u64, ChunkKey>,
    used: u64,
    next: u64,
}

impl Lru {
    fn touch(&mut self, key: ChunkKey, size: u64) {
        if let Some((old_size, stamp)) = self.by_key.remove(&key) {
            self.by_stamp.remove(&stamp);
            self.used -= old_size;
        }
        self.next += 1;
        self.by_key.insert(key, (size, self.next));
        self.by_stamp.insert(self.next, key);
        self.used += size;
    }

    fn forget(&mut self, key: &ChunkKey) {
        if let Some((size, stamp)) = self.by_key.remove(key) {
            self.by_stamp.remove(&stamp);
            self.used -= size;
        }
    }

    /// The least recently used chunk while more than `budget` is used.
    fn over(&mut self, budget: u64) -> Option<ChunkKey> {
        if self.used <= budget {
            return None;
        }
        let (_, key) = self.by_stamp.pop_first()?;
        if let Some((size, _)) = self.by_key.remove(&key) {
            self.used -= size;
        }
        Some(key)
    }
}

/// What the cache did, for the monitor and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads fetched from the store.
    pub misses: u64,
    /// Bytes cached now.
    pub bytes: u64,
    /// Chunks cached now.
    pub chunks: u64,
    /// The budget.
    pub budget: u64,
}

/// A store with a local cache of chunks in front of it.
pub struct CachedStore {
    inner: Box<dyn ChunkStore>,
    dir: PathBuf,
    budget: u64,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("dir", &self.dir)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// A cache of at most `budget` bytes in `dir` (made `0700` if absent)
    /// in front of `inner`; what `dir` holds from an earlier run is kept,
    /// most recently used last, within the budget.
    ///
    /// # Errors
    /// When `dir` cannot be made or read.
    pub fn new(inner: Box<dyn ChunkStore>, dir: &Path, budget: u64) -> Result<Self> {
        let io_err = |what: &'static str| {
            move |e: io::Error| StoreError::Io {
                op: what,
                path: dir.to_path_buf(),
                source: e,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the chunk cache"))?;
        let mut found = Vec::new();
        for e in fs::read_dir(dir).map_err(io_err("read the chunk cache"))? {
            let e = e.map_err(io_err("read the chunk cache"))?;
            let name = e.file_name();
            let Some(key) = name.to_str().and_then(|n| n.parse::<ChunkKey>().ok()) else {
                // A temporary file of a write that did not finish.
                let _ = fs::remove_file(e.path());
                continue;
            };
            if let Ok(md) = e.metadata() {
                found.push((
                    md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    key,
                    md.len(),
                ));
            }
        }
        found.sort();
        let mut lru = Lru::default();
        for (_, key, size) in found {
            lru.touch(key, size);
        }
        let cache = Self {
            inner,
            dir: dir.to_path_buf(),
            budget,
            lru: Mutex::new(lru),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        cache.evict();
        Ok(cache)
    }

    /// Hits, misses and what is cached.
    pub fn stats(&self) -> CacheStats {
        let lru = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: lru.used,
            chunks: lru.by_key.len() as u64,
            budget: self.budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &ChunkKey) -> PathBuf {
        self.dir.join(key.to_string())
    }

    /// The cached bytes of `key`, if cached and intact.
    fn read(&self, key: &ChunkKey) -> Option<Vec<u8>> {
        if !self.lock().by_key.contains_key(key) {
            return None;
        }
        let p = self.path(key);
        let intact = fs::read(&p).ok().and_then(|mut b| {
            let at = b.len().checked_sub(HASH)?;
            let ok = blake3::hash(&b[..at]).as_bytes() == &b[at..];
            ok.then(|| {
                b.truncate(at);
                b
            })
        });
        match intact {
            Some(b) => {
                let _ = fs::File::options()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                self.lock().touch(*key, (b.len() + HASH) as u64);
                Some(b)
            }
            None => {
                tracing::warn!(
                    "chunk cache: {} is damaged or gone; fetching it again",
                    p.display()
                );
                self.lock().forget(key);
                let _ = fs::remove_file(&p);
                None
            }
        }
    }

    /// Keeps a copy of `data` under `key` (best effort: a cache that
    /// cannot write only misses).
    fn keep(&self, key: &ChunkKey, data: &[u8]) {
        let size = (data.len() + HASH) as u64;
        if size > self.budget {
            return;
        }
        let p = self.path(key);
        let tmp = self.dir.join(format!(".tmp-{key}-{}", std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut b = Vec::with_capacity(data.len() + HASH);
            b.extend_from_slice(data);
            b.extend_from_slice(blake3::hash(data).as_bytes());
            fs::write(&tmp, &b)?;
            fs::rename(&tmp, &p)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::warn!("chunk cache: keeping {key} in {}: {e}", self.dir.display());
            return;
        }
        self.lock().touch(*key, size);
        self.evict();
    }

    fn evict(&self) {
        loop {
            let Some(key) = self.lock().over(self.budget) else {
                return;
            };
            let _ = fs::remove_file(self.path(&key));
        }
    }
}

impl ChunkStore for CachedStore {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        self.inner.put(id, data)?;
        self.keep(id, data);
        Ok(())
    }

    fn put_bytes(&self, id: &ChunkKey, data: bytes::Bytes) -> Result<()> {
        self.keep(id, &data);
        self.inner.put_bytes(id, data)
    }

    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        if let Some(b) = self.read(id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let b = self.inner.get(id)?;
        self.keep(id, &b);
        Ok(b)
    }

    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        self.inner.size(id)
    }

    fn delete(&self, id: &ChunkKey) -> Result<()> {
        self.lock().forget(id);
        let _ = fs::remove_file(self.path(id));
        self.inner.delete(id)
    }

    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        self.inner.list_page(after, limit)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn describe(&self) -> String {
        format!(
            "{} (cached in {})",
            self.inner.describe(),
            self.dir.display()
        )
    }

    fn io_parallelism(&self) -> Option<usize> {
        self.inner.io_parallelism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use strata_core::ChunkId;

    fn key(i: u8) -> ChunkKey {
        ChunkKey::from(ChunkId::of(&[i]))
    }

    #[test]
    fn hits_fetch_nothing_misses_fill_it_and_the_least_recent_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        for i in 0..4 {
            store.put(&key(i), &[i; 1000]).unwrap();
        }
        // Room for three chunks (1000 bytes and a hash each).
        let c = CachedStore::new(Box::new(store), dir.path(), 3 * 1032).unwrap();
        for i in 0..3 {
            assert_eq!(c.get(&key(i)).unwrap(), vec![i; 1000]);
        }
        assert_eq!(
            (c.stats().hits, c.stats().misses, c.stats().chunks),
            (0, 3, 3)
        );
        c.get(&key(0)).unwrap(); // 0 is the most recent now
        assert_eq!(c.stats().hits, 1);
        c.get(&key(3)).unwrap(); // evicts 1, the least recent
        assert_eq!(c.stats().chunks, 3);
        assert!(!dir.path().join(key(1).to_string()).exists());
        assert!(dir.path().join(key(0).to_string()).exists());
        let before = c.stats();
        for i in [0, 2, 3] {
            c.get(&key(i)).unwrap();
        }
        assert_eq!(
            c.stats().misses,
            before.misses,
            "cached chunks fetch nothing"
        );
        assert!(c.stats().bytes <= 3 * 1032);
    }

    #[test]
    fn a_damaged_cached_chunk_is_fetched_again_and_a_restart_keeps_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        store.put(&key(1), b"the real bytes").unwrap();
        let c = CachedStore::new(Box::new(store), dir.path(), 1 << 20).unwrap();
        c.get(&key(1)).unwrap();
        let file = dir.path().join(key(1).to_string());
        let mut b = fs::read(&file).unwrap();
        b[0] ^= 1;
        fs::write(&file, &b).unwrap();
        assert_eq!(c.get(&key(1)).unwrap(), b"the real bytes");
        assert_eq!(c.stats().misses, 2, "the damaged copy was not served");
        // A new cache over the same directory finds what is there; puts
        // write through.
        let store = MemoryStore::new();
        store.put(&key(1), b"the real bytes").unwrap();
        let c = CachedStore::new(Box::new(store), dir.path(), 1 << 20).unwrap();
        assert_eq!(c.stats().chunks, 1);
        assert_eq!(c.get(&key(1)).unwrap(), b"the real bytes");
        assert_eq!(c.stats().hits, 1);
        c.put(&key(2), b"new").unwrap();
        assert_eq!(c.get(&key(2)).unwrap(), b"new");
        assert_eq!(c.stats().misses, 0);
    }
}
