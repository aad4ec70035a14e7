//! The chunk-store conformance suite, run against every backend.

use strata_core::ChunkId;
use strata_store::{ChunkStore, FileStore, MemoryStore, StoreError};

fn conformance(store: &dyn ChunkStore) {
    let a = b"alpha".to_vec();
    let ia = ChunkId::of(&a);
    assert!(matches!(store.get(&ia), Err(StoreError::NotFound(id)) if id == ia));
    assert_eq!(store.size(&ia).unwrap(), None);
    store.put(&ia, &a).unwrap();
    store.put(&ia, &a).unwrap(); // idempotent
    assert_eq!(store.get(&ia).unwrap(), a);
    assert_eq!(store.size(&ia).unwrap(), Some(5));

    let mut ids = vec![ia];
    for i in 0..300u32 {
        let d = i.to_le_bytes().repeat(3);
        let id = ChunkId::of(&d);
        store.put(&id, &d).unwrap();
        ids.push(id);
    }
    store.flush().unwrap();
    ids.sort();
    // Paging returns every id once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_page(after.as_ref(), 17).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 17);
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, ids);

    store.delete(&ia).unwrap();
    store.delete(&ia).unwrap(); // deleting an absent chunk is fine
    assert!(matches!(store.get(&ia), Err(StoreError::NotFound(_))));
    assert_eq!(store.list_page(None, 1000).unwrap().len(), 300);
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
