//! The test environment shared by the CLI tests: a temporary directory
//! with its own repository and state, and the `strata` binary run in it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("strata").unwrap();
        c.env("STRATA_REPO", self.path("repo"))
            .env("STRATA_STATE_DIR", self.path("state"))
            .env_remove("STRATA_CHUNKS")
            .env_remove("STRATA_CATALOG");
        c
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
        // Let the edits leave the racy window so the index can trust them.
        std::thread::sleep(Duration::from_millis(60));
        let mut args = vec!["save", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.json(&args)
            .into_iter()
            .find(|v| v["event"] == "saved")
            .expect("a saved event")
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
