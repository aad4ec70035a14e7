//! The native engine: portable snapshot streams of a directory tree.
//!
//! [`send`] walks the tree in-process (walkdir, sorted, a bounded number of
//! open directories), merge-joins it with the index of the base snapshot and
//! writes a full or incremental stream plus the index of the new snapshot.
//! [`receive`] applies a stream to a directory, refusing hostile input.

mod nofollow;
pub mod owners;
mod receive;
pub mod record;
mod send;
mod staging;

pub use staging::remove_tree;

pub use nofollow::can_chown;
pub use owners::Owners;
pub use receive::{ReceiveOptions, ReceiveSession, ReceiveSummary, receive, receive_in};
pub use record::NativeRecord;
pub use send::{SendOptions, SendSummary, build_index, differs_from_index, send};

pub use crate::stream::StreamHeader;

use std::io::{BufReader, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::engine::{Engine, EngineKind, RestoreTarget, SendJob};
use crate::format::Meta;
use crate::index::IndexReader;
use crate::{Observer, Result};

/// The native engine as an [`Engine`]: its local state is the index of
/// the tree ([`crate::index`]).
#[derive(Debug, Clone, Default)]
pub struct Native {
    /// How sends walk the tree.
    pub send: SendOptions,
}

impl Engine for Native {
    fn kind(&self) -> EngineKind {
        EngineKind::Native
    }

    fn send(&self, job: SendJob<'_>, obs: &dyn Observer) -> Result<SendSummary> {
        let base = match job.base {
            Some(r) => Some(IndexReader::new(BufReader::with_capacity(1 << 16, r))?),
            None => None,
        };
        send(
            job.source, base, job.header, &self.send, job.out, job.state, obs,
        )
    }

    fn restore_into<'a>(
        &'a self,
        target: &Path,
        _chain: &[String],
        _rollback: bool,
    ) -> Result<Box<dyn RestoreTarget + 'a>> {
        Ok(Box::new(staging::Staged::new(target)?))
    }

    fn differs_from_state(
        &self,
        root: &Path,
        state: &mut dyn std::io::Read,
    ) -> Result<Option<String>> {
        let index = IndexReader::new(BufReader::with_capacity(1 << 16, state))?;
        differs_from_index(root, index, &self.send)
    }

    fn catch_up<'a>(&'a self, target: &Path, held: usize) -> Result<Box<dyn RestoreTarget + 'a>> {
        Ok(Box::new(staging::Staged::adopt(target, held)?))
    }

    fn restored_state(
        &self,
        root: &Path,
        snapshot: &str,
        changed_after: SystemTime,
        out: &mut dyn Write,
    ) -> Result<u64> {
        build_index(root, snapshot, &self.send, changed_after, out)
    }
}

pub(crate) fn xattr_names_sorted(
    list: std::io::Result<xattr::XAttrs>,
) -> std::io::Result<Vec<std::ffi::OsString>> {
    match list {
        Ok(l) => {
            let mut v: Vec<_> = l.collect();
            v.sort();
            Ok(v)
        }
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

pub(crate) fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::NOTSUP.raw_os_error()
            || c == rustix::io::Errno::OPNOTSUPP.raw_os_error()
    )
}

/// Metadata without extended attributes, from `lstat`/`fstat`.
pub(crate) fn meta_of(md: &std::fs::Metadata) -> Meta {
    use std::os::unix::fs::MetadataExt;
    Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs: Vec::new(),
    }
}
