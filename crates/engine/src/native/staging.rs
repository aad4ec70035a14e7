//! Where a native restore writes: a private staging directory next to the
//! target, renamed onto it once the chain applied and is durable.
//!
//! The chain is applied into `tree` inside a `0700` directory
//! `.strata-restore-<name>-<random>` beside the target, so no other user
//! can reach the tree while it is written (nobody can race the restore by
//! swapping entries for symlinks); `tree` is renamed onto the target only
//! when every stream applied cleanly and one `syncfs` made it durable, so
//! a failed, interrupted or power-cut restore never leaves a target that
//! looks complete.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{ReceiveOptions, ReceiveSession, ReceiveSummary, receive_in};
use crate::Observer;
use crate::engine::RestoreTarget;
use crate::error::{EngineError, Result};

/// A native restore in progress ([`RestoreTarget`]).
pub(super) struct Staged {
    target: PathBuf,
    parent: PathBuf,
    staging: PathBuf,
    tree: PathBuf,
    /// One session for the chain: a later stream's metadata-only patches
    /// of files an earlier one wrote need no read-back.
    session: ReceiveSession,
    /// Streams of the chain the tree held when adopted.
    held: usize,
}

impl Staged {
    /// Checks that `target` is absent or an empty directory and makes the
    /// staging directory beside it.
    pub(super) fn new(target: &Path) -> Result<Self> {
        let refuse = |why: String| EngineError::Target {
            path: target.to_path_buf(),
            why,
        };
        match fs::read_dir(target) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(refuse("exists and is not empty".into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(e.to_string())),
        }
        let s = Self::beside(target)?;
        if let Err(e) = fs::create_dir(&s.tree) {
            remove_tree(&s.staging);
            return Err(EngineError::io("create", &s.tree, e));
        }
        Ok(s)
    }

    /// Takes the tree at `target`, which holds the chain's first `held`
    /// streams' snapshot (the caller verified it), into a new staging
    /// directory beside it (a rename: nothing is copied), so the rest of
    /// the chain is applied where no other user can reach it and the tree
    /// is renamed back once durable. On abort the adopted tree is removed
    /// with the staging directory: it may hold half a stream.
    pub(super) fn adopt(target: &Path, held: usize) -> Result<Self> {
        let md = fs::symlink_metadata(target).map_err(|e| EngineError::io("inspect", target, e))?;
        if !md.is_dir() {
            return Err(EngineError::Target {
                path: target.to_path_buf(),
                why: "is not a directory".into(),
            });
        }
        let mut s = Self::beside(target)?;
        if let Err(e) = fs::rename(target, &s.tree) {
            remove_tree(&s.staging);
            return Err(EngineError::io("take the local copy from", target, e));
        }
        s.held = held;
        Ok(s)
    }

    /// A new private staging directory beside `target` (without its tree).
    fn beside(target: &Path) -> Result<Self> {
        let refuse = |why: String| EngineError::Target {
            path: target.to_path_buf(),
            why,
        };
        let name = target
            .file_name()
            .ok_or_else(|| refuse("has no name".into()))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| EngineError::io("create", &parent, e))?;
        let staging = parent.join(format!(
            ".strata-restore-{}-{:016x}",
            name.to_string_lossy(),
            crate::unique_suffix()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| EngineError::io("create", &staging, e))?;
        let tree = staging.join("tree");
        Ok(Self {
            target: target.to_path_buf(),
            parent,
            staging,
            tree,
            session: ReceiveSession::default(),
            held: 0,
        })
    }
}

impl RestoreTarget for Staged {
    fn holds(&self) -> usize {
        self.held
    }

    fn receive(
        &mut self,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        more_follow: bool,
        obs: &dyn Observer,
    ) -> Result<ReceiveSummary> {
        self.session.set_more_follow(more_follow);
        receive_in(&self.tree, input, opts, obs, &mut self.session)
    }

    fn finish(self: Box<Self>) -> Result<SystemTime> {
        let written = Instant::now();
        let fail = |e: EngineError| {
            remove_tree(&self.staging);
            Err(e)
        };
        // Durable before it is renamed into place and recorded: after a
        // power cut, the target is either absent or holds the whole
        // snapshot, never files the recorded snapshot does not match
        // (which the next save would take for the user's changes). One
        // syncfs of the file system the tree is on: cheaper than an fsync
        // per file, the same guarantee.
        if let Err(e) = sync_file_system(&self.tree) {
            return fail(EngineError::io("sync the file system of", &self.tree, e));
        }
        // Let the last writes leave the racy window before the rename: the
        // index then trusts the restored files, and every write after the
        // rename is newer than the threshold (see `build_index`).
        std::thread::sleep(Duration::from_millis(60).saturating_sub(written.elapsed()));
        let placed = SystemTime::now();
        // rename(2) replaces an empty target directory atomically.
        if let Err(e) = fs::rename(&self.tree, &self.target) {
            return fail(EngineError::io("move the restore into", &self.target, e));
        }
        let _ = fs::remove_dir(&self.staging);
        // The rename itself is durable before the restore is recorded.
        fs::File::open(&self.parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| EngineError::io("sync", &self.parent, e))?;
        Ok(placed)
    }

    fn abort(self: Box<Self>) {
        remove_tree(&self.staging);
    }
}

/// Writes everything of the file system that holds `dir` to disk.
fn sync_file_system(dir: &Path) -> io::Result<()> {
    let d = fs::File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

/// Removes a tree strata wrote (a staging tree, a local copy that holds
/// nothing unsaved), read-only directories included; best effort.
pub fn remove_tree(p: &Path) {
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(md) = fs::symlink_metadata(&d)
            && md.is_dir()
        {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    let _ = fs::remove_dir_all(p);
}
