//! Save and restore through the pipeline, against the memory store.

use proptest::prelude::*;
use strata_chunk::{ChunkerConfig, restore_stream, save_stream};
use strata_core::ChunkId;
use strata_store::{ChunkStore, MemoryStore};

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
    let out = save_stream(data, store, &|id| Ok(known.contains(id)), &small(), 2).unwrap();
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
    let known: Vec<_> = first.new_chunks.iter().map(|c| c.0).collect();
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
    let victim = out.manifest[1].id;
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
    assert!(err.to_string().contains(&victim.to_hex()), "{err}");
    store.delete(&victim).unwrap();
    let err = restore_stream(&store, &mut pages, 2, 4, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    })
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
