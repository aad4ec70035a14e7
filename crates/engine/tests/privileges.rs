//! What a restore may and may not grant: read-only entries restore for the
//! user who owns them, owners come back when root restores, set-id bits and
//! file capabilities never become privileges the saved tree did not have,
//! and a save never hangs on a file swapped for a FIFO.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Saved, restore, save};
use strata_engine::Quiet;
use strata_engine::native::{self, Owners, ReceiveOptions, ReceiveSummary};
use strata_testing::privilege::{also_unprivileged, is_root};
use strata_testing::tree;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bug: a patch of a read-only file opened it read-write without giving
/// its owner write permission first, so any change to a 0444 file (a
/// chmod, new content, a hardlink) made every later snapshot unrestorable
/// for anyone but root.
#[test]
fn read_only_entries_changed_between_saves_restore_for_their_owner() {
    also_unprivileged(
        "read_only_entries_changed_between_saves_restore_for_their_owner",
        || {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            fs::create_dir(&src).unwrap();
            fs::write(src.join("ro.txt"), b"secret\n").unwrap();
            chmod(&src.join("ro.txt"), 0o444);
            fs::write(src.join("big-ro.bin"), tree::content(300_000, 1)).unwrap();
            chmod(&src.join("big-ro.bin"), 0o444);
            fs::create_dir(src.join("frozen")).unwrap();
            fs::write(src.join("frozen/inside"), b"cold").unwrap();
            chmod(&src.join("frozen"), 0o555);
            std::thread::sleep(Duration::from_millis(60));
            let s1 = save(&src, None, 1);
            let c1 = tree::capture(&src);

            // A chmod only; new content in a read-only file; a change inside
            // a read-only directory; a hardlink to a read-only file.
            chmod(&src.join("ro.txt"), 0o400);
            chmod(&src.join("big-ro.bin"), 0o644);
            let mut big = tree::content(300_000, 1);
            big[100_000..100_010].copy_from_slice(b"0123456789");
            fs::write(src.join("big-ro.bin"), &big).unwrap();
            chmod(&src.join("big-ro.bin"), 0o444);
            chmod(&src.join("frozen"), 0o755);
            fs::write(src.join("frozen/inside"), b"warm").unwrap();
            chmod(&src.join("frozen"), 0o555);
            std::thread::sleep(Duration::from_millis(60));
            let s2 = save(&src, Some(&s1), 2);
            let c2 = tree::capture(&src);
            // The big file travelled as a patch (the case that failed).
            assert!(s2.stream.len() < 200_000, "{} bytes", s2.stream.len());

            fs::hard_link(src.join("ro.txt"), src.join("ro-link.txt")).unwrap();
            std::thread::sleep(Duration::from_millis(60));
            let s3 = save(&src, Some(&s2), 3);
            let c3 = tree::capture(&src);

            for (i, (chain, want)) in [
                (vec![&s1], &c1),
                (vec![&s1, &s2], &c2),
                (vec![&s1, &s2, &s3], &c3),
            ]
            .into_iter()
            .enumerate()
            {
                let t = dir.path().join(format!("t{i}"));
                restore(&chain, &t).unwrap_or_else(|e| panic!("snapshot {}: {e}", i + 1));
                tree::assert_same(want, &tree::capture(&t), &format!("snapshot {}", i + 1));
            }
            // Leave the temporary directory removable.
            for d in [src.join("frozen"), dir.path().join("t0/frozen")] {
                chmod(&d, 0o755);
            }
            for i in 1..3 {
                chmod(&dir.path().join(format!("t{i}/frozen")), 0o755);
            }
        },
    );
}

fn restore_as(chain: &[&Saved], target: &Path, owners: Owners) -> ReceiveSummary {
    fs::create_dir(target).unwrap();
    let mut holds: Option<String> = None;
    let mut total = ReceiveSummary {
        header: native::StreamHeader {
            start: None,
            end: String::new(),
            created_ms: 0,
        },
        entries: 0,
        file_bytes: 0,
        setid_dropped: 0,
        xattrs_skipped: 0,
    };
    for s in chain {
        let opts = ReceiveOptions {
            holds: holds.clone(),
            expect_end: Some(s.end.clone()),
            owners,
        };
        let r = native::receive(target, &s.stream[..], &opts, &Quiet).unwrap();
        holds = Some(r.header.end.clone());
        total.setid_dropped += r.setid_dropped;
        total.xattrs_skipped += r.xattrs_skipped;
        total.header = r.header;
    }
    total
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// `vfs_cap_data` revision 2 granting CAP_NET_RAW, effective.
fn net_raw_capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// Bug: root restored a user's `chmod 4755` copy of a shell as a
/// setuid-root binary (owners were recorded, not applied, but the mode
/// was). Now root applies the saved owners (owner before mode), maps the
/// tree with `Owners::Map`, and never leaves a set-id bit on a file root
/// owns; file capabilities are never restored.
#[test]
fn owners_round_trip_as_root_and_set_id_never_goes_to_root() {
    if !is_root() {
        eprintln!("SKIPPED: owners can only be restored by root; run the suite as root (CI does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("home")).unwrap();
    fs::write(src.join("home/sh"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("home/notes"), b"mine").unwrap();
    fs::write(src.join("root-suid"), b"root's").unwrap();
    fs::write(src.join("capable"), b"ping").unwrap();
    std::os::unix::fs::symlink("notes", src.join("home/link")).unwrap();
    for p in ["home", "home/sh", "home/notes", "home/link", "capable"] {
        lchown(&src.join(p), 1000, 1001);
    }
    // After the chown, which clears capabilities.
    xattr::set(
        src.join("capable"),
        "security.capability",
        &net_raw_capability(),
    )
    .unwrap();
    xattr::set(src.join("home/notes"), "trusted.strata", b"t").unwrap();
    chmod(&src.join("home/sh"), 0o4755);
    chmod(&src.join("root-suid"), 0o6755);
    chmod(&src.join("home"), 0o2775);
    std::thread::sleep(Duration::from_millis(60));
    let s1 = save(&src, None, 1);

    // As saved: the user's setuid file stays the user's, with the bit.
    let t = dir.path().join("as-saved");
    let r = restore_as(&[&s1], &t, Owners::AsSaved);
    assert_eq!(owner_mode(&t.join("home/sh")), (1000, 1001, 0o4755));
    assert_eq!(owner_mode(&t.join("home/notes")).0, 1000);
    assert_eq!(owner_mode(&t.join("home/link")).0, 1000);
    assert_eq!(owner_mode(&t.join("home")), (1000, 1001, 0o2775));
    // Root's own set-id file (or a stream claiming one) loses both bits.
    assert_eq!(owner_mode(&t.join("root-suid")), (0, 0, 0o755));
    assert_eq!(
        xattr::get(t.join("capable"), "security.capability").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(t.join("home/notes"), "trusted.strata").unwrap(),
        Some(b"t".to_vec())
    );
    assert_eq!((r.setid_dropped, r.xattrs_skipped), (1, 1));

    // Mapped to a project user: everything is theirs, set-id kept.
    let t = dir.path().join("mapped");
    restore_as(
        &[&s1],
        &t,
        Owners::Map {
            uid: 2000,
            gid: 2000,
        },
    );
    for p in [
        "",
        "home",
        "home/notes",
        "home/link",
        "root-suid",
        "capable",
    ] {
        assert_eq!(owner_mode(&t.join(p)).0, 2000, "{p}");
    }
    assert_eq!(owner_mode(&t.join("home/sh")), (2000, 2000, 0o4755));
    assert_eq!(owner_mode(&t.join("root-suid")), (2000, 2000, 0o6755));

    // Mapped to root: no set-id bit survives.
    let t = dir.path().join("to-root");
    let r = restore_as(&[&s1], &t, Owners::Map { uid: 0, gid: 0 });
    assert_eq!(owner_mode(&t.join("home/sh")), (0, 0, 0o755));
    assert_eq!(r.setid_dropped, 2);

    // The unprivileged policy: nothing chowned, bits and privileged
    // attributes dropped.
    let t = dir.path().join("unprivileged");
    let r = restore_as(&[&s1], &t, Owners::Unprivileged);
    assert_eq!(owner_mode(&t.join("home/sh")), (0, 0, 0o755));
    assert_eq!(
        xattr::get(t.join("home/notes"), "trusted.strata").unwrap(),
        None
    );
    assert_eq!((r.setid_dropped, r.xattrs_skipped), (2, 2));

    // An incremental that changes an owner: the new owner, bits kept.
    lchown(&src.join("home/notes"), 1002, 1002);
    chmod(&src.join("home/notes"), 0o2644);
    std::thread::sleep(Duration::from_millis(60));
    let s2 = save(&src, Some(&s1), 2);
    let t = dir.path().join("incremental");
    restore_as(&[&s1, &s2], &t, Owners::AsSaved);
    assert_eq!(owner_mode(&t.join("home/notes")), (1002, 1002, 0o2644));
    assert_eq!(owner_mode(&t.join("home/sh")), (1000, 1001, 0o4755));
}

/// A regular file swapped for a FIFO between the walk's `lstat` and the
/// open: the open must not wait for a writer forever.
#[test]
fn a_file_swapped_for_a_fifo_never_hangs_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let (file, fifo) = (dir.path().join("as-file"), dir.path().join("as-fifo"));
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Swap `src/x` between a regular file and a FIFO, atomically.
            while !stop.load(Ordering::Relaxed) {
                fs::write(&file, b"data").unwrap();
                let _ = fs::rename(&file, src.join("x"));
                let _ = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &fifo,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                );
                let _ = fs::rename(&fifo, src.join("x"));
            }
        });
        let src = src.clone();
        // Detached: a hang must fail the test, not block its scope.
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                for i in 0..300 {
                    save(&src, None, i);
                }
            });
            let _ = tx.send(r.is_ok());
        });
        let done = rx.recv_timeout(Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(done, Ok(true), "a save hung opening a FIFO (or failed)");
    });
}
