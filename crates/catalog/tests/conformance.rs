//! The catalog conformance suite (`strata_catalog::conformance`) on the
//! SQLite backend: in memory, in a file, under injected faults with
//! retries, and on two connections racing claims against scrub's dooms.

use strata_catalog::conformance::{self, begin, stream};
use strata_catalog::{Catalog, CatalogError, FaultyCatalog, RetryingCatalog, SqliteCatalog};
use strata_core::SnapshotId;

#[test]
fn sqlite_in_memory() {
    conformance::run_all(&|| SqliteCatalog::in_memory().unwrap(), true);
}

#[test]
fn sqlite_claims_race_scrub_dooms_on_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let (a, b) = (
        SqliteCatalog::open(&path).unwrap(),
        SqliteCatalog::open(&path).unwrap(),
    );
    conformance::claims_race_scrub_dooms(&a, &b, 300);
}

#[test]
fn sqlite_file_persists_and_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let id = {
        let cat = SqliteCatalog::open(&path).unwrap();
        conformance::projects(&cat);
        cat.repo_id().unwrap()
    };
    let cat = SqliteCatalog::open(&path).unwrap();
    assert_eq!(cat.repo_id().unwrap(), id);
    assert_eq!(cat.projects().unwrap().len(), 1);
    drop(cat);
    base_must_be_reachable(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteCatalog::open(&path).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

/// A catalog damaged by an older strata (a chain whose full stream is
/// gone): an incremental on its head is refused, since no restore could
/// reach it.
fn base_must_be_reachable(path: &std::path::Path) {
    let cat = SqliteCatalog::open(path).unwrap();
    let p = cat.create_project("broken", 1).unwrap();
    let full = stream(p.id, None, SnapshotId::new(1000, 1), 10);
    let inc = stream(p.id, Some(full.end.clone()), SnapshotId::new(2000, 1), 10);
    for s in [&full, &inc] {
        let save = begin(&cat, i64::MAX);
        cat.commit_stream(save, s, &[], &[]).unwrap();
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute("DELETE FROM streams WHERE id = ?1", [full.id.to_string()])
        .unwrap();
    let next = stream(p.id, Some(inc.end.clone()), SnapshotId::new(3000, 1), 10);
    let save = begin(&cat, i64::MAX);
    assert!(matches!(
        cat.commit_stream(save, &next, &[], &[]),
        Err(CatalogError::BaseUnreachable(b)) if b == inc.end
    ));
    assert_eq!(cat.streams(p.id).unwrap(), vec![inc]);
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
        conformance::run_all(
            &|| {
                let faulty = FaultyCatalog::new(SqliteCatalog::in_memory().unwrap(), 0.3, seed);
                RetryingCatalog::new(faulty, policy)
            },
            false,
        );
    }
}

#[test]
fn a_stream_id_is_committed_once() {
    let cat = SqliteCatalog::in_memory().unwrap();
    let p = cat.create_project("p", 1).unwrap();
    let s = stream(p.id, None, SnapshotId::new(1000, 1), 10);
    let save = begin(&cat, i64::MAX);
    cat.commit_stream(save, &s, &[], &[]).unwrap();
    cat.commit_stream(save, &s, &[], &[]).unwrap(); // a retried commit
    assert_eq!(cat.streams(p.id).unwrap().len(), 1);
    let mut other = s.clone();
    other.bytes = 11;
    let err = cat.commit_stream(save, &other, &[], &[]).unwrap_err();
    assert!(err.to_string().contains("already committed"), "{err}");
}
