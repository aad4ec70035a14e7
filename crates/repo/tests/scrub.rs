//! Scrub at the library level: it refuses to run beside another scrub, and
//! an interrupted scrub leaves a sound repository and finishes its work
//! when run again; a save that reuses a chunk scrub is deleting gets a new
//! generation and restores exactly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use strata_catalog::SCRUB_LEASE;
use strata_core::{ChunkKey, Retention};
use strata_repo::{NoProgress, Repository, RestoreOptions, SaveOptions, ScrubOptions};
use strata_store::{ChunkStore, FileStore, HookedStore, StoreError};
use strata_testing::tree;

fn repo(dir: &Path) -> Repository {
    let mut r = Repository::open_or_create(&dir.join("repo"), &|_| {}).unwrap();
    r.state_dir = dir.join("state");
    r.config.rebase.max_incrementals = 1;
    r.config.retention = Retention {
        keep_last: 1,
        keep_hourly: 0,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        keep_yearly: 0,
    };
    r
}

fn no_grace() -> ScrubOptions {
    ScrubOptions {
        grace: std::time::Duration::ZERO,
        dry_run: false,
        page: 3,
    }
}

/// Saves three versions of a project whose big file changes each time,
/// then trims to the newest: the older versions' chunks become garbage.
fn project_with_garbage(
    r: &Repository,
    dir: &Path,
) -> (PathBuf, std::collections::BTreeMap<String, tree::Node>) {
    let src = dir.join("proj");
    std::fs::create_dir(&src).unwrap();
    tree::sample_tree(&src);
    for v in 0..3u8 {
        std::fs::write(src.join("big.bin"), tree::content(4_000_000, v)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        strata_repo::save(r, &src, &SaveOptions::default(), &NoProgress).unwrap();
    }
    let report = strata_repo::trim(r, "proj", false).unwrap();
    assert!(!report.plan.delete.is_empty(), "the trim deleted nothing");
    (src.clone(), tree::capture(&src))
}

fn restores(
    r: &Repository,
    dir: &Path,
    want: &std::collections::BTreeMap<String, tree::Node>,
    name: &str,
) {
    let out = dir.join(name);
    strata_repo::restore(r, "proj", &out, &RestoreOptions::default(), &NoProgress).unwrap();
    tree::assert_same(want, &tree::capture(&out), name);
}

fn objects(store: &dyn ChunkStore) -> Vec<ChunkKey> {
    store
        .list_page(None, 100_000)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[test]
fn a_second_scrub_is_refused_while_one_holds_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    let now = r.clock.now_ms();
    r.catalog
        .acquire_lease(SCRUB_LEASE, "other-host:1:abcd", now, now + 60_000)
        .unwrap();
    let err = strata_repo::scrub(&r, &no_grace()).unwrap_err();
    assert!(
        err.to_string()
            .contains("another scrub (other-host:1:abcd)"),
        "{err}"
    );
    // A dry run reads only, and may run beside it.
    strata_repo::scrub(
        &r,
        &ScrubOptions {
            dry_run: true,
            ..no_grace()
        },
    )
    .unwrap();
    // An expired lease is taken over.
    r.catalog
        .acquire_lease(
            SCRUB_LEASE,
            "other-host:1:abcd",
            now - 120_000,
            now - 60_000,
        )
        .unwrap();
    strata_repo::scrub(&r, &no_grace()).unwrap();
}

/// A file store whose deletes fail for good after `allowed` of them, and
/// whose listing fails when `listing_broken`.
fn breaks_after(chunks: &Path, allowed: u32, listing_broken: bool) -> HookedStore<FileStore> {
    let done = AtomicU32::new(0);
    HookedStore::new(FileStore::open(chunks).unwrap())
        .on_delete(move |key| {
            if done.fetch_add(1, Ordering::SeqCst) >= allowed {
                return Err(StoreError::Io {
                    op: "remove",
                    path: PathBuf::from(key.to_string()),
                    source: std::io::Error::other("the disk went away"),
                });
            }
            Ok(())
        })
        .on_list(move |_| {
            if listing_broken {
                return Err(StoreError::Io {
                    op: "list",
                    path: PathBuf::from("chunks"),
                    source: std::io::Error::other("the listing went away"),
                });
            }
            Ok(())
        })
}

fn sound(
    r: &Repository,
    dir: &Path,
    want: &std::collections::BTreeMap<String, tree::Node>,
    name: &str,
) {
    restores(r, dir, want, name);
    let report = strata_repo::check(r, &strata_repo::CheckOptions::default(), &mut |p| {
        panic!("problem ({name}): {}", p.message)
    })
    .unwrap();
    assert_eq!(report.problems, 0);
}

#[test]
fn failed_deletes_stay_doomed_and_the_next_scrub_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = repo(dir.path());
    let (_, want) = project_with_garbage(&r, dir.path());
    let before = objects(r.store.as_ref());
    // A dry run says how much is garbage.
    let dry = strata_repo::scrub(
        &r,
        &ScrubOptions {
            dry_run: true,
            ..no_grace()
        },
    )
    .unwrap();
    assert!(dry.deleted >= 4, "{dry:?}");
    assert_eq!(objects(r.store.as_ref()), before);

    // Deletes fail for good after two: scrub carries on past the failures,
    // reports them, and leaves those objects doomed.
    let chunks = dir.path().join("repo/chunks");
    r.store = Box::new(breaks_after(&chunks, 2, false));
    let first = strata_repo::scrub(&r, &no_grace()).unwrap();
    assert_eq!(first.deleted, 2, "{first:?}");
    assert_eq!(first.failed.len() as u64, dry.deleted - 2, "{first:?}");
    assert!(
        first
            .first_failure
            .as_deref()
            .unwrap()
            .contains("the disk went away")
    );
    assert_eq!(objects(r.store.as_ref()).len(), before.len() - 2);
    // The repository is sound meanwhile.
    r.store = Box::new(FileStore::open(&chunks).unwrap());
    sound(&r, dir.path(), &want, "after failed deletes");

    // The next scrub deletes exactly the rest.
    let again = strata_repo::scrub(&r, &no_grace()).unwrap();
    assert_eq!(again.deleted + 2, dry.deleted, "{again:?}");
    assert!(again.failed.is_empty());
    assert_eq!(
        objects(r.store.as_ref()).len() as u64,
        before.len() as u64 - dry.deleted
    );
    let last = strata_repo::scrub(&r, &no_grace()).unwrap();
    assert_eq!((last.deleted, last.resumed), (0, false), "{last:?}");
    sound(&r, dir.path(), &want, "after");
}

#[test]
fn an_interrupted_scrub_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = repo(dir.path());
    let (_, want) = project_with_garbage(&r, dir.path());
    let dry = strata_repo::scrub(
        &r,
        &ScrubOptions {
            dry_run: true,
            ..no_grace()
        },
    )
    .unwrap();
    // The store's listing fails: the rows pass completes, the objects pass
    // stops with an error, and the checkpoint stays.
    let chunks = dir.path().join("repo/chunks");
    r.store = Box::new(breaks_after(&chunks, u32::MAX, true));
    let err = strata_repo::scrub(&r, &no_grace()).unwrap_err();
    assert!(err.to_string().contains("the listing went away"), "{err}");
    assert_eq!(
        r.catalog.repo_value("scrub.checkpoint").unwrap().as_deref(),
        Some("objects")
    );
    r.store = Box::new(FileStore::open(&chunks).unwrap());
    sound(&r, dir.path(), &want, "interrupted");
    // The next run resumes at the objects pass and finishes.
    let resumed = strata_repo::scrub(&r, &no_grace()).unwrap();
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!(resumed.rows_scanned, 0, "the rows pass was done");
    assert_eq!(r.catalog.repo_value("scrub.checkpoint").unwrap(), None);
    let after = strata_repo::scrub(
        &r,
        &ScrubOptions {
            dry_run: true,
            ..no_grace()
        },
    )
    .unwrap();
    assert_eq!(after.deleted, 0, "{after:?} (before: {dry:?})");
    sound(&r, dir.path(), &want, "resumed");
}

#[test]
fn a_save_reusing_a_chunk_being_deleted_uploads_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    project_with_garbage(&r, dir.path());
    let garbage_content = tree::content(4_000_000, 0);
    // Scrub dooms the garbage but "dies" before deleting it: take the
    // lease and doom the rows by hand, as scrub's first half does.
    let now = r.clock.now_ms();
    r.catalog
        .acquire_lease(SCRUB_LEASE, "dying-scrub", now, now + 60_000)
        .unwrap();
    let page = r
        .catalog
        .scrub_rows("dying-scrub", None, 10_000, now, 0, "test.cp", false)
        .unwrap();
    assert!(page.doomed > 0);
    r.catalog.release_lease(SCRUB_LEASE, "dying-scrub").unwrap();
    let doomed = r.catalog.doomed_page(None, 10_000).unwrap();

    // Now a save of another directory brings the doomed content back.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("big.bin"), &garbage_content).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    strata_repo::save(&r, &other, &SaveOptions::default(), &NoProgress).unwrap();
    let want = tree::capture(&other);
    let keys = objects(r.store.as_ref());
    assert!(
        keys.iter().any(|k| k.generation == 1),
        "the reused chunks were uploaded under a new generation: {keys:?}"
    );
    // The next scrub deletes the doomed generation-0 objects the dead
    // scrub left (their entries stay as tombstones)...
    let s = strata_repo::scrub(&r, &no_grace()).unwrap();
    assert!(s.deleted >= doomed.len() as u64, "{s:?}");
    for d in &doomed {
        assert_eq!(r.store.size(&d.key).unwrap(), None, "{} survived", d.key);
    }
    assert!(r.catalog.doomed_page(None, 10_000).unwrap().is_empty());
    // ...and the new snapshot restores exactly from the new generation.
    let out = dir.path().join("reused");
    strata_repo::restore(&r, "other", &out, &RestoreOptions::default(), &NoProgress).unwrap();
    tree::assert_same(&want, &tree::capture(&out), "reused");
    let problems = strata_repo::check(
        &r,
        &strata_repo::CheckOptions {
            read_data_percent: Some(100),
        },
        &mut |p| panic!("{}", p.message),
    )
    .unwrap();
    assert_eq!(problems.unreferenced_in_store, 0);
}
