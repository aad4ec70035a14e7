//! The chunk-store conformance suite, run against every backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use strata_core::{ChunkId, ChunkKey};

use strata_store::Transient;
use strata_store::{
    ChunkStore, FaultyStore, FileStore, MemoryStore, RetryPolicy, RetryingStore, StoreError,
};

fn conformance(store: &dyn ChunkStore) {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let a = b"alpha".to_vec();
    let ia = ChunkKey::from(ChunkId::of(&a));
    assert!(matches!(store.get(&ia), Err(StoreError::NotFound(id)) if id == ia));
    assert_eq!(store.size(&ia).unwrap(), None);
    store.put(&ia, &a).unwrap();
    store.put(&ia, &a).unwrap(); // idempotent
    assert_eq!(store.get(&ia).unwrap(), a);
    assert_eq!(store.size(&ia).unwrap(), Some(5));
    // Another generation of the same chunk is another object.
    let ia2 = ChunkKey::new(ia.id, 2);
    assert_eq!(store.size(&ia2).unwrap(), None);
    store.put(&ia2, b"alpha, again").unwrap();
    assert_eq!(store.get(&ia).unwrap(), a);
    assert_eq!(store.get(&ia2).unwrap(), b"alpha, again");

    let mut keys = vec![ia, ia2];
    for i in 0..300u32 {
        let d = i.to_le_bytes().repeat(3);
        let key = ChunkKey::new(ChunkId::of(&d), i % 3);
        store.put(&key, &d).unwrap();
        keys.push(key);
    }
    store.flush().unwrap();
    keys.sort();
    // Paging returns every key once, in order, with its size and time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_page(after.as_ref(), 17).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 17);
        after = page.last().map(|o| o.key);
        for o in &page {
            assert_eq!(Some(o.size), store.size(&o.key).unwrap());
            assert!(
                o.modified_ms >= started - 2_000,
                "{o:?} is older than the test"
            );
        }
        seen.extend(page.into_iter().map(|o| o.key));
    }
    assert_eq!(seen, keys);

    // A new listing that starts after a key sees objects written since an
    // earlier listing read that key's neighbourhood.
    let k = seen[seen.len() / 2];
    assert!(store.list_page(Some(&k), 1).unwrap().len() == 1);
    let late = (0u32..)
        .map(|i| format!("late {i}").into_bytes())
        .find(|d| {
            let id = ChunkId::of(d);
            id.0[0] == k.id.0[0] && ChunkKey::from(id) > k
        })
        .unwrap();
    let late_key = ChunkKey::from(ChunkId::of(&late));
    store.put(&late_key, &late).unwrap();
    let fresh: Vec<ChunkKey> = store
        .list_page(Some(&k), 10_000)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(fresh.contains(&late_key), "a listing missed {late_key}");
    store.delete(&late_key).unwrap();

    store.delete(&ia).unwrap();
    store.delete(&ia).unwrap(); // deleting an absent chunk is fine
    assert!(matches!(store.get(&ia), Err(StoreError::NotFound(_))));
    assert_eq!(store.get(&ia2).unwrap(), b"alpha, again");
    assert_eq!(store.list_page(None, 1000).unwrap().len(), 301);
}

#[test]
fn memory_store() {
    conformance(&MemoryStore::new());
}

#[test]
fn file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("chunks")).unwrap();
    conformance(&store);
    // No temporary files are left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("chunks/tmp"))
            .unwrap()
            .count(),
        0
    );
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_micros(100),
        cap: Duration::from_millis(2),
        max_attempts: 12,
        max_elapsed: Duration::from_secs(10),
    }
}

#[test]
fn retried_store_behaves_under_30_percent_faults() {
    let faulty = FaultyStore::new(MemoryStore::new(), 0.3, 7);
    let store = RetryingStore::new(faulty, fast());
    conformance(&store);
}

#[test]
fn faults_without_retries_surface_as_transient() {
    let store = FaultyStore::new(MemoryStore::new(), 1.0, 1);
    let err = store
        .put(&ChunkKey::from(ChunkId::of(b"x")), b"x")
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(store.injected(), 1);
}

#[test]
fn retries_give_up_after_max_attempts() {
    let store = RetryingStore::new(FaultyStore::new(MemoryStore::new(), 1.0, 1), fast());
    let err = store
        .put(&ChunkKey::from(ChunkId::of(b"x")), b"x")
        .unwrap_err();
    assert!(err.is_transient());
}

/// Counts calls; `get` always reports a missing chunk.
struct Counting(std::sync::Arc<AtomicU32>);

impl ChunkStore for Counting {
    fn put(&self, _: &ChunkKey, _: &[u8]) -> strata_store::Result<()> {
        Ok(())
    }
    fn get(&self, id: &ChunkKey) -> strata_store::Result<Vec<u8>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(StoreError::NotFound(*id))
    }
    fn size(&self, _: &ChunkKey) -> strata_store::Result<Option<u64>> {
        Ok(None)
    }
    fn delete(&self, _: &ChunkKey) -> strata_store::Result<()> {
        Ok(())
    }
    fn list_page(
        &self,
        _: Option<&ChunkKey>,
        _: usize,
    ) -> strata_store::Result<Vec<strata_store::StoredObject>> {
        Ok(Vec::new())
    }
    fn flush(&self) -> strata_store::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

#[test]
fn permanent_errors_are_not_retried() {
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let store = RetryingStore::new(Counting(calls.clone()), fast());
    assert!(matches!(
        store.get(&ChunkKey::from(ChunkId::of(b"x"))),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "NotFound is permanent: one call"
    );
}
