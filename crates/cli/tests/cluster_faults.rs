//! Faults of the cluster itself, during real saves: a Garage node killed
//! mid-save, then replaced by a new, empty node while another is down;
//! PostgreSQL restarted mid-save. Each asserts what users depend on: the
//! save that was running completes, every snapshot restores byte for byte,
//! `check --read-data` is clean.
//!
//! These tests stop services other tests use, so nextest runs them alone
//! (`.config/nextest.toml`: they take every test thread).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use strata_testing::tree;

/// Runs `scripts/cluster ARGS` (the same state directory as the suite's).
fn cluster(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster");
    let out = Command::new(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the node again however the test ends.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        cluster(&["start-node", self.0]);
    }
}

/// Starts a save of `p` and runs `fault` once the save has run a while;
/// the save must still be running when the fault is done (else the test
/// proves nothing) and must then succeed. Returns its debug log.
fn save_through(env: &Env, p: &Path, fault: impl FnOnce()) -> String {
    std::thread::sleep(Duration::from_millis(60));
    let log = env.path("save.log");
    let mut child: Child = env
        .program()
        .env("STRATA_LOG", "debug")
        .arg("save")
        .arg(p)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the save ended before the fault"
    );
    fault();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the save ended before the fault was over ({:?}): make it bigger",
        started.elapsed()
    );
    let status = child.wait().unwrap();
    let log = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "the save failed: {status}\n{log}");
    eprintln!("the save took {:?} with the fault", started.elapsed());
    log
}

/// Each of `snaps` restores exactly its tree; `check --read-data` is clean.
fn all_restore(c: &Env, snaps: &[String], trees: &[&BTreeMap<String, tree::Node>]) {
    assert_eq!(snaps.len(), trees.len(), "{snaps:?}");
    for (snap, want) in snaps.iter().zip(trees) {
        c.restore_matches("proj", snap, want);
    }
    let check = c.summary(&["check", "--read-data"]);
    assert_eq!(check["problems"], 0, "{check}");
}

/// Random content big enough that a save of it takes seconds here.
fn big(p: &Path, name: &str, seed: u8, len: usize) {
    fs::write(p.join(name), tree::content(len, seed)).unwrap();
}

/// A node killed while a save uploads: the save completes (the write
/// quorum is two of three, and nginx fails over) and both snapshots
/// restore byte for byte while it stays down. Then that node is replaced
/// by a new, empty one and a different node is killed: with node 1 and the
/// new node 2 only, every read needs the new node's replicas (quorum 2 of
/// 3), so the restores prove re-replication happened.
#[test]
fn a_node_killed_mid_save_then_replaced_while_another_is_down_loses_nothing() {
    let Some(c) = Env::on_cluster("nodedown") else {
        return;
    };
    let p = c.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    big(&p, "a.bin", 1, 64_000_000);
    c.save(&p, &[]);
    let first = tree::capture(&p);

    big(&p, "b.bin", 2, 64_000_000);
    let restart = Restart("2");
    save_through(&c, &p, || cluster(&["kill-node", "2"]));
    let second = tree::capture(&p);
    let all = c.snapshots("proj");
    all_restore(&c, &all, &[&first, &second]);
    drop(restart);

    cluster(&["replace-node", "2"]);
    cluster(&["kill-node", "3"]);
    let _restart = Restart("3");
    all_restore(&c, &all, &[&first, &second]);
}

/// PostgreSQL stops (fast shutdown: every connection is cut) and starts
/// again while a save runs: the pool replaces its dead connections
/// (connecting again until the server is back; a catalog call that fails
/// meanwhile is transient and retried), and the save completes; both
/// snapshots restore byte for byte.
#[test]
fn postgres_restarted_mid_save_the_save_completes_after_retries() {
    let Some(c) = Env::on_cluster("pgrestart") else {
        return;
    };
    let p = c.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    c.save(&p, &[]);
    let first = tree::capture(&p);
    // A restart takes a second or two: the save must outlast it.
    big(&p, "b.bin", 3, 128_000_000);
    let log = save_through(&c, &p, || cluster(&["restart-pg"]));
    // The save was running before the restart and after it (asserted by
    // save_through), so its commit ran on connections made after it: every
    // pooled one was cut. How it got them is told, not asserted: the pool
    // drops a closed connection on checkout without a word, finds one that
    // dies in its check ("error connecting to server" while the server is
    // still down), or a call fails as transient and is retried.
    let met = log
        .lines()
        .filter(|l| {
            l.contains("error connecting to server")
                || (l.contains("transient failure; retrying") && l.contains("catalog"))
        })
        .count();
    eprintln!("{met} logged reconnects or retries");
    let second = tree::capture(&p);
    let all = c.snapshots("proj");
    all_restore(&c, &all, &[&first, &second]);
}

/// A running `strata --json monitor --watch` and the statuses it printed.
struct Watch {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Watch {
    fn start(env: &Env) -> Watch {
        let mut child = env
            .program()
            .args(["--json", "monitor", "--watch", "--interval", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&l).unwrap());
            }
        });
        Watch { child, lines }
    }

    /// Waits up to `secs` for a status printed after the first `after`
    /// that `pred` accepts; the monitor must still be running.
    fn wait(
        &mut self,
        after: usize,
        secs: u64,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the monitor exited while {what}"
            );
            {
                let lines = self.lines.lock().unwrap();
                if let Some(i) = lines.iter().skip(after).position(&pred) {
                    return after + i + 1;
                }
                assert!(
                    Instant::now() < deadline,
                    "no status {what} in {secs} s: {:#?}",
                    lines.last()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts PostgreSQL again however the test ends.
struct StartPg;

impl Drop for StartPg {
    fn drop(&mut self) {
        cluster(&["start-pg"]);
    }
}

/// The monitor with PostgreSQL stopped keeps running: it shows the
/// catalog's last good data marked stale with the failure named, the
/// store still answering, and recovers when PostgreSQL is back.
#[test]
fn the_monitor_keeps_running_with_postgres_stopped_and_says_so() {
    let Some(c) = Env::on_cluster("monpg") else {
        return;
    };
    c.configure("monitor", "timeout-secs = 2");
    c.cmd()
        .args(["hosts", "add", "h1", "--zone", "z"])
        .assert()
        .success();
    let mut w = Watch::start(&c);
    let ok = |v: &serde_json::Value| {
        v["catalog"]["error"].is_null() && v["catalog"]["value"]["hosts"][0]["id"] == "h1"
    };
    let seen = w.wait(0, 60, "with the catalog answering", ok);
    let _start = StartPg;
    cluster(&["stop-pg"]);
    let seen = w.wait(seen, 60, "naming the catalog as down", |v| {
        v["catalog"]["error"].is_string()
            && v["catalog"]["value"]["hosts"][0]["id"] == "h1"
            && v["store"]["error"].is_null()
    });
    let down = w.lines.lock().unwrap()[seen - 1].clone();
    eprintln!("with PostgreSQL stopped: {}", down["catalog"]["error"]);
    // A few more refreshes while it is down: still running, still stale.
    let seen = w.wait(seen, 30, "still down", |v| {
        v["catalog"]["error"].is_string()
    });
    cluster(&["start-pg"]);
    w.wait(seen, 90, "with the catalog back", ok);
}

/// The monitor with a Garage node stopped keeps running and names the
/// node that is down (its probe), while the store (two of three nodes,
/// behind nginx) still answers.
#[test]
fn the_monitor_names_a_stopped_garage_node() {
    let Some(c) = Env::on_cluster("mongarage") else {
        return;
    };
    let nodes = common::cluster_setting("STRATA_TEST_GARAGE_NODES").unwrap();
    let probes: String = nodes
        .split(',')
        .enumerate()
        .map(|(i, a)| format!("garage-{} = \"{a}\"\n", i + 1))
        .collect();
    c.configure("monitor", &format!("timeout-secs = 3\n[probes]\n{probes}"));
    let mut w = Watch::start(&c);
    let node2 = |v: &serde_json::Value| {
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "garage-2")
            .cloned()
            .unwrap()
    };
    let seen = w.wait(0, 60, "with every node up", |v| {
        v["probes"]
            .as_array()
            .is_some_and(|p| p.len() == 3 && p.iter().all(|p| p["up"] == true))
    });
    let _restart = Restart("2");
    cluster(&["kill-node", "2"]);
    let seen = w.wait(seen, 60, "naming garage-2 as down", |v| {
        node2(v)["up"] == false
    });
    let status = w.lines.lock().unwrap()[seen - 1].clone();
    assert!(
        node2(&status)["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{status}"
    );
    w.wait(
        seen,
        60,
        "with the store answering through the other nodes",
        |v| {
            node2(v)["up"] == false
                && v["store"]["error"].is_null()
                && v["catalog"]["error"].is_null()
        },
    );
}
