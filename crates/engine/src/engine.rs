//! The shape every engine has: what the layers above (save, restore, the
//! CLI) call, so that none of them knows which engine runs.
//!
//! An engine turns a project into a stream from a base snapshot (or from
//! nothing) and applies a chain of its streams to a target. Besides the
//! stream, a send writes the new snapshot's *local state*, which the next
//! send starts from: for the native engine the index of the tree
//! ([`crate::index`]). The caller keeps the local state beside the project
//! and passes it back; it never looks inside.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

use crate::Observer;
use crate::error::Result;
use crate::native::{ReceiveOptions, ReceiveSummary, SendSummary};
use crate::stream::StreamHeader;

/// Which engine made a stream, as recorded with the stream and the
/// project and written in the stream's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The portable engine: strata's own stream of a directory tree.
    Native,
    /// A ZFS dataset, sent with `zfs send` ([`crate::zfs`]).
    Zfs,
    /// A btrfs subvolume, sent with `btrfs send` ([`crate::btrfs`]).
    Btrfs,
}

impl EngineKind {
    /// Every engine this build knows.
    pub const ALL: [EngineKind; 3] = [EngineKind::Native, EngineKind::Zfs, EngineKind::Btrfs];

    /// The name recorded with streams and projects.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Native => "native",
            EngineKind::Zfs => "zfs",
            EngineKind::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine {0:?} (this strata knows: native, zfs, btrfs)")]
pub struct UnknownEngine(pub String);

impl FromStr for EngineKind {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEngine(s.to_string()))
    }
}

/// One send: where from, what to, and where its outputs go.
pub struct SendJob<'a> {
    /// The project as this host has it (for the native engine, the
    /// directory).
    pub source: &'a Path,
    /// The stream's start (the base snapshot, `None` for a full stream)
    /// and end.
    pub header: &'a StreamHeader,
    /// The base snapshot's local state, as an earlier send or restore of
    /// `source` wrote it; `None` for a full stream.
    pub base: Option<&'a mut (dyn Read + Send)>,
    /// Where the stream goes.
    pub out: &'a mut (dyn Write + Send),
    /// Where the new snapshot's local state goes.
    pub state: &'a mut (dyn Write + Send),
}

/// An engine: see the module's documentation.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// Whether `snapshot`, which the local state of `source` names, can
    /// still be the base of an incremental (a ZFS dataset must still have
    /// the snapshot); when not, the save sends a full stream.
    ///
    /// # Errors
    /// When `source` cannot be looked at.
    fn base_usable(&self, _source: &Path, _snapshot: &str) -> Result<bool> {
        Ok(true)
    }

    /// Writes the stream from `job.header.start` (whose local state is
    /// `job.base`) to the project's current state, and the local state of
    /// the new snapshot.
    ///
    /// # Errors
    /// An I/O error naming the entry, or a sink error.
    fn send(&self, job: SendJob<'_>, obs: &dyn Observer) -> Result<SendSummary>;

    /// The save of `snapshot` from `source` was committed; `previous` is
    /// the snapshot it was based on (or that `source` held). For ZFS: the
    /// new snapshot is held as the next base, the previous one released,
    /// old ones pruned.
    ///
    /// # Errors
    /// When that fails: the save is committed all the same.
    fn committed(&self, _source: &Path, _snapshot: &str, _previous: Option<&str>) -> Result<()> {
        Ok(())
    }

    /// The save of `snapshot` from `source` failed after [`Engine::send`]
    /// began: what it made for it (a ZFS snapshot) is removed.
    fn abandoned(&self, _source: &Path, _snapshot: &str) {}

    /// Gets `target` ready to receive the chain whose snapshots are
    /// `chain` (oldest first): a restore applies the streams the target
    /// does not hold yet ([`RestoreTarget::holds`]) through it, then
    /// [`RestoreTarget::finish`] puts the result in place. A target that
    /// holds part of the chain but diverged from it (a dataset with other
    /// snapshots or later writes) is refused, or with `rollback` rolled
    /// back to its newest snapshot on the chain.
    ///
    /// # Errors
    /// [`crate::EngineError::Target`] for a target this engine cannot
    /// restore into (for the native engine: one that exists and is not an
    /// empty directory); I/O errors naming the path.
    fn restore_into<'a>(
        &'a self,
        target: &Path,
        chain: &[String],
        rollback: bool,
    ) -> Result<Box<dyn RestoreTarget + 'a>>;

    /// Catches `target` up in place: it holds the snapshot the chain's
    /// first `held` streams end at, as the caller verified (its local
    /// state matches it), and only the rest of the chain is applied onto
    /// it ([`RestoreTarget::holds`] is `held`). The zfs and btrfs engines
    /// do this through [`Engine::restore_into`], which finds what the
    /// dataset holds itself.
    ///
    /// # Errors
    /// [`crate::EngineError::Target`] when this engine does not catch up
    /// this way or the target cannot be taken; I/O errors naming the path.
    fn catch_up<'a>(&'a self, target: &Path, held: usize) -> Result<Box<dyn RestoreTarget + 'a>> {
        let _ = held;
        Err(crate::EngineError::Target {
            path: target.to_path_buf(),
            why: format!("the {} engine catches up through its restore", self.kind()),
        })
    }

    /// Whether `root` still holds what its local state `state` recorded
    /// (the first difference, if not), reading no file contents; `None`
    /// from engines whose local state is their file system's snapshots
    /// (they check in their restore).
    ///
    /// # Errors
    /// When `root` cannot be walked or `state` is damaged.
    fn differs_from_state(&self, root: &Path, state: &mut dyn Read) -> Result<Option<String>> {
        let _ = (root, state);
        Ok(None)
    }

    /// Writes the local state of `snapshot` as `root` holds it after a
    /// restore, so that the next send from `root` is an incremental.
    /// Entries changed at or after `changed_after` are not trusted to be
    /// the snapshot's (the next send reads them again). Returns the
    /// entries recorded.
    ///
    /// # Errors
    /// When `root` cannot be read or the sink fails.
    fn restored_state(
        &self,
        root: &Path,
        snapshot: &str,
        changed_after: SystemTime,
        out: &mut dyn Write,
    ) -> Result<u64>;
}

/// A restore in progress: the streams of one chain applied in order by
/// one [`Engine`], into a staging area only this process writes, until
/// [`RestoreTarget::finish`] puts the result at the target.
pub trait RestoreTarget {
    /// How many streams at the start of the chain the target holds already
    /// (they are not applied again).
    fn holds(&self) -> usize {
        0
    }

    /// Applies the next stream, which must start at what the target holds
    /// and end where the caller expects (`opts`); `more_follow` tells
    /// whether later streams of the chain will be applied after it.
    ///
    /// # Errors
    /// Bad input ([`crate::EngineError::is_bad_input`]) naming the entry or
    /// offset, or an I/O error of the target. What was staged stays until
    /// [`RestoreTarget::abort`].
    fn receive(
        &mut self,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        more_follow: bool,
        obs: &dyn Observer,
    ) -> Result<ReceiveSummary>;

    /// Makes what was received durable and puts it at the target, durably
    /// too. Returns the instant it was in place: a change in the restored
    /// tree after it is not the snapshot's.
    ///
    /// # Errors
    /// When it cannot be made durable or moved; what was staged is removed.
    fn finish(self: Box<Self>) -> Result<SystemTime>;

    /// Removes what was staged: the target is as it was before.
    fn abort(self: Box<Self>);
}

/// The engine for the project at `dir`: `zfs` when a ZFS dataset is
/// mounted exactly there, `btrfs` when it is a btrfs subvolume that is not
/// a mount point (its snapshots go beside it, on the same file system),
/// else `native`.
///
/// # Errors
/// When `dir` cannot be resolved or the mount table read.
pub fn detect(dir: &Path) -> Result<EngineKind> {
    let canon =
        std::fs::canonicalize(dir).map_err(|e| crate::EngineError::io("resolve", dir, e))?;
    let mount = crate::mounts::mount_at(&canon)
        .map_err(|e| crate::EngineError::io("read", "/proc/self/mountinfo", e))?;
    Ok(match mount {
        Some(m) if m.is_zfs() => EngineKind::Zfs,
        Some(_) => EngineKind::Native,
        None if crate::btrfs::is_subvolume(&canon).unwrap_or(false) => EngineKind::Btrfs,
        None => EngineKind::Native,
    })
}
