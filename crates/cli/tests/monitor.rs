//! `strata monitor` and `strata serve` through the real binary: hosts,
//! projects past their recovery point, what each project costs, the
//! repository's health with the last scrub and check; the web page in a
//! real headless Chromium (Debian's `chromium`), loaded with the access
//! token and refused without it; `/metrics` for Prometheus; the token in
//! no log. The monitor with PostgreSQL or a Garage node stopped is in
//! `cluster_faults.rs` (those tests stop shared services).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

const TOKEN: &str = "t0ken-for-the-monitor-4242-abcdef";

/// A small fleet: two projects sharing nothing but a file, h1 holding one
/// of them (past a 1 s recovery point), h2 disabled, a scrub and a check.
fn fleet() -> Env {
    let env = Env::new();
    env.configure("fleet", "lease-secs = 30\nrecovery-point-secs = 1");
    for (name, extra) in [("alpha", "a"), ("beta", "b")] {
        let p = env.path(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(
            p.join("shared.txt"),
            "the same in both projects\n".repeat(2000),
        )
        .unwrap();
        std::fs::write(p.join("own.txt"), extra.repeat(50_000)).unwrap();
        env.save(&p, &[]);
    }
    for (h, extra) in [("h1", &[][..]), ("h2", &["--disabled"][..])] {
        env.cmd()
            .args(["hosts", "add", h, "--zone", "z"])
            .args(extra)
            .assert()
            .success();
    }
    env.cmd()
        .args(["open", "alpha", "--on", "h1"])
        .assert()
        .success();
    env.cmd().args(["scrub", "--grace", "0"]).assert().success();
    env.cmd().args(["check"]).assert().success();
    std::thread::sleep(Duration::from_millis(1200));
    env
}

#[test]
fn the_monitor_shows_hosts_stale_projects_costs_and_health() {
    let env = fleet();
    let s = env.json(&["monitor"]).remove(0);
    assert_eq!(s["catalog"]["error"], Value::Null, "{s}");
    let c = &s["catalog"]["value"];
    let host = |id: &str| {
        c["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(host("h1")["open"], 1);
    assert_eq!(host("h1")["agent"], "never");
    assert_eq!(host("h2")["state"], "disabled");
    let project = |n: &str| {
        c["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(
        project("alpha")["stale"],
        true,
        "open, saved more than 1 s ago"
    );
    assert_eq!(project("alpha")["host"], "h1");
    assert_eq!(project("beta")["stale"], false, "closed: nothing to save");
    assert!(c["stats"]["chunks"].as_u64().unwrap() > 0);
    assert!(
        c["last_scrub"]["summary"]
            .as_str()
            .unwrap()
            .contains("deleted")
    );
    assert!(
        c["last_check"]["summary"]
            .as_str()
            .unwrap()
            .contains("0 problem(s)")
    );
    let usage = s["usage"]["value"].as_array().unwrap();
    assert_eq!(usage.len(), 2);
    for u in usage {
        assert!(u["unique_bytes"].as_u64().unwrap() > 0, "{u}");
    }
    assert_eq!(s["store"]["error"], Value::Null);

    let out = env.cmd().arg("monitor").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("all parts answering"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("alpha") && l.contains("on h1") && l.contains("last saved")),
        "{text}"
    );
    assert!(text.contains("last check:"), "{text}");

    // --watch keeps going: three refreshes, one JSON object each.
    let out = env
        .cmd()
        .args([
            "--json",
            "monitor",
            "--watch",
            "--interval",
            "1",
            "--count",
            "3",
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

/// A running `strata serve`, its log captured.
struct Serve {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    fn start(env: &Env, token_file: &std::path::Path) -> Serve {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = env
            .program()
            .env("STRATA_SERVE_TOKEN_FILE", token_file)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let s = Serve { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.get("/metrics", Some(TOKEN)).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "serve never answered: {}",
                s.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// A plain HTTP GET: status and body.
    fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        let code = r
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (
            code,
            r.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_string()),
        )
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's chromium, or `None` (SKIPPED) outside CI.
fn chromium() -> Option<&'static str> {
    if Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("chromium");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed: scripts/test installs it"
    );
    eprintln!("SKIPPED: no chromium (scripts/test installs it)");
    None
}

/// The page as a real headless Chromium renders it (its DOM).
fn browse(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn the_web_page_loads_in_chromium_with_the_token_and_is_refused_without() {
    let Some(_) = chromium() else { return };
    let env = fleet();
    let token_file = env.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // A token file others can read is refused, naming it.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.program()
        .env("STRATA_SERVE_TOKEN_FILE", &token_file)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .map(|o| {
            assert_eq!(o.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&o.stderr).contains("can be read by others"));
        })
        .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let serve = Serve::start(&env, &token_file);
    let base = format!("http://127.0.0.1:{}", serve.port);

    let page = browse(&format!("{base}/?token={TOKEN}"));
    assert!(page.contains("<h1>strata fleet</h1>"), "{page}");
    assert!(
        page.contains("<td>h1</td>") && page.contains("<td>h2</td>"),
        "{page}"
    );
    assert!(
        page.contains("<tr class=\"stale\"><td>alpha</td><td>h1</td>"),
        "the stale project: {page}"
    );
    assert!(!page.contains(TOKEN), "the page never shows the token");

    let refused = browse(&format!("{base}/"));
    assert!(refused.contains("401 unauthorized"), "{refused}");
    assert!(!refused.contains("strata fleet"));
    let wrong = browse(&format!("{base}/?token=not-the-token-at-all-000"));
    assert!(wrong.contains("401 unauthorized"), "{wrong}");

    // Prometheus: with the bearer token only.
    assert_eq!(serve.get("/metrics", None).0, 401);
    assert_eq!(
        serve.get("/metrics", Some("wrong-token-wrong-token")).0,
        401
    );
    let (code, metrics) = serve.get("/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("strata_project_stale{project=\"alpha\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_project_stale{project=\"beta\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_host_enabled{host=\"h2\",zone=\"z\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_part_up{part=\"catalog\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE strata_repo_stored_bytes gauge"),
        "{metrics}"
    );
    let (code, json) = serve.get("/status.json", Some(TOKEN));
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["catalog"]["value"]["hosts"].as_array().unwrap().len(), 2);

    std::thread::sleep(Duration::from_millis(200));
    let log = serve.log.lock().unwrap().clone();
    assert!(
        log.contains("/metrics 401") && log.contains("/ 303"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "the token is in the log: {log}");
}
