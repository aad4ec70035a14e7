//! Save and restore through the pipeline, against the memory store.

use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use strata_chunk::{ChunkerConfig, restore_stream, save_stream};

use strata_core::{ChunkId, ChunkLookup};
use strata_store::{ChunkStore, HookedStore, MemoryStore};

fn small() -> ChunkerConfig {
    ChunkerConfig {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
        zstd_level: 3,
    }
}

fn roundtrip(
    store: &MemoryStore,
    data: &[u8],
    known: &[ChunkId],
) -> (Vec<u8>, strata_chunk::SaveOutput) {
    let claim = |ids: &[ChunkId]| {
        Ok(ids
            .iter()
            .map(|id| {
                if known.contains(id) {
                    ChunkLookup::Stored { generation: 0 }
                } else {
                    ChunkLookup::Upload { generation: 0 }
                }
            })
            .collect())
    };
    let out = save_stream(data, store, &claim, &small(), 2).unwrap();
    let manifest = out.manifest.clone();
    let mut pages = |from: u64| {
        Ok(manifest
            .iter()
            .skip(from as usize)
            .take(3)
            .copied()
            .collect())
    };
    let back = restore_stream(store, &mut pages, 2, 4, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .unwrap();
    (back, out)
}

proptest! {
    #[test]
    fn bytes_survive(data in prop::collection::vec(any::<u8>(), 0..100_000), rep in 1usize..4) {
        let data = data.repeat(rep);
        let store = MemoryStore::new();
        let (back, out) = roundtrip(&store, &data, &[]);
        prop_assert_eq!(back, data.clone());
        prop_assert_eq!(out.bytes, data.len() as u64);
    }
}

#[test]
fn second_save_of_same_data_stores_nothing_new() {
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let store = MemoryStore::new();
    let (_, first) = roundtrip(&store, &data, &[]);
    assert!(!first.new_chunks.is_empty());
    let known: Vec<_> = first.new_chunks.iter().map(|c| c.0.id).collect();
    let (back, second) = roundtrip(&store, &data, &known);
    assert_eq!(back, data);
    assert!(second.new_chunks.is_empty());
}

#[test]
fn damaged_chunk_is_named_on_restore() {
    let data: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    let store = MemoryStore::new();
    let (_, out) = roundtrip(&store, &data, &[]);
    let victim = out.manifest[1].key();
    let mut bytes = store.get(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    store.put(&victim, &bytes).unwrap();
    let manifest = out.manifest.clone();
    let mut pages = |from: u64| {
        Ok(manifest
            .iter()
            .skip(from as usize)
            .take(100)
            .copied()
            .collect())
    };
    let err = restore_stream(&store, &mut pages, 2, 4, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .unwrap_err();
    assert!(err.to_string().contains(&victim.id.to_hex()), "{err}");
    store.delete(&victim).unwrap();
    let err = restore_stream(&store, &mut pages, 2, 4, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn every_chunk_is_claimed_once_before_upload_under_the_claimed_generation() {
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let claimed = Arc::new(Mutex::new(HashSet::new()));
    let claims = Mutex::new(0usize);
    // The store refuses a put whose chunk no claim named before.
    let seen = claimed.clone();
    let store = HookedStore::new(MemoryStore::new()).on_put(move |key| {
        assert!(
            seen.lock().unwrap().contains(&key.id),
            "{key} uploaded before its intent was recorded"
        );
        Ok(())
    });
    // Every other chunk is "being deleted": upload it under generation 7.
    let claim = |ids: &[ChunkId]| {
        *claims.lock().unwrap() += 1;
        let mut c = claimed.lock().unwrap();
        Ok(ids
            .iter()
            .map(|id| {
                assert!(c.insert(*id), "{id} claimed twice");
                ChunkLookup::Upload {
                    generation: u32::from(id.0[0] % 2) * 7,
                }
            })
            .collect())
    };
    let out = save_stream(&data[..], &store, &claim, &small(), 2).unwrap();
    let unique: HashSet<ChunkId> = out.manifest.iter().map(|e| e.id).collect();
    assert_eq!(*claimed.lock().unwrap(), unique);
    assert!(*claims.lock().unwrap() > 1, "claims come in batches");
    assert_eq!(out.new_chunks.len(), unique.len());
    for (key, _, _) in &out.new_chunks {
        assert_eq!(key.generation, u32::from(key.id.0[0] % 2) * 7);
        assert!(store.inner().size(key).unwrap().is_some());
    }
    // A failing claim stops the save and names a chunk.
    let err = save_stream(
        &data[..],
        &store,
        &|_: &[ChunkId]| Err("the catalog is gone".into()),
        &small(),
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("the catalog is gone"), "{err}");
}

/// `len` bytes that neither compress nor repeat, counting what was read.
struct Counting {
    at: u64,
    len: u64,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for Counting {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min((self.len - self.at) as usize);
        for b in &mut out[..n] {
            let mut x = (self.at / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 32;
            *b = (x >> ((self.at % 8) * 8)) as u8;
            self.at += 1;
        }
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
}

/// However many workers, a save holds a bounded number of bytes: with
/// every upload stalled, it reads no more of its input than the in-flight
/// budget, one intent batch and the chunker's buffer; let go, it stores
/// everything. A store that fails every put stops it (no wait for budget
/// that never comes back).
#[test]
fn stalled_uploads_hold_the_input_back_whatever_the_number_of_workers() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let cfg = ChunkerConfig {
        min_size: 256 << 10,
        avg_size: 1 << 20,
        max_size: 4 << 20,
        zstd_level: 1,
    };
    let total = 160u64 << 20;
    let read = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let store = HookedStore::new(MemoryStore::new()).on_put(move |_| {
        while !gate.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    });
    let claim = |ids: &[ChunkId]| Ok(vec![ChunkLookup::Upload { generation: 0 }; ids.len()]);
    let out = std::thread::scope(|s| {
        let input = Counting {
            at: 0,
            len: total,
            read: read.clone(),
        };
        let (store, cfg) = (&store, &cfg);
        let save = s.spawn(move || save_stream(input, store, &claim, cfg, 64));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let held = read.load(Ordering::SeqCst);
        // Budget + one intent batch (8 MiB, plus a chunk) + the chunker's
        // buffer (a maximum-size chunk, twice).
        let bound = strata_chunk::IN_FLIGHT_BYTES as u64 + (12 << 20) + (8 << 20);
        open.store(true, Ordering::SeqCst);
        assert!(
            held <= bound,
            "read {held} bytes with every upload stalled (bound {bound})"
        );
        save.join().unwrap()
    })
    .unwrap();
    assert_eq!(out.bytes, total);

    let failing = HookedStore::new(MemoryStore::new())
        .on_put(|k| Err(strata_store::StoreError::Config(format!("no room for {k}"))));
    let input = Counting {
        at: 0,
        len: total,
        read: Arc::new(AtomicU64::new(0)),
    };
    let err = save_stream(input, &failing, &claim, &cfg, 64).unwrap_err();
    assert!(err.to_string().contains("no room"), "{err}");
}
