//! The test environment shared by the CLI tests: a temporary directory
//! with its own repository and state, and the `strata` binary run in it,
//! as this user or (with [`Env::unprivileged`], when the suite runs as
//! root) as `nobody`: every restore path is tested without root too.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use strata_testing::privilege;
use strata_testing::tree::{self, Node};

pub struct Env {
    pub dir: Arc<tempfile::TempDir>,
    /// Commands run as `nobody` (only when this process is root).
    pub nobody: bool,
    /// The repository's backends when not the embedded default:
    /// (`STRATA_CATALOG`, `STRATA_CHUNKS`).
    pub backends: Option<(String, String)>,
    /// `STRATA_HOST_ID` of the commands, when set ([`Env::as_host`]).
    pub host: Option<String>,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            nobody: false,
            backends: None,
            host: None,
        }
    }

    /// An environment whose repository lives on the test cluster: a fresh
    /// PostgreSQL database (migrated by `strata init` with the admin role)
    /// and its own key prefix in the bucket, written with the host key;
    /// `None` (with a SKIPPED line) when no cluster runs outside CI.
    pub fn on_cluster(name: &str) -> Option<Self> {
        let s3 = cluster_setting("STRATA_TEST_S3_URL")?;
        let admin = cluster_setting("STRATA_TEST_PG_ADMIN_URL")?;
        let (catalog, _) = fresh_pg_database(&admin, name);
        let chunks = format!(
            "{}&prefix={name}-{}/",
            s3.replace("strata-maint.s3", "strata-host.s3"),
            std::process::id()
        );
        let env = Self {
            backends: Some((catalog, chunks)),
            ..Self::new()
        };
        env.cmd().arg("init").assert().success();
        Some(env)
    }

    /// The same environment (directory, backends, user), its commands run
    /// as host `id` (`STRATA_HOST_ID`): simulated hosts on one machine.
    pub fn as_host(&self, id: &str) -> Self {
        Self {
            host: Some(id.to_string()),
            ..self.share()
        }
    }

    /// The same environment again (directory, backends, user and host).
    pub fn share(&self) -> Self {
        Self {
            dir: Arc::clone(&self.dir),
            nobody: self.nobody,
            backends: self.backends.clone(),
            host: self.host.clone(),
        }
    }

    /// This environment's catalog URL (on the cluster only).
    pub fn catalog_url(&self) -> &str {
        &self.backends.as_ref().expect("a cluster environment").0
    }

    /// This environment's chunk store URL (on the cluster only).
    pub fn chunks_url(&self) -> &str {
        &self.backends.as_ref().expect("a cluster environment").1
    }

    /// An environment whose `strata` commands run as `nobody` when this
    /// process is root (and as this user otherwise, which is then already
    /// unprivileged). Its directory belongs to `nobody`; trees the test
    /// writes are given to `nobody` before each save ([`Env::give`]).
    pub fn unprivileged() -> Self {
        let dir = tempfile::tempdir().unwrap();
        privilege::give_to_nobody(dir.path());
        Self {
            dir: Arc::new(dir),
            nobody: privilege::is_root(),
            backends: None,
            host: None,
        }
    }

    /// The environments a restore path is tested in: this user, and
    /// `nobody` when this user is root.
    pub fn both() -> Vec<Env> {
        if privilege::is_root() {
            vec![Env::new(), Env::unprivileged()]
        } else {
            vec![Env::new()]
        }
    }

    /// Who runs the commands, for messages.
    pub fn who(&self) -> &'static str {
        if self.nobody { "nobody" } else { "this user" }
    }

    /// Gives what the test wrote under `p` to the user the commands run
    /// as (nothing to do unless that is `nobody`).
    pub fn give(&self, p: &Path) {
        if self.nobody {
            privilege::give_to_nobody(p);
        }
    }

    /// The `strata` program, run as this environment's user.
    pub fn program(&self) -> std::process::Command {
        let bin = assert_cmd::cargo::cargo_bin("strata");
        let mut c = if self.nobody {
            privilege::unprivileged_command(&bin)
        } else {
            std::process::Command::new(bin)
        };
        c.env("STRATA_REPO", self.path("repo"))
            .env("STRATA_STATE_DIR", self.path("state"))
            .env("HOME", self.dir.path())
            .env_remove("STRATA_CHUNKS")
            .env_remove("STRATA_CATALOG")
            .env_remove("STRATA_HOST_ID");
        if let Some((catalog, chunks)) = &self.backends {
            c.env("STRATA_CATALOG", catalog)
                .env("STRATA_CHUNKS", chunks);
        }
        if let Some(host) = &self.host {
            c.env("STRATA_HOST_ID", host);
        }
        c
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn cmd(&self) -> Command {
        Command::from_std(self.program())
    }
    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
    pub fn save(&self, dir: &Path, extra: &[&str]) -> Value {
        self.give(dir);
        // Let the edits leave the racy window so the index can trust them.
        std::thread::sleep(Duration::from_millis(60));
        let mut args = vec!["save", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.json(&args)
            .into_iter()
            .find(|v| v["event"] == "saved")
            .expect("a saved event")
    }

    /// Like [`Env::save`], but a save that exits 4 (a concurrent trim
    /// took its base: nothing committed, "save again") is run again, as a
    /// user would; returns the saved event and how many saves exited 4.
    pub fn save_again_on_retry(&self, dir: &Path) -> (Value, u32) {
        let mut retries = 0;
        loop {
            self.give(dir);
            std::thread::sleep(Duration::from_millis(60));
            let out = self
                .cmd()
                .args(["--json", "save", dir.to_str().unwrap()])
                .output()
                .unwrap();
            if out.status.code() == Some(4) {
                retries += 1;
                continue;
            }
            assert!(
                out.status.success(),
                "save failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ev = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|v| v["event"] == "saved")
                .expect("a saved event");
            return (ev, retries);
        }
    }

    /// Sets `[section]` of the repository's strata.toml (creating the
    /// repository first if needed) to the TOML `body`.
    pub fn configure(&self, section: &str, body: &str) {
        let path = self.path("repo/strata.toml");
        if !path.exists() {
            self.cmd().arg("init").assert().success();
        }
        let mut cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg.insert(
            section.into(),
            toml::Value::Table(toml::from_str(body).unwrap()),
        );
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    }

    /// Sets `project`'s retention to its `n` newest snapshots only.
    pub fn keep_only_last(&self, project: &str, n: u32) {
        self.cmd()
            .args(["retention", project, "--keep-last", &n.to_string()])
            .args(["--keep-hourly", "0", "--keep-daily", "0"])
            .args(["--keep-weekly", "0", "--keep-monthly", "0"])
            .assert()
            .success();
    }

    /// Starts `strata --quiet ARGS` in this environment without waiting
    /// (to be killed, say).
    pub fn spawn(&self, args: &[&std::ffi::OsStr]) -> Child {
        self.program()
            .arg("--quiet")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Restores `snap` of `project` into a fresh directory, asserts it is
    /// exactly `want`, and removes it.
    pub fn restore_matches(&self, project: &str, snap: &str, want: &BTreeMap<String, Node>) {
        let t = self.path(&format!("check-{project}-{snap}"));
        self.cmd()
            .args(["restore", project, t.to_str().unwrap(), "--snapshot", snap])
            .assert()
            .success();
        tree::assert_same(want, &tree::capture(&t), snap);
        std::fs::remove_dir_all(&t).unwrap();
    }

    /// The snapshots of `project`'s streams, in the order listed.
    pub fn snapshots(&self, project: &str) -> Vec<String> {
        self.json(&["streams", project])
            .into_iter()
            .filter(|v| v["type"] == "stream")
            .map(|v| v["end"].as_str().unwrap().to_string())
            .collect()
    }

    /// The summary line of a `--json` command that succeeds.
    pub fn summary(&self, args: &[&str]) -> Value {
        self.json(args)
            .into_iter()
            .rfind(|v| v["type"] == "summary")
            .expect("a summary line")
    }

    /// Asserts that the store holds exactly the chunks committed streams
    /// name: `check --read-data` is clean and sees no object without a
    /// catalog row, and a dry-run scrub with no grace would delete nothing.
    pub fn assert_no_garbage(&self, context: &str) {
        let check = self.summary(&["check", "--read-data"]);
        assert_eq!(check["problems"], 0, "{context}: {check}");
        assert_eq!(check["unreferenced_in_store"], 0, "{context}: {check}");
        let dry = self.summary(&["scrub", "--dry-run", "--grace", "0"]);
        assert_eq!(dry["deleted"], 0, "{context}: {dry}");
    }

    /// The path of some chunk file of the repository.
    pub fn a_chunk_file(&self) -> PathBuf {
        let chunks = self.path("repo/chunks");
        walkdir::WalkDir::new(&chunks)
            .into_iter()
            .map(|e| e.unwrap())
            .find(|e| {
                e.file_type().is_file() && e.path().parent() != Some(chunks.join("tmp").as_path())
            })
            .expect("the repository has a chunk")
            .into_path()
    }
}

pub use strata_testing::cluster::{setting as cluster_setting, url_param};

/// A fresh database on the test cluster's PostgreSQL (made with psql over
/// TLS, the password on its environment, never in argv): its URL with the
/// admin's credentials, and the admin's password (to check it never shows).
pub fn fresh_pg_database(admin: &str, name: &str) -> (String, String) {
    let password = std::fs::read_to_string(url_param(admin, "password_file")).unwrap();
    let hostport = admin.split('@').nth(1).unwrap().split('/').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let db = format!("strata_cli_{name}_{}", std::process::id());
    let ok = std::process::Command::new("psql")
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
        .env("PGSSLROOTCERT", url_param(admin, "sslrootcert"))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "could not create database {db}");
    (
        admin.replacen("/postgres?", &format!("/{db}?"), 1),
        password.trim().to_string(),
    )
}
