//! The binary with its catalog in PostgreSQL (over verified TLS, as
//! `scripts/cluster up` starts it): the same commands as the embedded
//! default, `strata init` making the schema, and no secret in a debug log
//! or an error.

mod common;

use std::fs;

use common::Env;
use strata_testing::tree;

fn admin_url() -> Option<String> {
    common::cluster_setting("STRATA_TEST_PG_ADMIN_URL")
}

fn fresh(admin: &str, name: &str) -> (String, String) {
    common::fresh_pg_database(admin, name)
}

fn param<'a>(url: &'a str, key: &str) -> &'a str {
    common::url_param(url, key)
}

#[test]
fn save_and_restore_with_the_catalog_in_postgres() {
    let Some(admin) = admin_url() else { return };
    let (url, secret) = fresh(&admin, "roundtrip");
    let env = Env::new();
    let cmd = || {
        let mut c = env.cmd();
        c.env("STRATA_CATALOG", &url);
        c
    };
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    // Before init there is no schema, and the error says what to run.
    cmd()
        .args(["save", p.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("strata init"));
    cmd().arg("init").assert().success();

    tree::sample_tree(&p);
    let first = tree::capture(&p);
    let save = |extra: &[&str]| {
        std::thread::sleep(std::time::Duration::from_millis(60));
        let out = cmd()
            .env("STRATA_LOG", "debug")
            .args(["--json", "save", p.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        // A debug log of a save holds no secret.
        assert!(!stderr.contains(&secret), "the password is in the log");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(!stdout.contains(&secret));
        stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event"] == "saved")
            .unwrap()
    };
    let s1 = save(&[]);
    assert_eq!(s1["kind"], "full");
    fs::write(
        p.join("docs/notes.md"),
        b"edited on a host with a PostgreSQL catalog\n",
    )
    .unwrap();
    let s2 = save(&[]);
    assert_eq!(s2["kind"], "incremental");
    let second = tree::capture(&p);

    for (snap, want) in [(&s1, &first), (&s2, &second)] {
        let out = env.path(&format!("out-{}", snap["snapshot"].as_str().unwrap()));
        cmd()
            .args(["restore", "proj", out.to_str().unwrap()])
            .args(["--snapshot", snap["snapshot"].as_str().unwrap()])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&out), "restore");
    }
    let check = cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A wrong CA: refused, named, nothing secret in the message.
    let other = std::env::var("STRATA_TEST_PG_OTHER_CA").unwrap();
    let bad = url.replace(param(&url, "sslrootcert"), &other);
    let out = env
        .cmd()
        .env("STRATA_CATALOG", &bad)
        .arg("projects")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert!(!stderr.contains(&secret));
}

/// Least privilege: a compute host's role saves, restores and lists, and
/// gets a clear permission error from trim and scrub, which change nothing;
/// the maintenance role trims.
#[test]
fn the_host_role_cannot_trim_or_scrub_and_the_maintenance_role_can() {
    let Some(admin) = admin_url() else { return };
    let (owner_url, _) = fresh(&admin, "roles");
    let as_role = |role: &str| {
        owner_url
            .replacen("strata_admin@", &format!("{role}@"), 1)
            .replace("secrets/strata_admin", &format!("secrets/{role}"))
    };
    let (host, maint) = (as_role("strata_host"), as_role("strata_maint"));
    let env = Env::new();
    env.configure("rebase", "max-incrementals = 1");
    let run = |url: &str, args: &[&str]| {
        let mut c = env.cmd();
        c.env("STRATA_CATALOG", url).args(args);
        c
    };
    // The owner makes the schema and grants; hosts never run DDL.
    run(&host, &["init"]).assert().code(2);
    run(&owner_url, &["init"]).assert().success();

    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    for round in 0..3 {
        fs::write(p.join("f"), format!("round {round}")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        run(&host, &["save", p.to_str().unwrap()])
            .assert()
            .success();
    }
    let want = tree::capture(&p);
    // Retention is the maintenance role's to set.
    run(&host, &["retention", "proj", "--keep-last", "1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("permission denied"));
    run(
        &maint,
        &[
            "retention",
            "proj",
            "--keep-last",
            "1",
            "--keep-hourly",
            "0",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
        ],
    )
    .assert()
    .success();
    let streams = |url: &str| {
        let out = run(url, &["--json", "streams", "proj"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"type\":\"stream\""))
            .count()
    };
    assert_eq!(streams(&host), 3);
    for args in [&["trim", "--all"][..], &["scrub", "--grace", "0"][..]] {
        run(&host, args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains("permission denied"))
            .stderr(predicates::str::contains("maintenance role"));
        assert_eq!(streams(&host), 3, "{args:?} changed something");
    }
    run(&maint, &["trim", "--all"]).assert().success();
    assert_eq!(streams(&host), 1);
    run(&maint, &["scrub", "--grace", "0"]).assert().success();
    let out = env.path("out");
    run(&host, &["restore", "proj", out.to_str().unwrap()])
        .assert()
        .success();
    tree::assert_same(&want, &tree::capture(&out), "restore after trim and scrub");
}
