//! The distributed deployment end to end: chunks in the Garage cluster
//! (three nodes, two zones, through nginx's TLS endpoint) and the catalog
//! in PostgreSQL, both as `scripts/cluster up` starts them. The same
//! commands as the embedded default: save, edit, save, restore byte for
//! byte, `check --read-data`; no secret in a debug log; saves and
//! restores over a slow, lossy link that resets connections. Tests that
//! stop parts of the cluster are in `cluster_faults.rs`.

mod common;

use std::fs;
use std::sync::atomic::Ordering;

use common::Env;
use strata_testing::tree;

/// Asserts `check --read-data` on `env` is clean.
fn check_is_clean(env: &Env) {
    let check = env.summary(&["check", "--read-data"]);
    assert_eq!(check["problems"], 0, "{check}");
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
    let Some(c) = Env::on_cluster("e2e") else {
        return;
    };
    let s3_secret = secret_of(common::url_param(c.chunks_url(), "credentials"));
    let p = c.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    fs::write(p.join("big.bin"), tree::content(6_000_000, 3)).unwrap();
    let first = tree::capture(&p);
    let save = || {
        std::thread::sleep(std::time::Duration::from_millis(60));
        let out = c
            .cmd()
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
        c.restore_matches("proj", snap["snapshot"].as_str().unwrap(), want);
    }
    check_is_clean(&c);
}

/// A bad link between strata and both services (`strata_testing::proxy`
/// in front of nginx's S3 endpoint and of PostgreSQL: 20 ms ± 10 ms each
/// way, 8 MB/s, stalls as long as a lost segment costs TCP, a quarter of
/// the connections reset part-way): saves, restores and `check
/// --read-data` all complete, byte for byte, through retries. TLS holds
/// through the proxy (its address is in the certificates).
#[test]
fn saves_and_restores_complete_over_a_slow_lossy_link_that_resets_connections() {
    use strata_testing::proxy::{Faults, Proxy};
    let Some(c) = Env::on_cluster("lossy") else {
        return;
    };
    let ip: std::net::IpAddr = common::cluster_setting("STRATA_TEST_PROXY_HOST")
        .unwrap()
        .parse()
        .unwrap();
    let s3 = common::url_param(c.chunks_url(), "endpoint")
        .strip_prefix("https://")
        .unwrap()
        .to_string();
    let pg = c
        .catalog_url()
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let link = |target: &str, seed| {
        Proxy::start(
            ip,
            target.parse().unwrap(),
            Faults {
                seed,
                ..Faults::default()
            },
        )
        .unwrap()
    };
    let (s3_link, pg_link) = (link(&s3, 1), link(&pg, 2));
    let lossy = Env {
        backends: Some((
            c.catalog_url().replace(&pg, &pg_link.addr().to_string()),
            c.chunks_url().replace(&s3, &s3_link.addr().to_string()),
        )),
        ..c.share()
    };
    let p = c.path("proj");
    fs::create_dir(&p).unwrap();
    tree::sample_tree(&p);
    fs::write(p.join("big.bin"), tree::content(8_000_000, 5)).unwrap();
    let first = tree::capture(&p);
    let s1 = lossy.save(&p, &[]);
    fs::write(p.join("docs/notes.md"), b"saved over a bad link\n").unwrap();
    fs::write(p.join("more.bin"), tree::content(2_000_000, 6)).unwrap();
    let s2 = lossy.save(&p, &[]);
    assert_eq!(s2["kind"], "incremental");
    let second = tree::capture(&p);
    for (snap, want) in [(&s1, &first), (&s2, &second)] {
        lossy.restore_matches("proj", snap["snapshot"].as_str().unwrap(), want);
    }
    check_is_clean(&lossy);
    let (s, g) = (s3_link.counters(), pg_link.counters());
    let resets = s.resets.load(Ordering::SeqCst) + g.resets.load(Ordering::SeqCst);
    let stalls = s.stalls.load(Ordering::SeqCst) + g.stalls.load(Ordering::SeqCst);
    eprintln!(
        "through the bad link: {} + {} connections, {resets} resets, {stalls} stalls, {} MB",
        s.connections.load(Ordering::SeqCst),
        g.connections.load(Ordering::SeqCst),
        (s.bytes.load(Ordering::SeqCst) + g.bytes.load(Ordering::SeqCst)) / 1_000_000
    );
    assert!(
        resets > 0 && stalls > 0,
        "the link never failed: the test proves nothing"
    );
    // And straight to the services, the same snapshots are there.
    c.restore_matches("proj", s2["snapshot"].as_str().unwrap(), &second);
}
