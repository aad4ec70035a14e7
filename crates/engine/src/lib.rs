//! strata's engines: what turns a project tree into a snapshot stream and a
//! stream back into a tree.
//!
//! - [`command`]: external commands (`zfs`, `btrfs`): no shell, bounded,
//!   timed out, their standard error in the error;
//! - [`engine`]: the [`Engine`] trait every engine implements, and
//!   [`EngineKind`], the engine's name recorded with streams;
//! - [`stream`]: the header every engine's stream starts with;
//! - [`format`]: the versioned, self-checking record format shared by the
//!   stream and the index (see `docs/stream-format.md`);
//! - [`relpath`]: validated relative paths and the walk order they sort in;
//! - [`index`]: the per-host index of a snapshot (size, mtime, ctime, inode,
//!   mode per entry) that incrementals are computed against;
//! - [`mounts`]: what is mounted where, for the engines of file systems;
//! - [`zfs`]: the ZFS engine (`zfs send`, `zfs receive`);
//! - [`btrfs`]: the btrfs engine (`btrfs send`, `btrfs receive`);
//! - [`native`]: the portable engine: [`native::send`] walks a tree and emits
//!   a full or incremental stream, [`native::receive`] applies one.

pub mod btrfs;
pub mod command;
pub mod engine;
pub mod error;
mod external;
pub mod format;
pub mod index;
pub mod mounts;
pub mod native;
pub mod regroup;
pub mod relpath;
pub mod stream;
pub mod zfs;

pub use engine::{Engine, EngineKind, RestoreTarget, SendJob, UnknownEngine, detect};
pub use error::{EngineError, Result};
pub use relpath::RelPath;
pub use stream::StreamHeader;

/// What an engine tells its caller while it works: warnings about entries it
/// skipped or retried, and progress. Every method has a no-op default.
pub trait Observer: Sync {
    /// Something was skipped, retried or saved in a state the user should know.
    fn warning(&self, _path: &str, _message: &str) {}
    /// `bytes` more bytes of file content were covered: read or written, or
    /// (on send) found unchanged and skipped.
    fn file_bytes(&self, _bytes: u64) {}
    /// One more entry was visited.
    fn entry(&self) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// A number for the name of a staging directory or dataset: private to
/// this process's restore, so it needs to be unique, not unguessable.
pub(crate) fn unique_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// True for the name of a staging dataset or directory (`<prefix><pid>-…`)
/// whose restoring process no longer runs: a restore killed before it
/// cleaned up left it. Staging is local to a host, so the process id
/// tells.
pub(crate) fn staging_owner_dead(name: &str, prefix: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(prefix)
        .and_then(|r| r.split_once('-'))
        .and_then(|(pid, _)| pid.parse::<i32>().ok())
    else {
        return false;
    };
    if pid as u32 == std::process::id() {
        return false;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH),
        None => false,
    }
}
