//! The chunk-store conformance suite, exported (feature `conformance`) so
//! that every backend's own tests run it: named cases, each on a fresh,
//! empty store (object_store's `integration.rs` is the model). [`run_all`]
//! runs them all. Cases panic on a failed assertion, as tests do.
#![allow(clippy::missing_panics_doc)]

use strata_core::{ChunkId, ChunkKey};

use crate::{ChunkStore, StoreError};

/// Runs every case, each on a store `make` returns fresh and empty.
pub fn run_all<S: ChunkStore>(make: &dyn Fn() -> S) {
    put_get_and_size(&make());
    generations_are_separate_objects(&make());
    listing_pages_every_key_once_in_order(&make());
    a_new_listing_sees_later_writes(&make());
    deletes_are_idempotent(&make());
}

fn key_of(data: &[u8]) -> ChunkKey {
    ChunkKey::from(ChunkId::of(data))
}

/// `put` (and `put_bytes`) is idempotent; `get` and `size` read it back; an absent chunk is
/// [`StoreError::NotFound`] naming its key.
pub fn put_get_and_size(store: &dyn ChunkStore) {
    let a = b"alpha".to_vec();
    let ia = key_of(&a);
    assert!(matches!(store.get(&ia), Err(StoreError::NotFound(id)) if id == ia));
    assert_eq!(store.size(&ia).unwrap(), None);
    store.put(&ia, &a).unwrap();
    store.put(&ia, &a).unwrap(); // idempotent
    store.flush().unwrap();
    assert_eq!(store.get(&ia).unwrap(), a);
    assert_eq!(store.size(&ia).unwrap(), Some(5));
    // Given away instead of lent: the same object.
    let b = vec![7u8; 300_000];
    let ib = key_of(&b);
    store.put_bytes(&ib, b.clone().into()).unwrap();
    store.put_bytes(&ib, b.clone().into()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.get(&ib).unwrap(), b);
    assert_eq!(store.size(&ib).unwrap(), Some(300_000));
}

/// Another generation of the same chunk is another object.
pub fn generations_are_separate_objects(store: &dyn ChunkStore) {
    let ia = key_of(b"alpha");
    store.put(&ia, b"alpha").unwrap();
    let ia2 = ChunkKey::new(ia.id, 2);
    assert_eq!(store.size(&ia2).unwrap(), None);
    store.put(&ia2, b"alpha, again").unwrap();
    assert_eq!(store.get(&ia).unwrap(), b"alpha");
    assert_eq!(store.get(&ia2).unwrap(), b"alpha, again");
    store.delete(&ia).unwrap();
    assert_eq!(store.get(&ia2).unwrap(), b"alpha, again");
}

/// Puts 300 objects in three generations.
fn fill(store: &dyn ChunkStore) -> Vec<ChunkKey> {
    let mut keys = Vec::new();
    for i in 0..300u32 {
        let d = i.to_le_bytes().repeat(3);
        let key = ChunkKey::new(ChunkId::of(&d), i % 3);
        store.put(&key, &d).unwrap();
        keys.push(key);
    }
    store.flush().unwrap();
    keys.sort();
    keys
}

/// Paging returns every key once, in key order (id, then generation), with
/// its size and a modification time no older than the test.
pub fn listing_pages_every_key_once_in_order(store: &dyn ChunkStore) {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let keys = fill(store);
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
}

/// A new listing that starts after a key sees objects written since an
/// earlier listing read that key's neighbourhood (a cache of listings must
/// not hide them).
pub fn a_new_listing_sees_later_writes(store: &dyn ChunkStore) {
    let keys = fill(store);
    let k = keys[keys.len() / 2];
    assert!(store.list_page(Some(&k), 1).unwrap().len() == 1);
    let late = (0u32..)
        .map(|i| format!("late {i}").into_bytes())
        .find(|d| {
            let id = ChunkId::of(d);
            id.0[0] == k.id.0[0] && ChunkKey::from(id) > k
        })
        .unwrap();
    let late_key = key_of(&late);
    store.put(&late_key, &late).unwrap();
    let fresh: Vec<ChunkKey> = store
        .list_page(Some(&k), 10_000)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(fresh.contains(&late_key), "a listing missed {late_key}");
}

/// Deleting removes the object; deleting an absent one is not an error.
pub fn deletes_are_idempotent(store: &dyn ChunkStore) {
    let keys = fill(store);
    store.delete(&keys[0]).unwrap();
    store.delete(&keys[0]).unwrap();
    assert!(matches!(store.get(&keys[0]), Err(StoreError::NotFound(_))));
    assert_eq!(store.get(&keys[1]).unwrap().len(), 12);
    assert_eq!(store.list_page(None, 1000).unwrap().len(), 299);
}
