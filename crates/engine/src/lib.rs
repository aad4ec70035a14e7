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
//! - [`native`]: the portable engine: [`native::send`] walks a tree and emits
//!   a full or incremental stream, [`native::receive`] applies one.

pub mod command;
pub mod engine;
pub mod error;
pub mod format;
pub mod index;
pub mod native;
pub mod relpath;
pub mod stream;

pub use engine::{Engine, EngineKind, RestoreTarget, SendJob, UnknownEngine};
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
