//! Bug 5: on file systems with whole-second timestamps (ext4 with 128-byte
//! inodes, mke2fs's default below 512 MB; ext3; HFS+), a same-size
//! rewrite in the same second as the save's read left mtime, ctime and
//! size as they were, and no later save ever picked it up. Tested on a
//! real loop-mounted `mkfs.ext4 -I 128` file system (needs root: CI runs
//! as root; elsewhere the test says it is skipped).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Env;
use strata_testing::privilege::is_root;

/// A mounted loop file system, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mount_ext4_128(env: &Env) -> Mounted {
    let img = env.path("ext4-128.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-I", "128"])
        .arg(&img));
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt));
    Mounted(mnt)
}

fn subsec() -> f64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    f64::from(d.subsec_nanos()) / 1e9
}

fn mtime(p: &Path) -> (i64, i64) {
    let md = fs::metadata(p).unwrap();
    (md.mtime(), md.mtime_nsec())
}

#[test]
fn a_same_size_rewrite_in_the_same_second_is_saved_on_one_second_timestamps() {
    if !is_root() {
        eprintln!("SKIPPED: mounting an ext4 -I 128 loop file system needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let mnt = mount_ext4_128(&env);
    let proj = mnt.0.join("proj");
    fs::create_dir(&proj).unwrap();
    // The file system really has whole-second timestamps.
    fs::write(proj.join("probe"), b"x").unwrap();
    assert_eq!(
        mtime(&proj.join("probe")).1,
        0,
        "not a 1-second file system"
    );

    for attempt in 0..10 {
        let f = proj.join(format!("f{attempt}"));
        // Write, save and rewrite within one second, the save's walk
        // starting well after the second began (more than any fixed
        // sub-second margin).
        while !(0.15..0.25).contains(&subsec()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::write(&f, b"aaaa").unwrap();
        let before = mtime(&f);
        env.cmd()
            .args(["--quiet", "save", proj.to_str().unwrap()])
            .assert()
            .success();
        fs::write(&f, b"bbbb").unwrap();
        if mtime(&f) != before {
            eprintln!("attempt {attempt}: the second ticked; again");
            continue;
        }
        // Timestamps and size are as the first save saw them.
        env.cmd()
            .args(["--quiet", "save", proj.to_str().unwrap()])
            .assert()
            .success();
        let out = env.path(&format!("out{attempt}"));
        env.cmd()
            .args(["restore", "proj", out.to_str().unwrap()])
            .assert()
            .success();
        assert_eq!(
            fs::read(out.join(format!("f{attempt}"))).unwrap(),
            b"bbbb",
            "the rewrite was never saved"
        );
        // And the next save after a quiet moment carries nothing more.
        std::thread::sleep(Duration::from_millis(2100));
        let s = env.save(&proj, &[]);
        let again = env.save(&proj, &[]);
        assert_eq!(again["changed"], 0, "{s} then {again}");
        return;
    }
    panic!("could not fit a write, a save and a rewrite into one second");
}
