//! The native stream's records, typed: each one's encoding and decoding
//! side by side, so the sender and the receiver cannot disagree on a field.
//!
//! The framing (tag, length, payload, CRC) is [`crate::format`]'s; the
//! header record, which every engine's stream starts with, is
//! [`crate::stream`]'s. `docs/stream-format.md` describes every record.

use std::borrow::Cow;
use std::io::Write;

use crate::error::{EngineError, Result};
use crate::format::{Dec, Enc, Meta, Record, RecordWriter, tag};
use crate::relpath::RelPath;

/// One record of a native stream after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeRecord<'a> {
    /// A directory; its metadata is applied once its contents are written.
    Dir {
        /// Its path.
        path: Cow<'a, RelPath>,
        /// Its owner, mode, mtime and extended attributes.
        meta: Cow<'a, Meta>,
    },
    /// A regular file written whole: DATA records and a FILE_END follow.
    File {
        /// Its path.
        path: Cow<'a, RelPath>,
        /// Its metadata.
        meta: Cow<'a, Meta>,
    },
    /// A piece of the open file's content, appended.
    Data(&'a [u8]),
    /// The end of a file written whole.
    FileEnd {
        /// Its length: the bytes its DATA records carried.
        size: u64,
    },
    /// The open file (whole or patch) changed while it was read: it is
    /// removed, and the same path may come again.
    FileAbort,
    /// A symbolic link.
    Symlink {
        /// Its path.
        path: Cow<'a, RelPath>,
        /// Its owner and mtime (a link's mode means nothing).
        meta: Cow<'a, Meta>,
        /// What it points to, never followed by the receiver.
        target: &'a [u8],
    },
    /// Another name of a regular file the stream or the target has.
    Hardlink {
        /// The new name.
        path: Cow<'a, RelPath>,
        /// The existing name.
        target: Cow<'a, RelPath>,
    },
    /// A named pipe.
    Fifo {
        /// Its path.
        path: Cow<'a, RelPath>,
        /// Its metadata.
        meta: Cow<'a, Meta>,
    },
    /// Whatever is at the path (a directory with everything in it) is gone.
    Delete {
        /// Its path.
        path: Cow<'a, RelPath>,
    },
    /// A file the target holds in its base state, changed in place:
    /// PATCH_DATA records and a PATCH_END follow (stream version 2).
    FilePatch {
        /// Its path.
        path: Cow<'a, RelPath>,
        /// Its new metadata.
        meta: Cow<'a, Meta>,
        /// Its new length.
        size: u64,
    },
    /// Bytes of the patched file at `offset`, in increasing, disjoint
    /// ranges.
    PatchData {
        /// Where they go.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// The end of a patch, with the BLAKE3 hash the whole file must have.
    PatchEnd {
        /// The file's length.
        size: u64,
        /// The hash of its whole content.
        hash: [u8; 32],
    },
    /// The last record: counts the receiver checks.
    Trailer {
        /// Entry records (deletions included).
        entries: u64,
        /// Records before the trailer, the header included.
        records: u64,
        /// File content bytes in DATA and PATCH_DATA records.
        data_bytes: u64,
    },
}

impl<'a> NativeRecord<'a> {
    /// The record's tag.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Dir { .. } => tag::DIR,
            Self::File { .. } => tag::FILE,
            Self::Data(_) => tag::DATA,
            Self::FileEnd { .. } => tag::FILE_END,
            Self::FileAbort => tag::FILE_ABORT,
            Self::Symlink { .. } => tag::SYMLINK,
            Self::Hardlink { .. } => tag::HARDLINK,
            Self::Fifo { .. } => tag::FIFO,
            Self::Delete { .. } => tag::DELETE,
            Self::FilePatch { .. } => tag::FILE_PATCH,
            Self::PatchData { .. } => tag::PATCH_DATA,
            Self::PatchEnd { .. } => tag::PATCH_END,
            Self::Trailer { .. } => tag::TRAILER,
        }
    }

    /// The path of an entry record (one that creates, changes or deletes
    /// something at a path); `None` for the others.
    pub fn path(&self) -> Option<&RelPath> {
        match self {
            Self::Dir { path, .. }
            | Self::File { path, .. }
            | Self::Symlink { path, .. }
            | Self::Hardlink { path, .. }
            | Self::Fifo { path, .. }
            | Self::Delete { path }
            | Self::FilePatch { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Writes the record.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn write<W: Write>(&self, w: &mut RecordWriter<W>) -> Result<()> {
        // File content goes out as it is, without a copy.
        if let Self::Data(d) = self {
            return w.record(tag::DATA, d);
        }
        let mut e = Enc::default();
        match self {
            Self::Dir { path, meta } | Self::File { path, meta } | Self::Fifo { path, meta } => {
                e.bytes(path.as_bytes()).meta(meta);
            }
            Self::Data(_) => unreachable!("written above"),
            Self::FileEnd { size } => {
                e.u64(*size);
            }
            Self::FileAbort => {}
            Self::Symlink { path, meta, target } => {
                e.bytes(path.as_bytes()).meta(meta).bytes(target);
            }
            Self::Hardlink { path, target } => {
                e.bytes(path.as_bytes()).bytes(target.as_bytes());
            }
            Self::Delete { path } => {
                e.bytes(path.as_bytes());
            }
            Self::FilePatch { path, meta, size } => {
                e.bytes(path.as_bytes()).meta(meta).u64(*size);
            }
            Self::PatchData { offset, data } => {
                e.u64(*offset);
                e.0.extend_from_slice(data);
            }
            Self::PatchEnd { size, hash } => {
                e.u64(*size);
                e.0.extend_from_slice(hash);
            }
            Self::Trailer {
                entries,
                records,
                data_bytes,
            } => {
                e.u64(*entries).u64(*records).u64(*data_bytes);
            }
        }
        w.record(self.tag(), &e.0)
    }

    /// Reads the record `rec` holds, checking that every field is there and
    /// nothing follows them.
    ///
    /// # Errors
    /// [`EngineError::Corrupt`] for a short or long record, an unknown tag
    /// or a second header; [`EngineError::Refused`] for a hostile path.
    pub fn read(rec: &Record<'a>) -> Result<Self> {
        let mut d = Dec::new(rec);
        let path = |d: &mut Dec<'a>| d.path("path").map(Cow::Owned);
        let r = match rec.tag {
            tag::DIR => Self::Dir {
                path: path(&mut d)?,
                meta: Cow::Owned(d.meta()?),
            },
            tag::FILE => Self::File {
                path: path(&mut d)?,
                meta: Cow::Owned(d.meta()?),
            },
            tag::FIFO => Self::Fifo {
                path: path(&mut d)?,
                meta: Cow::Owned(d.meta()?),
            },
            tag::DATA => Self::Data(d.rest()),
            tag::FILE_END => Self::FileEnd {
                size: d.u64("size")?,
            },
            tag::FILE_ABORT => Self::FileAbort,
            tag::SYMLINK => Self::Symlink {
                path: path(&mut d)?,
                meta: Cow::Owned(d.meta()?),
                target: d.bytes("link target")?,
            },
            tag::HARDLINK => Self::Hardlink {
                path: path(&mut d)?,
                target: Cow::Owned(d.path("link target")?),
            },
            tag::DELETE => Self::Delete {
                path: path(&mut d)?,
            },
            tag::FILE_PATCH => Self::FilePatch {
                path: path(&mut d)?,
                meta: Cow::Owned(d.meta()?),
                size: d.u64("size")?,
            },
            tag::PATCH_DATA => Self::PatchData {
                offset: d.u64("patch offset")?,
                data: d.rest(),
            },
            tag::PATCH_END => Self::PatchEnd {
                size: d.u64("size")?,
                hash: d.fixed("content hash")?,
            },
            tag::TRAILER => Self::Trailer {
                entries: d.u64("entries")?,
                records: d.u64("records")?,
                data_bytes: d.u64("data bytes")?,
            },
            tag::HEADER => return Err(corrupt(rec, "a second header")),
            t => return Err(corrupt(rec, &format!("unknown record tag {t}"))),
        };
        d.end()?;
        Ok(r)
    }
}

fn corrupt(rec: &Record<'_>, why: &str) -> EngineError {
    EngineError::Corrupt {
        offset: rec.offset,
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RecordReader, STREAM_MAGIC};

    fn all() -> Vec<NativeRecord<'static>> {
        let p =
            |s: &str| -> Cow<'static, RelPath> { Cow::Owned(RelPath::new(s.as_bytes()).unwrap()) };
        let meta: Cow<'static, Meta> = Cow::Owned(Meta {
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            mtime_sec: -5,
            mtime_nsec: 999_999_999,
            xattrs: vec![(b"user.a".to_vec(), b"\0\xff".to_vec())],
        });
        vec![
            NativeRecord::Dir {
                path: p(""),
                meta: meta.clone(),
            },
            NativeRecord::File {
                path: p("a/b"),
                meta: meta.clone(),
            },
            NativeRecord::Data(b"content"),
            NativeRecord::Data(b""),
            NativeRecord::FileEnd { size: 7 },
            NativeRecord::FileAbort,
            NativeRecord::Symlink {
                path: p("l"),
                meta: meta.clone(),
                target: b"../x",
            },
            NativeRecord::Hardlink {
                path: p("h"),
                target: p("a/b"),
            },
            NativeRecord::Fifo {
                path: p("f"),
                meta: meta.clone(),
            },
            NativeRecord::Delete { path: p("gone") },
            NativeRecord::FilePatch {
                path: p("p"),
                meta,
                size: u64::MAX,
            },
            NativeRecord::PatchData {
                offset: 1 << 40,
                data: b"xy",
            },
            NativeRecord::PatchEnd {
                size: 3,
                hash: [7; 32],
            },
            NativeRecord::Trailer {
                entries: 1,
                records: 2,
                data_bytes: 3,
            },
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let mut w = RecordWriter::new(Vec::new(), STREAM_MAGIC).unwrap();
        for r in all() {
            r.write(&mut w).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut rd = RecordReader::new(&bytes[..], STREAM_MAGIC, "stream").unwrap();
        for want in all() {
            let rec = rd.next_record().unwrap().expect("a record");
            assert_eq!(rec.tag, want.tag());
            assert_eq!(NativeRecord::read(&rec).unwrap(), want);
        }
        assert!(rd.next_record().unwrap().is_none());
    }

    #[test]
    fn a_record_with_a_byte_too_many_or_too_few_is_corrupt() {
        for r in all() {
            let mut w = RecordWriter::new(Vec::new(), STREAM_MAGIC).unwrap();
            r.write(&mut w).unwrap();
            let bytes = w.finish().unwrap();
            let mut rd = RecordReader::new(&bytes[..], STREAM_MAGIC, "stream").unwrap();
            let rec = rd.next_record().unwrap().unwrap();
            let mut long = rec.payload.to_vec();
            long.push(0);
            let rec_long = Record {
                tag: rec.tag,
                payload: &long,
                offset: rec.offset,
            };
            // DATA and PATCH_DATA take the rest of their record.
            let open_ended = matches!(r, NativeRecord::Data(_) | NativeRecord::PatchData { .. });
            if open_ended {
                continue;
            }
            let e = NativeRecord::read(&rec_long).unwrap_err();
            assert!(matches!(e, EngineError::Corrupt { .. }), "{r:?}: {e}");
            if let Some((_, short)) = rec.payload.split_last() {
                let rec_short = Record {
                    tag: rec.tag,
                    payload: short,
                    offset: rec.offset,
                };
                assert!(NativeRecord::read(&rec_short).is_err(), "{r:?}");
            }
        }
    }
}
