//! Scratch projects on the real file systems `scripts/filesystems up`
//! makes: ZFS datasets in the zfs-fuse pools and btrfs subvolumes on the
//! loop-device file systems, one side to save from and one to restore into
//! (as two hosts would). Each is destroyed, with its snapshots, when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::setting;

/// Which file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ZFS (zfs-fuse).
    Zfs,
    /// btrfs.
    Btrfs,
}

/// The two sides of one file system kind.
#[derive(Debug, Clone)]
pub struct Fs {
    /// Which.
    pub kind: Kind,
    /// The save side: a pool name or a btrfs mount point.
    pub save: String,
    /// The restore side.
    pub restore: String,
}

/// A dataset, subvolume or directory made for one test, destroyed when
/// dropped.
#[derive(Debug)]
pub struct Scratch {
    /// Where it is.
    pub path: PathBuf,
    /// Its ZFS dataset name (empty for btrfs).
    pub dataset: String,
    kind: Kind,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match self.kind {
            Kind::Zfs => {
                // A held snapshot (strata holds the base of the next
                // incremental) cannot be destroyed: release the holds.
                release_holds(&self.dataset);
                // zfs-fuse keeps a dataset busy for a moment after a
                // receive or unmount: try for a while, so that runs do not
                // fill the pools with what they left.
                for _ in 0..50 {
                    let out = Command::new("zfs")
                        .args(["destroy", "-r", "-f", &self.dataset])
                        .output();
                    match out {
                        Ok(o)
                            if !o.status.success()
                                && String::from_utf8_lossy(&o.stderr).contains("busy") =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(200));
                        }
                        _ => break,
                    }
                }
            }
            Kind::Btrfs => remove_btrfs_project(&self.path),
        }
    }
}

/// The snapshots of `dataset` and below that someone holds (`userrefs`
/// above 0; `zfs holds` does not work on zfs-fuse), by name; empty when
/// `zfs list` fails.
pub fn held_snapshots(dataset: &str) -> Vec<String> {
    let Ok(out) = Command::new("zfs")
        .args([
            "list",
            "-H",
            "-o",
            "name,userrefs",
            "-t",
            "snapshot",
            "-r",
            dataset,
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, refs)| refs.trim() != "0")
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Releases strata's holds on the snapshots of `dataset` and below.
fn release_holds(dataset: &str) {
    for name in held_snapshots(dataset) {
        let _ = Command::new("zfs")
            .args(["release", "strata", &name])
            .output();
    }
}

/// Deletes the btrfs project at `path` and its snapshots.
fn remove_btrfs_project(path: &Path) {
    remove_btrfs(path);
    if let Some(snaps) = btrfs_snapshot_dir(path) {
        remove_btrfs(&snaps);
    }
}

/// Runs `program args`, panicking with its standard error when it fails;
/// its standard output.
///
/// # Panics
/// When it cannot run or fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The zfs pools, when `scripts/filesystems up` made them (in CI: a
/// panic when not).
pub fn zfs() -> Option<Fs> {
    Some(Fs {
        kind: Kind::Zfs,
        save: setting("STRATA_TEST_ZFS_SAVE_POOL")?,
        restore: setting("STRATA_TEST_ZFS_RESTORE_POOL")?,
    })
}

/// The btrfs file systems, when `scripts/filesystems up` made them.
pub fn btrfs() -> Option<Fs> {
    Some(Fs {
        kind: Kind::Btrfs,
        save: setting("STRATA_TEST_BTRFS_SAVE")?,
        restore: setting("STRATA_TEST_BTRFS_RESTORE")?,
    })
}

/// The snapshot directory of the btrfs project at `project`
/// (`strata_engine::btrfs::Btrfs::snapshot_dir`).
pub fn btrfs_snapshot_dir(project: &Path) -> Option<PathBuf> {
    Some(
        project
            .parent()?
            .join(".strata-snapshots")
            .join(project.file_name()?),
    )
}

/// True when the btrfs subvolume at `path` is read-only.
pub fn btrfs_read_only(path: &Path) -> bool {
    let out = Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(path)
        .arg("ro")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

/// Deletes `path` on btrfs: the subvolumes in it, deepest first, then
/// the rest.
pub fn remove_btrfs(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                remove_btrfs(&e.path());
            }
        }
        use std::os::unix::fs::MetadataExt;
        if meta.ino() == 256 {
            let _ = Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(path)
                .output();
        } else {
            let _ = std::fs::remove_dir(path);
        }
    } else {
        let _ = std::fs::remove_file(path);
    }
}

impl Fs {
    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        match self.kind {
            Kind::Zfs => "zfs",
            Kind::Btrfs => "btrfs",
        }
    }

    fn scratch(&self, side: &str, what: &str, subvolume: bool) -> Scratch {
        let name = format!("{what}-{}", std::process::id());
        match self.kind {
            Kind::Zfs => {
                let dataset = format!("{side}/{name}");
                let _ = Command::new("zfs")
                    .args(["destroy", "-r", "-f", &dataset])
                    .status();
                run("zfs", &["create", &dataset]);
                let mnt = run("zfs", &["get", "-H", "-o", "value", "mountpoint", &dataset]);
                Scratch {
                    path: PathBuf::from(mnt.trim()),
                    dataset,
                    kind: Kind::Zfs,
                }
            }
            Kind::Btrfs => {
                let s = Scratch {
                    path: Path::new(side).join(&name),
                    dataset: String::new(),
                    kind: Kind::Btrfs,
                };
                // What a killed run left.
                remove_btrfs_project(&s.path);
                if subvolume {
                    run("btrfs", &["subvolume", "create", s.path.to_str().unwrap()]);
                } else {
                    std::fs::create_dir(&s.path).unwrap();
                }
                s
            }
        }
    }

    /// A fresh project on the save side: a dataset, a subvolume.
    pub fn project(&self, what: &str) -> Scratch {
        self.scratch(&self.save, what, true)
    }

    /// A fresh place on the restore side for restore targets to go in:
    /// a dataset, a directory.
    pub fn restore_parent(&self, what: &str) -> Scratch {
        self.scratch(&self.restore, what, false)
    }

    /// What restores under `parent` (a [`Fs::restore_parent`]) left
    /// staged (none, when each restore cleaned up).
    pub fn staging_left(&self, parent: &Scratch) -> Vec<String> {
        match self.kind {
            Kind::Zfs => run("zfs", &["list", "-H", "-o", "name", "-r", &parent.dataset])
                .lines()
                .filter(|l| l.contains("strata-restore-"))
                .map(str::to_string)
                .collect(),
            // Half-received snapshots (subvolumes not read-only) and the
            // subvolumes made beside a project for an exchange.
            Kind::Btrfs => walkdir::WalkDir::new(&parent.path)
                .max_depth(4)
                .into_iter()
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy();
                    let in_snapshots = e
                        .path()
                        .ancestors()
                        .any(|a| a.file_name().is_some_and(|f| f == ".strata-snapshots"));
                    n.contains(".strata-new-")
                        || (in_snapshots && n.starts_with("strata-") && !btrfs_read_only(e.path()))
                })
                .map(|e| e.path().display().to_string())
                .collect(),
        }
    }

    /// The ids of the `strata-*` snapshots the project at `path` has,
    /// oldest first for ZFS, by name for btrfs.
    pub fn snapshots(&self, path: &Path) -> Vec<String> {
        match self.kind {
            Kind::Zfs => {
                let ds = run("zfs", &["list", "-H", "-o", "name", path.to_str().unwrap()]);
                let ds = ds.trim();
                run(
                    "zfs",
                    &[
                        "list",
                        "-H",
                        "-o",
                        "name",
                        "-t",
                        "snapshot",
                        "-s",
                        "createtxg",
                        "-d",
                        "1",
                        ds,
                    ],
                )
                .lines()
                .filter_map(|l| l.split_once("@strata-").map(|(_, id)| id.to_string()))
                .collect()
            }
            Kind::Btrfs => {
                let mut ids: Vec<String> = btrfs_snapshot_dir(path)
                    .and_then(|d| std::fs::read_dir(d).ok())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("strata-")
                            .map(str::to_string)
                    })
                    .collect();
                ids.sort();
                ids
            }
        }
    }

    /// Destroys the project's snapshot `id` (the save side's, to keep the
    /// file system small).
    pub fn drop_snapshot(&self, project: &Scratch, id: &str) {
        match self.kind {
            Kind::Zfs => {
                run(
                    "zfs",
                    &["destroy", &format!("{}@strata-{id}", project.dataset)],
                );
            }
            Kind::Btrfs => {
                let snap = btrfs_snapshot_dir(&project.path)
                    .unwrap()
                    .join(format!("strata-{id}"));
                run("btrfs", &["subvolume", "delete", snap.to_str().unwrap()]);
            }
        }
    }
}

/// Each named case as two tests, `<case>::zfs` and `<case>::btrfs`, which
/// call `on(strata_testing::filesystems::zfs(), case)` (and `btrfs()`):
/// the calling test file defines `on`, which runs the case when the file
/// system is there.
#[macro_export]
macro_rules! filesystem_cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn zfs() {
                super::on($crate::filesystems::zfs(), super::$case);
            }
            #[test]
            fn btrfs() {
                super::on($crate::filesystems::btrfs(), super::$case);
            }
        }
    )*};
}
