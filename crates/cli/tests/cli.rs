//! The `strata` binary, end to end, on the embedded default repository.

mod common;

use std::fs;

use common::Env;
use serde_json::Value;
use strata_testing::tree;

#[test]
fn save_edit_save_restore_both_snapshots() {
    // As this user and, when that is root, as nobody.
    for env in Env::both() {
        eprintln!("save_edit_save_restore_both_snapshots as {}", env.who());
        save_edit_save_restore_both_snapshots_in(&env);
    }
}

fn save_edit_save_restore_both_snapshots_in(env: &Env) {
    let thesis = env.path("thesis");
    fs::create_dir(&thesis).unwrap();
    tree::sample_tree(&thesis);
    let first_tree = tree::capture(&thesis);
    let s1 = env.save(&thesis, &[]);
    assert_eq!(s1["kind"], "full");
    assert_eq!(s1["project"], "thesis");
    assert_eq!(s1["created_project"], true);

    fs::write(thesis.join("docs/notes.md"), b"# notes\nmore\n").unwrap();
    fs::remove_file(thesis.join("empty")).unwrap();
    let second_tree = tree::capture(&thesis);
    let s2 = env.save(&thesis, &[]);
    assert_eq!(s2["kind"], "incremental");
    assert_eq!(s2["start"], s1["snapshot"]);
    assert_eq!(s2["deleted"], 1);
    assert!(
        s2["bytes"].as_u64().unwrap() < s1["bytes"].as_u64().unwrap() / 10,
        "{s2}"
    );

    // A save with no change carries nothing new.
    let s3 = env.save(&thesis, &[]);
    assert_eq!(s3["changed"], 0, "{s3}");
    // Only the stream's own header and trailer are new.
    assert!(s3["new_bytes"].as_u64().unwrap() < 512, "{s3}");

    let streams: Vec<_> = env
        .json(&["streams", "thesis"])
        .into_iter()
        .filter(|s| s["type"] == "stream")
        .collect();
    assert_eq!(streams.len(), 3);
    assert!(streams.iter().all(|s| s["role"] == "chain"), "{streams:?}");
    assert_eq!(streams[0]["kind"], "full");
    assert!(
        streams.iter().all(|s| s["engine"] == "native"),
        "{streams:?}"
    );

    let t1 = env.path("t1");
    let first = s1["snapshot"].as_str().unwrap();
    env.cmd()
        .args([
            "restore",
            "thesis",
            t1.to_str().unwrap(),
            "--snapshot",
            first,
        ])
        .assert()
        .success();
    tree::assert_same(&first_tree, &tree::capture(&t1), "first snapshot");
    let t2 = env.path("t2");
    env.cmd()
        .args(["restore", "thesis", t2.to_str().unwrap()])
        .assert()
        .success();
    tree::assert_same(&second_tree, &tree::capture(&t2), "newest snapshot");

    // The restored directory remembers its project and snapshot: saving it
    // is an incremental on top of what was restored.
    fs::write(t1.join("new-file"), b"moved host").unwrap();
    let s4 = env.save(&t1, &[]);
    assert_eq!(s4["project"], "thesis");
    assert_eq!(s4["kind"], "incremental");
    assert_eq!(s4["start"], s1["snapshot"]);
    assert!(s4["changed"].as_u64().unwrap() <= 3, "{s4}");
    assert!(!t1.join(".strata").exists());

    let projects = env.json(&["projects"]);
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0]["streams"], 4);
}

#[test]
fn errors_are_named_with_exit_codes() {
    let env = Env::new();
    let a = env.path("a/proj");
    let b = env.path("b/proj");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), b"1").unwrap();
    env.save(&a, &[]);
    // Same name, other directory: refused with a hint.
    env.cmd()
        .args(["save", b.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--project"));
    env.cmd()
        .args(["restore", "nope", env.path("x").to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("nope"));
    // An occupied target is refused and left alone.
    env.cmd()
        .args(["restore", "proj", a.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("not empty"));
    env.cmd()
        .args([
            "restore",
            "proj",
            env.path("y").to_str().unwrap(),
            "--snapshot",
            "bogus",
        ])
        .assert()
        .code(2);
    env.cmd()
        .args(["save", env.path("missing").to_str().unwrap()])
        .assert()
        .code(2);
    env.cmd().args(["frobnicate"]).assert().code(2);
}

#[test]
fn corrupt_chunk_fails_restore_naming_it_and_leaves_no_target() {
    // As this user and, when that is root, as nobody.
    for env in Env::both() {
        eprintln!(
            "corrupt_chunk_fails_restore_naming_it_and_leaves_no_target as {}",
            env.who()
        );
        corrupt_chunk_fails_restore_naming_it_and_leaves_no_target_in(&env);
    }
}

fn corrupt_chunk_fails_restore_naming_it_and_leaves_no_target_in(env: &Env) {
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("big"), tree::content(3_000_000, 5)).unwrap();
    env.save(&p, &[]);
    let victim = env.a_chunk_file();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&victim, bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let target = env.path("restored");
    env.cmd()
        .args(["restore", "proj", target.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicates::str::contains(name.as_str()))
        .stderr(predicates::str::contains("proj"));
    assert!(!target.exists());
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".strata-restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn hundred_thousand_files_under_ulimit_64() {
    let env = Env::new();
    let p = env.path("many");
    for d in 0..100 {
        let sub = p.join(format!("d{d:03}/e{}", d % 7));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            fs::write(sub.join(format!("f{f:04}")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let script = format!(
        "ulimit -n 64 && {bin} --json save {dir} && {bin} --quiet restore many {out}",
        bin = bin.display(),
        dir = p.display(),
        out = env.path("back").display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("STRATA_REPO", env.path("repo"))
        .env("STRATA_STATE_DIR", env.path("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(saved["entries"], 100_000 + 100 * 2 + 1);
    assert_eq!(
        fs::read_to_string(env.path("back/d042/e0/f0999")).unwrap(),
        "42/999\n"
    );
    let count = walkdir::WalkDir::new(env.path("back"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(count, 100_000);
}

#[test]
fn quiet_json_and_broken_pipe() {
    let env = Env::new();
    let p = env.path("p");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("f"), b"x").unwrap();
    env.cmd()
        .args(["--quiet", "save", p.to_str().unwrap()])
        .assert()
        .success()
        .stdout("");
    env.cmd()
        .args(["--help"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Exit codes"));

    // stdout is a pipe whose reader is already gone: every write fails with
    // EPIPE. strata exits 0, quietly (a println! would panic with 101).
    for args in [&["projects"][..], &["--json", "streams", "p"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
            .args(args)
            .env("STRATA_REPO", env.path("repo"))
            .env("STRATA_STATE_DIR", env.path("state"))
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Many hosts, one repository: the host id is explicit (`STRATA_HOST_ID`)
/// and recorded with each stream; settings every host must agree on live in
/// the catalog, and a host whose own settings differ is refused, naming both.
#[test]
fn host_ids_are_recorded_and_hosts_must_agree_on_settings() {
    let env = Env::new();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("f"), b"one").unwrap();
    env.cmd()
        .env("STRATA_HOST_ID", "host-a")
        .args(["--quiet", "save", p.to_str().unwrap()])
        .assert()
        .success();
    let streams = env.json(&["streams", "proj"]);
    let stream = streams.iter().find(|v| v["type"] == "stream").unwrap();
    assert_eq!(stream["host"], "host-a", "{stream}");

    // Another host's strata.toml with another chunker.
    env.configure(
        "chunker",
        "min-size = 65536\navg-size = 262144\nmax-size = 1048576\nzstd-level = 3",
    );
    env.cmd()
        .arg("projects")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("differ from the repository"))
        .stderr(predicates::str::contains("avg-size=262144"));
}

/// A restore is on disk before it is renamed into place, and the rename
/// before the directory is recorded as holding the snapshot: the order of
/// the system calls of a real restore (traced with strace), as this user
/// and as nobody. The chain restored has a stream of metadata-only changes
/// (every file touched, bytes unchanged), restored exactly.
#[test]
fn a_restore_is_durable_before_it_is_renamed_and_recorded() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing (scripts/test installs it)"
        );
        eprintln!("SKIPPED: strace is not installed");
        return;
    }
    for env in Env::both() {
        let src = env.path("proj");
        fs::create_dir(&src).unwrap();
        tree::sample_tree(&src);
        env.give(&src);
        env.save(&src, &[]);
        // Every file touched (mtime and mode), no byte changed.
        for e in walkdir::WalkDir::new(&src).into_iter().flatten() {
            if e.file_type().is_file() {
                let t = filetime::FileTime::from_unix_time(1_700_000_000, 5);
                filetime::set_file_mtime(e.path(), t).unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(60));
        let s2 = env.save(&src, &[]);
        assert!(s2["changed"].as_u64().unwrap() > 3, "{s2}");
        let want = tree::capture(&src);

        let target = env.path("restored");
        let log = env.path("restore.strace");
        let prog = env.program();
        let mut c = std::process::Command::new("strace");
        // -y: descriptors printed with their paths.
        c.args(["-f", "-qq", "-y", "-o"])
            .arg(&log)
            .args(["-e", "trace=syncfs,fsync,rename,renameat,renameat2"])
            .arg(prog.get_program())
            .args(prog.get_args())
            .args(["restore", "proj"])
            .arg(&target);
        for (k, v) in prog.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tree::assert_same(&want, &tree::capture(&target), "restored chain");

        let trace = fs::read_to_string(&log).unwrap();
        let line = |pred: &dyn Fn(&str) -> bool, what: &str| {
            trace
                .lines()
                .position(pred)
                .unwrap_or_else(|| panic!("no {what} in the trace:\n{trace}"))
        };
        let target_s = target.display().to_string();
        let synced = line(&|l| l.contains("syncfs("), "syncfs");
        let renamed = line(
            &|l| l.contains("rename") && l.contains("/tree\"") && l.contains(&target_s),
            "rename of the tree onto the target",
        );
        let parent = format!("<{}>", target.parent().unwrap().display());
        let parent_synced = trace
            .lines()
            .enumerate()
            .skip(renamed)
            .find(|(_, l)| l.contains("fsync(") && l.contains(&parent))
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no fsync of {parent} after the rename:\n{trace}"));
        let recorded = line(
            &|l| l.contains("rename") && l.contains("state.toml.tmp"),
            "rename of state.toml",
        );
        assert!(
            synced < renamed && renamed < parent_synced && parent_synced < recorded,
            "order: syncfs {synced}, rename {renamed}, fsync {parent_synced}, record {recorded}\n{trace}"
        );
    }
}
