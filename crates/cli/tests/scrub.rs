//! `strata scrub` end to end: after a trim it frees exactly what no
//! retained snapshot needs, honouring the grace period and `--dry-run`;
//! what a killed save uploaded is deleted once its process is gone.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::Env;
use strata_testing::tree;

fn chunk_files(env: &Env) -> Vec<String> {
    let chunks = env.path("repo/chunks");
    let mut out: Vec<String> = walkdir::WalkDir::new(&chunks)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_type().is_file() && e.path().parent() != Some(chunks.join("tmp").as_path())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn scrub_after_a_trim_frees_what_no_retained_snapshot_needs() {
    let env = Env::new();
    // Rebase after one incremental, so old streams become trimmable.
    env.configure("rebase", "max-incrementals = 1");

    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    fs::write(p.join("old.bin"), tree::content(3_000_000, 1)).unwrap();
    env.save(&p, &[]);
    let old_files = chunk_files(&env);
    fs::write(p.join("old.bin"), tree::content(3_000_000, 2)).unwrap();
    env.save(&p, &[]);
    fs::write(p.join("new.txt"), "after the rebase\n").unwrap();
    let last = env.save(&p, &[]);
    assert_eq!(last["kind"], "full", "{last}");
    let head = last["snapshot"].as_str().unwrap().to_string();
    let want = tree::capture(&p);

    // Keep only the newest snapshot: the first two streams go.
    env.cmd()
        .args(["retention", "proj", "--keep-last", "1"])
        .assert()
        .success();
    env.cmd().args(["trim", "proj"]).assert().success();
    let before = chunk_files(&env);
    // The first content of old.bin is named by nothing now.
    let garbage: Vec<&String> = old_files.iter().filter(|f| before.contains(f)).collect();
    assert!(!garbage.is_empty());

    // Inside the grace period nothing is deleted.
    let s = env.summary(&["scrub"]);
    assert_eq!(s["deleted"], 0, "{s}");
    assert!(s["kept_in_grace"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(chunk_files(&env), before);
    // A dry run reports and changes nothing.
    let dry = env.summary(&["scrub", "--dry-run", "--grace", "0"]);
    let would = dry["deleted"].as_u64().unwrap();
    assert!(would > 0, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(chunk_files(&env), before);
    // Without grace it deletes exactly that, and the freed bytes add up.
    let s = env.summary(&["scrub", "--grace", "0"]);
    assert_eq!(s["deleted"].as_u64().unwrap(), would, "{s}");
    assert_eq!(s["freed_bytes"], dry["freed_bytes"]);
    let after = chunk_files(&env);
    assert_eq!(after.len() as u64, before.len() as u64 - would);
    assert!(
        old_files
            .iter()
            .all(|f| !after.contains(f) || before.contains(f)),
        "nothing that was not there came back"
    );
    // The retained snapshot restores, and nothing unreferenced is left.
    env.restore_matches("proj", &head, &want);
    env.assert_no_garbage("after scrub --grace 0");
    // A second scrub finds nothing to do.
    let s = env.summary(&["scrub", "--grace", "0"]);
    assert_eq!(
        (s["deleted"].as_u64(), s["resumed"].as_bool()),
        (Some(0), Some(false))
    );
    // Text output names what it did.
    env.cmd()
        .args(["scrub", "--grace", "0"])
        .assert()
        .success()
        .stdout(predicates::str::contains("deleted 0 object(s)"));
    env.cmd()
        .args(["scrub", "--grace", "soon"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("\"soon\" is not a duration"));
}

#[test]
fn what_a_killed_save_uploaded_is_deleted_once_its_process_is_gone() {
    let env = Env::new();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    let first = env.save(&p, &[]);
    let snap = first["snapshot"].as_str().unwrap().to_string();
    let want = tree::capture(&p);
    let committed = chunk_files(&env).len();

    // Content no save will ever commit, big enough to be caught mid-upload.
    let other = env.path("other");
    fs::create_dir(&other).unwrap();
    for i in 0..8u8 {
        fs::write(
            other.join(format!("{i}.bin")),
            tree::content(8_000_000, 100 + i),
        )
        .unwrap();
    }
    let mut child = env.spawn(&["save".as_ref(), other.as_os_str()]);
    let started = Instant::now();
    while chunk_files(&env).len() < committed + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the save finished before it could be killed"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let orphans = chunk_files(&env).len() - committed;

    let check = env.summary(&["check", "--read-data"]);
    assert_eq!(check["problems"], 0, "{check}");
    assert_eq!(
        check["unreferenced_in_store"].as_u64().unwrap() as usize,
        orphans
    );
    // The dead save is expired at once; its objects are young, so the
    // default grace keeps them...
    let s = env.summary(&["scrub"]);
    assert_eq!(s["expired_saves"], 1, "{s}");
    assert_eq!(s["deleted"], 0, "{s}");
    assert_eq!(
        s["kept_in_grace"].as_u64().unwrap() as usize,
        orphans,
        "{s}"
    );
    // ...and no grace deletes every one of them, and nothing else.
    let s = env.summary(&["scrub", "--grace", "0"]);
    assert_eq!(s["deleted"].as_u64().unwrap() as usize, orphans, "{s}");
    assert_eq!(chunk_files(&env).len(), committed);
    env.assert_no_garbage("after the killed save was scrubbed");
    env.restore_matches("proj", &snap, &want);
    // The directory the killed save was reading saves fine afterwards.
    env.save(&other, &[]);
    env.assert_no_garbage("after saving the other directory");
}
