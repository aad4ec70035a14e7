//! The catalog conformance suite, exported (feature `conformance`) so that
//! every backend's own tests run it: named cases, each on a fresh catalog
//! (object_store's `integration.rs` is the model), plus a concurrent case
//! that a single-threaded suite cannot catch. [`run_all`] runs them all.
//!
//! Cases panic on a failed assertion, as tests do.
#![allow(clippy::missing_panics_doc, missing_docs)]

use strata_core::{
    ChunkId, ChunkKey, ChunkLookup, ManifestEntry, ProjectId, SaveId, SnapshotId, StreamId,
    StreamInfo,
};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{Catalog, CatalogError, NewChunk, SCRUB_LEASE, SaveRecord};

mod fleet;
pub use fleet::{
    commit as commit_fenced, hosts_lifecycle, lease_fencing, moves_and_drains, placement_choice,
    usage_and_stats,
};

/// Runs every case, each on a catalog `make` returns fresh. `exact`: page
/// counts are exact (false under retried faults, where a page whose first
/// attempt committed reports what its retry found).
pub fn run_all<C: Catalog>(make: &dyn Fn() -> C, exact: bool) {
    projects(&make());
    streams_and_manifests(&make());
    deletes_keep_every_start(&make());
    gc_protocol(&make(), exact);
    orphans_among_many(&make());
    hosts_lifecycle(&make());
    placement_choice(&make());
    lease_fencing(&make());
    moves_and_drains(&make());
    usage_and_stats(&make());
}

/// Scrub's orphan test over a listing page wider than the catalog's range
/// pages: 2,500 committed chunks (one of them under generation 3), 2,000
/// claimed by a running save but not committed, 40 objects nothing names,
/// and a committed chunk listed under a generation it does not have. Only
/// the last two kinds are orphans; a dry run dooms nothing.
pub fn orphans_among_many(cat: &dyn Catalog) {
    let p = cat.create_project("many", 1).unwrap();
    let id = |i: u32, tag: &[u8]| ChunkId::of(&[tag, &i.to_le_bytes()].concat());
    let committed: Vec<ChunkId> = (0..2500).map(|i| id(i, b"c")).collect();
    let manifest: Vec<_> = committed.iter().map(|&c| entry(c, 1)).collect();
    let mut news: Vec<_> = committed.iter().map(|&c| new_chunk(c, 0)).collect();
    news[7] = new_chunk(committed[7], 3);
    let s = stream(p.id, None, SnapshotId::new(1000, 1), 2500);
    let save = begin(cat, i64::MAX);
    cat.commit_stream(save, &s, &manifest, &news).unwrap();
    let running = begin(cat, i64::MAX);
    let claimed: Vec<ChunkId> = (0..2000).map(|i| id(i, b"i")).collect();
    for batch in claimed.chunks(500) {
        cat.claim_chunks(running, batch).unwrap();
    }
    let orphans: Vec<ChunkKey> = (0..40)
        .map(|i| ChunkKey::from(id(i, b"o")))
        .chain([ChunkKey::new(committed[9], 5), ChunkKey::from(committed[7])])
        .collect();
    let mut candidates: Vec<(ChunkKey, u64)> = committed
        .iter()
        .enumerate()
        .map(|(i, &c)| (ChunkKey::new(c, if i == 7 { 3 } else { 0 }), 1))
        .chain(claimed.iter().map(|&c| (ChunkKey::from(c), 1)))
        .chain(orphans.iter().map(|&k| (k, 1)))
        .collect();
    candidates.sort();
    cat.acquire_lease(SCRUB_LEASE, "s", 10_000, i64::MAX)
        .unwrap();
    let mut want = orphans.clone();
    want.sort();
    let mut found = cat.doom_orphans("s", &candidates, 11_000, true).unwrap();
    found.sort();
    assert_eq!(found, want, "orphans among 4,542 listed objects");
    assert!(
        cat.doomed_page(None, 100).unwrap().is_empty(),
        "a dry run dooms nothing"
    );
    let mut found = cat.doom_orphans("s", &candidates, 11_000, false).unwrap();
    found.sort();
    assert_eq!(found, want);
    assert_eq!(cat.doomed_page(None, 100).unwrap().len(), want.len());
}

pub fn begin(cat: &dyn Catalog, expires_ms: i64) -> SaveId {
    let save = SaveRecord {
        id: SaveId::random(),
        host: "host-a".into(),
        pid: 4242,
        process_start: 7,
        started_ms: 1,
        expires_ms,
        fence: None,
    };
    cat.begin_save(&save).unwrap();
    cat.begin_save(&save).unwrap(); // a retried begin
    save.id
}

fn entry(id: ChunkId, len: u32) -> ManifestEntry {
    ManifestEntry {
        id,
        len,
        generation: 0,
    }
}

fn new_chunk(id: ChunkId, generation: u32) -> NewChunk {
    NewChunk {
        id,
        generation,
        len: 10,
        stored_len: 5,
    }
}

/// A stream record of `project` from `start` to `end`, `bytes` long.
pub fn stream(
    project: ProjectId,
    start: Option<SnapshotId>,
    end: SnapshotId,
    bytes: u64,
) -> StreamInfo {
    StreamInfo {
        id: StreamId::random(),
        project,
        parent: start.clone(),
        start,
        end,
        engine: "native".into(),
        bytes,
        chunks: 3,
        new_bytes: bytes,
        new_stored_bytes: bytes / 2,
        created_ms: 42,
        host: "host-a".into(),
    }
}

/// Claims racing scrub's dooms on two handles of one catalog (two
/// connections, two threads): scrub pages through the chunk rows with no
/// grace, dooming every row nothing names, while saves claim those chunks,
/// commit a stream naming one, and delete it again. A chunk a claim said to
/// reuse is never doomed before its save commits (the intent is recorded in
/// the claim's own transaction), and an upload goes under a generation no
/// doomed object has: every commit succeeds, reads back the claimed
/// generation, and no manifest ever names a chunk without a row. A backend
/// whose transactions are not serialisable fails this case.
pub fn claims_race_scrub_dooms(a: &dyn Catalog, b: &dyn Catalog, rounds: usize) {
    let p = a.create_project("race", 1).unwrap();
    let ids: Vec<ChunkId> = (0..6u8).map(|i| ChunkId::of(&[b'r', i])).collect();
    let s0 = stream(p.id, None, SnapshotId::new(1, 1), 6);
    let save = begin(a, i64::MAX);
    let m: Vec<_> = ids.iter().map(|&c| entry(c, 1)).collect();
    let n: Vec<_> = ids.iter().map(|&c| new_chunk(c, 0)).collect();
    a.commit_stream(save, &s0, &m, &n).unwrap();
    a.delete_streams(p.id, &[s0.id]).unwrap();
    b.acquire_lease(SCRUB_LEASE, "racer", 0, i64::MAX).unwrap();
    let stop = AtomicBool::new(false);
    let doomed = AtomicU64::new(0);
    let reused = AtomicU64::new(0);
    /// Stops the scrub thread however the saves end (a failed assertion
    /// too), so the scope can join it.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut now = 1_000;
            while !stop.load(Ordering::SeqCst) {
                now += 1;
                let mut after = None;
                loop {
                    let page = b
                        .scrub_rows("racer", after.as_ref(), 2, now, 0, "race-cp", false)
                        .unwrap();
                    doomed.fetch_add(page.doomed, Ordering::SeqCst);
                    match page.last {
                        Some(l) => after = Some(l),
                        None => break,
                    }
                }
            }
        });
        let _stop = StopOnDrop(&stop);
        // At least `rounds` rounds, and on until both outcomes of the race
        // were seen (at most 20 times as many): which one a round meets
        // depends on where the scrub thread is. Rounds come in pairs on one
        // chunk, so the second claims it right after the first dropped it,
        // usually before scrub dooms it again.
        let mut round = 0;
        while round < rounds
            || (round < rounds * 20
                && (doomed.load(Ordering::SeqCst) == 0 || reused.load(Ordering::SeqCst) == 0))
        {
            let id = ids[(round / 2) % ids.len()];
            let save = begin(a, i64::MAX);
            let (generation, upload) = match a.claim_chunks(save, &[id]).unwrap()[0] {
                ChunkLookup::Stored { generation } => (generation, false),
                ChunkLookup::Upload { generation } => (generation, true),
            };
            if !upload {
                reused.fetch_add(1, Ordering::SeqCst);
            }
            let s = stream(p.id, None, SnapshotId::new(10 + round as i64, 1), 1);
            let new = if upload {
                vec![new_chunk(id, generation)]
            } else {
                Vec::new()
            };
            a.commit_stream(save, &s, &[entry(id, 1)], &new)
                .unwrap_or_else(|e| panic!("round {round}: a claimed chunk was lost: {e}"));
            assert_eq!(
                a.manifest_page(s.id, 0, 1).unwrap()[0].generation,
                generation,
                "round {round}"
            );
            a.delete_streams(p.id, &[s.id]).unwrap();
            round += 1;
        }
    });
    assert!(a.unknown_chunk_refs(10).unwrap().is_empty());
    b.release_lease(SCRUB_LEASE, "racer").unwrap();
    // The race ran: scrub doomed rows the saves then had to upload again,
    // and saves reused rows scrub had not reached.
    assert!(
        doomed.load(Ordering::SeqCst) > 0,
        "scrub never doomed a row"
    );
    assert!(
        reused.load(Ordering::SeqCst) > 0,
        "no save ever reused a row"
    );
}

/// A project with a full stream `s1` (manifest `[c0, c1, c0, c2]`, first
/// to store all three chunks) and an incremental `s2` on it naming `c0`.
struct Fixture {
    p: crate::Project,
    chunks: Vec<ChunkId>,
    manifest: Vec<ManifestEntry>,
    s1: StreamInfo,
    s2: StreamInfo,
}

impl Fixture {
    fn commit(cat: &dyn Catalog) -> Self {
        let p = cat.create_project("thesis", 1).unwrap();
        let chunks: Vec<_> = (0..3u8).map(|i| ChunkId::of(&[i])).collect();
        let manifest: Vec<_> = [0, 1, 0, 2]
            .iter()
            .map(|&i| entry(chunks[i], 10 + i as u32))
            .collect();
        let news: Vec<_> = chunks.iter().map(|&id| new_chunk(id, 0)).collect();
        let s1 = stream(p.id, None, SnapshotId::new(1000, 1), 100);
        let save = begin(cat, i64::MAX);
        cat.commit_stream(save, &s1, &manifest, &news).unwrap();
        let s2 = stream(p.id, Some(s1.end.clone()), SnapshotId::new(2000, 1), 10);
        let save = begin(cat, i64::MAX);
        cat.commit_stream(save, &s2, &manifest[..1], &news[..1])
            .unwrap();
        Fixture {
            p,
            chunks,
            manifest,
            s1,
            s2,
        }
    }
}

/// Projects: created once per name, found by name and by id.
pub fn projects(cat: &dyn Catalog) {
    let repo = cat.repo_id().unwrap();
    assert_eq!(repo, cat.repo_id().unwrap());
    let p = cat.create_project("thesis", 1).unwrap();
    assert!(
        matches!(cat.create_project("thesis", 2), Err(CatalogError::NameTaken(n)) if n == "thesis")
    );
    assert_eq!(cat.project_by_name("thesis").unwrap(), Some(p.clone()));
    assert_eq!(cat.project(p.id).unwrap(), Some(p.clone()));
    assert_eq!(cat.project_by_name("nope").unwrap(), None);
}

/// Streams commit with their manifests and new chunks; manifests, chunk
/// listings, references, summaries and retention read back.
pub fn streams_and_manifests(cat: &dyn Catalog) {
    let p = cat.create_project("thesis", 1).unwrap();
    let chunks: Vec<_> = (0..3u8).map(|i| ChunkId::of(&[i])).collect();
    let manifest: Vec<_> = [0, 1, 0, 2]
        .iter()
        .map(|&i| entry(chunks[i], 10 + i as u32))
        .collect();
    let news: Vec<_> = chunks.iter().map(|&id| new_chunk(id, 0)).collect();
    assert!(cat.chunk(&chunks[0]).unwrap().is_none());
    let s1 = stream(p.id, None, SnapshotId::new(1000, 1), 100);
    let save = begin(cat, i64::MAX);
    cat.commit_stream(save, &s1, &manifest, &news).unwrap();
    cat.commit_stream(save, &s1, &manifest, &news).unwrap(); // a retried commit
    assert!(chunks.iter().all(|c| cat.chunk(c).unwrap().is_some()));
    // The commit ended the save.
    assert!(cat.saves().unwrap().is_empty());
    // A second stream naming chunks already committed commits fine.
    // The project moved to a ZFS dataset: its engine is its newest
    // stream's.
    let mut s2 = stream(p.id, Some(s1.end.clone()), SnapshotId::new(2000, 1), 10);
    s2.engine = "zfs".into();
    let save = begin(cat, i64::MAX);
    cat.commit_stream(save, &s2, &manifest[..1], &news[..1])
        .unwrap();

    assert_eq!(cat.streams(p.id).unwrap(), vec![s1.clone(), s2.clone()]);
    let all = cat.manifest_page(s1.id, 0, 100).unwrap();
    assert_eq!(all, manifest);
    assert_eq!(
        cat.manifest_page(s1.id, 1, 2).unwrap(),
        manifest[1..3].to_vec()
    );
    assert!(cat.manifest_page(s1.id, 4, 2).unwrap().is_empty());

    let list = cat.projects().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].streams, 2);
    assert_eq!(list[0].bytes, 110);
    assert_eq!(list[0].newest, Some(s2.end.clone()));
    assert_eq!(list[0].engine.as_deref(), Some("zfs"));
    let empty = cat.create_project("unsaved", 3).unwrap();
    let list = cat.projects().unwrap();
    let unsaved = list.iter().find(|s| s.project.id == empty.id).unwrap();
    assert_eq!((unsaved.streams, unsaved.engine.as_deref()), (0, None));

    // Chunks page in id order; references are found.
    let mut sorted = chunks.clone();
    sorted.sort();
    let page: Vec<_> = cat
        .chunks_page(None, 2)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(page, sorted[..2].to_vec());
    let rest: Vec<_> = cat
        .chunks_page(Some(&sorted[1]), 10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(rest, sorted[2..].to_vec());
    assert!(cat.unknown_chunk_refs(10).unwrap().is_empty());
    let users = cat.streams_using(&chunks[0], 10).unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|(proj, _)| *proj == p.id));

    // Retention per project.
    assert_eq!(cat.retention(p.id).unwrap(), None);
    cat.set_retention(p.id, Some("keep-last = 3")).unwrap();
    assert_eq!(
        cat.retention(p.id).unwrap().as_deref(),
        Some("keep-last = 3")
    );
    cat.set_retention(p.id, None).unwrap();
    assert_eq!(cat.retention(p.id).unwrap(), None);
}

/// Invariant 7: a delete never takes away the start of a stream that
/// stays, and a commit needs its start.
pub fn deletes_keep_every_start(cat: &dyn Catalog) {
    let Fixture {
        p,
        chunks,
        manifest,
        s1,
        s2,
    } = Fixture::commit(cat);
    // Deleting the start of a stream that stays is refused (its plan was
    // made before that stream committed) and deletes nothing.
    assert!(matches!(
        cat.delete_streams(p.id, &[s1.id]),
        Err(CatalogError::StartNeeded { stream, start }) if stream == s2.id && start == s1.end
    ));
    assert_eq!(cat.streams(p.id).unwrap(), vec![s1.clone(), s2.clone()]);
    // An incremental on a snapshot no stream ends at is refused.
    let stray = stream(
        p.id,
        Some(SnapshotId::new(1500, 9)),
        SnapshotId::new(2500, 1),
        1,
    );
    let save = begin(cat, i64::MAX);
    assert!(matches!(
        cat.commit_stream(save, &stray, &[], &[]),
        Err(CatalogError::BaseGone(b)) if b == SnapshotId::new(1500, 9)
    ));
    cat.end_save(save).unwrap();

    // A full stream of its own lets both go. Deleting a stream removes it
    // and its manifest, keeps the chunks.
    let s3 = stream(p.id, None, SnapshotId::new(3000, 1), 10);
    let save = begin(cat, i64::MAX);
    cat.commit_stream(save, &s3, &manifest[..1], &[]).unwrap();
    cat.delete_streams(p.id, &[s1.id, s2.id, StreamId::random()])
        .unwrap();
    cat.delete_streams(p.id, &[s1.id]).unwrap(); // again: harmless
    assert_eq!(cat.streams(p.id).unwrap(), vec![s3.clone()]);
    assert!(cat.manifest_page(s1.id, 0, 100).unwrap().is_empty());
    assert!(cat.chunk(&chunks[2]).unwrap().is_some());
}

/// Save intents and scrub's catalog side (`docs/gc.md`).
pub fn gc_protocol(cat: &dyn Catalog, exact: bool) {
    let Fixture {
        p,
        chunks,
        manifest,
        s1,
        s2,
    } = Fixture::commit(cat);
    let s3 = stream(p.id, None, SnapshotId::new(3000, 1), 10);
    let save = begin(cat, i64::MAX);
    cat.commit_stream(save, &s3, &manifest[..1], &[]).unwrap();
    cat.delete_streams(p.id, &[s1.id, s2.id]).unwrap();
    gc_after_setup(cat, p.id, &chunks, exact);
}

/// Save intents and scrub's catalog side (`docs/gc.md`). On entry, stream
/// s3 names `chunks[0]`; `chunks[1]` and `chunks[2]` are committed and
/// named by nothing.
fn gc_after_setup(cat: &dyn Catalog, project: ProjectId, chunks: &[ChunkId], exact: bool) {
    let fresh = ChunkId::of(b"fresh");
    let orphan = ChunkId::of(b"orphan");
    let a = begin(cat, 1_000_000);
    assert_eq!(
        cat.claim_chunks(a, &[chunks[0], fresh, chunks[1]]).unwrap(),
        vec![
            ChunkLookup::Stored { generation: 0 },
            ChunkLookup::Upload { generation: 0 },
            ChunkLookup::Stored { generation: 0 },
        ]
    );
    assert_eq!(cat.saves().unwrap().len(), 1);

    // Scrub's writes need the lease; one owner at a time.
    assert!(matches!(
        cat.scrub_rows("s1", None, 100, 10_000, 1_000, "cp", false),
        Err(CatalogError::LeaseLost(_))
    ));
    cat.acquire_lease(SCRUB_LEASE, "s1", 10_000, 20_000)
        .unwrap();
    cat.acquire_lease(SCRUB_LEASE, "s1", 10_000, 20_000)
        .unwrap(); // renewal
    // Renewing never takes a lease: only its live holder extends it.
    assert!(cat.renew_lease(SCRUB_LEASE, "s1", 10_000, 20_000).unwrap());
    assert!(!cat.renew_lease(SCRUB_LEASE, "s2", 10_000, 30_000).unwrap());
    assert!(
        !cat.renew_lease(SCRUB_LEASE, "s1", 20_001, 40_000).unwrap(),
        "it lapsed"
    );
    assert!(!cat.renew_lease("nobody-holds-this", "s1", 0, 1).unwrap());
    // Scrub's checkpoints are written only by the lease's holder.
    assert!(matches!(
        cat.set_scrub_checkpoint("s2", "cp2", Some("objects")),
        Err(CatalogError::LeaseLost(o)) if o == "s1"
    ));
    cat.set_scrub_checkpoint("s1", "cp2", Some("objects"))
        .unwrap();
    assert_eq!(cat.repo_value("cp2").unwrap().as_deref(), Some("objects"));
    cat.set_scrub_checkpoint("s1", "cp2", None).unwrap();
    assert_eq!(cat.repo_value("cp2").unwrap(), None);
    assert!(matches!(
        cat.acquire_lease(SCRUB_LEASE, "s2", 10_000, 30_000),
        Err(CatalogError::LeaseHeld { owner, .. }) if owner == "s1"
    ));

    // First pass: chunks[0] is named by a stream, chunks[1] by a's intent;
    // chunks[2] is unreferenced and starts its grace period.
    let dry = cat
        .scrub_rows("s1", None, 100, 10_000, 0, "cp", true)
        .unwrap();
    assert_eq!((dry.scanned, dry.referenced, dry.doomed), (3, 2, 1));
    let page = cat
        .scrub_rows("s1", None, 100, 10_000, 1_000, "cp", false)
        .unwrap();
    assert_eq!(
        (page.scanned, page.referenced, page.waiting, page.doomed),
        (3, 2, 1, 0)
    );
    let last = page.last.unwrap();
    assert_eq!(
        cat.repo_value("cp").unwrap(),
        Some(format!("rows:{}", last.to_hex()))
    );
    assert!(
        cat.scrub_rows("s1", Some(&last), 100, 10_000, 1_000, "cp", false)
            .unwrap()
            .last
            .is_none()
    );
    assert!(
        cat.chunk(&chunks[2]).unwrap().is_some(),
        "the dry run changed nothing"
    );
    // Inside the grace period it waits, after it it is doomed.
    let page = cat
        .scrub_rows("s1", None, 100, 10_500, 1_000, "cp", false)
        .unwrap();
    assert_eq!((page.waiting, page.doomed), (1, 0));
    let page = cat
        .scrub_rows("s1", None, 100, 11_000, 1_000, "cp", false)
        .unwrap();
    if exact {
        assert_eq!((page.waiting, page.doomed, page.doomed_bytes), (0, 1, 5));
    }
    assert!(cat.chunk(&chunks[2]).unwrap().is_none());
    let doomed = cat.doomed_page(None, 10).unwrap();
    assert_eq!(doomed.len(), 1);
    assert_eq!(doomed[0].key, ChunkKey::from(chunks[2]));
    assert_eq!((doomed[0].scrub.as_str(), doomed[0].stored_len), ("s1", 5));

    // While its object is being deleted, a save uploads it anew under a
    // higher generation.
    let b = begin(cat, 1_000_000);
    assert_eq!(
        cat.claim_chunks(b, &[chunks[2]]).unwrap(),
        vec![ChunkLookup::Upload { generation: 1 }]
    );

    // Objects without rows: one nothing names is doomed; one whose chunk a
    // live intent names (any generation), or a committed row names with
    // that generation, is kept.
    let candidates = [
        (ChunkKey::from(orphan), 7),
        (ChunkKey::from(fresh), 7),
        (ChunkKey::from(chunks[0]), 5),
        (ChunkKey::new(chunks[0], 3), 5),
    ];
    assert_eq!(
        cat.doom_orphans("s1", &candidates, 11_000, true).unwrap(),
        vec![ChunkKey::from(orphan)]
    );
    assert_eq!(
        cat.doomed_page(None, 10).unwrap().len(),
        1,
        "a dry run dooms nothing"
    );
    assert_eq!(
        cat.doom_orphans("s1", &candidates, 11_000, false).unwrap(),
        vec![ChunkKey::from(orphan)]
    );
    assert!(matches!(
        cat.doom_orphans("s2", &candidates, 11_000, false),
        Err(CatalogError::LeaseLost(o)) if o == "s1"
    ));
    let keys: Vec<ChunkKey> = cat
        .doomed_page(None, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(keys.len(), 2);
    // Paging, and tombstones: a retired entry is no longer listed, but a
    // save still avoids its key until it is forgotten.
    assert_eq!(cat.doomed_page(Some(&keys[0]), 10).unwrap().len(), 1);
    assert!(cat.doomed_page(Some(&keys[1]), 10).unwrap().is_empty());
    cat.retire_doomed(&keys, 12_000).unwrap();
    cat.retire_doomed(&keys, 12_000).unwrap(); // again: harmless
    assert!(cat.doomed_page(None, 10).unwrap().is_empty());
    let probe = begin(cat, 1_000_000);
    assert_eq!(
        cat.claim_chunks(probe, &[orphan]).unwrap(),
        vec![ChunkLookup::Upload { generation: 1 }]
    );
    cat.end_save(probe).unwrap();
    // A tombstone's key that holds an object again is doomed anew.
    assert_eq!(
        cat.doom_orphans("s1", &[(ChunkKey::from(orphan), 9)], 12_500, false)
            .unwrap(),
        vec![ChunkKey::from(orphan)]
    );
    let again = cat.doomed_page(None, 10).unwrap();
    assert_eq!(
        (again.len(), again[0].scrub.as_str(), again[0].stored_len),
        (1, "s1", 9)
    );
    cat.retire_doomed(&[again[0].key], 12_600).unwrap();
    // Tombstones are forgotten by retirement time.
    if exact {
        assert_eq!(cat.forget_tombstones(12_100).unwrap(), 1);
    }
    assert_eq!(
        cat.claim_chunks(b, &[orphan]).unwrap(),
        vec![ChunkLookup::Upload { generation: 1 }],
        "the re-armed tombstone still stands"
    );
    cat.forget_tombstones(12_601).unwrap();
    assert_eq!(
        cat.claim_chunks(b, &[orphan]).unwrap(),
        vec![ChunkLookup::Upload { generation: 0 }]
    );

    // a commits, reusing chunks[0] and chunks[1] and adding `fresh`; the
    // commit clears the marks and the manifest reads back generations.
    let sa = stream(project, None, SnapshotId::new(5000, 1), 30);
    let m = [entry(chunks[0], 10), entry(fresh, 10), entry(chunks[1], 11)];
    cat.commit_stream(a, &sa, &m, &[new_chunk(fresh, 0)])
        .unwrap();
    assert_eq!(cat.manifest_page(sa.id, 0, 10).unwrap(), m.to_vec());
    // b uploaded chunks[2] under generation 1 and commits it.
    let sb = stream(project, None, SnapshotId::new(6000, 1), 10);
    let mb = [entry(chunks[2], 12)];
    cat.commit_stream(b, &sb, &mb, &[new_chunk(chunks[2], 1)])
        .unwrap();
    assert_eq!(
        cat.manifest_page(sb.id, 0, 10).unwrap()[0].key(),
        ChunkKey::new(chunks[2], 1)
    );
    let page = cat
        .scrub_rows("s1", None, 100, 12_000, 0, "cp", false)
        .unwrap();
    assert_eq!((page.scanned, page.referenced, page.doomed), (4, 4, 0));
    assert_eq!(
        cat.chunk(&chunks[2]).unwrap().map(|c| c.key()),
        Some(ChunkKey::new(chunks[2], 1))
    );
    assert_eq!(cat.chunk(&orphan).unwrap(), None);

    // An incremental whose start was deleted meanwhile (a trim) fails.
    let sa2 = stream(
        project,
        Some(SnapshotId::new(5000, 1)),
        SnapshotId::new(5500, 1),
        3,
    );
    let gone = stream(
        project,
        Some(SnapshotId::new(4321, 1)),
        SnapshotId::new(5600, 1),
        3,
    );
    let f = begin(cat, 1_000_000);
    assert!(matches!(
        cat.commit_stream(f, &gone, &[], &[]),
        Err(CatalogError::BaseGone(s)) if s == SnapshotId::new(4321, 1)
    ));
    cat.commit_stream(f, &sa2, &[], &[]).unwrap();

    // A commit after the save ended, or naming a chunk nobody stored, fails.
    let c = begin(cat, 1_000_000);
    cat.end_save(c).unwrap();
    cat.end_save(c).unwrap();
    assert!(matches!(cat.claim_chunks(c, &[fresh]), Err(CatalogError::SaveGone(id)) if id == c));
    let sc = stream(project, None, SnapshotId::new(7000, 1), 10);
    assert!(matches!(
        cat.commit_stream(c, &sc, &[], &[]),
        Err(CatalogError::SaveGone(_))
    ));
    let d = begin(cat, 1_000_000);
    cat.claim_chunks(d, &[orphan]).unwrap();
    let err = cat
        .commit_stream(d, &sc, &[entry(orphan, 3)], &[])
        .unwrap_err();
    assert!(err.to_string().contains(&orphan.to_hex()), "{err}");
    assert!(cat.streams(project).unwrap().iter().all(|s| s.id != sc.id));

    // Saves that stop renewing expire, with their intents.
    let e = begin(cat, 15_000);
    assert!(cat.renew_save(e, 16_000).unwrap());
    // (What it returns is for reports: a retried call may list fewer.)
    cat.expire_saves(17_000).unwrap();
    assert!(cat.saves().unwrap().iter().all(|s| s.id != e && s.id == d));
    assert!(!cat.renew_save(e, 20_000).unwrap());
    cat.end_save(d).unwrap();
    assert!(cat.saves().unwrap().is_empty());

    cat.release_lease(SCRUB_LEASE, "s1").unwrap();
    cat.acquire_lease(SCRUB_LEASE, "s2", 10_000, 30_000)
        .unwrap();
    cat.release_lease(SCRUB_LEASE, "s2").unwrap();
    cat.set_repo_value("cp", None).unwrap();
    assert_eq!(cat.repo_value("cp").unwrap(), None);
}
