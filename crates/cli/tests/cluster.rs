//! The distributed deployment end to end: chunks in the Garage cluster
//! (three nodes, two zones, through nginx's TLS endpoint) and the catalog
//! in PostgreSQL, both as `scripts/cluster up` starts them. The same
//! commands as the embedded default: save, edit, save, restore byte for
//! byte, `check --read-data`; no secret in a debug log.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::Env;
use strata_testing::tree;

fn env_or_skip(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} is not set: scripts/test starts the cluster (scripts/cluster up)")
        }
        _ => {
            eprintln!("SKIPPED: no cluster (run scripts/test)");
            None
        }
    }
}

fn param<'a>(url: &'a str, key: &str) -> &'a str {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// A fresh PostgreSQL database for this test, migrated by `strata init`.
fn fresh_catalog(admin: &str, name: &str) -> String {
    let password = fs::read_to_string(param(admin, "password_file")).unwrap();
    let hostport = admin.split('@').nth(1).unwrap().split('/').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let db = format!("strata_cli_{name}_{}", std::process::id());
    let ok = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            host,
            "-p",
            port,
            "-U",
            "strata_admin",
            "-d",
            "postgres",
        ])
        .args(["-c", &format!("CREATE DATABASE {db}")])
        .env("PGPASSWORD", password.trim())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", param(admin, "sslrootcert"))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    admin.replacen("/postgres?", &format!("/{db}?"), 1)
}

fn secret_of(creds: &str) -> String {
    fs::read_to_string(creds)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("secret_access_key = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn save_and_restore_through_garage_and_postgres_over_tls() {
    let (Some(s3), Some(admin)) = (
        env_or_skip("STRATA_TEST_S3_URL"),
        env_or_skip("STRATA_TEST_PG_ADMIN_URL"),
    ) else {
        return;
    };
    let catalog = fresh_catalog(&admin, "cluster");
    // Each run its own prefix in the shared bucket, with the host key.
    let chunks = format!(
        "{}&prefix=e2e-{}/",
        s3.replace("strata-maint.s3", "strata-host.s3"),
        std::process::id()
    );
    let s3_secret = secret_of(param(&chunks, "credentials"));
    let env = Env::new();
    let cmd = || {
        let mut c = env.cmd();
        c.env("STRATA_CATALOG", &catalog)
            .env("STRATA_CHUNKS", &chunks);
        c
    };
    cmd().arg("init").assert().success();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    fs::write(p.join("big.bin"), tree::content(6_000_000, 3)).unwrap();
    let first = tree::capture(&p);
    let save = || {
        std::thread::sleep(std::time::Duration::from_millis(60));
        let out = cmd()
            .env("STRATA_LOG", "debug")
            .args(["--json", "save", p.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains(&s3_secret), "the S3 secret is in the log");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "saved")
            .unwrap()
    };
    let s1 = save();
    assert_eq!(s1["kind"], "full");
    fs::write(p.join("docs/notes.md"), b"edited; chunks in Garage\n").unwrap();
    let s2 = save();
    assert_eq!(s2["kind"], "incremental");
    let second = tree::capture(&p);
    for (snap, want) in [(&s1, &first), (&s2, &second)] {
        let id = snap["snapshot"].as_str().unwrap();
        let out = env.path(&format!("out-{id}"));
        cmd()
            .args(["restore", "proj", out.to_str().unwrap(), "--snapshot", id])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&out), id);
    }
    let check = cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(text.contains("\"problems\":0"), "{text}");
}

/// Runs `scripts/cluster ARGS` (the same state directory as the suite's).
fn cluster(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster");
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

/// With one of the three Garage nodes down, a save still completes (the
/// write quorum is two of three, and nginx fails over), and both snapshots
/// restore byte for byte while it stays down; after that node is replaced
/// by a new, empty one and a different node is killed, everything still
/// restores. One test, so that no other test ever sees two nodes down.
#[test]
fn a_save_completes_with_a_node_down_and_everything_restores_after_a_replace() {
    let (Some(s3), Some(admin)) = (
        env_or_skip("STRATA_TEST_S3_URL"),
        env_or_skip("STRATA_TEST_PG_ADMIN_URL"),
    ) else {
        return;
    };
    let catalog = fresh_catalog(&admin, "nodedown");
    let chunks = format!(
        "{}&prefix=nodedown-{}/",
        s3.replace("strata-maint.s3", "strata-host.s3"),
        std::process::id()
    );
    let env = Env::new();
    let cmd = || {
        let mut c = env.cmd();
        c.env("STRATA_CATALOG", &catalog)
            .env("STRATA_CHUNKS", &chunks);
        c
    };
    cmd().arg("init").assert().success();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("a.bin"), tree::content(3_000_000, 1)).unwrap();
    let save = || {
        std::thread::sleep(std::time::Duration::from_millis(60));
        cmd()
            .args(["--json", "save", p.to_str().unwrap()])
            .assert()
            .success();
    };
    save();
    let first = tree::capture(&p);
    let snaps = |env: &Env| -> Vec<String> {
        let out = cmd().args(["--json", "streams", "proj"]).output().unwrap();
        assert!(out.status.success(), "{}", env.dir.path().display());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "stream")
            .map(|v| v["end"].as_str().unwrap().to_string())
            .collect()
    };

    cluster(&["kill-node", "2"]);
    let _restart = Restart("2");
    fs::write(p.join("b.bin"), tree::content(3_000_000, 2)).unwrap();
    save();
    let second = tree::capture(&p);
    let all = snaps(&env);
    assert_eq!(all.len(), 2);
    for (snap, want) in all.iter().zip([&first, &second]) {
        let out = env.path(&format!("out-{snap}"));
        cmd()
            .args(["restore", "proj", out.to_str().unwrap(), "--snapshot", snap])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&out), snap);
    }
    let check = cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("\"problems\":0"),
        "{text}"
    );
    drop(_restart);

    // The seed's "recreate nodes from the command line": node 2 is wiped
    // and replaced by a new, empty node; then a different node dies. With
    // node 1 and the new node 2 only, every read needs the new node's
    // replica of the metadata (quorum 2 of 3): both snapshots restore.
    cluster(&["replace-node", "2"]);
    cluster(&["kill-node", "3"]);
    let _restart = Restart("3");
    for (snap, want) in all.iter().zip([&first, &second]) {
        let out = env.path(&format!("after-replace-{snap}"));
        cmd()
            .args(["restore", "proj", out.to_str().unwrap(), "--snapshot", snap])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&out), snap);
    }
}
