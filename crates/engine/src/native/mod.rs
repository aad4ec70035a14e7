//! The native engine: portable snapshot streams of a directory tree.
//!
//! [`send`] walks the tree in-process (walkdir, sorted, a bounded number of
//! open directories), merge-joins it with the index of the base snapshot and
//! writes a full or incremental stream plus the index of the new snapshot.
//! [`receive`] applies a stream to a directory, refusing hostile input.

mod nofollow;
pub mod owners;
mod receive;
mod send;

pub use nofollow::can_chown;
pub use owners::Owners;
pub use receive::{ReceiveOptions, ReceiveSession, ReceiveSummary, receive, receive_in};
pub use send::{SendOptions, SendSummary, build_index, send};

use crate::format::Meta;

/// Header of a stream: what it goes from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The snapshot the stream applies on; `None` for a full stream.
    pub start: Option<String>,
    /// The snapshot it produces.
    pub end: String,
    /// When the stream was made (milliseconds since the epoch).
    pub created_ms: i64,
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
