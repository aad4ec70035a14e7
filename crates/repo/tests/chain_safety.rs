//! Invariant 7 (`docs/invariants.md`): every save that returned success
//! restores. A trim's delete re-validates its plan against streams
//! committed after it planned (held at that boundary by a hook, not by
//! sleeps); a save builds only on a base the apply plan reaches; a restore
//! refuses a stream its catalog record does not describe.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_catalog::{HookedCatalog, SqliteCatalog};
use strata_core::{Retention, SnapshotId, StreamInfo};
use strata_repo::{
    ErrorKind, NoProgress, Progress, Repository, RestoreOptions, SaveOptions, SaveReport,
};
use strata_testing::tree::{self, Node};

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

fn save(r: &Repository, dir: &Path) -> SaveReport {
    std::thread::sleep(std::time::Duration::from_millis(60));
    strata_repo::save(r, dir, &SaveOptions::default(), &NoProgress).unwrap()
}

fn edit(dir: &Path, what: &str) {
    std::fs::write(dir.join(format!("{what}.txt")), what).unwrap();
    std::fs::write(
        dir.join("data.bin"),
        tree::content(200_000, what.len() as u8),
    )
    .unwrap();
}

fn restore_is(r: &Repository, dir: &Path, snap: &SnapshotId, want: &BTreeMap<String, Node>) {
    let out = dir.join(format!("check-{snap}"));
    let opts = RestoreOptions {
        snapshot: Some(snap.clone()),
        ..RestoreOptions::default()
    };
    strata_repo::restore(r, "proj", &out, &opts, &NoProgress)
        .unwrap_or_else(|e| panic!("snapshot {snap} does not restore: {e}"));
    tree::assert_same(want, &tree::capture(&out), snap.as_str());
    std::fs::remove_dir_all(&out).unwrap();
}

fn streams(r: &Repository) -> Vec<StreamInfo> {
    let p = r.project("proj").unwrap();
    r.catalog.streams(p.id).unwrap()
}

/// Bug 3: trim planned from one read and deleted in a later transaction,
/// so a second working copy's incremental on a snapshot the plan dropped
/// lost its base, and a restore silently gave another copy's snapshot.
#[test]
fn a_save_committed_between_trims_plan_and_delete_keeps_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    let a = dir.path().join("proj");
    std::fs::create_dir(&a).unwrap();
    edit(&a, "one");
    let s1 = save(&r, &a);
    edit(&a, "two");
    let s2 = save(&r, &a);
    assert_eq!(s2.stream.start.as_ref(), Some(&s1.stream.end));
    // A second working copy holds s2.
    let b = dir.path().join("b");
    let opts = RestoreOptions {
        snapshot: Some(s2.stream.end.clone()),
        ..RestoreOptions::default()
    };
    strata_repo::restore(&r, "proj", &b, &opts, &NoProgress).unwrap();
    edit(&a, "three");
    let s3 = save(&r, &a);
    assert!(s3.rebased, "the third save is a full stream");

    // Trim's plan (keep the newest only) drops s1 and s2; between its plan
    // and its delete, copy b saves an incremental on s2.
    let b_saved: Mutex<Option<(SnapshotId, BTreeMap<String, Node>)>> = Mutex::new(None);
    let b_saved = std::sync::Arc::new(b_saved);
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    let mut trimming = repo(dir.path());
    {
        let (dir, b, b_saved, fired, s2_end) = (
            dir.path().to_path_buf(),
            b.clone(),
            b_saved.clone(),
            fired.clone(),
            s2.stream.end.clone(),
        );
        let hooked = HookedCatalog::new(
            SqliteCatalog::open(&dir.join("repo/catalog.sqlite")).unwrap(),
            "delete_streams",
            move || {
                if fired.swap(true, Ordering::SeqCst) {
                    return;
                }
                let mut other = repo(&dir);
                other.config.rebase.max_incrementals = 50;
                edit(&b, "from-b");
                let s4 = save(&other, &b);
                assert_eq!(s4.stream.start.as_ref(), Some(&s2_end));
                *b_saved.lock().unwrap() = Some((s4.stream.end, tree::capture(&b)));
            },
        );
        trimming.catalog = Box::new(hooked);
    }
    let report = strata_repo::trim(&trimming, "proj", false).unwrap();
    assert!(fired.load(Ordering::SeqCst), "the hook never ran");
    let (s4, b_tree) = b_saved.lock().unwrap().take().unwrap();

    // The delete refused the stale plan; the trim planned again around s4.
    assert!(
        !report.plan.delete.contains(&s2.stream.id) && !report.plan.delete.contains(&s1.stream.id),
        "{:?}",
        report.plan
    );
    let left = streams(&r);
    let chain = strata_core::apply_plan(&left, Some(&s4)).expect("s4 is reachable");
    assert_eq!(chain.last().unwrap().end, s4);
    assert!(strata_core::analyze(&left).unwrap().unreachable.is_empty());
    restore_is(&r, dir.path(), &s4, &b_tree);
}

/// Bug 4: a save took as its base any snapshot some stream ends at, so
/// after bug 3 every later save from that directory was an incremental on
/// an unreachable snapshot. Now it writes a full stream and says why.
#[test]
fn a_save_on_an_unreachable_base_writes_a_full_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = repo(dir.path());
    r.config.rebase.max_incrementals = 50;
    let a = dir.path().join("proj");
    std::fs::create_dir(&a).unwrap();
    edit(&a, "one");
    let s1 = save(&r, &a);
    edit(&a, "two");
    let s2 = save(&r, &a);
    assert_eq!(s2.stream.start.as_ref(), Some(&s1.stream.end));
    // A catalog damaged as bug 3 left them: the full stream is gone.
    let db = rusqlite::Connection::open(dir.path().join("repo/catalog.sqlite")).unwrap();
    db.execute(
        "DELETE FROM manifests WHERE stream = ?1",
        [s1.stream.id.to_string()],
    )
    .unwrap();
    db.execute(
        "DELETE FROM streams WHERE id = ?1",
        [s1.stream.id.to_string()],
    )
    .unwrap();

    edit(&a, "three");
    let warnings = Warnings::default();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s3 = strata_repo::save(&r, &a, &SaveOptions::default(), &warnings).unwrap();
    assert_eq!(
        s3.stream.start, None,
        "an incremental on an unreachable base"
    );
    let w = warnings.0.lock().unwrap();
    assert!(
        w.iter()
            .any(|m| m.contains(s2.stream.end.as_str()) && m.contains("full stream")),
        "{w:?}"
    );
    restore_is(&r, dir.path(), &s3.stream.end, &tree::capture(&a));
}

#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

impl Progress for Warnings {
    fn warning(&self, path: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{path}: {message}"));
    }
}

/// A damaged catalog whose record does not describe the stream it points
/// at (another end, another length) never restores with success.
#[test]
fn restore_refuses_a_stream_its_catalog_record_does_not_describe() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    let a = dir.path().join("proj");
    std::fs::create_dir(&a).unwrap();
    edit(&a, "one");
    let s1 = save(&r, &a);
    let db = rusqlite::Connection::open(dir.path().join("repo/catalog.sqlite")).unwrap();
    let id = s1.stream.id.to_string();

    db.execute("UPDATE streams SET bytes = bytes + 1 WHERE id = ?1", [&id])
        .unwrap();
    refused_as_corrupt(&r, &dir.path().join("t1"), "catalog records");
    db.execute("UPDATE streams SET bytes = bytes - 1 WHERE id = ?1", [&id])
        .unwrap();

    let other = SnapshotId::new(s1.stream.end.ms() + 1, 7);
    db.execute(
        "UPDATE streams SET end_snap = ?2 WHERE id = ?1",
        [&id, &other.to_string()],
    )
    .unwrap();
    refused_as_corrupt(&r, &dir.path().join("t2"), other.as_str());
}

/// Restoring the project into `target` fails as corrupt data, naming
/// `needle`, and leaves no target behind.
fn refused_as_corrupt(r: &Repository, target: &Path, needle: &str) {
    let err = strata_repo::restore(r, "proj", target, &RestoreOptions::default(), &NoProgress)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(needle), "{err}");
    assert!(!target.exists());
}

/// A trim that deletes a stream while a restore of it runs makes the
/// restore fail with "restore again" (exit 4), not with a claim of damage.
#[test]
fn a_stream_trimmed_during_its_restore_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = repo(dir.path());
    let a = dir.path().join("proj");
    std::fs::create_dir(&a).unwrap();
    edit(&a, "one");
    let s1 = save(&r, &a);
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    let (db, id, project, f) = (
        dir.path().join("repo/catalog.sqlite"),
        s1.stream.id,
        s1.project.id,
        fired.clone(),
    );
    use strata_catalog::Catalog as _;
    r.catalog = Box::new(HookedCatalog::new(
        SqliteCatalog::open(&db).unwrap(),
        "manifest_page",
        move || {
            if !f.swap(true, Ordering::SeqCst) {
                let other = SqliteCatalog::open(&db).unwrap();
                other.delete_streams(project, &[id]).unwrap();
            }
        },
    ));
    let out = dir.path().join("out");
    let err = strata_repo::restore(&r, "proj", &out, &RestoreOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(fired.load(Ordering::SeqCst));
    assert_eq!(err.kind(), ErrorKind::Retry, "{err}");
    assert!(err.to_string().contains("deleted by a trim"), "{err}");
    assert!(!out.exists());
}
