//! The btrfs engine: a project is a subvolume, its streams are `btrfs
//! send`'s.
//!
//! A save takes a read-only snapshot of the project subvolume `P` as
//! `<parent of P>/.strata-snapshots/<name of P>/strata-<snapshot id>` and
//! sends it, whole (`btrfs send`) or from the base snapshot (`btrfs send
//! -p`). The stream strata stores is the header every engine's stream
//! starts with ([`crate::stream`], engine `btrfs`) followed by `btrfs
//! send`'s bytes as they are.
//!
//! Once the save is committed ([`Engine::committed`]), `strata-*`
//! snapshots of the project other than the new base and the newest
//! [`Btrfs::keep_local`] are deleted (btrfs has no holds: the snapshot
//! directory is strata's, and the base is always kept).
//!
//! A restore receives the chain's streams into the project's snapshot
//! directory (`btrfs receive --chroot`, under the directory's lock), each
//! as a read-only subvolume, keeps the newest as the base of the next
//! save, and makes a writable snapshot of it the live project. Onto a
//! project that already holds a snapshot of the chain it receives only the
//! missing incrementals, and only when the project has not diverged
//! (snapshots after that one the chain does not know; writes after it,
//! seen in the subvolume's generation) unless asked to roll back; the live
//! subvolume is then swapped for the new one in one
//! `renameat2(RENAME_EXCHANGE)`. A stream `btrfs receive` refuses, or one
//! cut short, leaves nothing: what this restore received is deleted.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::Observer;
use crate::command::{Cmd, DEFAULT_STALL};
use crate::engine::{Engine, EngineKind, RestoreTarget, SendJob};
use crate::error::{EngineError, Result};
use crate::native::{ReceiveOptions, ReceiveSummary, SendSummary};

/// The version of the btrfs engine's stream: the header, then `btrfs
/// send`'s bytes, regrouped so that file data dedupes (2,
/// [`crate::regroup`]); version 1 streams (the bytes as they are) are
/// still read.
pub const BTRFS_STREAM_VERSION: u32 = 2;

/// The prefix of the snapshots strata makes.
pub const SNAPSHOT_PREFIX: &str = "strata-";

/// The directory beside a project that holds its snapshots (one
/// directory per project inside).
pub const SNAPSHOT_DIR: &str = ".strata-snapshots";

/// `statfs`'s `f_type` of btrfs.
const BTRFS_SUPER_MAGIC: u32 = 0x9123_683e;

/// The inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// Most bytes `btrfs subvolume show` may print.
const SHOW_MAX: usize = 64 << 10;

/// True when `path` is on a btrfs file system.
///
/// # Errors
/// When `path` cannot be looked at.
pub fn is_btrfs(path: &Path) -> std::io::Result<bool> {
    let st = rustix::fs::statfs(path)?;
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as u32 == BTRFS_SUPER_MAGIC)
}

/// True when `path` is the root of a btrfs subvolume (false when nothing
/// is there).
///
/// # Errors
/// When `path` cannot be looked at.
pub fn is_subvolume(path: &Path) -> std::io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(meta.is_dir() && meta.ino() == SUBVOLUME_ROOT_INO && is_btrfs(path)?)
}

/// The btrfs engine and its settings.
#[derive(Debug, Clone)]
pub struct Btrfs {
    /// The `btrfs` program.
    pub program: OsString,
    /// How long a `btrfs send` or `receive` may move no byte before it is
    /// killed.
    pub stall: Duration,
    /// How many `strata-*` snapshots a project keeps after a save (the
    /// newest; the base of the next incremental among them). At least 1.
    pub keep_local: usize,
}

impl Default for Btrfs {
    fn default() -> Self {
        Self {
            program: "btrfs".into(),
            stall: DEFAULT_STALL,
            keep_local: 1,
        }
    }
}

/// What `btrfs subvolume show` tells of a subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Info {
    /// The last transaction that changed it.
    generation: u64,
    /// The transaction that created it.
    created: u64,
    /// Read-only (a snapshot strata made or received).
    readonly: bool,
}

fn snapshot_file(snapshot: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{snapshot}")
}

impl Btrfs {
    fn btrfs(&self) -> Cmd {
        Cmd::new(&self.program)
    }

    /// The project subvolume at `path`, resolved.
    ///
    /// # Errors
    /// [`EngineError::Target`] when `path` is not the root of a btrfs
    /// subvolume.
    pub fn subvolume_at(&self, path: &Path) -> Result<PathBuf> {
        let canon = std::fs::canonicalize(path).map_err(|e| EngineError::io("resolve", path, e))?;
        if is_subvolume(&canon).map_err(|e| EngineError::io("stat", path, e))? {
            Ok(canon)
        } else {
            Err(EngineError::Target {
                path: path.to_path_buf(),
                why: "is not a btrfs subvolume (the btrfs engine saves and restores whole subvolumes; `btrfs subvolume create` makes one)".into(),
            })
        }
    }

    /// The directory of the snapshots of the project at `project` (which
    /// need not exist yet): `<parent>/.strata-snapshots/<name>`.
    ///
    /// # Errors
    /// [`EngineError::Target`] for a path without a parent or a name.
    pub fn snapshot_dir(project: &Path) -> Result<PathBuf> {
        let name = project.file_name().filter(|n| *n != "." && *n != "..");
        match (project.parent(), name) {
            (Some(parent), Some(name)) => Ok(parent.join(SNAPSHOT_DIR).join(name)),
            _ => Err(EngineError::Target {
                path: project.to_path_buf(),
                why: "has no parent directory to keep its snapshots in".into(),
            }),
        }
    }

    fn info(&self, subvolume: &Path) -> Result<Info> {
        let out = self
            .btrfs()
            .args(["subvolume", "show"])
            .arg(subvolume)
            .output(SHOW_MAX)?;
        parse_show(&String::from_utf8_lossy(&out)).ok_or_else(|| EngineError::Target {
            path: subvolume.to_path_buf(),
            why: "`btrfs subvolume show` did not tell its generation".into(),
        })
    }

    /// strata's snapshots in the snapshot directory `dir` (their snapshot
    /// ids) with what they are, oldest first.
    fn snapshots(&self, dir: &Path) -> Result<Vec<(String, Info)>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(EngineError::io("list", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| EngineError::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix(SNAPSHOT_PREFIX)) else {
                continue;
            };
            let path = entry.path();
            if is_subvolume(&path).map_err(|e| EngineError::io("stat", &path, e))? {
                let info = self.info(&path)?;
                // Not read-only: half made by a receive that was killed.
                if info.readonly {
                    out.push((id.to_string(), info));
                }
            }
        }
        out.sort_by_key(|(_, i)| i.created);
        Ok(out)
    }

    /// Deletes the `strata-*` snapshots in `dir` other than `base` and the
    /// newest [`Btrfs::keep_local`].
    fn prune(&self, dir: &Path, base: &str) -> Result<()> {
        let ours = self.snapshots(dir)?;
        for (id, _) in ours.iter().rev().skip(self.keep_local.max(1)) {
            if id != base {
                let path = dir.join(snapshot_file(id));
                if let Err(e) = self.delete(&path) {
                    tracing::warn!("keeping {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    /// Deletes the subvolume at `path`.
    fn delete(&self, path: &Path) -> Result<()> {
        Ok(self
            .btrfs()
            .args(["subvolume", "delete"])
            .arg(path)
            .status()?)
    }

    /// Makes what changed under `path` durable.
    fn sync(&self, path: &Path) -> Result<()> {
        Ok(self
            .btrfs()
            .args(["filesystem", "sync"])
            .arg(path)
            .status()?)
    }
}

/// The generation, creation generation and flags out of `btrfs subvolume
/// show`'s text.
fn parse_show(text: &str) -> Option<Info> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let flags = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Flags:").map(str::trim))?;
    Some(Info {
        generation: field("Generation:")?,
        created: field("Gen at creation:")?,
        readonly: flags
            .split(|c: char| c == ',' || c.is_whitespace())
            .any(|f| f == "readonly"),
    })
}

/// Creates `dir` (and the `.strata-snapshots` above it) readable by its
/// owner only: snapshots of every project are in there.
fn make_snapshot_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io("create", dir, e))?;
    if let Some(top) = dir.parent() {
        std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| EngineError::io("chmod", top, e))?;
    }
    Ok(())
}

impl Engine for Btrfs {
    fn kind(&self) -> EngineKind {
        EngineKind::Btrfs
    }

    fn base_usable(&self, source: &Path, snapshot: &str) -> Result<bool> {
        let project = self.subvolume_at(source)?;
        let base = Self::snapshot_dir(&project)?.join(snapshot_file(snapshot));
        Ok(is_subvolume(&base).unwrap_or(false) && self.info(&base)?.readonly)
    }

    fn send(&self, job: SendJob<'_>, obs: &dyn Observer) -> Result<SendSummary> {
        let project = self.subvolume_at(job.source)?;
        let dir = Self::snapshot_dir(&project)?;
        make_snapshot_dir(&dir)?;
        let new = dir.join(snapshot_file(&job.header.end));
        self.btrfs()
            .args(["subvolume", "snapshot", "-r"])
            .arg(&project)
            .arg(&new)
            .status()?;
        let mut send = self.btrfs().args(["send", "-q"]).stall(self.stall);
        if let Some(start) = &job.header.start {
            send = send.arg("-p").arg(dir.join(snapshot_file(start)));
        }
        let sent = crate::external::send(
            job,
            obs,
            EngineKind::Btrfs,
            BTRFS_STREAM_VERSION,
            send.arg(&new),
            crate::regroup::BtrfsSplitter::default(),
        );
        if sent.is_err() {
            // Not a snapshot of any saved state: nothing may build on it.
            let _ = self.delete(&new);
        }
        sent
    }

    fn committed(&self, source: &Path, snapshot: &str, _previous: Option<&str>) -> Result<()> {
        let project = self.subvolume_at(source)?;
        self.prune(&Self::snapshot_dir(&project)?, snapshot)
    }

    fn abandoned(&self, source: &Path, snapshot: &str) {
        if let Ok(dir) = self
            .subvolume_at(source)
            .and_then(|p| Self::snapshot_dir(&p))
        {
            let path = dir.join(snapshot_file(snapshot));
            if is_subvolume(&path).unwrap_or(false) {
                let _ = self.delete(&path);
            }
        }
    }

    fn restore_into<'a>(
        &'a self,
        target: &Path,
        chain: &[String],
        rollback: bool,
    ) -> Result<Box<dyn RestoreTarget + 'a>> {
        Ok(Box::new(BtrfsRestore::new(self, target, chain, rollback)?))
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

/// The prefix of the subvolume a restore onto the project `name` makes
/// beside it before exchanging the two, followed by the restoring
/// process's id.
fn beside_prefix(name: &str) -> String {
    format!(".{name}.strata-new-")
}

/// The lock file in a snapshot directory: one restore of a project at a
/// time.
const LOCK_FILE: &str = ".lock";

/// A btrfs restore in progress.
///
/// The streams are received straight into the project's snapshot
/// directory (a received subvolume is read-only, and btrfs cannot move a
/// read-only subvolume to another directory); what this restore received
/// is deleted again if it fails. A subvolume there that is not read-only
/// is one a killed `btrfs receive` left half-made: under the directory's
/// lock it is deleted before anything else.
struct BtrfsRestore<'a> {
    btrfs: &'a Btrfs,
    /// The project's path.
    target: PathBuf,
    /// Its snapshot directory, where the streams are received.
    dir: PathBuf,
    /// The snapshot directory's lock, held until the restore ends.
    _lock: std::fs::File,
    /// For a project that exists: the chain's snapshot it holds, with how
    /// many streams of the chain that is, whether it must be replaced even
    /// if nothing is received (rollback of writes), and the snapshots to
    /// delete on success (rollback of unknown ones).
    existing: Option<Existing>,
    /// The snapshot ids this restore received, in order.
    received: Vec<String>,
}

struct Existing {
    base: String,
    holds: usize,
    replace: bool,
    discard: Vec<String>,
}

impl<'a> BtrfsRestore<'a> {
    fn new(btrfs: &'a Btrfs, target: &Path, chain: &[String], rollback: bool) -> Result<Self> {
        let refuse = |why: String| EngineError::Target {
            path: target.to_path_buf(),
            why,
        };
        let project = match std::fs::symlink_metadata(target) {
            Ok(_) => Some(btrfs.subvolume_at(target)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(EngineError::io("stat", target, e)),
        };
        let exists = project.is_some();
        let target = match project {
            Some(p) => p,
            None => {
                let parent = target
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                match std::fs::canonicalize(parent).and_then(|p| is_btrfs(&p).map(|b| (p, b))) {
                    Ok((p, true)) => p.join(target.file_name().unwrap_or_default()),
                    _ => {
                        return Err(refuse(format!(
                            "its parent {} is not a directory on a btrfs file system (the btrfs engine restores a subvolume)",
                            parent.display()
                        )));
                    }
                }
            }
        };
        let dir = Btrfs::snapshot_dir(&target)?;
        make_snapshot_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| EngineError::io("open", &lock_path, e))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(refuse(format!(
                "another restore of it is running (it holds {})",
                lock_path.display()
            )));
        }
        clear_killed(btrfs, &dir, &target);
        let existing = if exists {
            Some(Self::existing(btrfs, &target, &dir, chain, rollback)?)
        } else {
            None
        };
        Ok(Self {
            btrfs,
            target,
            dir,
            _lock: lock,
            existing,
            received: Vec::new(),
        })
    }

    /// What a project that exists holds of the chain, and whether it
    /// diverged from it.
    fn existing(
        btrfs: &Btrfs,
        project: &Path,
        dir: &Path,
        chain: &[String],
        rollback: bool,
    ) -> Result<Existing> {
        let snaps = btrfs.snapshots(dir)?;
        let Some((k, base)) = chain
            .iter()
            .enumerate()
            .rev()
            .find_map(|(k, c)| snaps.iter().find(|(id, _)| id == c).map(|s| (k, s.clone())))
        else {
            return Err(EngineError::Target {
                path: project.to_path_buf(),
                why: format!(
                    "holds no snapshot of this chain (none in {}); restore into a new path",
                    dir.display()
                ),
            });
        };
        let after: Vec<String> = snaps
            .iter()
            .filter(|(id, i)| i.created > base.1.created && !chain.contains(id))
            .map(|(id, _)| snapshot_file(id))
            .collect();
        // A subvolume's generation is written when its transaction
        // commits: commit what was written to it first.
        btrfs.sync(project)?;
        let live = btrfs.info(project)?;
        let since = live.created.max(base.1.created);
        let written = live.generation > since;
        let dataset = project.display().to_string();
        if !rollback {
            if !after.is_empty() {
                return Err(EngineError::Diverged {
                    dataset,
                    why: format!(
                        "it has snapshots after {} that the chain does not know: {}",
                        snapshot_file(&base.0),
                        after.join(", ")
                    ),
                });
            }
            if written {
                return Err(EngineError::Diverged {
                    dataset,
                    why: format!(
                        "it was written to after its snapshot {} (generation {since}, now {})",
                        snapshot_file(&base.0),
                        live.generation
                    ),
                });
            }
        }
        Ok(Existing {
            base: base.0,
            holds: k + 1,
            replace: rollback && (written || !after.is_empty()),
            discard: if rollback { after } else { Vec::new() },
        })
    }

    /// Deletes the subvolume `strata-<id>` in the snapshot directory, if
    /// there is one.
    fn delete_snapshot(&self, id: &str) -> Result<()> {
        let path = self.dir.join(snapshot_file(id));
        if is_subvolume(&path).map_err(|e| EngineError::io("stat", &path, e))? {
            self.btrfs.delete(&path)?;
        }
        Ok(())
    }

    /// Puts a writable snapshot of `snapshot` at the target: directly for a
    /// new project; for one that exists, beside it and then exchanged with
    /// it in one rename, the old one deleted.
    fn make_live(&self, snapshot: &Path) -> Result<()> {
        if self.existing.is_none() {
            return Ok(self
                .btrfs
                .btrfs()
                .args(["subvolume", "snapshot"])
                .arg(snapshot)
                .arg(&self.target)
                .status()?);
        }
        let name = self
            .target
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let beside = self.target.with_file_name(format!(
            "{}{}-{:016x}",
            beside_prefix(&name),
            std::process::id(),
            crate::unique_suffix()
        ));
        self.btrfs
            .btrfs()
            .args(["subvolume", "snapshot"])
            .arg(snapshot)
            .arg(&beside)
            .status()?;
        if let Err(e) = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &beside,
            rustix::fs::CWD,
            &self.target,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            let _ = self.btrfs.delete(&beside);
            return Err(EngineError::io("exchange", &self.target, e.into()));
        }
        // `beside` is now the old project.
        if let Err(e) = self.btrfs.delete(&beside) {
            tracing::warn!("the replaced project is left at {}: {e}", beside.display());
        }
        Ok(())
    }

    /// Deletes what this restore received, and for a new project the
    /// snapshot directory it made (when nothing else is in it).
    fn undo(&self) {
        for id in &self.received {
            let _ = self.delete_snapshot(id);
        }
        if self.existing.is_none() {
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            if std::fs::remove_dir(&self.dir).is_ok()
                && let Some(top) = self.dir.parent()
            {
                let _ = std::fs::remove_dir(top);
            }
        }
    }
}

/// Deletes what restores of `project` killed midway left: subvolumes in
/// its snapshot directory `dir` that a `btrfs receive` did not finish (not
/// read-only), and the subvolume made beside the project for an exchange
/// (the new one, or after the exchange the old one) whose process is gone.
/// Called with the directory's lock held.
fn clear_killed(btrfs: &Btrfs, dir: &Path, project: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            let ours = e.file_name().to_string_lossy().starts_with(SNAPSHOT_PREFIX);
            if ours
                && is_subvolume(&path).unwrap_or(false)
                && btrfs.info(&path).is_ok_and(|i| !i.readonly)
            {
                tracing::info!(
                    "deleting {}, half received by a restore that was killed",
                    path.display()
                );
                let _ = btrfs.delete(&path);
            }
        }
    }
    let beside = beside_prefix(&project.file_name().unwrap_or_default().to_string_lossy());
    let parent = project.parent().unwrap_or(Path::new("/"));
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if crate::staging_owner_dead(&e.file_name().to_string_lossy(), &beside)
                && is_subvolume(&e.path()).unwrap_or(false)
            {
                tracing::info!(
                    "deleting {}, left by a restore that was killed",
                    e.path().display()
                );
                let _ = btrfs.delete(&e.path());
            }
        }
    }
}

impl RestoreTarget for BtrfsRestore<'_> {
    fn holds(&self) -> usize {
        self.existing.as_ref().map_or(0, |e| e.holds)
    }

    fn receive(
        &mut self,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        _more_follow: bool,
        obs: &dyn Observer,
    ) -> Result<ReceiveSummary> {
        if let Some(end) = &opts.expect_end {
            // Left by an earlier restore of a project that is gone: this
            // chain's is the one (btrfs receive refuses to replace it).
            self.delete_snapshot(end)?;
        }
        // --chroot: whatever paths the stream names, it writes under the
        // snapshot directory only. -e: a stream must end at its end
        // command.
        let recv = self
            .btrfs
            .btrfs()
            .args(["receive", "-q", "-e", "--chroot"])
            .arg(&self.dir)
            .stall(self.btrfs.stall);
        let received = crate::external::receive(
            input,
            obs,
            opts,
            EngineKind::Btrfs,
            BTRFS_STREAM_VERSION,
            recv,
            |_| None,
        );
        let summary = match received {
            Ok(s) => s,
            Err(e) => {
                // Half received, if anything.
                if let Some(end) = &opts.expect_end {
                    let _ = self.delete_snapshot(end);
                }
                return Err(e);
            }
        };
        // The stream names the subvolume it makes: it must be the one the
        // header (checked against the catalog) says.
        let end = summary.header.end.clone();
        let made = self.dir.join(snapshot_file(&end));
        self.received.push(end.clone());
        let ok = is_subvolume(&made).unwrap_or(false) && self.btrfs.info(&made)?.readonly;
        if !ok {
            return Err(EngineError::Rejected {
                why: format!(
                    "btrfs receive did not make the read-only subvolume {} the stream's header names",
                    snapshot_file(&end)
                ),
            });
        }
        Ok(summary)
    }

    fn finish(self: Box<Self>) -> Result<SystemTime> {
        let result = (|| {
            let newest = match (self.received.last(), &self.existing) {
                (Some(end), _) => end.clone(),
                (None, Some(ex)) if ex.replace => ex.base.clone(),
                (None, _) => return Ok(()),
            };
            self.make_live(&self.dir.join(snapshot_file(&newest)))?;
            if let Some(ex) = &self.existing {
                for old in &ex.discard {
                    let _ = self.btrfs.delete(&self.dir.join(old));
                }
            }
            self.btrfs.prune(&self.dir, &newest)?;
            self.btrfs.sync(&self.dir)
        })();
        if result.is_err() {
            self.undo();
        }
        result.map(|()| SystemTime::now())
    }

    fn abort(self: Box<Self>) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_is_parsed_for_generations_and_flags() {
        let text = "p/.strata-snapshots/p/strata-s2\n\tName: \t\t\tstrata-s2\n\tUUID: \t\t\t0372896c\n\tGeneration: \t\t12\n\tGen at creation: \t9\n\tParent ID: \t\t5\n\tFlags: \t\t\treadonly\n";
        assert_eq!(
            parse_show(text),
            Some(Info {
                generation: 12,
                created: 9,
                readonly: true
            })
        );
        let rw = text.replace("readonly", "-");
        assert!(!parse_show(&rw).unwrap().readonly);
        assert_eq!(parse_show("Name: x\n"), None);
    }

    #[test]
    fn snapshots_live_beside_the_project() {
        assert_eq!(
            Btrfs::snapshot_dir(Path::new("/srv/projects/p1")).unwrap(),
            Path::new("/srv/projects/.strata-snapshots/p1")
        );
        assert!(Btrfs::snapshot_dir(Path::new("/")).is_err());
    }
}
