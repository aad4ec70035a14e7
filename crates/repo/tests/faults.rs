//! A save and a restore under 20% injected transient store and catalog
//! faults (store calls with latency too) complete and restore exactly; without retries the same faults
//! fail the save and commit nothing.

use std::path::Path;
use std::time::Duration;

use strata_catalog::{FaultyCatalog, RetryingCatalog, SqliteCatalog};
use strata_repo::{NoProgress, Repository, RestoreOptions, SaveOptions};
use strata_store::{FaultyStore, FileStore, RetryPolicy, RetryingStore};
use strata_testing::tree;

fn repo(dir: &Path) -> Repository {
    let mut r = Repository::open_or_create(&dir.join("repo"), &|_| {}).unwrap();
    r.state_dir = dir.join("state");
    r
}

fn faulty(dir: &Path, rate: f64, seed: u64) -> FaultyStore<FileStore> {
    FaultyStore::new(
        FileStore::open(dir.join("repo/chunks")).unwrap(),
        rate,
        seed,
    )
    .with_latency(Duration::from_micros(200))
}

fn project(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("proj");
    std::fs::create_dir(&src).unwrap();
    tree::sample_tree(&src);
    std::fs::write(src.join("big.bin"), tree::content(6_000_000, 3)).unwrap();
    src
}

#[test]
fn save_and_restore_under_20_percent_faults() {
    let dir = tempfile::tempdir().unwrap();
    let src = project(dir.path());
    let expected = tree::capture(&src);
    let policy = RetryPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(20),
        max_attempts: 16,
        max_elapsed: Duration::from_secs(30),
    };
    let mut r = repo(dir.path());
    r.store = Box::new(RetryingStore::new(faulty(dir.path(), 0.2, 11), policy));
    // The catalog fails a fifth of its calls too.
    let catalog = SqliteCatalog::open(&dir.path().join("repo/catalog.sqlite")).unwrap();
    r.catalog = Box::new(RetryingCatalog::new(
        FaultyCatalog::new(catalog, 0.2, 12),
        policy,
    ));
    strata_repo::save(&r, &src, &SaveOptions::default(), &NoProgress).unwrap();
    let out = dir.path().join("out");
    strata_repo::restore(&r, "proj", &out, &RestoreOptions::default(), &NoProgress).unwrap();
    tree::assert_same(&expected, &tree::capture(&out), "restore under faults");
    // And the repository is sound afterwards.
    r.store = Box::new(FileStore::open(dir.path().join("repo/chunks")).unwrap());
    let report = strata_repo::check(
        &r,
        &strata_repo::CheckOptions {
            read_data_percent: Some(100),
        },
        &mut |p| panic!("problem after a faulty save: {}", p.message),
    )
    .unwrap();
    assert!(report.chunks > 0 && report.chunks_read == report.chunks);
}

#[test]
fn without_retries_the_faults_fail_the_save() {
    let dir = tempfile::tempdir().unwrap();
    let src = project(dir.path());
    let mut r = repo(dir.path());
    // A save makes only about ten store calls: at half of them failing,
    // one is sure to.
    r.store = Box::new(faulty(dir.path(), 0.5, 5));
    let err = strata_repo::save(&r, &src, &SaveOptions::default(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    // Nothing was committed.
    assert!(r.catalog.projects().unwrap().iter().all(|p| p.streams == 0));
}
