//! Chains end to end: many saves with rebases, a fork made by two working
//! copies of one project, retention and trims; every retained snapshot (and
//! the fork) restores byte-identical.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::Env;
use serde_json::Value;
use strata_testing::tree::{self, Node};

fn listed(env: &Env, kind: &str) -> Vec<Value> {
    env.json(&["streams", "proj"])
        .into_iter()
        .filter(|v| v["type"] == kind)
        .collect()
}

fn edit(dir: &Path, round: usize) {
    fs::write(
        dir.join(format!("round-{round}.txt")),
        format!("round {round}\n"),
    )
    .unwrap();
    fs::write(
        dir.join("notes.md"),
        format!("# notes after round {round}\n"),
    )
    .unwrap();
    if round.is_multiple_of(3) {
        let _ = fs::remove_file(dir.join(format!("round-{}.txt", round - 1)));
    }
}

#[test]
fn saves_rebases_forks_trims_and_restores() {
    // As this user and, when that is root, as nobody.
    for env in Env::both() {
        eprintln!("saves_rebases_forks_trims_and_restores as {}", env.who());
        saves_rebases_forks_trims_and_restores_in(&env);
    }
}

fn saves_rebases_forks_trims_and_restores_in(env: &Env) {
    // A repository that rebases after 3 incrementals.
    env.configure("rebase", "max-incrementals = 3");

    let src = env.path("proj");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("data.bin"), tree::content(400_000, 1)).unwrap();
    let mut captures: BTreeMap<String, BTreeMap<String, Node>> = BTreeMap::new();
    let mut kinds = Vec::new();
    for round in 0..9 {
        if round > 0 {
            edit(&src, round);
        }
        let saved = env.save(&src, &[]);
        kinds.push((
            saved["kind"].as_str().unwrap().to_string(),
            saved["rebased"] == true,
        ));
        captures.insert(
            saved["snapshot"].as_str().unwrap().to_string(),
            tree::capture(&src),
        );
    }
    // full, 3 incrementals, a rebase full, 3 incrementals, a rebase full.
    let fulls: Vec<_> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| k.0 == "full")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(fulls, vec![0, 4, 8], "{kinds:?}");
    assert!(kinds[4].1 && kinds[8].1);
    let streams = listed(env, "stream");
    assert_eq!(streams.iter().filter(|s| s["role"] == "chain").count(), 1);
    assert_eq!(streams.iter().filter(|s| s["role"] == "history").count(), 8);
    // A rebase full stream names what the directory held as its parent.
    let rebase = streams
        .iter()
        .find(|s| s["kind"] == "full" && !s["parent"].is_null())
        .unwrap();
    assert!(captures.contains_key(rebase["parent"].as_str().unwrap()));

    // Two working copies of the newest snapshot, each edited and saved.
    let a = env.path("copy-a");
    let b = env.path("copy-b");
    env.cmd()
        .args(["restore", "proj", a.to_str().unwrap()])
        .assert()
        .success();
    env.cmd()
        .args(["restore", "proj", b.to_str().unwrap()])
        .assert()
        .success();
    fs::write(a.join("only-in-a"), b"A").unwrap();
    let sa = env.save(&a, &[]);
    captures.insert(
        sa["snapshot"].as_str().unwrap().to_string(),
        tree::capture(&a),
    );
    fs::write(b.join("only-in-b"), b"B").unwrap();
    fs::remove_file(b.join("data.bin")).unwrap();
    let sb = env.save(&b, &[]);
    captures.insert(
        sb["snapshot"].as_str().unwrap().to_string(),
        tree::capture(&b),
    );
    assert_eq!(sa["kind"], "incremental");
    assert_eq!(sa["start"], sb["start"]);

    // The newest head wins; the other branch is a fork.
    let forks = listed(env, "fork");
    assert_eq!(forks.len(), 1, "{forks:?}");
    assert_eq!(forks[0]["head"], sa["snapshot"]);
    assert_eq!(forks[0]["base"], sa["start"]);
    let newest = env.path("newest");
    env.cmd()
        .args(["restore", "proj", newest.to_str().unwrap()])
        .assert()
        .success();
    tree::assert_same(
        &captures[sb["snapshot"].as_str().unwrap()],
        &tree::capture(&newest),
        "head",
    );
    env.restore_matches(
        "proj",
        sa["snapshot"].as_str().unwrap(),
        &captures[sa["snapshot"].as_str().unwrap()],
    );

    // `--all` plans every project (one object each).
    let all = env.json(&["trim", "--all", "--dry-run"]);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["project"], "proj");

    // Keep the 3 newest; a dry run deletes nothing.
    env.keep_only_last("proj", 3);
    let before = listed(env, "stream").len();
    let plan = env.json(&["trim", "proj", "--dry-run"]).pop().unwrap();
    assert_eq!(plan["event"], "trim-plan");
    assert!(!plan["delete"].as_array().unwrap().is_empty());
    assert_eq!(listed(env, "stream").len(), before);

    let done = env.json(&["trim", "proj"]).pop().unwrap();
    assert_eq!(done["event"], "trimmed");
    assert_eq!(done["delete"], plan["delete"]);
    let after = listed(env, "stream");
    assert_eq!(
        after.len(),
        before - plan["delete"].as_array().unwrap().len()
    );
    // The fork survives the trim; every retained snapshot restores exactly.
    assert_eq!(listed(env, "fork").len(), 1);
    let retained: Vec<String> = done["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(retained.contains(&sb["snapshot"].as_str().unwrap().to_string()));
    assert!(retained.len() >= 3);
    for snap in &retained {
        env.restore_matches("proj", snap, &captures[snap]);
    }
    env.restore_matches(
        "proj",
        sa["snapshot"].as_str().unwrap(),
        &captures[sa["snapshot"].as_str().unwrap()],
    );
    // What the plan said is lost is gone.
    for lost in done["lost"].as_array().unwrap() {
        let t = env.path("lost");
        let code = env
            .cmd()
            .args([
                "restore",
                "proj",
                t.to_str().unwrap(),
                "--snapshot",
                lost.as_str().unwrap(),
            ])
            .assert()
            .failure()
            .get_output()
            .status
            .code();
        assert_eq!(code, Some(2));
    }

    // The fork goes only when asked.
    let head = sa["snapshot"].as_str().unwrap();
    let dry = env
        .json(&["forget-fork", "proj", head, "--dry-run"])
        .pop()
        .unwrap();
    assert_eq!(dry["delete"].as_array().unwrap().len(), 1);
    assert_eq!(listed(env, "fork").len(), 1);
    env.json(&["forget-fork", "proj", head]);
    assert!(listed(env, "fork").is_empty());
    env.cmd()
        .args(["forget-fork", "proj", head])
        .assert()
        .code(2);
    for snap in &retained {
        env.restore_matches("proj", snap, &captures[snap]);
    }
}
