//! The zfs engine on a real pool (zfs-fuse, `scripts/filesystems up`):
//! hostile and broken streams, the wrong engine, a host without zfs, and
//! 200 send/receive cycles that leave no descriptor or child behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_engine::native::{self, ReceiveOptions};
use strata_engine::zfs::Zfs;
use strata_engine::{Engine, EngineError, Quiet, SendJob, StreamHeader};
use strata_testing::cluster::setting;

fn zfs(args: &[&str]) -> String {
    let out = std::process::Command::new("zfs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh dataset under `pool`, destroyed when dropped.
struct Dataset {
    name: String,
    mnt: PathBuf,
}

impl Dataset {
    fn new(pool: &str, what: &str) -> Self {
        let name = format!("{pool}/{what}-{}", std::process::id());
        let _ = std::process::Command::new("zfs")
            .args(["destroy", "-r", "-f", &name])
            .status();
        zfs(&["create", &name]);
        let mnt = PathBuf::from(zfs(&["get", "-H", "-o", "value", "mountpoint", &name]).trim());
        Self { name, mnt }
    }
    fn snapshots(&self) -> Vec<String> {
        zfs(&[
            "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", &self.name,
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = std::process::Command::new("zfs")
            .args(["destroy", "-r", "-f", &self.name])
            .status();
    }
}

/// One test at a time: zfs-fuse serves one pool operation at a time
/// anyway, and the descriptor and child counts are the process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pools() -> Option<(String, String)> {
    Some((
        setting("STRATA_TEST_ZFS_SAVE_POOL")?,
        setting("STRATA_TEST_ZFS_RESTORE_POOL")?,
    ))
}

fn header(start: Option<&str>, end: &str) -> StreamHeader {
    StreamHeader {
        start: start.map(str::to_string),
        end: end.into(),
        created_ms: 0,
    }
}

/// Sends `ds` from `start` to a new snapshot `end`: the stream.
fn send(e: &Zfs, ds: &Dataset, start: Option<&str>, end: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut state = Vec::new();
    let mut base = &b""[..];
    let h = header(start, end);
    e.send(
        SendJob {
            source: &ds.mnt,
            header: &h,
            base: start.map(|_| &mut base as &mut (dyn Read + Send)),
            out: &mut out,
            state: &mut state,
        },
        &Quiet,
    )
    .unwrap();
    out
}

/// Restores `streams` (each with its start and end) into `target`.
fn restore(
    e: &Zfs,
    target: &Path,
    chain: &[String],
    streams: &[(&[u8], Option<&str>, &str)],
) -> Result<(), EngineError> {
    let mut dest = e.restore_into(target, chain, false)?;
    for (i, (s, start, end)) in streams.iter().enumerate().skip(dest.holds()) {
        let opts = ReceiveOptions {
            holds: start.map(str::to_string),
            expect_end: Some(end.to_string()),
            owners: native::Owners::for_this_process(),
        };
        if let Err(err) = dest.receive(&mut &s[..], &opts, i + 1 < streams.len(), &Quiet) {
            dest.abort();
            return Err(err);
        }
    }
    dest.finish().map(drop)
}

fn staging_left(pool: &str) -> Vec<String> {
    zfs(&["list", "-H", "-o", "name", "-r", pool])
        .lines()
        .filter(|l| l.contains("strata-restore-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_damaged_or_cut_zfs_stream_is_refused_and_leaves_no_dataset_and_the_previous_state_intact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((save_pool, restore_pool)) = pools() else {
        return;
    };
    let e = Zfs::default();
    let ds = Dataset::new(&save_pool, "hostile");
    std::fs::write(ds.mnt.join("a"), strata_testing::tree::content(300_000, 1)).unwrap();
    let full = send(&e, &ds, None, "s1");
    let second = strata_testing::tree::content(300_000, 2);
    std::fs::write(ds.mnt.join("b"), &second).unwrap();
    let inc = send(&e, &ds, Some("s1"), "s2");
    let chain = vec!["s1".to_string(), "s2".to_string()];
    let target_ds = Dataset::new(&restore_pool, "hostile-parent");
    let target = target_ds.mnt.join("r");

    // Cut in half, and a byte flipped in the middle of zfs send's bytes.
    let cut = &full[..full.len() / 2];
    let mut flipped = full.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    for bad in [cut, &flipped[..]] {
        let err = restore(&e, &target, &chain[..1], &[(bad, None, "s1")]).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(!target.exists(), "nothing at the target");
        assert!(
            staging_left(&restore_pool).is_empty(),
            "{:?}",
            staging_left(&restore_pool)
        );
    }

    // A whole first stream, then a damaged incremental onto it: refused,
    // the dataset still at s1 with s1's content.
    restore(&e, &target, &chain[..1], &[(&full, None, "s1")]).unwrap();
    let mut bad_inc = inc.clone();
    let at = bad_inc.len() / 2;
    bad_inc[at] ^= 0x55;
    let err = restore(
        &e,
        &target,
        &chain,
        &[(&full, None, "s1"), (&bad_inc, Some("s1"), "s2")],
    )
    .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(
        std::fs::read(target.join("a")).unwrap(),
        strata_testing::tree::content(300_000, 1)
    );
    assert!(!target.join("b").exists());
    let snaps = zfs(&[
        "list",
        "-H",
        "-o",
        "name",
        "-t",
        "snapshot",
        "-r",
        &format!("{}/r", target_ds.name),
    ]);
    assert!(
        snaps.contains("@strata-s1") && !snaps.contains("@strata-s2"),
        "{snaps}"
    );
    // And the good one applies.
    restore(
        &e,
        &target,
        &chain,
        &[(&full, None, "s1"), (&inc, Some("s1"), "s2")],
    )
    .unwrap();
    assert_eq!(std::fs::read(target.join("b")).unwrap(), second);
}

#[test]
fn streams_of_another_engine_and_hosts_without_zfs_are_clear_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((save_pool, restore_pool)) = pools() else {
        return;
    };
    let e = Zfs::default();
    let ds = Dataset::new(&save_pool, "wrong");
    std::fs::write(ds.mnt.join("a"), b"x").unwrap();
    let zstream = send(&e, &ds, None, "s1");
    // A zfs stream applied by the native engine.
    let t = tempfile::tempdir().unwrap();
    let err =
        native::receive(t.path(), &zstream[..], &ReceiveOptions::new(None), &Quiet).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"zfs\"") && text.contains("native engine"),
        "{text}"
    );
    // A native stream applied by the zfs engine.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"y").unwrap();
    let mut nstream = Vec::new();
    native::send(
        src.path(),
        None::<strata_engine::index::IndexReader<&[u8]>>,
        &header(None, "n1"),
        &Default::default(),
        &mut nstream,
        Vec::new(),
        &Quiet,
    )
    .unwrap();
    let parent = Dataset::new(&restore_pool, "wrong-parent");
    let err = restore(
        &e,
        &parent.mnt.join("r"),
        &["n1".into()],
        &[(&nstream, None, "n1")],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"native\"") && text.contains("zfs engine"),
        "{text}"
    );
    assert!(staging_left(&restore_pool).is_empty());
    // Restoring a zfs chain where no dataset is: names the path.
    let err = restore(
        &e,
        &t.path().join("r"),
        &["s1".into()],
        &[(&zstream, None, "s1")],
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::Target { .. }), "{err}");
    assert!(err.to_string().contains("ZFS dataset"), "{err}");
    // A host without zfs: the program is named.
    let none = Zfs {
        program: "/nonexistent/zfs".into(),
        ..Zfs::default()
    };
    let err = none
        .restore_into(&parent.mnt.join("r2"), &["s1".into()], false)
        .and_then(|mut d| d.receive(&mut &zstream[..], &ReceiveOptions::new(None), false, &Quiet))
        .expect_err("fails");
    assert!(err.to_string().contains("/nonexistent/zfs"), "{err}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn children() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .filter(|c| !c.trim().is_empty())
        .collect()
}

fn has_children() -> bool {
    match rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {
        Err(e) => e != rustix::io::Errno::CHILD,
        Ok(_) => true,
    }
}

#[test]
fn two_hundred_send_receive_cycles_leak_no_descriptor_and_no_child() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((save_pool, restore_pool)) = pools() else {
        return;
    };
    let e = Zfs::default();
    let ds = Dataset::new(&save_pool, "cycles");
    let parent = Dataset::new(&restore_pool, "cycles-parent");
    let target = parent.mnt.join("r");
    std::fs::write(ds.mnt.join("n"), b"0").unwrap();
    let full = send(&e, &ds, None, "c0");
    restore(&e, &target, &["c0".into()], &[(&full, None, "c0")]).unwrap();
    let (fds, kids) = (open_fds(), has_children());
    assert!(!kids, "children: {:?}", children());
    let mut chain = vec!["c0".to_string()];
    for i in 1..=200 {
        std::fs::write(ds.mnt.join("n"), i.to_string()).unwrap();
        let (prev, end) = (format!("c{}", i - 1), format!("c{i}"));
        let s = send(&e, &ds, Some(&prev), &end);
        chain.push(end.clone());
        // Onto the dataset that holds the previous snapshot: one stream.
        let mut dest = e.restore_into(&target, &chain, false).unwrap();
        assert_eq!(dest.holds(), i, "the target holds all but the newest");
        let opts = ReceiveOptions {
            holds: Some(prev.clone()),
            expect_end: Some(end.clone()),
            owners: native::Owners::for_this_process(),
        };
        dest.receive(&mut &s[..], &opts, false, &Quiet).unwrap();
        dest.finish().unwrap();
        // Keep the pools small: older snapshots go.
        if i >= 2 {
            zfs(&["destroy", &format!("{}@strata-c{}", ds.name, i - 2)]);
        }
    }
    assert_eq!(std::fs::read_to_string(target.join("n")).unwrap(), "200");
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert!(!has_children(), "a child was left behind");
    let _ = ds.snapshots();
}
