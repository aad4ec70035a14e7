//! The ZFS engine: a project is a dataset, its streams are `zfs send`'s.
//!
//! A save snapshots the dataset as `<dataset>@strata-<snapshot id>` and
//! sends it, whole (`zfs send`) or from the base snapshot (`zfs send -i`).
//! The stream strata stores is the header every engine's stream starts with
//! ([`crate::stream`], engine `zfs`) followed by `zfs send`'s bytes as they
//! are, so that chunking and dedup see the file system's own stream.
//!
//! Once the save is committed ([`Engine::committed`]), the new snapshot is
//! held (`zfs hold strata`, so nobody destroys the base of the next
//! incremental by mistake), the previous base is released, and `strata-*`
//! snapshots that are neither held nor among the newest
//! [`Zfs::keep_local`] are destroyed.
//!
//! A restore into a new path receives the chain into a staging dataset
//! beside it (`<parent>/strata-restore-<random>`) and renames it into place;
//! into a dataset that already holds a snapshot of the chain, it receives
//! only the missing incrementals, and only when the dataset has not
//! diverged (snapshots the chain does not know, writes after its snapshot)
//! unless asked to roll back. `zfs recv` applies each stream atomically:
//! a stream it refuses leaves the dataset as it was.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::Observer;
use crate::command::{Cmd, DEFAULT_STALL};
use crate::engine::{Engine, EngineKind, RestoreTarget, SendJob};
use crate::error::{EngineError, Result};
use crate::mounts::mount_at;
use crate::native::{ReceiveOptions, ReceiveSummary, SendSummary};

/// The version of the zfs engine's stream: the header, then `zfs send`'s
/// bytes, regrouped so that file data dedupes (2, [`crate::regroup`]);
/// version 1 streams (the bytes as they are) are still read.
pub const ZFS_STREAM_VERSION: u32 = 2;

/// The prefix of the snapshots strata makes.
pub const SNAPSHOT_PREFIX: &str = "strata-";

/// The prefix of a restore's staging dataset, followed by the restoring
/// process's id.
const STAGING_PREFIX: &str = "strata-restore-";

/// The tag of strata's holds.
pub const HOLD_TAG: &str = "strata";

/// Most bytes a listing (`zfs list`) may print.
const LISTING_MAX: usize = 16 << 20;

/// The ZFS engine and its settings.
#[derive(Debug, Clone)]
pub struct Zfs {
    /// The `zfs` program.
    pub program: OsString,
    /// How long a `zfs send` or `receive` may move no byte before it is
    /// killed.
    pub stall: Duration,
    /// How many `strata-*` snapshots a dataset keeps after a save (the
    /// newest; the held base of the next incremental among them). At
    /// least 1.
    pub keep_local: usize,
}

impl Default for Zfs {
    fn default() -> Self {
        Self {
            program: "zfs".into(),
            stall: DEFAULT_STALL,
            keep_local: 1,
        }
    }
}

/// The snapshot `snapshot` of `dataset`: `dataset@strata-<snapshot>`.
pub fn snapshot_name(dataset: &str, snapshot: &str) -> String {
    format!("{dataset}@{SNAPSHOT_PREFIX}{snapshot}")
}

impl Zfs {
    fn zfs(&self) -> Cmd {
        Cmd::new(&self.program)
    }

    /// The dataset mounted at `path`, which must be exactly its mount point.
    ///
    /// # Errors
    /// [`EngineError::Target`] when no ZFS dataset is mounted there.
    pub fn dataset_at(&self, path: &Path) -> Result<String> {
        let canon = std::fs::canonicalize(path).map_err(|e| EngineError::io("resolve", path, e))?;
        match mount_at(&canon).map_err(|e| EngineError::io("read", "/proc/self/mountinfo", e))? {
            Some(m) if m.is_zfs() => Ok(m.source),
            _ => Err(EngineError::Target {
                path: path.to_path_buf(),
                why: "is not the mount point of a ZFS dataset (the zfs engine saves and restores whole datasets)".into(),
            }),
        }
    }

    /// The snapshots of `dataset` (names after the `@`), oldest first.
    ///
    /// # Errors
    /// When `zfs list` fails.
    pub fn snapshots(&self, dataset: &str) -> Result<Vec<String>> {
        let names = self.names(&["-t", "snapshot", "-s", "createtxg", "-d", "1", dataset])?;
        let prefix = format!("{dataset}@");
        Ok(names
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    /// The names `zfs list -H -o name <args>` prints.
    fn names(&self, args: &[&str]) -> Result<Vec<String>> {
        let out = self
            .zfs()
            .args(["list", "-H", "-o", "name"])
            .args(args)
            .output(LISTING_MAX)?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Mounts the dataset that belongs at `target` when it exists but is
    /// not mounted: a restore killed between its rename and its mount
    /// leaves it so, as does a `zfs unmount` by hand. Mounted, it is
    /// restored onto as the dataset it is.
    fn mount_unmounted(&self, target: &Path) {
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return;
        };
        let Ok(parent_ds) = self.dataset_at(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }) else {
            return;
        };
        let full = format!("{parent_ds}/{}", name.to_string_lossy());
        if self.dataset_at(target).ok().as_deref() != Some(full.as_str()) && self.exists(&full) {
            let _ = self.zfs().args(["mount", &full]).status();
        }
    }

    /// Whether the file system `dataset` exists (an error of `zfs list`
    /// counts as no).
    fn exists(&self, dataset: &str) -> bool {
        self.names(&["-t", "filesystem", dataset]).is_ok()
    }

    /// The number of holds on `snapshot` (`userrefs`).
    fn holds_on(&self, snapshot: &str) -> Result<u64> {
        let out = self
            .zfs()
            .args(["get", "-H", "-p", "-o", "value", "userrefs", snapshot])
            .output(1024)?;
        Ok(String::from_utf8_lossy(&out).trim().parse().unwrap_or(0))
    }

    fn destroy(&self, what: &str) -> Result<()> {
        Ok(self.zfs().args(["destroy", what]).status()?)
    }

    /// Destroys `dataset` and everything below it (a staging dataset),
    /// unmounting it first.
    fn destroy_tree(&self, dataset: &str) -> Result<()> {
        self.while_busy(&["destroy", "-r", "-f", dataset])
    }

    /// Destroys the staging datasets under `parent` that restores killed
    /// before they could clean up left (their process is gone).
    fn clear_dead_staging(&self, parent: &str) {
        let Ok(names) = self.names(&["-d", "1", "-t", "filesystem", parent]) else {
            return;
        };
        for name in &names {
            let leaf = name.rsplit('/').next().unwrap_or("");
            if crate::staging_owner_dead(leaf, STAGING_PREFIX) {
                tracing::info!("destroying {name}, left by a restore that was killed");
                let _ = self.destroy_tree(name);
            }
        }
    }

    /// Renames the file system `from` to `to` and mounts it there. A
    /// mounted file system cannot be renamed while busy (zfs-fuse keeps
    /// one busy for a moment after it was received or unmounted): it is
    /// unmounted first, and the rename retried for a while.
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let _ = self.zfs().args(["unmount", from]).status();
        self.while_busy(&["rename", from, to])?;
        self.zfs().args(["mount", to]).status()?;
        Ok(())
    }

    /// Mounts `dataset` again, so that what a receive changed in it is
    /// what the mount shows (zfs-fuse's mount keeps stale names of
    /// entries an incremental added, until it is mounted again).
    fn remount(&self, dataset: &str) -> Result<()> {
        self.while_busy(&["unmount", dataset])?;
        self.zfs().args(["mount", dataset]).status()?;
        Ok(())
    }

    /// Runs `zfs args`, again while it fails because the file system is
    /// busy (for up to 10 s).
    fn while_busy(&self, args: &[&str]) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.zfs().args(args).status() {
                Ok(()) => return Ok(()),
                Err(e) if e.stderr().contains("busy") && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Engine for Zfs {
    fn kind(&self) -> EngineKind {
        EngineKind::Zfs
    }

    fn base_usable(&self, source: &Path, snapshot: &str) -> Result<bool> {
        let ds = self.dataset_at(source)?;
        let want = format!("{SNAPSHOT_PREFIX}{snapshot}");
        Ok(self.snapshots(&ds)?.contains(&want))
    }

    fn send(&self, job: SendJob<'_>, obs: &dyn Observer) -> Result<SendSummary> {
        let ds = self.dataset_at(job.source)?;
        let new = snapshot_name(&ds, &job.header.end);
        self.zfs().args(["snapshot", &new]).status()?;
        let mut send = self.zfs().arg("send").stall(self.stall);
        if let Some(start) = &job.header.start {
            send = send.arg("-i").arg(format!("@{SNAPSHOT_PREFIX}{start}"));
        }
        let sent = crate::external::send(
            job,
            obs,
            EngineKind::Zfs,
            ZFS_STREAM_VERSION,
            send.arg(&new),
            crate::regroup::ZfsSplitter::default(),
        );
        if sent.is_err() {
            // Not a snapshot of any saved state: nothing may build on it.
            let _ = self.destroy(&new);
        }
        sent
    }

    fn committed(&self, source: &Path, snapshot: &str, previous: Option<&str>) -> Result<()> {
        let ds = self.dataset_at(source)?;
        let new = snapshot_name(&ds, snapshot);
        if self.holds_on(&new)? == 0 {
            self.zfs().args(["hold", HOLD_TAG, &new]).status()?;
        }
        let ours: Vec<String> = self
            .snapshots(&ds)?
            .into_iter()
            .filter(|s| s.starts_with(SNAPSHOT_PREFIX))
            .collect();
        // Every other snapshot of ours is no base any more: the previous
        // one, and one a save killed between its hold and this release
        // left held.
        let base = format!("{SNAPSHOT_PREFIX}{snapshot}");
        for old in ours.iter().filter(|s| **s != base) {
            let name = format!("{ds}@{old}");
            let ours_held = previous.is_some_and(|p| old.strip_prefix(SNAPSHOT_PREFIX) == Some(p))
                || self.holds_on(&name)? > 0;
            if ours_held {
                // Not ours to release (someone else's hold only): an error.
                let _ = self.zfs().args(["release", HOLD_TAG, &name]).status();
            }
        }
        let keep = self.keep_local.max(1);
        for old in ours.iter().rev().skip(keep) {
            let name = format!("{ds}@{old}");
            if self.holds_on(&name)? == 0 {
                // A snapshot someone else holds, or that a clone depends on,
                // stays: it is theirs.
                if let Err(e) = self.destroy(&name) {
                    tracing::warn!("keeping {name}: {e}");
                }
            }
        }
        Ok(())
    }

    fn abandoned(&self, source: &Path, snapshot: &str) {
        if let Ok(ds) = self.dataset_at(source) {
            let _ = self.destroy(&snapshot_name(&ds, snapshot));
        }
    }

    fn restore_into<'a>(
        &'a self,
        target: &Path,
        chain: &[String],
        rollback: bool,
    ) -> Result<Box<dyn RestoreTarget + 'a>> {
        Ok(Box::new(ZfsRestore::new(self, target, chain, rollback)?))
    }

    fn restored_state(
        &self,
        _root: &Path,
        snapshot: &str,
        _changed_after: SystemTime,
        out: &mut dyn Write,
    ) -> Result<u64> {
        crate::external::restored_state(snapshot, out)
    }
}

/// A zfs restore in progress.
struct ZfsRestore<'a> {
    zfs: &'a Zfs,
    /// The dataset receiving the streams.
    dataset: String,
    /// Where it goes when done, if it is a staging dataset.
    rename_to: Option<String>,
    /// The chain's snapshot an existing dataset held (rolled back to on
    /// abort), with how many streams of the chain that is.
    held: Option<(String, usize)>,
    /// A stream was received.
    received: bool,
}

impl<'a> ZfsRestore<'a> {
    fn new(zfs: &'a Zfs, target: &Path, chain: &[String], rollback: bool) -> Result<Self> {
        let refuse = |why: String| EngineError::Target {
            path: target.to_path_buf(),
            why,
        };
        zfs.mount_unmounted(target);
        if target.exists() {
            let dataset = zfs.dataset_at(target)?;
            if let Some((parent, _)) = dataset.rsplit_once('/') {
                zfs.clear_dead_staging(parent);
            }
            return Self::existing(zfs, target, dataset, chain, rollback);
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| valid_component(n))
            .ok_or_else(|| {
                refuse("its name is not a valid ZFS dataset name (letters, digits, '_', '-', '.', ':')".into())
            })?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let parent_ds = zfs.dataset_at(parent).map_err(|_| {
            refuse(format!(
                "its parent {} is not the mount point of a ZFS dataset (the zfs engine restores into a new dataset under the one mounted there)",
                parent.display()
            ))
        })?;
        zfs.clear_dead_staging(&parent_ds);
        let full = format!("{parent_ds}/{name}");
        if zfs.exists(&full) {
            return Err(refuse(format!(
                "dataset {full} exists but is not mounted there (zfs mount {full} failed); mount it or choose another name"
            )));
        }
        let staging = format!(
            "{parent_ds}/{STAGING_PREFIX}{}-{:016x}",
            std::process::id(),
            crate::unique_suffix()
        );
        Ok(Self {
            zfs,
            dataset: staging,
            rename_to: Some(format!("{parent_ds}/{name}")),
            held: None,
            received: false,
        })
    }

    /// A restore onto `dataset`, which must hold a snapshot of the chain
    /// and nothing after it (unless `rollback`: then it is rolled back to
    /// that snapshot, what differs discarded).
    fn existing(
        zfs: &'a Zfs,
        target: &Path,
        dataset: String,
        chain: &[String],
        rollback: bool,
    ) -> Result<Self> {
        let snaps = zfs.snapshots(&dataset)?;
        let on_chain = |s: &str| {
            s.strip_prefix(SNAPSHOT_PREFIX)
                .and_then(|id| chain.iter().position(|c| c == id))
        };
        let Some((at, k)) = snaps
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, s)| on_chain(s).map(|k| (i, k)))
        else {
            return Err(EngineError::Target {
                path: target.to_path_buf(),
                why: format!(
                    "dataset {dataset} holds no snapshot of this chain; restore into a new path"
                ),
            });
        };
        let after: Vec<&String> = snaps[at + 1..].iter().collect();
        let base = format!("{dataset}@{}", snaps[at]);
        if !after.is_empty() {
            if !rollback {
                return Err(EngineError::Diverged {
                    dataset: dataset.clone(),
                    why: format!(
                        "it has snapshots after {} that the chain does not know: {}",
                        snaps[at],
                        after
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            zfs.zfs().args(["rollback", "-r", &base]).status()?;
        } else if rollback {
            // Writes after the snapshot are discarded.
            zfs.zfs().args(["rollback", &base]).status()?;
        }
        Ok(Self {
            zfs,
            dataset,
            rename_to: None,
            held: Some((base, k + 1)),
            received: false,
        })
    }
}

impl RestoreTarget for ZfsRestore<'_> {
    fn holds(&self) -> usize {
        self.held.as_ref().map_or(0, |(_, n)| *n)
    }

    fn receive(
        &mut self,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        _more_follow: bool,
        obs: &dyn Observer,
    ) -> Result<ReceiveSummary> {
        let recv = self
            .zfs
            .zfs()
            .args(["receive", &self.dataset])
            .stall(self.zfs.stall);
        let summary = crate::external::receive(
            input,
            obs,
            opts,
            EngineKind::Zfs,
            ZFS_STREAM_VERSION,
            recv,
            |stderr| {
                if stderr.contains("dataset is busy") {
                    return Some(EngineError::Busy {
                        what: format!("zfs receive {}: {}", self.dataset, stderr.trim()),
                    });
                }
                stderr.contains("modified").then(|| EngineError::Diverged {
                    dataset: self.dataset.clone(),
                    why: format!(
                        "it was written to after its snapshot {} ({})",
                        self.held.as_ref().map_or("", |(b, _)| b.as_str()),
                        stderr.trim()
                    ),
                })
            },
        )?;
        self.received = true;
        Ok(summary)
    }

    fn finish(self: Box<Self>) -> Result<SystemTime> {
        // `zfs receive` and `rename` commit their transaction groups before
        // they return: what they wrote is on disk.
        match &self.rename_to {
            Some(to) => {
                if let Err(e) = self.zfs.rename(&self.dataset, to) {
                    let _ = self.zfs.destroy_tree(&self.dataset);
                    return Err(e);
                }
            }
            None if self.received => self.zfs.remount(&self.dataset)?,
            None => {}
        }
        Ok(SystemTime::now())
    }

    fn abort(self: Box<Self>) {
        match (&self.rename_to, &self.held) {
            (Some(_), _) => {
                // Never received at all, or partly: either way, none of it.
                if self.zfs.snapshots(&self.dataset).is_ok() {
                    let _ = self.zfs.destroy_tree(&self.dataset);
                }
            }
            (None, Some((base, _))) if self.received => {
                // Back to what it held before this restore (a stream was
                // received, so there were no writes after `base` to lose:
                // zfs receive refuses a modified dataset).
                let _ = self.zfs.zfs().args(["rollback", "-r", base]).status();
            }
            // Nothing received: `zfs receive` changed nothing, and the
            // dataset's own writes are not ours to discard.
            (None, _) => {}
        }
    }
}

/// A dataset name component ZFS accepts.
fn valid_component(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 200
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}
