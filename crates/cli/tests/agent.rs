//! Agents as real processes, several on one machine (each its own host id
//! and projects directory), on the embedded default and on the test
//! cluster (Garage and PostgreSQL): open, periodic save, close, re-open
//! from the local copy with nothing fetched; a move under write load; kill
//! -9 of an agent and takeover by another host; a paused agent whose lease
//! ran out commits nothing after the takeover; a drain empties a host;
//! SIGTERM saves and hands back (`docs/fleet.md`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;
use strata_testing::tree;

/// A running `strata agent` and the events it printed.
struct Agent {
    child: Child,
    host: String,
    dir: PathBuf,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Agent {
    fn start(env: &Env, host: &str, save_every: u64) -> Agent {
        let dir = env.path(&format!("projects-{host}"));
        let mut child = env
            .as_host(host)
            .program()
            .args(["--json", "agent", "--projects-dir", dir.to_str().unwrap()])
            .args(["--save-every", &save_every.to_string(), "--tick-ms", "200"])
            .args(["--move-wait", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let who = host.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent {who} printed non-JSON {line:?}: {e}"));
                sink.lock().unwrap().push(v);
            }
        });
        Agent {
            child,
            host: host.to_string(),
            dir,
            events,
        }
    }

    /// Waits (up to `secs`) for an event with `kind` about `project`.
    fn wait(&self, kind: &str, project: &str, secs: u64) -> Value {
        self.wait_for(secs, |v| v["event"] == kind && v["project"] == project)
            .unwrap_or_else(|| {
                panic!(
                    "agent {} printed no {kind} of {project} in {secs} s: {:#?}",
                    self.host,
                    self.events.lock().unwrap()
                )
            })
    }

    /// The first event from index `from` on that `pred` accepts, waiting
    /// up to `secs` for it.
    fn wait_for(&self, secs: u64, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Forgets the events seen so far (to wait for the next of a kind).
    fn clear(&self) {
        self.events.lock().unwrap().clear();
    }

    fn count(&self, kind: &str, project: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == kind && v["project"] == project)
            .count()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) -> Vec<Value> {
        self.signal(rustix::process::Signal::TERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "agent {} exited {status}", self.host);
        std::thread::sleep(Duration::from_millis(100));
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strata(env: &Env, args: &[&str]) {
    env.cmd().args(args).assert().success();
}

/// A project of a few files, one of them large enough that chains do not
/// rebase, saved once (from outside the fleet).
fn project(env: &Env, name: &str) -> PathBuf {
    let p = env.path(&format!("seed-{name}"));
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(p.join("src/main.py"), format!("print('{name}')\n")).unwrap();
    std::fs::write(p.join("data.bin"), tree::content(600_000, name.len() as u8)).unwrap();
    env.save(&p, &["--project", name]);
    p
}

fn fleet(env: &Env, hosts: &[&str]) {
    env.configure("fleet", "lease-secs = 2");
    for h in hosts {
        strata(env, &["hosts", "add", h, "--zone", &format!("zone-{h}")]);
    }
}

fn placement(env: &Env, project: &str) -> Option<Value> {
    env.json(&["placements"])
        .into_iter()
        .find(|v| v["project"] == project)
}

fn open_save_close_reopen(env: &Env) {
    fleet(env, &["h1", "h2"]);
    project(env, "thesis");
    let a1 = Agent::start(env, "h1", 1);
    strata(env, &["open", "thesis", "--on", "h1"]);
    let opened = a1.wait("opened", "thesis", 30);
    assert_eq!(opened["in_place"], false);
    let dir = a1.dir.join("thesis");
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.py")).unwrap(),
        "print('thesis')\n"
    );

    // Edits are saved on the schedule, under the lease.
    std::fs::write(dir.join("notes.md"), "written on h1\n").unwrap();
    a1.wait("saved", "thesis", 30);
    let edited = tree::capture(&dir);

    // Close: a last save, the lease handed back.
    std::fs::write(dir.join("notes.md"), "the last words\n").unwrap();
    let want = tree::capture(&dir);
    strata(env, &["close", "thesis"]);
    a1.wait("closed", "thesis", 30);
    assert!(placement(env, "thesis").is_none());
    assert_ne!(edited, want);
    let snaps = env.snapshots("thesis");
    env.restore_matches("thesis", snaps.last().unwrap(), &want);

    // Re-open on the same host: its copy is current, nothing is fetched.
    a1.clear();
    strata(env, &["open", "thesis"]);
    let again = a1.wait("opened", "thesis", 30);
    assert_eq!(
        placement(env, "thesis").unwrap()["host"],
        "h1",
        "the host with the copy"
    );
    assert_eq!(again["in_place"], true, "{again}");
    assert_eq!(
        (again["streams"].as_u64(), again["bytes"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(again["fetched_chunks"], 0, "{again}");
    tree::assert_same(&want, &tree::capture(&dir), "re-opened from its copy");

    // Its copy gone (a disk replaced, say): restored whole, yet every
    // chunk comes from the host's chunk cache.
    strata(env, &["close", "thesis"]);
    a1.wait("closed", "thesis", 30);
    std::fs::remove_dir_all(&dir).unwrap();
    a1.clear();
    strata(env, &["open", "thesis"]);
    let whole = a1.wait("opened", "thesis", 30);
    assert_eq!(whole["in_place"], false, "{whole}");
    assert!(whole["streams"].as_u64().unwrap() >= 1, "{whole}");
    assert_eq!(whole["fetched_chunks"], 0, "all from the cache: {whole}");
    tree::assert_same(&want, &tree::capture(&dir), "restored from the cache");
    let h1 = env
        .json(&["hosts", "list"])
        .into_iter()
        .find(|h| h["id"] == "h1")
        .unwrap();
    assert!(h1["cache_bytes"].as_u64().unwrap() > 0, "{h1}");
    assert_eq!(h1["cache_budget"], 1u64 << 30, "{h1}");

    // SIGTERM: a last save and the lease handed back.
    std::fs::write(dir.join("late.txt"), "before the shutdown\n").unwrap();
    let want = tree::capture(&dir);
    let events = a1.stop();
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "closed" && v["project"] == "thesis")
    );
    assert!(placement(env, "thesis").is_none(), "released on SIGTERM");
    let snaps = env.snapshots("thesis");
    env.restore_matches("thesis", snaps.last().unwrap(), &want);
}

#[test]
fn agents_open_save_close_and_reopen_from_their_copy() {
    open_save_close_reopen(&Env::new());
}

#[test]
fn agents_open_save_close_and_reopen_from_their_copy_on_the_cluster() {
    let Some(env) = Env::on_cluster("agents") else {
        return;
    };
    open_save_close_reopen(&env);
}

/// A move while a writer appends to a file of the project the whole time:
/// the target catches up while the source serves, then the freeze, the
/// last incremental and the cut-over. Every append finished before the
/// freeze is on the target; the old host commits nothing after it.
fn move_under_load(env: &Env) {
    fleet(env, &["h1", "h2"]);
    project(env, "busy");
    let (a1, a2) = (Agent::start(env, "h1", 1), Agent::start(env, "h2", 1));
    strata(env, &["open", "busy", "--on", "h1"]);
    a1.wait("opened", "busy", 30);
    let log = a1.dir.join("busy/log.txt");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appended: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
    let writer = {
        let (stop, appended, log) = (stop.clone(), appended.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut len = 0u64;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let line = format!("line {i}\n");
                f.write_all(line.as_bytes()).unwrap();
                len += line.len() as u64;
                i += 1;
                let now = strata_core::clock::Clock::now_ms(&strata_core::clock::SystemClock);
                appended.lock().unwrap().push((now, len));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    strata(env, &["move", "busy", "--to", "h2"]);
    a2.wait("prepared", "busy", 30);
    let frozen = a1.wait("frozen", "busy", 30);
    let moved = a1.wait("moved", "busy", 30);
    let opened = a2.wait("opened", "busy", 30);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(
        opened["in_place"], true,
        "the target caught up in place: {opened}"
    );
    let freeze_at = frozen["at_ms"].as_i64().unwrap();
    let before: u64 = appended
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t < freeze_at)
        .map(|(_, len)| *len)
        .max()
        .unwrap();
    let on_target = std::fs::metadata(a2.dir.join("busy/log.txt"))
        .unwrap()
        .len();
    assert!(
        on_target >= before,
        "{before} bytes were appended before the freeze, the target has {on_target}"
    );
    let p = placement(env, "busy").unwrap();
    assert_eq!(
        (p["host"].as_str(), p["token"].as_u64()),
        (Some("h2"), Some(2))
    );
    // The old host commits nothing after the cut-over.
    std::thread::sleep(Duration::from_millis(1500));
    let after: Vec<Value> = env
        .json(&["streams", "busy"])
        .into_iter()
        .filter(|v| v["type"] == "stream" && v["host"] == "h1")
        .filter(|v| {
            v["created_ms"].as_i64().unwrap() > freeze_at + moved["freeze_ms"].as_i64().unwrap()
        })
        .collect();
    assert!(
        after.is_empty(),
        "h1 committed after the cut-over: {after:?}"
    );
    eprintln!(
        "move under load: freeze {} ms, target open after {} ms",
        moved["freeze_ms"], opened["ms"]
    );
    drop(a1.stop());
    drop(a2.stop());
}

#[test]
fn a_move_under_write_load_carries_every_byte_written_before_the_freeze() {
    move_under_load(&Env::new());
}

#[test]
fn a_move_under_write_load_on_the_cluster() {
    let Some(env) = Env::on_cluster("agentmove") else {
        return;
    };
    move_under_load(&env);
}

/// kill -9 of the serving agent: its lease runs out and another host
/// opens the project from its last saved snapshot. A paused agent (in the
/// middle of a save of a large change) resumed after the takeover commits
/// nothing: its commit is refused by the token and recorded.
#[test]
fn a_killed_agent_is_taken_over_and_a_paused_one_is_fenced() {
    killed_and_paused(&Env::new());
}

#[test]
fn a_killed_agent_is_taken_over_and_a_paused_one_is_fenced_on_the_cluster() {
    let Some(env) = Env::on_cluster("agentkill") else {
        return;
    };
    killed_and_paused(&env);
}

fn killed_and_paused(env: &Env) {
    let env = env.share();
    fleet(&env, &["h1", "h2", "h3"]);
    project(&env, "p");
    let a1 = Agent::start(&env, "h1", 1);
    strata(&env, &["open", "p", "--on", "h1"]);
    a1.wait("opened", "p", 30);
    std::fs::write(a1.dir.join("p/saved.txt"), "saved on h1\n").unwrap();
    a1.clear();
    a1.wait("saved", "p", 30);
    let saved = tree::capture(&a1.dir.join("p"));
    std::fs::write(a1.dir.join("p/unsaved.txt"), "never saved\n").unwrap();
    a1.signal(rustix::process::Signal::KILL);
    std::thread::sleep(Duration::from_millis(2300)); // the lease runs out
    let a2 = Agent::start(&env, "h2", 1);
    strata(&env, &["open", "p", "--on", "h2"]);
    a2.wait("opened", "p", 30);
    tree::assert_same(&saved, &tree::capture(&a2.dir.join("p")), "taken over");

    // h2 pauses inside a save of a large change; h3 takes over meanwhile.
    std::fs::write(a2.dir.join("p/large.bin"), tree::content(40_000_000, 9)).unwrap();
    a2.clear();
    a2.wait("saving", "p", 30);
    a2.signal(rustix::process::Signal::STOP);
    let paused_at = strata_core::clock::Clock::now_ms(&strata_core::clock::SystemClock);
    std::thread::sleep(Duration::from_millis(2300));
    let a3 = Agent::start(&env, "h3", 60);
    strata(&env, &["open", "p", "--on", "h3"]);
    a3.wait("opened", "p", 30);
    let streams_before = env.snapshots("p").len();
    a2.signal(rustix::process::Signal::CONT);
    let outcome = a2
        .wait_for(60, |v| {
            v["project"] == "p" && (v["event"] == "failed" || v["event"] == "saved")
        })
        .expect("the paused save finished");
    assert_eq!(outcome["event"], "failed", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    assert!(
        error.contains("host h2 (lease token 2) was refused")
            && error.contains("granted again, to host h3 (token 3)"),
        "{error}"
    );
    a2.wait("lost", "p", 30);
    assert_eq!(
        env.snapshots("p").len(),
        streams_before,
        "nothing committed by h2"
    );
    let refused: Vec<Value> = env
        .json(&["placements"])
        .into_iter()
        .filter(|v| v["refused"] == "p")
        .collect();
    assert!(
        refused.iter().any(|v| v["host"] == "h2"
            && v["token"] == 2
            && v["at_ms"].as_i64().unwrap() >= paused_at),
        "{refused:?}"
    );
    drop(a3.stop());
    drop(a2.stop());
}

/// A drain with agents running: every project moves off the host, which
/// then is disabled; a disabled host's agent is given nothing.
#[test]
fn a_drain_empties_a_host_and_a_disabled_host_receives_nothing() {
    drain(&Env::new());
}

#[test]
fn a_drain_empties_a_host_on_the_cluster() {
    let Some(env) = Env::on_cluster("agentdrain") else {
        return;
    };
    drain(&env);
}

fn drain(env: &Env) {
    let env = env.share();
    fleet(&env, &["h1", "h2", "h3"]);
    strata(&env, &["hosts", "disable", "h3"]);
    let names = ["a", "b", "c"];
    for n in names {
        project(&env, n);
    }
    let agents: Vec<Agent> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| Agent::start(&env, h, 60))
        .collect();
    for n in names {
        strata(&env, &["open", n, "--on", "h1"]);
        agents[0].wait("opened", n, 30);
    }
    strata(&env, &["hosts", "drain", "h1"]);
    for n in names {
        agents[1].wait("opened", n, 60);
        agents[0].wait("moved", n, 60);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = || {
        env.json(&["hosts", "list"])
            .into_iter()
            .find(|h| h["id"] == "h1")
            .unwrap()["state"]
            .clone()
    };
    while state() != "disabled" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(), "disabled");
    for n in names {
        assert_eq!(placement(&env, n).unwrap()["host"], "h2");
        assert_eq!(
            agents[2].count("opened", n) + agents[2].count("prepared", n),
            0
        );
    }
    for a in agents {
        drop(a.stop());
    }
}

#[test]
fn an_agent_of_an_unregistered_host_refuses_to_start() {
    let env = Env::new();
    env.cmd().arg("init").assert().success();
    let out = env
        .as_host("stranger")
        .cmd()
        .args(["agent", "--projects-dir", env.path("p").to_str().unwrap()])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("no host \"stranger\" is registered"), "{err}");
}

/// The number of open descriptors and of child processes of `pid`.
fn fds_and_children(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .count();
    (fds, children)
}

/// A stress run: 3 agents, 50 projects, 300 open, edit, close and move
/// actions in random order (a batch of them at a time, as a platform
/// would send them). Afterwards every project's newest snapshot restores
/// exactly the tree last written to it, no agent leaked descriptors or
/// child processes, and `check --read-data` is clean.
#[test]
fn a_stress_run_of_three_agents_and_fifty_projects() {
    use std::collections::BTreeMap;
    let env = Env::new();
    let hosts = ["h1", "h2", "h3"];
    fleet(&env, &hosts);
    let names: Vec<String> = (0..50).map(|i| format!("s{i:02}")).collect();
    let mut want: BTreeMap<String, BTreeMap<String, tree::Node>> = BTreeMap::new();
    for n in &names {
        let p = env.path(&format!("seed-{n}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("readme"), format!("project {n}\n")).unwrap();
        env.save(&p, &["--project", n]);
        want.insert(n.clone(), tree::capture(&p));
    }
    let agents: Vec<Agent> = hosts.iter().map(|h| Agent::start(&env, h, 3600)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<(usize, usize)> = agents
        .iter()
        .map(|a| fds_and_children(a.child.id()))
        .collect();
    let agent = |h: &str| agents.iter().find(|a| a.host == h).unwrap();
    let mut where_open: BTreeMap<String, String> = BTreeMap::new();
    let mut rng = 0x5eed_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut actions = 0;
    let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
    while actions < 300 {
        // A batch: up to 10 distinct projects, one action each.
        let mut batch: Vec<(String, &str, Option<String>)> = Vec::new();
        while batch.len() < 10 && actions < 300 {
            let n = names[next(names.len() as u64) as usize].clone();
            if batch.iter().any(|(b, ..)| *b == n) {
                continue;
            }
            let action = match where_open.get(&n) {
                None => ("open", Some(hosts[next(3) as usize].to_string())),
                Some(h) => match next(3) {
                    0 => ("close", None),
                    1 => {
                        let others: Vec<&str> = hosts.iter().copied().filter(|x| x != h).collect();
                        ("move", Some(others[next(2) as usize].to_string()))
                    }
                    _ => ("edit", None),
                },
            };
            *kinds.entry(action.0).or_default() += 1;
            batch.push((n, action.0, action.1));
            actions += 1;
        }
        let counts: Vec<(usize, usize, usize)> = batch
            .iter()
            .map(|(n, ..)| {
                let h = where_open.get(n);
                let target = |k: &str, h: &str| agent(h).count(k, n);
                (
                    hosts.iter().map(|h| target("opened", h)).sum(),
                    h.map_or(0, |h| target("closed", h)),
                    h.map_or(0, |h| target("moved", h)),
                )
            })
            .collect();
        for (n, kind, arg) in &batch {
            match *kind {
                "open" => strata(&env, &["open", n, "--on", arg.as_deref().unwrap()]),
                "close" => strata(&env, &["close", n]),
                "move" => strata(&env, &["move", n, "--to", arg.as_deref().unwrap()]),
                _ => {
                    let dir = agent(&where_open[n]).dir.join(n);
                    std::fs::write(
                        dir.join(format!("edit-{actions}-{}", next(1000))),
                        n.repeat(100),
                    )
                    .unwrap();
                    // Saved by the next close or move (or at the end).
                    want.insert(n.clone(), tree::capture(&dir));
                }
            }
        }
        for ((n, kind, arg), (opened, closed, moved)) in batch.iter().zip(counts) {
            let deadline = Instant::now() + Duration::from_secs(60);
            let done = || match *kind {
                "open" | "move" => {
                    hosts
                        .iter()
                        .map(|h| agent(h).count("opened", n))
                        .sum::<usize>()
                        > opened
                        && (*kind == "open" || agent(&where_open[n]).count("moved", n) > moved)
                }
                "close" => agent(&where_open[n]).count("closed", n) > closed,
                _ => true,
            };
            while !done() {
                assert!(
                    Instant::now() < deadline,
                    "{kind} {n} {arg:?} did not happen in 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            match *kind {
                "open" | "move" => {
                    where_open.insert(n.clone(), arg.clone().unwrap());
                }
                "close" => {
                    where_open.remove(n);
                }
                _ => {}
            }
        }
    }
    eprintln!("stress actions: {kinds:?}");
    // Everything closed: a last save of each.
    for (n, h) in where_open.clone() {
        let closed = agent(&h).count("closed", &n);
        strata(&env, &["close", &n]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent(&h).count("closed", &n) == closed {
            assert!(Instant::now() < deadline, "close {n} on {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (a, (fds, children)) in agents.iter().zip(before) {
        let (now_fds, now_children) = fds_and_children(a.child.id());
        assert!(
            now_fds <= fds + 4,
            "agent {} holds {now_fds} descriptors, {fds} at the start",
            a.host
        );
        assert_eq!(
            (children, now_children),
            (0, 0),
            "agent {} has child processes",
            a.host
        );
        let failed: Vec<Value> = a
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == "failed")
            .cloned()
            .collect();
        assert!(failed.is_empty(), "agent {}: {failed:#?}", a.host);
    }
    for (n, tree) in &want {
        let snaps = env.snapshots(n);
        env.restore_matches(n, snaps.last().unwrap(), tree);
    }
    let check = env.summary(&["check", "--read-data"]);
    assert_eq!(check["problems"], 0, "{check}");
    for a in agents {
        drop(a.stop());
    }
}

/// Owners: as root, `--owner-named-like-project` gives a project's files
/// to the local user named like it (here `nobody`, 65534), and a project
/// with no such user is not opened, said so; as an unprivileged user (CI
/// runs as root, users do not), the agent restores files owned by itself.
#[test]
fn restored_projects_belong_to_their_user_and_agents_run_without_root() {
    use std::os::unix::fs::MetadataExt;
    if strata_testing::privilege::is_root() {
        let env = Env::new();
        fleet(&env, &["h1"]);
        project(&env, "nobody");
        project(&env, "no-such-user-here");
        let dir = env.path("projects-h1");
        let mut child = env
            .as_host("h1")
            .program()
            .args(["--json", "agent", "--projects-dir", dir.to_str().unwrap()])
            .args(["--tick-ms", "200", "--owner-named-like-project"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        strata(&env, &["open", "nobody", "--on", "h1"]);
        strata(&env, &["open", "no-such-user-here", "--on", "h1"]);
        let mut opened = false;
        let mut refused = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap();
            opened |= v["event"] == "opened" && v["project"] == "nobody";
            refused |= v["event"] == "failed"
                && v["project"] == "no-such-user-here"
                && v["error"]
                    .as_str()
                    .unwrap()
                    .contains("no local user is named");
            if opened && refused {
                break;
            }
        }
        // The failure reaches the monitor with the next heartbeat.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = env.json(&["monitor"]).remove(0);
            let e = s["catalog"]["value"]["hosts"][0]["last_error"]["summary"].clone();
            if e.as_str()
                .is_some_and(|e| e.contains("open no-such-user-here: no local user"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the monitor never showed the agent's error: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        for e in walkdir::WalkDir::new(dir.join("nobody")) {
            let md = e.unwrap().metadata().unwrap();
            assert_eq!((md.uid(), md.gid()), (65534, 65534));
        }
        assert!(!dir.join("no-such-user-here").exists());
    }
    // Unprivileged: an agent running as nobody (when the suite is root).
    let env = Env::unprivileged();
    fleet(&env, &["h1"]);
    project(&env, "mine");
    let a = Agent::start(&env, "h1", 1);
    strata(&env, &["open", "mine", "--on", "h1"]);
    a.wait("opened", "mine", 30);
    let dir = a.dir.join("mine");
    let me = std::fs::metadata(env.path("projects-h1")).unwrap().uid();
    for e in walkdir::WalkDir::new(&dir) {
        assert_eq!(
            e.unwrap().metadata().unwrap().uid(),
            me,
            "owned by the agent's user"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.py")).unwrap(),
        "print('mine')\n"
    );
    strata(&env, &["close", "mine"]);
    a.wait("closed", "mine", 30);
    drop(a.stop());
}
