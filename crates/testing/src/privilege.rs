//! Running tests as an unprivileged user.
//!
//! CI runs as root, users do not: root bypasses permission bits, so a
//! restore that only works as root (patching a read-only file, say) passes
//! a root-only suite. Tests that restore therefore run their body a second
//! time as `nobody` (uid and gid 65534) when the suite runs as root, through
//! `setpriv --reuid=65534 --regid=65534 --clear-groups`. When the suite
//! already runs unprivileged, the body's one run is the unprivileged run.
//!
//! Programs run as `nobody` are copies placed in a world-readable
//! directory ([`shared_copy`]): the build tree may sit under a directory
//! `nobody` cannot enter.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The uid and gid unprivileged runs use.
pub const NOBODY: u32 = 65534;

/// The environment variable that marks the unprivileged run of a test.
const CHILD: &str = "STRATA_TEST_UNPRIVILEGED";

/// True when this process is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True inside the unprivileged re-run of a test ([`also_unprivileged`]).
pub fn in_unprivileged_run() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// A copy of `program` that `nobody` can run: under
/// `$TMPDIR/strata-test-bin-<uid>/`, world-readable, made once per content
/// (hard link when possible). Returns `program` itself when not root.
///
/// # Panics
/// When the copy cannot be made (a test utility).
pub fn shared_copy(program: &Path) -> PathBuf {
    if !is_root() {
        return program.to_path_buf();
    }
    let dir = std::env::temp_dir().join("strata-test-bin");
    fs::create_dir_all(&dir).expect("create the shared binary directory");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let md = fs::metadata(program).expect("stat the program");
    let name = format!(
        "{}-{}-{}",
        program.file_name().expect("a file name").to_string_lossy(),
        md.ino(),
        md.mtime_nsec() + md.mtime() * 1_000_000_000
    );
    let dest = dir.join(name);
    if !dest.exists() {
        let tmp = dir.join(format!(".{}.{}", std::process::id(), unique_suffix()));
        if fs::hard_link(program, &tmp).is_err() {
            fs::copy(program, &tmp).expect("copy the program");
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::rename(&tmp, &dest).expect("rename the copy");
    }
    dest
}

fn unique_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A command that runs `program` as `nobody` when this process is root,
/// else as this user.
pub fn unprivileged_command(program: &Path) -> Command {
    let program = shared_copy(program);
    if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `body`, and when this process is root runs the same test again in
/// a child of this test binary as `nobody`, asserting it passes. `name` is
/// the test's name as the harness knows it (its function name for a test
/// at the root of an integration test file). Inside the child, only
/// `body` runs.
///
/// # Panics
/// When `body` panics or the unprivileged run fails.
pub fn also_unprivileged(name: &str, body: impl FnOnce()) {
    body();
    if !is_root() || in_unprivileged_run() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let home = tempfile_dir();
    let out = unprivileged_command(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("HOME", &home)
        .env("TMPDIR", std::env::temp_dir())
        .current_dir("/")
        .output()
        .expect("run the test as nobody");
    let _ = fs::remove_dir_all(&home);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} failed as nobody (uid {NOBODY}):\n{text}"
    );
}

/// A fresh directory owned by `nobody` under the temporary directory.
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "strata-nobody-home-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    fs::create_dir_all(&d).expect("mkdir");
    give_to_nobody(&d);
    d
}

/// Gives every entry under `root` (itself included) that is not owned by
/// `nobody` to `nobody`, keeping permission bits (chown clears set-id
/// bits, so they are put back). Does nothing when not root.
///
/// # Panics
/// When an entry cannot be changed (a test utility).
pub fn give_to_nobody(root: &Path) {
    if !is_root() {
        return;
    }
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.expect("walk");
        let md = e.metadata().expect("stat");
        if md.uid() == NOBODY && md.gid() == NOBODY {
            continue;
        }
        rustix::fs::chownat(
            rustix::fs::CWD,
            e.path(),
            Some(rustix::fs::Uid::from_raw(NOBODY)),
            Some(rustix::fs::Gid::from_raw(NOBODY)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("chown");
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(md.mode() & 0o7777))
                .expect("chmod");
        }
    }
}
