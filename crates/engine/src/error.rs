//! The engine's errors. Each names the entry or the byte offset it is about.

use std::io;
use std::path::PathBuf;

/// A result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What went wrong while sending or receiving a stream.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Reading the stream or writing it to its sink failed.
    #[error("stream I/O: {0}")]
    Stream(#[source] io::Error),
    /// The stream is damaged: bad magic, bad checksum, truncated, trailing
    /// bytes, counts that do not match.
    #[error("corrupt stream at byte {offset}: {why}")]
    Corrupt {
        /// Byte offset of the record where the damage was found.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// The stream is well-formed but was written by an unknown format version.
    #[error("unsupported stream version {found} (this strata reads version {supported})")]
    Version {
        /// The version in the stream.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// An entry is refused: hostile path, out-of-order or duplicate entry,
    /// a path reached through a symlink, a delete of something absent.
    #[error("refused entry {entry:?}: {why}")]
    Refused {
        /// The entry's path as written in the stream (lossy UTF-8).
        entry: String,
        /// Why it was refused.
        why: String,
    },
    /// The engine cannot restore into this target (it exists and is not
    /// empty; it is not on the engine's file system).
    #[error("restore target {path}: {why}")]
    Target {
        /// The target.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The dataset or subvolume to restore onto is not at a snapshot of
    /// the chain: it has snapshots the chain does not know, or writes
    /// after its snapshot. Nothing was changed; a restore with rollback
    /// discards what differs.
    #[error(
        "{dataset} has diverged from the chain: {why}; nothing was changed (restore with --rollback to discard what differs)"
    )]
    Diverged {
        /// The dataset or subvolume.
        dataset: String,
        /// What differs.
        why: String,
    },
    /// The file system was busy and the receive did not start (zfs-fuse
    /// keeps a dataset busy for a moment after a receive failed on it).
    /// Nothing was changed: the same stream may be received again.
    #[error("{what}: the file system is busy; nothing was changed")]
    Busy {
        /// The command, its standard error included.
        what: String,
    },
    /// The file system's receive refused the stream (damaged, or not one
    /// that applies to what the target holds).
    #[error("the stream was refused: {why}")]
    Rejected {
        /// The command's error, its standard error included.
        why: String,
    },
    /// An external command (`zfs`, `btrfs`) failed.
    #[error(transparent)]
    Command(#[from] crate::command::CommandError),
    /// The stream was made by another engine than the one applying it.
    #[error(
        "the stream was made by engine {stream:?}; it cannot be applied with the {applied} engine"
    )]
    WrongEngine {
        /// The engine the stream's header names.
        stream: String,
        /// The engine that read it.
        applied: crate::EngineKind,
    },
    /// The stream applies to another snapshot than the one the target holds.
    #[error("stream starts at {stream_start} but the target holds {target}")]
    WrongBase {
        /// The stream's start snapshot (`(none)` for a full stream).
        stream_start: String,
        /// What the target holds (`(empty)` for a fresh target).
        target: String,
    },
}

impl EngineError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        EngineError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn refused(entry: impl AsRef<[u8]>, why: impl Into<String>) -> Self {
        EngineError::Refused {
            entry: String::from_utf8_lossy(entry.as_ref()).into_owned(),
            why: why.into(),
        }
    }

    /// True when the error means the input stream is corrupt or hostile
    /// (as opposed to an I/O failure of this host).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            EngineError::Corrupt { .. }
                | EngineError::Version { .. }
                | EngineError::Refused { .. }
                | EngineError::WrongBase { .. }
                | EngineError::WrongEngine { .. }
                | EngineError::Rejected { .. }
        )
    }
}
