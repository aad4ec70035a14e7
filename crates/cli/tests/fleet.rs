//! The fleet's commands through the real binary (`docs/fleet.md`): hosts
//! are added, listed, disabled, enabled, drained and removed; projects are
//! opened (on a chosen host, never a disabled one), closed and moved;
//! saves from a host that does not hold the project's lease are refused;
//! bad requests exit 2 naming what is wrong.

mod common;

use std::fs;
use std::time::Duration;

use common::Env;
use predicates::str::contains;
use serde_json::Value;

fn add(env: &Env, id: &str, zone: &str, extra: &[&str]) {
    env.cmd()
        .args(["hosts", "add", id, "--zone", zone])
        .args(extra)
        .assert()
        .success();
}

fn placement(env: &Env, project: &str) -> Option<Value> {
    env.json(&["placements"])
        .into_iter()
        .find(|v| v["project"] == project)
}

fn host(env: &Env, id: &str) -> Value {
    env.json(&["hosts", "list"])
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no host {id}"))
}

/// `strata save DIR` as host `host`.
fn save_as(env: &Env, host: &str, dir: &std::path::Path) -> assert_cmd::assert::Assert {
    env.as_host(host)
        .cmd()
        .args(["save", dir.to_str().unwrap()])
        .assert()
}

fn project(env: &Env, name: &str) {
    let p = env.path(name);
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("f"), name).unwrap();
    env.save(&p, &[]);
}

#[test]
fn hosts_are_managed_and_a_disabled_host_receives_nothing() {
    let env = Env::new();
    env.cmd().arg("init").assert().success();
    add(
        &env,
        "h1",
        "zone-a",
        &["--address", "10.0.0.1", "--max-projects", "3"],
    );
    add(&env, "h2", "zone-b", &["--max-bytes", "1G"]);
    add(&env, "h3", "zone-b", &["--disabled"]);
    env.cmd()
        .args(["hosts", "add", "h1", "--zone", "zone-c"])
        .assert()
        .code(2)
        .stderr(contains("host \"h1\" is registered already"));
    env.cmd()
        .args(["hosts", "add", "h4", "--zone", "z", "--max-bytes", "5X"])
        .assert()
        .code(2)
        .stderr(contains("K, M, G or T"));
    let h1 = host(&env, "h1");
    assert_eq!(h1["state"], "enabled");
    assert_eq!(h1["zone"], "zone-a");
    assert_eq!(h1["address"], "10.0.0.1");
    assert_eq!(h1["agent"], "never");
    assert_eq!(h1["max_projects"], 3);
    assert_eq!(host(&env, "h2")["max_bytes"], 1u64 << 30);
    assert_eq!(host(&env, "h3")["state"], "disabled");
    let text = env.cmd().args(["hosts", "list"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("h3") && l.contains("disabled")),
        "{text}"
    );

    // Six projects: the disabled host gets none, even when asked by name;
    // h1 takes at most three.
    for i in 0..6 {
        project(&env, &format!("p{i}"));
    }
    env.cmd()
        .args(["open", "p0", "--on", "h3"])
        .assert()
        .code(2)
        .stderr(contains("host h3 cannot take project p0: it is disabled"));
    for i in 0..5 {
        env.cmd()
            .args(["open", &format!("p{i}")])
            .assert()
            .success();
    }
    let on = |h: &str| {
        env.json(&["placements"])
            .iter()
            .filter(|v| v["host"] == h)
            .count()
    };
    assert_eq!((on("h1"), on("h2"), on("h3")), (3, 2, 0));
    // Disable h2, enable h3: the sixth goes to h3 (h1 is full).
    env.cmd()
        .args(["hosts", "disable", "h2"])
        .assert()
        .success();
    env.cmd().args(["hosts", "enable", "h3"]).assert().success();
    env.cmd()
        .args(["open", "p5"])
        .assert()
        .success()
        .stdout(contains("p5 open on host h3"));
    env.cmd()
        .args(["hosts", "disable", "nope"])
        .assert()
        .code(2)
        .stderr(contains("no host \"nope\" is registered"));
    env.cmd()
        .args(["hosts", "remove", "h3"])
        .assert()
        .code(2)
        .stderr(contains("host h3 still holds 1 project(s)"));
    assert_eq!(host(&env, "h1")["open"], 3);
}

#[test]
fn open_close_move_and_drain_and_only_the_holder_saves() {
    let env = Env::new();
    env.configure("fleet", "lease-secs = 2");
    add(&env, "h1", "a", &[]);
    add(&env, "h2", "b", &[]);
    for name in ["alpha", "beta"] {
        project(&env, name);
    }
    env.cmd()
        .args(["open", "alpha", "--on", "h1"])
        .assert()
        .success()
        .stdout(contains("alpha open on host h1 (lease token 1"));
    env.cmd()
        .args(["open", "alpha", "--on", "h2"])
        .assert()
        .code(2)
        .stderr(contains("project alpha is open on host h1"));
    env.cmd()
        .args(["close", "ghost"])
        .assert()
        .code(2)
        .stderr(contains("no project named \"ghost\""));
    env.cmd()
        .args(["move", "beta", "--to", "h2"])
        .assert()
        .code(2)
        .stderr(contains("project beta is not open on any host"));

    // Only h1 saves alpha; h2's save is refused, exit 2, nothing saved.
    let dir = env.path("alpha");
    fs::write(dir.join("f"), "edited on h1").unwrap();
    let before = env.snapshots("alpha").len();
    save_as(&env, "h2", &dir)
        .code(2)
        .stderr(contains("project alpha is open on host h1"));
    assert_eq!(env.snapshots("alpha").len(), before);
    std::thread::sleep(Duration::from_millis(60));
    save_as(&env, "h1", &dir).success();
    assert_eq!(env.snapshots("alpha").len(), before + 1);
    // An unregistered save (no host lease) is refused too while it is open.
    save_as(&env, "laptop", &dir).code(2);

    // A move is asked; the agents carry it out (docs/fleet.md).
    env.cmd()
        .args(["move", "alpha", "--to", "h2"])
        .assert()
        .success()
        .stdout(contains("alpha moving from host h1 to h2"));
    let p = placement(&env, "alpha").unwrap();
    assert_eq!(
        (p["host"].as_str(), p["move_to"].as_str()),
        (Some("h1"), Some("h2"))
    );

    // Drain h1 while its lease is live: alpha is asked to move (already
    // is); once the lease has run out (nobody renews it here), a drain
    // grants it to h2 at once and h1 ends disabled.
    env.cmd()
        .args(["hosts", "drain", "h1"])
        .assert()
        .success()
        .stdout(contains("alpha: moving to h2"))
        .stdout(contains("host h1 draining"));
    assert_eq!(host(&env, "h1")["state"], "draining");
    env.cmd()
        .args(["open", "beta", "--on", "h1"])
        .assert()
        .code(2)
        .stderr(contains("it is draining"));
    std::thread::sleep(Duration::from_millis(2100));
    env.cmd()
        .args(["hosts", "drain", "h1"])
        .assert()
        .success()
        .stdout(contains("alpha: granted to h2"))
        .stdout(contains("host h1 disabled"));
    let p = placement(&env, "alpha").unwrap();
    assert_eq!(
        (p["host"].as_str(), p["token"].as_u64()),
        (Some("h2"), Some(2))
    );
    assert_eq!(host(&env, "h1")["open"], 0);
    // h1 lost the lease: its save is refused.
    fs::write(dir.join("f"), "h1 after losing the lease").unwrap();
    save_as(&env, "h1", &dir)
        .code(2)
        .stderr(contains("open on host h2"));

    // Close: its lease has run out again, so it closes at once.
    std::thread::sleep(Duration::from_millis(2100));
    env.cmd()
        .args(["close", "alpha"])
        .assert()
        .success()
        .stdout(contains("alpha closed"));
    assert!(placement(&env, "alpha").is_none());
    env.cmd()
        .args(["close", "alpha"])
        .assert()
        .success()
        .stdout(contains("alpha closed"));
    env.cmd().args(["hosts", "remove", "h1"]).assert().success();
    assert!(env.json(&["hosts", "list"]).iter().all(|h| h["id"] != "h1"));
    // Any host saves it now that it is open nowhere.
    std::thread::sleep(Duration::from_millis(60));
    save_as(&env, "h1", &dir).success();
}
