//! The zfs and btrfs engines through the `strata` program, on the real
//! file systems `scripts/filesystems up` makes (one side to save from,
//! one to restore into, as two hosts would), each case once per engine:
//! chains of full and incremental streams round-trip byte for byte at
//! every snapshot (files, hard and symbolic links, a fifo, modes, times,
//! extended attributes); a restore onto a project that holds part of the
//! chain applies only the missing streams; a diverged project is refused,
//! naming what differs, until `--rollback`; trim, rebase, scrub and check
//! treat these chains as native ones; a save killed with SIGKILL leaves no
//! snapshot held or dangling once the next save ran, a killed restore no
//! staging once the next restore ran; a restore as an
//! unprivileged user fails clearly and leaves nothing behind.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::Env;
use serde_json::Value;
use strata_testing::filesystems::{self, Fs, Kind, Scratch};
use strata_testing::tree::{self, Node};

/// One test at a time: zfs-fuse serves one pool operation at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn on(fs: Option<Fs>, case: fn(&Fs)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(fs) = fs {
        case(&fs);
    }
}

strata_testing::filesystem_cases!(
    chains_round_trip_at_every_snapshot_and_onto_a_partial_copy,
    a_diverged_project_is_refused_naming_what_differs_until_rollback,
    trim_rebase_scrub_and_check_treat_the_chain_as_any_other,
    a_killed_save_leaves_no_snapshot_held_or_dangling,
    an_unprivileged_restore_fails_clearly_and_leaves_nothing,
);

/// The sample tree in the project, with extended attributes where the
/// file system keeps them (btrfs; zfs-fuse has none).
fn fill(fs: &Fs, project: &Path) {
    tree::sample_tree(project);
    if fs.kind == Kind::Btrfs {
        xattr::set(project.join("empty"), "user.origin", b"strata test").unwrap();
        xattr::set(project.join("docs"), "user.dir-note", b"a directory's").unwrap();
    }
}

fn edit(project: &Path, round: usize) {
    fs::write(
        project.join(format!("round-{round}.txt")),
        format!("round {round}\n"),
    )
    .unwrap();
    // Small beside the project's 700 kB, so the chain does not rebase.
    fs::write(
        project.join("src/deep/er/changing.bin"),
        tree::content(20_000 + round * 1000, round as u8),
    )
    .unwrap();
    if round == 2 {
        fs::remove_file(project.join("round-1.txt")).unwrap();
        fs::remove_file(project.join("dangling")).unwrap();
        // Changed where there are extended attributes.
        let _ = xattr::set(project.join("empty"), "user.origin", b"changed");
    }
}

/// The tree as saved: the project's entries, without what the file
/// system adds at its root.
fn capture(root: &Path) -> BTreeMap<String, Node> {
    tree::capture(root)
}

fn saved(env: &Env, project: &Scratch) -> Value {
    env.save(&project.path, &["--project", "proj"])
}

/// `strata restore proj TARGET ARGS`: the restored event.
fn restore(env: &Env, target: &Path, args: &[&str]) -> Value {
    let mut all = vec!["restore", "proj", target.to_str().unwrap()];
    all.extend_from_slice(args);
    env.json(&all)
        .into_iter()
        .find(|v| v["event"] == "restored")
        .expect("a restored event")
}

/// `strata restore proj TARGET ARGS`, which must fail with exit code
/// `code`: its standard error.
fn restore_fails(env: &Env, target: &Path, args: &[&str], code: i32) -> String {
    let out = env
        .cmd()
        .args(["restore", "proj", target.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chains_round_trip_at_every_snapshot_and_onto_a_partial_copy(fs: &Fs) {
    let env = Env::new();
    let project = fs.project("chain");
    fill(fs, &project.path);
    let mut captures = Vec::new();
    for round in 0..4 {
        if round > 0 {
            edit(&project.path, round);
        }
        // No --engine: detected from what holds the project.
        let ev = saved(&env, &project);
        assert_eq!(
            ev["kind"],
            if round == 0 { "full" } else { "incremental" },
            "{ev}"
        );
        captures.push((
            ev["snapshot"].as_str().unwrap().to_string(),
            capture(&project.path),
        ));
    }
    let name = fs.engine_name();
    let streams: Vec<Value> = env
        .json(&["streams", "proj"])
        .into_iter()
        .filter(|v| v["type"] == "stream")
        .collect();
    assert_eq!(streams.len(), 4);
    assert!(streams.iter().all(|s| s["engine"] == name), "{streams:?}");
    let projects = env.json(&["projects"]);
    assert_eq!(projects[0]["engine"], name, "{projects:?}");

    // Every snapshot into a new path, as another host would.
    let parent = fs.restore_parent("chain-parent");
    for (i, (snap, want)) in captures.iter().enumerate() {
        let target = parent.path.join(format!("at-{i}"));
        let ev = restore(&env, &target, &["--snapshot", snap]);
        assert_eq!(ev["streams"].as_array().unwrap().len(), i + 1);
        tree::assert_same(want, &capture(&target), snap);
    }
    // The copy at the second snapshot brought to the newest: only the two
    // streams it lacks are applied.
    let partial = parent.path.join("at-1");
    let ev = restore(&env, &partial, &[]);
    let applied: Vec<&str> = ev["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let ids: Vec<&str> = streams
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(applied, ids[2..], "{ev}");
    tree::assert_same(&captures[3].1, &capture(&partial), "brought up to date");
    // And it is a project like any other: saved from there (as the
    // restoring host would), an incremental on the newest.
    edit(&partial, 9);
    let ev = env.save(&partial, &["--project", "proj"]);
    assert_eq!(ev["kind"], "incremental", "{ev}");
    assert_eq!(ev["start"], captures[3].0.as_str());
    let again = parent.path.join("again");
    restore(&env, &again, &[]);
    tree::assert_same(&capture(&partial), &capture(&again), "saved from the copy");

    // The copy left at the first snapshot, edited and saved: a branch from
    // there, kept as a fork by the same rules as native chains; both heads
    // restore exactly, before and after a trim.
    let old = parent.path.join("at-0");
    edit(&old, 11);
    let ev = env.save(&old, &["--project", "proj"]);
    assert_eq!(
        (ev["kind"].as_str(), ev["start"].as_str()),
        (Some("incremental"), Some(captures[0].0.as_str())),
        "{ev}"
    );
    let heads = [
        (ev["snapshot"].as_str().unwrap().to_string(), capture(&old)),
        (
            env.json(&["streams", "proj"])
                .into_iter()
                .filter(|v| v["type"] == "stream" && v["start"] == captures[3].0.as_str())
                .map(|v| v["end"].as_str().unwrap().to_string())
                .next()
                .unwrap(),
            capture(&partial),
        ),
    ];
    let forks = |env: &Env| -> Vec<Value> {
        env.json(&["streams", "proj"])
            .into_iter()
            .filter(|v| v["type"] == "fork")
            .collect()
    };
    assert_eq!(forks(&env).len(), 1, "{:?}", forks(&env));
    env.json(&["trim", "proj"]);
    assert_eq!(forks(&env).len(), 1, "the fork survives the trim");
    for (i, (head, want)) in heads.iter().enumerate() {
        let target = parent.path.join(format!("head-{i}"));
        restore(&env, &target, &["--snapshot", head]);
        tree::assert_same(want, &capture(&target), head);
    }
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
}

fn a_diverged_project_is_refused_naming_what_differs_until_rollback(fs: &Fs) {
    let env = Env::new();
    let project = fs.project("diverge");
    fill(fs, &project.path);
    saved(&env, &project);
    let parent = fs.restore_parent("diverge-parent");
    let copy = parent.path.join("copy");
    restore(&env, &copy, &[]);
    edit(&project.path, 1);
    let newest = saved(&env, &project);
    let want = capture(&project.path);

    // Written to after its snapshot: refused, the write kept.
    fs::write(copy.join("local-work.txt"), b"unsaved work").unwrap();
    let err = restore_fails(&env, &copy, &[], 2);
    assert!(
        err.contains("has diverged") && err.contains("written to") && err.contains("--rollback"),
        "{err}"
    );
    assert_eq!(
        fs::read(copy.join("local-work.txt")).unwrap(),
        b"unsaved work"
    );
    // With --rollback: the write discarded, the newest snapshot there.
    restore(&env, &copy, &["--rollback"]);
    assert!(!copy.join("local-work.txt").exists());
    tree::assert_same(&want, &capture(&copy), "after --rollback");

    // A snapshot the chain does not know: refused, named.
    edit(&project.path, 2);
    saved(&env, &project);
    let want = capture(&project.path);
    let foreign = match fs.kind {
        Kind::Zfs => {
            let ds = filesystems::run("zfs", &["list", "-H", "-o", "name", copy.to_str().unwrap()]);
            filesystems::run("zfs", &["snapshot", &format!("{}@mine", ds.trim())]);
            "mine".to_string()
        }
        Kind::Btrfs => {
            let dir = filesystems::btrfs_snapshot_dir(&copy).unwrap();
            let snap = dir.join("strata-foreign");
            filesystems::run(
                "btrfs",
                &[
                    "subvolume",
                    "snapshot",
                    "-r",
                    copy.to_str().unwrap(),
                    snap.to_str().unwrap(),
                ],
            );
            "strata-foreign".to_string()
        }
    };
    let before = (fs.snapshots(&copy), capture(&copy));
    let err = restore_fails(&env, &copy, &[], 2);
    assert!(
        err.contains("has diverged") && err.contains(&foreign),
        "{err}"
    );
    assert_eq!(before.0, fs.snapshots(&copy), "the refusal changed nothing");
    tree::assert_same(&before.1, &capture(&copy), "the refusal changed nothing");
    assert!(
        before
            .0
            .contains(&newest["snapshot"].as_str().unwrap().to_string())
    );
    restore(&env, &copy, &["--rollback"]);
    tree::assert_same(
        &want,
        &capture(&copy),
        "after --rollback past a foreign snapshot",
    );
    let left = match fs.kind {
        Kind::Zfs => filesystems::run(
            "zfs",
            &[
                "list",
                "-H",
                "-t",
                "snapshot",
                "-o",
                "name",
                "-r",
                &fs.restore,
            ],
        ),
        Kind::Btrfs => fs.snapshots(&copy).join(" "),
    };
    assert!(
        !left.contains(&format!("@{foreign}")) && !left.contains("foreign"),
        "{left}"
    );
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
}

fn trim_rebase_scrub_and_check_treat_the_chain_as_any_other(fs: &Fs) {
    let env = Env::new();
    env.configure("rebase", "max-incrementals = 2");
    let project = fs.project("trim");
    fill(fs, &project.path);
    let mut kinds = Vec::new();
    let mut last = None;
    for round in 0..5 {
        if round > 0 {
            edit(&project.path, round);
        }
        let ev = saved(&env, &project);
        kinds.push(ev["kind"].as_str().unwrap().to_string());
        last = Some((
            ev["snapshot"].as_str().unwrap().to_string(),
            capture(&project.path),
        ));
    }
    // A rebase is a new full send.
    assert_eq!(
        kinds,
        ["full", "incremental", "incremental", "full", "incremental"]
    );
    env.keep_only_last("proj", 1);
    env.cmd().args(["trim", "proj"]).assert().success();
    let left = env.snapshots("proj");
    assert_eq!(
        left.len(),
        2,
        "the newest and the full it builds on: {left:?}"
    );
    env.cmd().args(["scrub", "--grace", "0"]).assert().success();
    env.assert_no_garbage("after trim and scrub");
    let (snap, want) = last.unwrap();
    let parent = fs.restore_parent("trim-parent");
    let target = parent.path.join("r");
    restore(&env, &target, &["--snapshot", &snap]);
    tree::assert_same(&want, &capture(&target), "the newest after trim");
    // A damaged chunk is found by check and makes a restore fail naming it,
    // leaving nothing.
    let chunk = env.a_chunk_file();
    let mut bytes = fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&chunk, &bytes).unwrap();
    let check = env.cmd().args(["check", "--read-data"]).output().unwrap();
    assert!(!check.status.success());
    let bad = parent.path.join("bad");
    let err = restore_fails(&env, &bad, &[], 3);
    assert!(err.contains("chunk"), "{err}");
    assert!(!bad.exists());
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
}

fn a_killed_save_leaves_no_snapshot_held_or_dangling(fs: &Fs) {
    let env = Env::new();
    let project = fs.project("kill");
    fill(fs, &project.path);
    fs::write(project.path.join("big.bin"), tree::content(8 << 20, 7)).unwrap();
    saved(&env, &project);
    for round in 0..6u64 {
        edit(&project.path, round as usize + 1);
        let mut child = env.spawn(&[
            "save".as_ref(),
            project.path.as_os_str(),
            "--project".as_ref(),
            "proj".as_ref(),
        ]);
        std::thread::sleep(Duration::from_millis(40 + round * 70));
        let _ = child.kill();
        child.wait().unwrap();
    }
    // The next save recovers: exactly one strata snapshot is left on the
    // project (the new base), and for zfs exactly it is held.
    edit(&project.path, 20);
    let ev = saved(&env, &project);
    let base = ev["snapshot"].as_str().unwrap().to_string();
    assert_eq!(fs.snapshots(&project.path), std::slice::from_ref(&base));
    if fs.kind == Kind::Zfs {
        assert_eq!(
            filesystems::held_snapshots(&project.dataset),
            [format!("{}@strata-{base}", project.dataset)]
        );
    }
    env.assert_no_garbage("after killed saves");
    let want = capture(&project.path);
    let parent = fs.restore_parent("kill-parent");
    let target = parent.path.join("r");
    // Restores killed midway leave staging behind; the next restore of
    // that target deletes it (its process is gone) and restores exactly.
    for round in 0..3u64 {
        let mut child = env.spawn(&["restore".as_ref(), "proj".as_ref(), target.as_os_str()]);
        std::thread::sleep(Duration::from_millis(100 + round * 150));
        let _ = child.kill();
        child.wait().unwrap();
        if target.exists() {
            break;
        }
    }
    restore(&env, &target, &[]);
    tree::assert_same(&want, &capture(&target), "after killed saves and restores");
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
    if fs.kind == Kind::Zfs {
        // A restored dataset that is not mounted (as a restore killed
        // between its rename and its mount leaves it): the next restore
        // mounts it and applies nothing, as it holds the whole chain.
        filesystems::run("zfs", &["unmount", &format!("{}/r", parent.dataset)]);
        let done = restore(&env, &target, &[]);
        assert_eq!(done["streams"].as_array().map(Vec::len), Some(0), "{done}");
        tree::assert_same(
            &want,
            &capture(&target),
            "after a restore onto the unmounted dataset",
        );
    }
}

fn an_unprivileged_restore_fails_clearly_and_leaves_nothing(fs: &Fs) {
    if !strata_testing::privilege::is_root() {
        return;
    }
    let env = Env::new();
    let project = fs.project("nobody");
    fill(fs, &project.path);
    saved(&env, &project);
    let parent = fs.restore_parent("nobody-parent");
    // The parent is nobody's: what stops the restore is the file system's
    // privileges, not a directory's.
    strata_testing::privilege::give_to_nobody(&parent.path);
    let nobody = Env {
        nobody: true,
        ..env.share()
    };
    strata_testing::privilege::give_to_nobody(env.dir.path());
    let target = parent.path.join("r");
    let out = nobody
        .cmd()
        .args(["restore", "proj", target.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // The file system let nobody restore (zfs-fuse's socket is open to
        // every user): then it is exact.
        tree::assert_same(&capture(&project.path), &capture(&target), "as nobody");
    } else {
        assert!(err.contains(fs.engine_name()), "names the command: {err}");
        assert!(!target.exists(), "nothing at the target");
    }
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new(), "{err}");
}
