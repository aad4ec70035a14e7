//! kill -9 a real `strata save` at random moments, on the embedded default
//! (50 rounds) and on the test cluster (Garage and PostgreSQL, 24 rounds,
//! the saves from three simulated hosts). Every ten kills, the repository
//! is consistent (`check --read-data` is clean), and after `scrub --grace
//! 0` no chunk outside committed streams survives; in the end every
//! snapshot that committed restores exactly the tree it saved.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;
use strata_testing::tree::{self, Node};

#[test]
fn killed_saves_never_leave_a_broken_repository() {
    kill_saves(&Env::new(), 50, &[]);
}

/// On the cluster the saves come from hosts `h-0`..`h-2` in turn. A scrub
/// from another host cannot see that their processes died (their records
/// live until the lease runs out), so it keeps what they uploaded; each
/// host's own scrub finds its killed saves dead and deletes it.
#[test]
fn killed_saves_never_leave_a_broken_repository_on_the_cluster() {
    let Some(env) = Env::on_cluster("kill9") else {
        return;
    };
    let hosts: Vec<Env> = (0..3).map(|i| env.as_host(&format!("h-{i}"))).collect();
    kill_saves(&env, 24, &hosts);
}

/// `rounds` saves of `env`'s project `proj`, most killed mid-way, from
/// `hosts` in turn (from `env` itself when there are none).
fn kill_saves(env: &Env, rounds: u64, hosts: &[Env]) {
    let host = |round: u64| {
        if hosts.is_empty() {
            env
        } else {
            &hosts[round as usize % hosts.len()]
        }
    };
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    for i in 0..4 {
        fs::write(
            p.join(format!("data-{i}.bin")),
            tree::content(2_000_000, i as u8),
        )
        .unwrap();
    }
    let first = Instant::now();
    env.save(&p, &[]);
    // How long a save takes here (at first the full save's time), kept up
    // to date from saves that finish: kills land uniformly inside that span
    // (start-up, walk, upload, commit).
    let mut typical = first.elapsed();
    let mut expected: BTreeMap<String, BTreeMap<String, Node>> = BTreeMap::new();
    expected.insert(env.snapshots("proj")[0].clone(), tree::capture(&p));

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut killed = 0;
    let (mut scrubbed, mut expired, mut late_deleted) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        // A change: a new file, an edit inside a big one, or a deletion.
        match round % 3 {
            0 => fs::write(
                p.join(format!("new-{round}.txt")),
                tree::content(300_000 + round as usize, round as u8),
            )
            .unwrap(),
            1 => {
                let mut d = fs::read(p.join("data-1.bin")).unwrap();
                let at = next(d.len() as u64) as usize;
                d[at] ^= 0xff;
                fs::write(p.join("data-1.bin"), d).unwrap();
            }
            _ => {
                let _ = fs::remove_file(p.join(format!("new-{}.txt", round - 2)));
            }
        }
        std::thread::sleep(Duration::from_millis(60));
        let capture = tree::capture(&p);
        let before = env.snapshots("proj").len();
        let mut child = host(round).spawn(&["save".as_ref(), p.as_os_str()]);
        let started = Instant::now();
        let at = Duration::from_micros(next(typical.as_micros() as u64 + 1));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            child.wait().unwrap();
        } else {
            typical = started.elapsed();
        }
        let after = env.snapshots("proj");
        if after.len() > before {
            // It committed before the kill: that snapshot is this tree.
            let new = after
                .iter()
                .find(|s| !expected.contains_key(*s))
                .unwrap()
                .clone();
            expected.insert(new, capture);
        }
        if round % 10 == 9 {
            let out = env
                .cmd()
                .args(["--json", "check", "--read-data"])
                .output()
                .unwrap();
            let last: Value =
                serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
                    .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "check after round {round}: {last}"
            );
            assert_eq!(last["problems"], 0);
            if !hosts.is_empty() {
                let other = env.as_host("maint").summary(&["scrub", "--grace", "0"]);
                assert_eq!(
                    other["expired_saves"], 0,
                    "a scrub expired another host's save before its lease ran out: {other}"
                );
            }
            // The killed saves' records are found dead (their processes are
            // gone) and what only they uploaded is deleted.
            for h in hosts.iter().chain(hosts.is_empty().then_some(env)) {
                let scrub = h.summary(&["scrub", "--grace", "0"]);
                scrubbed += scrub["deleted"].as_u64().unwrap();
                expired += scrub["expired_saves"].as_u64().unwrap();
            }
            if !hosts.is_empty() {
                // An object store finishes a PUT its client sent before it
                // was killed, maybe after the scrub that expired the save:
                // an object nothing names (docs/gc.md). The next scrub
                // deletes it; nothing else may be left.
                std::thread::sleep(Duration::from_secs(2));
                let late = env.as_host("maint").summary(&["scrub", "--grace", "0"]);
                late_deleted += late["deleted"].as_u64().unwrap();
            }
            env.assert_no_garbage(&format!("after the scrubs of round {round}"));
        }
    }
    eprintln!(
        "scrubs expired {expired} dead saves and deleted {scrubbed} objects, then {late_deleted} late ones"
    );
    // (Chunks a killed save uploaded are mostly adopted by the next save of
    // the same tree; `scrub.rs` kills a save mid-upload of content never
    // saved again and watches scrub delete it.)
    assert!(expired > 0, "no killed save was found dead by scrub");
    eprintln!(
        "{killed} of {rounds} saves killed mid-way; {} snapshots committed",
        expected.len()
    );
    assert!(
        killed >= rounds * 2 / 5,
        "only {killed} of {rounds} saves were killed mid-way; the timing is off"
    );
    assert!(expected.len() >= 2, "no killed-round save committed at all");
    for (snap, want) in &expected {
        let t = env.path(&format!("r-{snap}"));
        env.cmd()
            .args(["restore", "proj", t.to_str().unwrap(), "--snapshot", snap])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&t), snap);
        fs::remove_dir_all(&t).unwrap();
    }
    // A save after all that works and is exact.
    host(0).save(&p, &[]);
}
