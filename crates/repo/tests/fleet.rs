//! The project lease through real saves (`docs/fleet.md`): a save on the
//! host holding the lease commits under its token; a save elsewhere is
//! refused before it uploads anything; a save paused before its commit
//! while the lease ran out and another host took the project over is
//! refused by the fencing token in the commit transaction, recorded, and
//! leaves nothing committed, so the new holder's restore is the last
//! snapshot saved under a valid lease.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_catalog::{Catalog, HookedCatalog, HostRecord, Request, SqliteCatalog};
use strata_core::clock::Clock;
use strata_repo::{ErrorKind, NoProgress, Repository, RestoreOptions, SaveOptions};
use strata_testing::tree;

fn repo(dir: &Path, host: &str) -> Repository {
    let mut r = Repository::open_or_create(&dir.join("repo"), &|_| {}).unwrap();
    r.state_dir = dir.join(format!("state-{host}"));
    r.host_id = host.to_string();
    r
}

fn add_host(cat: &dyn Catalog, id: &str) {
    cat.add_host(&HostRecord::new(id, "z", 10, 0)).unwrap();
}

fn save(r: &Repository, dir: &Path) -> strata_repo::Result<strata_repo::SaveReport> {
    std::thread::sleep(Duration::from_millis(60));
    let opts = SaveOptions {
        project: Some("proj".into()),
        ..SaveOptions::default()
    };
    strata_repo::save(r, dir, &opts, &NoProgress)
}

#[test]
fn only_the_lease_holder_commits_and_a_late_commit_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("a.txt"), "first").unwrap();
    std::fs::write(work.join("big.bin"), tree::content(300_000, 1)).unwrap();
    let h1 = repo(dir.path(), "h1");
    let first = save(&h1, &work).unwrap();
    let project = first.project.id;
    add_host(h1.catalog.as_ref(), "h1");
    add_host(h1.catalog.as_ref(), "h2");
    let now = || h1.clock.now_ms();

    // Open on h1: h1's saves commit under token 1.
    let lease = h1
        .catalog
        .request(
            project,
            &Request::Open {
                on: Some("h1".into()),
            },
            now(),
            60_000,
        )
        .unwrap()
        .unwrap();
    assert_eq!(lease.token, 1);
    std::fs::write(work.join("a.txt"), "second").unwrap();
    let second = save(&h1, &work).unwrap();
    let saved_tree = tree::capture(&work);

    // Another host's save is refused before it uploads anything.
    let h2 = repo(dir.path(), "h2");
    let err = save(&h2, &work).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Input, "{err}");
    assert!(err.to_string().contains("open on host h1"), "{err}");
    assert_eq!(h1.catalog.streams(project).unwrap().len(), 2);

    // h1's next save pauses before its commit; meanwhile its lease (made
    // short) runs out and h2 takes the project over. The commit is
    // refused by the token.
    h1.catalog
        .request(project, &Request::Close, now(), 60_000)
        .unwrap();
    let l = h1.catalog.placement(project).unwrap().unwrap();
    h1.catalog
        .hand_over(
            project,
            &strata_catalog::Fence {
                host: "h1".into(),
                token: l.token,
            },
            None,
            now(),
            1,
        )
        .unwrap();
    h1.catalog
        .request(
            project,
            &Request::Open {
                on: Some("h1".into()),
            },
            now(),
            300,
        )
        .unwrap();
    let mut paused = repo(dir.path(), "h1");
    let fired = Arc::new(AtomicBool::new(false));
    {
        let (fired, path) = (fired.clone(), dir.path().join("repo/catalog.sqlite"));
        paused.catalog = Box::new(HookedCatalog::new(
            SqliteCatalog::open(&path).unwrap(),
            "commit_stream",
            move || {
                if fired.swap(true, Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(400));
                let other = SqliteCatalog::open(&path).unwrap();
                let now = strata_core::clock::SystemClock.now_ms();
                let p = other
                    .request(
                        project,
                        &Request::Open {
                            on: Some("h2".into()),
                        },
                        now,
                        60_000,
                    )
                    .unwrap()
                    .unwrap();
                assert_eq!((p.host.as_deref(), p.token), (Some("h2"), 3));
            },
        ));
    }
    std::fs::write(work.join("a.txt"), "written after the lease ran out").unwrap();
    let err = save(&paused, &work).unwrap_err();
    assert!(fired.load(Ordering::SeqCst), "the hook never ran");
    assert_eq!(err.kind(), ErrorKind::Input, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("project proj: host h1 (lease token 2) was refused")
            && msg.contains("granted again, to host h2 (token 3)")
            && msg.contains("nothing was committed"),
        "{msg}"
    );
    let streams = h1.catalog.streams(project).unwrap();
    assert_eq!(streams.len(), 2, "the refused stream is not there");
    let refused = h1.catalog.rejections(10).unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r.host == "h1" && r.token == 2 && r.project == project),
        "{refused:?}"
    );
    assert!(
        h1.catalog.saves().unwrap().is_empty(),
        "the refused save's record is gone"
    );

    // The new holder restores the last snapshot saved under a valid lease.
    let out = dir.path().join("on-h2");
    let r =
        strata_repo::restore(&h2, "proj", &out, &RestoreOptions::default(), &NoProgress).unwrap();
    assert_eq!(r.snapshot, second.stream.end);
    tree::assert_same(&saved_tree, &tree::capture(&out), "h2's copy");
    // And commits under its own token.
    std::fs::write(out.join("a.txt"), "h2 works on").unwrap();
    let third = save(&h2, &out).unwrap();
    assert_eq!(third.stream.start.as_ref(), Some(&second.stream.end));
}

/// A host's local copy of a project is caught up in place: only the
/// streams after the snapshot it holds are applied, none when it is
/// current; a copy changed since its snapshot, or of another project, is
/// refused and left as it is.
#[test]
fn a_local_copy_is_caught_up_in_place_with_only_the_missing_streams() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("a.txt"), "one").unwrap();
    std::fs::create_dir(work.join("sub")).unwrap();
    std::fs::write(work.join("sub/big.bin"), tree::content(400_000, 3)).unwrap();
    let h1 = repo(dir.path(), "h1");
    save(&h1, &work).unwrap();
    let h2 = repo(dir.path(), "h2");
    let copy = dir.path().join("copy");
    let in_place = RestoreOptions {
        in_place: true,
        ..RestoreOptions::default()
    };
    let r = strata_repo::restore(&h2, "proj", &copy, &in_place, &NoProgress).unwrap();
    assert_eq!(r.streams.len(), 1);

    // Two more saves on h1: a change, a deletion, a new file.
    std::fs::write(work.join("a.txt"), "two").unwrap();
    save(&h1, &work).unwrap();
    std::fs::remove_file(work.join("sub/big.bin")).unwrap();
    std::fs::write(work.join("sub/new.txt"), "three").unwrap();
    let newest = save(&h1, &work).unwrap();
    let want = tree::capture(&work);

    let r = strata_repo::restore(&h2, "proj", &copy, &in_place, &NoProgress).unwrap();
    assert_eq!(r.snapshot, newest.stream.end);
    assert_eq!(r.streams.len(), 2, "only the two missing incrementals");
    assert!(
        r.bytes < 100_000,
        "nothing re-downloaded whole: {} bytes",
        r.bytes
    );
    tree::assert_same(&want, &tree::capture(&copy), "caught up in place");
    let r = strata_repo::restore(&h2, "proj", &copy, &in_place, &NoProgress).unwrap();
    assert!(r.streams.is_empty(), "a current copy fetches nothing");
    tree::assert_same(&want, &tree::capture(&copy), "current");

    // Changed since its snapshot: refused, untouched.
    std::thread::sleep(Duration::from_millis(60));
    std::fs::write(copy.join("local-edit.txt"), "not saved").unwrap();
    let err = strata_repo::restore(&h2, "proj", &copy, &in_place, &NoProgress).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Input, "{err}");
    assert!(err.to_string().contains("changed since snapshot"), "{err}");
    assert_eq!(
        std::fs::read_to_string(copy.join("local-edit.txt")).unwrap(),
        "not saved"
    );
    // Without --in-place a non-empty target is refused as before.
    let err = strata_repo::restore(&h2, "proj", &copy, &RestoreOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    // Another project's copy: refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("x"), "x").unwrap();
    let opts = SaveOptions {
        project: Some("other".into()),
        ..SaveOptions::default()
    };
    strata_repo::save(&h2, &other, &opts, &NoProgress).unwrap();
    let err = strata_repo::restore(&h2, "proj", &other, &in_place, &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("it holds project \"other\""),
        "{err}"
    );
}
