//! Send and receive round trips: every snapshot of a tree restores exactly.
//! Each test runs as this user and, when that is root, again as `nobody`
//! ([`also_unprivileged`]): root ignores permission bits, so only the
//! second run shows that read-only files and directories restore for the
//! users who own them. Restores never grant set-id bits on files that the
//! restoring user (root here, or nobody) would own, so expectations drop
//! them ([`tree::without_setid`]).

mod common;

use std::fs;

use common::{restore, restore_holding, save};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use strata_engine::native;
use strata_testing::privilege::also_unprivileged;
use strata_testing::tree::{self, Op};

#[test]
fn sample_tree_full_and_incremental() {
    also_unprivileged("sample_tree_full_and_incremental", sample_tree_body);
}

fn sample_tree_body() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    tree::sample_tree(&src);
    let before = tree::capture(&src);
    // Entries touched within the racy window are re-read by the next save.
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s1 = save(&src, None, 1);
    assert!(s1.summary.warnings == 0, "{:?}", s1.summary);

    // No change: the incremental carries nothing but header and trailer.
    let s2 = save(&src, Some(&s1), 2);
    assert_eq!(
        s2.summary.emitted + s2.summary.deleted,
        0,
        "{:?}",
        s2.summary
    );

    // Edits: append, replace a file by a directory and a directory by a file,
    // delete a subtree, add a hardlink to an unchanged file.
    fs::write(src.join("docs/notes.md"), b"# notes\nmore\n").unwrap();
    fs::remove_file(src.join("empty")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("empty/inside"), b"now a dir").unwrap();
    fs::remove_dir_all(src.join("docs/empty-dir")).unwrap();
    fs::write(src.join("docs/empty-dir"), b"now a file").unwrap();
    fs::remove_dir_all(src.join("src/deep")).unwrap();
    fs::hard_link(src.join("run.sh"), src.join("run-again.sh")).unwrap();
    let after = tree::capture(&src);
    let s3 = save(&src, Some(&s2), 3);
    assert!(s3.summary.deleted >= 1);
    assert!(
        s3.stream.len() < s1.stream.len() / 4,
        "incremental {} vs full {}",
        s3.stream.len(),
        s1.stream.len()
    );

    let t1 = dir.path().join("t1");
    restore(&[&s1], &t1).unwrap();
    tree::assert_same(&before, &tree::capture(&t1), "snapshot 1");
    let t3 = dir.path().join("t3");
    restore(&[&s1, &s2, &s3], &t3).unwrap();
    tree::assert_same(&after, &tree::capture(&t3), "snapshot 3");
}

#[test]
fn wrong_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"1").unwrap();
    let s1 = save(&src, None, 1);
    fs::write(src.join("f"), b"22").unwrap();
    let s2 = save(&src, Some(&s1), 2);
    let err = restore(&[&s2], &dir.path().join("t")).unwrap_err();
    assert!(err.to_string().contains("snap-1"), "{err}");
}

#[test]
fn build_index_after_restore_makes_next_save_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    tree::sample_tree(&src);
    let s1 = save(&src, None, 1);
    let t = dir.path().join("t");
    restore(&[&s1], &t).unwrap();
    // Let the restored timestamps leave the racy window.
    std::thread::sleep(std::time::Duration::from_millis(60));
    let restored = common::indexed_after_restore(&t, &s1.end, std::time::SystemTime::now());
    let s2 = save(&t, Some(&restored), 2);
    assert_eq!(
        s2.summary.emitted + s2.summary.deleted,
        0,
        "{:?}",
        s2.summary
    );
}

fn run_sequence(initial: &[Op], rounds: &[Vec<Op>]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for op in initial {
        tree::apply(&src, op);
    }
    let mut saved = Vec::new();
    let mut captures = Vec::new();
    captures.push(tree::capture(&src));
    saved.push(save(&src, None, 0));
    for (i, ops) in rounds.iter().enumerate() {
        for op in ops {
            tree::apply(&src, op);
        }
        captures.push(tree::capture(&src));
        let s = save(&src, saved.last(), i + 1);
        saved.push(s);
    }
    for i in 0..saved.len() {
        let chain: Vec<_> = saved[..=i].iter().collect();
        // The default session, and one that can hold back the metadata of
        // about two entries (the rest is applied at once).
        for (j, (budget, session)) in [
            ("default", native::ReceiveSession::default()),
            ("300 bytes", native::ReceiveSession::with_hold_budget(300)),
        ]
        .into_iter()
        .enumerate()
        {
            let t = dir.path().join(format!("t{i}-{j}"));
            restore_holding(&chain, &t, session)
                .unwrap_or_else(|e| panic!("restore of snapshot {i} (hold budget {budget}): {e}"));
            tree::assert_same(
                &tree::without_setid(captures[i].clone()),
                &tree::capture(&t),
                &format!("snapshot {i} (hold budget {budget})"),
            );
        }
    }
}

/// Random trees and edit rounds (read-only files and directories among
/// them, changing between saves) restore exactly, as root and as nobody.
#[test]
fn random_trees_and_edits_restore_exactly() {
    also_unprivileged("random_trees_and_edits_restore_exactly", || {
        let mut runner = TestRunner::new(Config {
            cases: 96,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (
            prop::collection::vec(tree::op(), 1..25),
            prop::collection::vec(prop::collection::vec(tree::op(), 1..8), 1..5),
        );
        runner
            .run(&strategy, |(initial, rounds)| {
                run_sequence(&initial, &rounds);
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn edits_inside_large_files_travel_as_patches() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big.bin"), tree::content(3_000_000, 4)).unwrap();
    fs::write(src.join("log.txt"), tree::content(500_000, 5)).unwrap();
    fs::write(src.join("shrinks.bin"), tree::content(900_000, 6)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s1 = save(&src, None, 1);
    let c1 = tree::capture(&src);

    // 4 KiB overwritten in the middle, a line appended, a file truncated.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(1_500_000)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    drop(f);
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("log.txt"))
        .unwrap()
        .write_all(b"one more line\n")
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("shrinks.bin"))
        .unwrap()
        .set_len(100_000)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s2 = save(&src, Some(&s1), 2);
    let c2 = tree::capture(&src);
    // Only the touched blocks travel (64 KiB blocks: at most a few).
    assert!(
        s2.stream.len() < 400_000,
        "incremental of {} bytes",
        s2.stream.len()
    );

    // A second edit patches against the blocks the first incremental recorded.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"patched again").unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s3 = save(&src, Some(&s2), 3);
    let c3 = tree::capture(&src);
    assert!(
        s3.stream.len() < 200_000,
        "incremental of {} bytes",
        s3.stream.len()
    );

    for (i, (chain, want)) in [
        (vec![&s1], &c1),
        (vec![&s1, &s2], &c2),
        (vec![&s1, &s2, &s3], &c3),
    ]
    .into_iter()
    .enumerate()
    {
        let t = dir.path().join(format!("t{i}"));
        restore(&chain, &t).unwrap();
        tree::assert_same(want, &tree::capture(&t), &format!("snapshot {}", i + 1));
    }
}

#[test]
fn removed_extended_attributes_stay_removed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), tree::content(200_000, 1)).unwrap();
    if xattr::set(src.join("f"), "user.keep", b"1").is_err() {
        eprintln!("no user xattrs on this file system; skipping");
        return;
    }
    xattr::set(src.join("f"), "user.gone", b"2").unwrap();
    xattr::set(src.join("d"), "user.gone", b"3").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s1 = save(&src, None, 1);
    // The file is re-created (it will travel as a patch of the old one) with
    // only one attribute; the directory loses its attribute.
    fs::remove_file(src.join("f")).unwrap();
    fs::write(src.join("f"), tree::content(200_000, 2)).unwrap();
    xattr::set(src.join("f"), "user.keep", b"1").unwrap();
    xattr::remove(src.join("d"), "user.gone").unwrap();
    fs::write(src.join("d/touch"), b"x").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s2 = save(&src, Some(&s1), 2);
    let t = dir.path().join("t");
    restore(&[&s1, &s2], &t).unwrap();
    let names = |p: &std::path::Path| {
        let mut v: Vec<String> = xattr::list(p)
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&t.join("f")), vec!["user.keep".to_string()]);
    assert!(names(&t.join("d")).is_empty(), "{:?}", names(&t.join("d")));
    assert_eq!(
        fs::read(t.join("f")).unwrap(),
        fs::read(src.join("f")).unwrap()
    );
}

/// The index built after a restore takes the rename instant as its racy
/// threshold: a same-size write just after the rename, before the index
/// walk, is read by the next save instead of being taken for part of the
/// restored snapshot.
#[test]
fn a_write_between_the_restore_and_its_index_is_saved_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"old").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let s1 = save(&src, None, 1);
    let t = dir.path().join("t");
    restore(&[&s1], &t).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let renamed_at = std::time::SystemTime::now();
    fs::write(t.join("f"), b"new").unwrap();
    // Long enough that a threshold taken at indexing time would trust it.
    std::thread::sleep(std::time::Duration::from_millis(120));
    let restored = common::indexed_after_restore(&t, &s1.end, renamed_at);
    let s2 = save(&t, Some(&restored), 2);
    assert_eq!(s2.summary.file_bytes, 3, "{:?}", s2.summary);
    let back = dir.path().join("back");
    restore(&[&s1, &s2], &back).unwrap();
    assert_eq!(fs::read(back.join("f")).unwrap(), b"new");
}

/// Sets the mtime of every entry below `root` but those `skip` names
/// (symlinks' own, directories after their contents) to `secs` plus its
/// position in the walk, as a project whose files are all rewritten with
/// the same bytes.
fn touch_all(root: &std::path::Path, secs: i64, skip: &[&str]) {
    let entries: Vec<_> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if skip.iter().any(|s| e.path() == root.join(s)) {
            continue;
        }
        let t = filetime::FileTime::from_unix_time(secs, i as u32 * 1000);
        if e.file_type().is_symlink() {
            filetime::set_symlink_file_times(e.path(), t, t).unwrap();
        } else {
            filetime::set_file_times(e.path(), t, t).unwrap();
        }
    }
}

/// A chain whose streams change only metadata (every mtime, some modes),
/// as when every file of a project is rewritten with the same bytes: the
/// receiver holds that metadata back to the end of the chain
/// (`ReceiveSession`), and every snapshot still restores exactly, with
/// read-only files and directories, a subtree deleted after its entries
/// were held, a hard link made to a held file and its first name deleted
/// later.
#[test]
fn metadata_only_chains_restore_the_last_metadata() {
    also_unprivileged("metadata_only_chains_restore_the_last_metadata", || {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in ["a", "b/c", "ro", "gone/deep"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        let files = [
            ("a/one.txt", &b"body 1: plain"[..]),
            ("a/two.txt", b"body 2: linked later"),
            ("a/ro.txt", b"body 3: 0444"),
            ("a/ro-owner.txt", b"body 4: 0400"),
            ("b/c/deep.txt", b"body 5: deep"),
            ("b/shared", b"body 6: two names"),
            ("ro/inside.txt", b"body 7: in a read-only dir"),
            ("gone/deep/x.txt", b"body 8: deleted later"),
            ("gone/y.txt", b"body 9: deleted later too"),
        ];
        for (f, body) in files {
            fs::write(src.join(f), body).unwrap();
        }
        fs::hard_link(src.join("b/shared"), src.join("b/shared-too")).unwrap();
        std::os::unix::fs::symlink("../a/one.txt", src.join("b/link")).unwrap();
        mode(&src.join("a/ro.txt"), 0o444);
        mode(&src.join("a/ro-owner.txt"), 0o400);
        touch_all(&src, 1_600_000_000, &[]);
        mode(&src.join("ro"), 0o555);
        let mut captures = vec![tree::capture(&src)];
        let mut saved = vec![save(&src, None, 0)];
        for round in 1..=6 {
            mode(&src.join("ro"), 0o755);
            let skip: &[&str] = match round {
                2 => {
                    mode(&src.join("a/one.txt"), 0o600);
                    &[]
                }
                3 => {
                    // A second name for a file whose metadata the last
                    // streams only touched; the file itself unchanged.
                    fs::hard_link(src.join("a/two.txt"), src.join("b/two-again")).unwrap();
                    &["a/two.txt", "b/two-again"]
                }
                4 => {
                    // Its first name goes; the second keeps the inode, as
                    // it was.
                    fs::remove_file(src.join("a/two.txt")).unwrap();
                    fs::remove_dir_all(src.join("gone")).unwrap();
                    &["b/two-again"]
                }
                _ => &[],
            };
            touch_all(&src, 1_600_000_000 + round * 1000, skip);
            mode(&src.join("ro"), if round % 2 == 0 { 0o500 } else { 0o555 });
            captures.push(tree::capture(&src));
            let s = save(&src, saved.last(), round as usize);
            assert!(s.summary.emitted >= 10, "round {round}: {:?}", s.summary);
            // Metadata only: no file's bytes travel (patches without data),
            // but for the file whose first name went: its second name
            // carries it now.
            for (f, body) in files
                .iter()
                .filter(|(f, _)| round != 4 || *f != "a/two.txt")
            {
                assert!(
                    !s.stream.windows(body.len()).any(|w| w == *body),
                    "round {round}: the bytes of {f} are in the stream"
                );
            }
            saved.push(s);
        }
        for i in 0..saved.len() {
            let chain: Vec<_> = saved[..=i].iter().collect();
            // Held to the end, held in part (about two entries' worth:
            // the rest applied at once, directories among them), none.
            for budget in [usize::MAX, 300, 0] {
                let t = dir.path().join(format!("t{i}-{budget}"));
                restore_holding(&chain, &t, native::ReceiveSession::with_hold_budget(budget))
                    .unwrap_or_else(|e| panic!("restore of snapshot {i} (budget {budget}): {e}"));
                tree::assert_same(
                    &captures[i],
                    &tree::capture(&t),
                    &format!("snapshot {i} (hold budget {budget})"),
                );
                mode(&t.join("ro"), 0o755);
            }
        }
        mode(&src.join("ro"), 0o755);
    });
}
