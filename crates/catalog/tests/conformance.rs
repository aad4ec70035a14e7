//! The catalog conformance suite, run against every backend.

use strata_catalog::{
    Catalog, CatalogError, FaultyCatalog, NewChunk, RetryingCatalog, SqliteCatalog,
};
use strata_core::{ChunkId, ManifestEntry, ProjectId, SnapshotId, StreamId, StreamInfo};

fn stream(
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

fn conformance(cat: &dyn Catalog) {
    let repo = cat.repo_id().unwrap();
    assert_eq!(repo, cat.repo_id().unwrap());
    let p = cat.create_project("thesis", 1).unwrap();
    assert!(
        matches!(cat.create_project("thesis", 2), Err(CatalogError::NameTaken(n)) if n == "thesis")
    );
    assert_eq!(cat.project_by_name("thesis").unwrap(), Some(p.clone()));
    assert_eq!(cat.project(p.id).unwrap(), Some(p.clone()));
    assert_eq!(cat.project_by_name("nope").unwrap(), None);

    let chunks: Vec<_> = (0..3u8).map(|i| ChunkId::of(&[i])).collect();
    let manifest: Vec<_> = [0, 1, 0, 2]
        .iter()
        .map(|&i| ManifestEntry {
            id: chunks[i],
            len: 10 + i as u32,
        })
        .collect();
    let news: Vec<_> = chunks
        .iter()
        .map(|&id| NewChunk {
            id,
            len: 10,
            stored_len: 5,
        })
        .collect();
    assert!(!cat.has_chunk(&chunks[0]).unwrap());
    let s1 = stream(p.id, None, SnapshotId::new(1000, 1), 100);
    cat.commit_stream(&s1, &manifest, &news).unwrap();
    assert!(chunks.iter().all(|c| cat.has_chunk(c).unwrap()));
    // A second stream naming chunks already committed commits fine.
    let s2 = stream(p.id, Some(s1.end.clone()), SnapshotId::new(2000, 1), 10);
    cat.commit_stream(&s2, &manifest[..1], &news[..1]).unwrap();

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

    // Deleting a stream removes it and its manifest, keeps the chunks.
    cat.delete_streams(p.id, &[s1.id, StreamId::random()])
        .unwrap();
    cat.delete_streams(p.id, &[s1.id]).unwrap(); // again: harmless
    assert_eq!(cat.streams(p.id).unwrap(), vec![s2.clone()]);
    assert!(cat.manifest_page(s1.id, 0, 100).unwrap().is_empty());
    assert!(cat.has_chunk(&chunks[2]).unwrap());
}

#[test]
fn sqlite_in_memory() {
    conformance(&SqliteCatalog::in_memory().unwrap());
}

#[test]
fn sqlite_file_persists_and_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let id = {
        let cat = SqliteCatalog::open(&path).unwrap();
        conformance(&cat);
        cat.repo_id().unwrap()
    };
    let cat = SqliteCatalog::open(&path).unwrap();
    assert_eq!(cat.repo_id().unwrap(), id);
    assert_eq!(cat.projects().unwrap().len(), 1);
    drop(cat);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteCatalog::open(&path).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn retried_catalog_behaves_under_30_percent_faults() {
    let policy = strata_core::RetryPolicy {
        base: std::time::Duration::from_micros(100),
        cap: std::time::Duration::from_millis(2),
        max_attempts: 16,
        max_elapsed: std::time::Duration::from_secs(10),
    };
    for seed in 0..8 {
        let faulty = FaultyCatalog::new(SqliteCatalog::in_memory().unwrap(), 0.3, seed);
        conformance(&RetryingCatalog::new(faulty, policy));
    }
}

#[test]
fn a_stream_id_is_committed_once() {
    let cat = SqliteCatalog::in_memory().unwrap();
    let p = cat.create_project("p", 1).unwrap();
    let s = stream(p.id, None, SnapshotId::new(1000, 1), 10);
    cat.commit_stream(&s, &[], &[]).unwrap();
    cat.commit_stream(&s, &[], &[]).unwrap(); // a retried commit
    assert_eq!(cat.streams(p.id).unwrap().len(), 1);
    let mut other = s.clone();
    other.bytes = 11;
    let err = cat.commit_stream(&other, &[], &[]).unwrap_err();
    assert!(err.to_string().contains("already committed"), "{err}");
}
