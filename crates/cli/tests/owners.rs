//! Owners, set-id bits and read-only files through the `strata` binary, as
//! a user would meet them: a read-only file changed between saves restores
//! for the user who owns it; a user's setuid copy of a shell never becomes
//! a setuid-root binary when root restores it.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::Env;
use strata_testing::privilege::is_root;
use strata_testing::tree;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

/// Bug 1, the reported sequence: `echo secret > p/ro.txt; chmod 444; save;
/// chmod 400; save; restore` failed with "Permission denied" for a user.
#[test]
fn a_read_only_file_changed_between_saves_restores_for_its_user() {
    let env = Env::unprivileged();
    let p = env.path("p");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("ro.txt"), b"secret\n").unwrap();
    chmod(&p.join("ro.txt"), 0o444);
    env.save(&p, &[]);
    chmod(&p.join("ro.txt"), 0o400);
    let s2 = env.save(&p, &[]);
    assert_eq!(s2["kind"], "incremental");
    let want = tree::capture(&p);
    let out = env.path("out");
    env.cmd()
        .args(["restore", "p", out.to_str().unwrap()])
        .assert()
        .success();
    tree::assert_same(&want, &tree::capture(&out), &format!("as {}", env.who()));
    assert_eq!(fs::read(out.join("ro.txt")).unwrap(), b"secret\n");
}

/// Bug 2: a user's `chmod 4755` copy of a shell, restored by root, became
/// a setuid-root binary.
#[test]
fn a_users_setuid_file_restored_by_root_stays_the_users() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to give files to another user and restore owners");
        return;
    }
    let env = Env::new();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("sh"), b"#!/bin/sh\n").unwrap();
    fs::write(p.join("notes"), b"mine").unwrap();
    for e in ["", "sh", "notes"] {
        std::os::unix::fs::lchown(p.join(e), Some(1000), Some(1000)).unwrap();
    }
    chmod(&p.join("sh"), 0o4755);
    env.save(&p, &[]);

    // Owners as saved (numeric): the user's file with the bit.
    let t = env.path("as-saved");
    env.cmd()
        .args(["restore", "proj", t.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(owner_mode(&t.join("sh")), (1000, 1000, 0o4755));
    assert_eq!(owner_mode(&t).0, 1000);

    // Mapped to the local project user: theirs, with the bit.
    let t = env.path("mapped");
    env.cmd()
        .args([
            "restore",
            "proj",
            t.to_str().unwrap(),
            "--owner",
            "2000:2001",
        ])
        .assert()
        .success();
    for e in ["", "sh", "notes"] {
        assert_eq!(owner_mode(&t.join(e)).0, 2000, "{e}");
    }
    assert_eq!(owner_mode(&t.join("sh")), (2000, 2001, 0o4755));

    // Mapped to root: never root with the bit, and one warning says so.
    let t = env.path("to-root");
    env.cmd()
        .args(["restore", "proj", t.to_str().unwrap(), "--owner", "0:0"])
        .assert()
        .success()
        .stderr(predicates::str::contains("1 file(s) restored without"));
    assert_eq!(owner_mode(&t.join("sh")), (0, 0, 0o755));

    env.cmd()
        .args(["restore", "proj", env.path("bad").to_str().unwrap()])
        .args(["--owner", "alice"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("UID:GID"));
}

/// Without root: owners cannot be applied, set-id bits are dropped with one
/// warning line naming how many files, and `--owner` is refused.
#[test]
fn an_unprivileged_restore_drops_set_id_bits_with_one_warning() {
    let env = Env::unprivileged();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    for f in ["a", "b", "c"] {
        fs::write(p.join(f), f).unwrap();
    }
    env.give(&p);
    chmod(&p.join("a"), 0o4755);
    chmod(&p.join("b"), 0o2755);
    env.save(&p, &[]);
    let t = env.path("out");
    let out = env
        .cmd()
        .args(["restore", "proj", t.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("set-user-id"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("2 file(s)"), "{stderr}");
    assert_eq!(owner_mode(&t.join("a")).2, 0o755);
    assert_eq!(owner_mode(&t.join("b")).2, 0o755);
    assert_eq!(owner_mode(&t.join("c")).2, owner_mode(&p.join("c")).2);
    if env.nobody {
        assert_eq!(
            owner_mode(&t.join("a")).0,
            strata_testing::privilege::NOBODY
        );
    }
    env.cmd()
        .args(["restore", "proj", env.path("o2").to_str().unwrap()])
        .args(["--owner", "0:0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("needs root"));
}

/// Commands that only read never create a repository: a mistyped
/// `STRATA_REPO` is reported as missing, and nothing is left at the typo.
#[test]
fn reading_commands_never_create_a_repository() {
    let env = Env::new();
    let typo = env.path("repo-typo");
    for args in [
        &["projects"][..],
        &["streams", "p"][..],
        &["check"][..],
        &["restore", "p", "/nonexistent-target"][..],
        &["trim", "--all"][..],
        &["scrub", "--dry-run"][..],
    ] {
        env.cmd()
            .env("STRATA_REPO", &typo)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains("no strata repository"))
            .stderr(predicates::str::contains("repo-typo"));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    env.cmd()
        .env("STRATA_REPO", &typo)
        .arg("init")
        .assert()
        .success();
    assert!(typo.join("strata.toml").exists());
    env.cmd()
        .env("STRATA_REPO", &typo)
        .arg("projects")
        .assert()
        .success();
}
