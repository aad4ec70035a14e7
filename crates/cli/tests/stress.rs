//! Saves of several projects, trims and scrubs (no grace) run concurrently
//! as real `strata` processes for a bounded time, one project from two
//! working copies (so trims race saves onto snapshots their plans drop);
//! then every save that returned success restores while retention keeps
//! it: every retained snapshot restores exactly the tree it saved, the last
//! save of every working copy restores, no stream is unreachable, `check
//! --read-data` is clean, and a final scrub leaves no garbage. It runs on
//! the embedded default and on the test cluster (Garage and PostgreSQL),
//! there with every working copy on its own simulated host and the trims
//! and scrubs on a maintenance host.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use strata_testing::tree::{self, Node};

const PROJECTS: usize = 3;
const RUN_FOR: Duration = Duration::from_secs(20);
/// Saves that exited 4 (a trim took their base meanwhile) and ran again.
static RETRIED: AtomicU64 = AtomicU64::new(0);

type Trees = BTreeMap<String, BTreeMap<String, Node>>;
/// The last save of each working copy: (project, snapshot, tree).
type LastSaves = Mutex<Vec<(String, String, BTreeMap<String, Node>)>>;

#[test]
fn saves_trims_and_scrubs_run_together_and_every_retained_snapshot_restores() {
    stress(&Env::new(), false);
}

#[test]
fn saves_trims_and_scrubs_run_together_on_the_cluster_from_several_hosts() {
    let Some(env) = Env::on_cluster("stress") else {
        return;
    };
    stress(&env, true);
}

/// The stress run on `env`; with `hosts`, each working copy saves as its
/// own host (`h-N`) and trims and scrubs run as host `maint`.
fn stress(env: &Env, hosts: bool) {
    let on = |name: String| {
        if hosts {
            env.as_host(&name)
        } else {
            env.share()
        }
    };
    let maint = on("maint".into());
    // Short chains, so trims have streams to delete and scrubs garbage.
    env.configure("rebase", "max-incrementals = 2");

    let saved: Mutex<BTreeMap<String, Trees>> = Mutex::new(BTreeMap::new());
    let last: LastSaves = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let (trims, scrubs, deleted) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for n in 0..PROJECTS {
            let (env, saved, last, stop) = (on(format!("h-{n}")), &saved, &last, &stop);
            s.spawn(move || {
                let env = &env;
                let name = format!("proj{n}");
                let p = env.path(&name);
                fs::create_dir(&p).unwrap();
                tree::sample_tree(&p);
                save_rounds(env, &name, &p, n, saved, last, stop);
            });
        }
        // A second working copy of proj0, restored from its first snapshot:
        // its saves fork the chain and land on snapshots trims drop.
        {
            let (env, saved, last, stop) = (on(format!("h-{PROJECTS}")), &saved, &last, &stop);
            s.spawn(move || {
                let env = &env;
                let first = loop {
                    if let Some(t) = saved.lock().unwrap().get("proj0")
                        && let Some(snap) = t.keys().next()
                    {
                        break snap.clone();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                let p = env.path("proj0-copy");
                let restored = env
                    .cmd()
                    .args([
                        "restore",
                        "proj0",
                        p.to_str().unwrap(),
                        "--snapshot",
                        &first,
                    ])
                    .output()
                    .unwrap();
                if !restored.status.success() {
                    // Trimmed before the copy was made: take the newest.
                    env.cmd()
                        .args(["restore", "proj0", p.to_str().unwrap()])
                        .assert()
                        .success();
                }
                save_rounds(env, "proj0", &p, PROJECTS, saved, last, stop);
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                maint.cmd().args(["trim", "--all"]).assert().success();
                trims.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let out = maint
                    .cmd()
                    .args(["--json", "scrub", "--grace", "0"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "scrub failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let summary: serde_json::Value =
                    serde_json::from_str(text.lines().last().unwrap()).unwrap();
                deleted.fetch_add(summary["deleted"].as_u64().unwrap(), Ordering::SeqCst);
                scrubs.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        while started.elapsed() < RUN_FOR {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let saved = saved.into_inner().unwrap();
    let saves: usize = saved.values().map(BTreeMap::len).sum();
    eprintln!(
        "{saves} saves ({} run again after exit 4), {} trims, {} scrubs deleting {} objects",
        RETRIED.load(Ordering::SeqCst),
        trims.load(Ordering::SeqCst),
        scrubs.load(Ordering::SeqCst),
        deleted.load(Ordering::SeqCst)
    );
    assert!(saves >= PROJECTS * 3, "only {saves} saves ran");
    assert!(scrubs.load(Ordering::SeqCst) >= 3);
    assert!(
        deleted.load(Ordering::SeqCst) > 0,
        "the scrubs never deleted anything: the test raced nothing"
    );

    // Every working copy's last save restores, whatever trims ran.
    for (name, snap, want) in last.into_inner().unwrap() {
        env.restore_matches(&name, &snap, &want);
    }
    // Every snapshot the catalog still has restores exactly.
    let mut restored = 0;
    for (name, trees) in &saved {
        let listed: Vec<String> = env
            .json(&["streams", name])
            .into_iter()
            .filter(|v| v["type"] == "stream")
            .map(|v| v["end"].as_str().unwrap().to_string())
            .collect();
        assert!(listed.len() >= 2, "{name}: {listed:?}");
        let unreachable: Vec<_> = env
            .json(&["streams", name])
            .into_iter()
            .filter(|v| v["type"] == "unreachable")
            .collect();
        assert!(unreachable.is_empty(), "{name}: {unreachable:?}");
        for snap in &listed {
            let want = trees
                .get(snap)
                .unwrap_or_else(|| panic!("{name}: unknown snapshot {snap}"));
            env.restore_matches(name, snap, want);
            restored += 1;
        }
    }
    eprintln!("{restored} retained snapshots restored exactly");
    let check = env.summary(&["check", "--read-data"]);
    assert_eq!(check["problems"], 0, "{check}");
    env.cmd().args(["scrub", "--grace", "0"]).assert().success();
    env.assert_no_garbage("after the stress run");
}

/// Edits and saves the working copy `p` of project `name` until `stop`,
/// recording every snapshot's tree and, at the end, the copy's last save.
fn save_rounds(
    env: &Env,
    name: &str,
    p: &std::path::Path,
    n: usize,
    saved: &Mutex<BTreeMap<String, Trees>>,
    last: &LastSaves,
    stop: &AtomicBool,
) {
    let mut round = 0usize;
    let mut mine = None;
    while !stop.load(Ordering::SeqCst) {
        // Each round replaces a sizeable file (old content turns into
        // garbage once trimmed) and adds a small one.
        fs::write(
            p.join("data.bin"),
            tree::content(1_500_000 + round, (n * 64 + round) as u8),
        )
        .unwrap();
        fs::write(
            p.join(format!("note-{round}.txt")),
            format!("{name} {round}\n"),
        )
        .unwrap();
        if round >= 2 {
            let _ = fs::remove_file(p.join(format!("note-{}.txt", round - 2)));
        }
        let (ev, again) = env.save_again_on_retry(p);
        RETRIED.fetch_add(u64::from(again), Ordering::SeqCst);
        let snap = ev["snapshot"].as_str().unwrap().to_string();
        let t = tree::capture(p);
        saved
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .insert(snap.clone(), t.clone());
        mine = Some((name.to_string(), snap, t));
        if round == 0 {
            env.keep_only_last(name, 2);
        }
        round += 1;
    }
    last.lock().unwrap().extend(mine);
}
