//! `strata check`: clean repositories pass; a flipped byte is caught by
//! `--read-data`, a missing chunk by a plain check; both name the chunk,
//! project and stream and exit 3.

mod common;

use std::fs;

use common::Env;
use serde_json::Value;
use strata_testing::tree;

fn check(env: &Env, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let out = env
        .cmd()
        .arg("--json")
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"event\":\"error\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), lines)
}

#[test]
fn check_finds_flipped_and_missing_chunks() {
    let env = Env::new();
    let p = env.path("proj");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("big"), tree::content(3_000_000, 8)).unwrap();
    let saved = env.save(&p, &[]);
    let stream = {
        let s = env.json(&["streams", "proj"]);
        s.iter().find(|v| v["type"] == "stream").unwrap()["stream"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let (code, lines) = check(&env, &["--read-data"]);
    assert_eq!(code, Some(0), "{lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["problems"], 0);
    assert!(summary["chunks"].as_u64().unwrap() >= 1);
    assert_eq!(summary["chunks_read"], summary["chunks"]);

    // Flip one byte of a stored chunk: same size, wrong content.
    let victim = env.a_chunk_file();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&victim, &bytes).unwrap();

    let (code, _) = check(&env, &[]);
    assert_eq!(code, Some(0), "sizes still match without --read-data");
    let (code, lines) = check(&env, &["--read-data"]);
    assert_eq!(code, Some(3));
    let problem = lines.iter().find(|l| l["type"] == "problem").unwrap();
    assert_eq!(problem["kind"], "corrupt-chunk");
    assert_eq!(problem["chunk"], name.as_str());
    assert_eq!(problem["streams"][0]["project"], "proj");
    assert_eq!(problem["streams"][0]["stream"], stream.as_str());
    // Human output names the chunk too.
    env.cmd()
        .args(["check", "--read-data=100"])
        .assert()
        .code(3)
        .stdout(predicates::str::contains(name.as_str()))
        .stdout(predicates::str::contains("proj"));
    // A sample reads a subset, the same one every time.
    let (_, a) = check(&env, &["--read-data=50"]);
    let (_, b) = check(&env, &["--read-data=50"]);
    assert_eq!(
        a.last().unwrap()["chunks_read"],
        b.last().unwrap()["chunks_read"]
    );

    // Remove the chunk: a plain check finds it missing.
    fs::remove_file(&victim).unwrap();
    let (code, lines) = check(&env, &[]);
    assert_eq!(code, Some(3));
    let problem = lines.iter().find(|l| l["type"] == "problem").unwrap();
    assert_eq!(problem["kind"], "missing-chunk");
    assert_eq!(problem["chunk"], name.as_str());
    assert!(problem["message"].as_str().unwrap().contains("proj"));
    assert_eq!(saved["project"], "proj");

    // Bad arguments are usage errors.
    env.cmd().args(["check", "--read-data=0"]).assert().code(2);
}
