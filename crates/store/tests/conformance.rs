//! The chunk-store conformance suite (`strata_store::conformance`) on the
//! local backends, and the retry decorator's behaviour.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use strata_core::{ChunkId, ChunkKey};

use strata_store::Transient;
use strata_store::{
    ChunkStore, FaultyStore, FileStore, MemoryStore, RetryPolicy, RetryingStore, StoreError,
    conformance,
};

#[test]
fn memory_store() {
    conformance::run_all(&MemoryStore::new);
}

#[test]
fn file_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicU32::new(0);
    conformance::run_all(&|| {
        let at = dir
            .path()
            .join(format!("chunks-{}", n.fetch_add(1, Ordering::SeqCst)));
        FileStore::open(at).unwrap()
    });
    // No temporary files are left behind.
    for i in 0..n.load(Ordering::SeqCst) {
        let tmp = dir.path().join(format!("chunks-{i}/tmp"));
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }
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
    conformance::run_all(&|| {
        RetryingStore::new(FaultyStore::new(MemoryStore::new(), 0.3, 7), fast())
    });
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
