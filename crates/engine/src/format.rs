//! The record format shared by snapshot streams and indexes (version 1).
//!
//! A file is a magic of 8 bytes followed by records:
//!
//! ```text
//! record  := tag:u8  len:u32le  payload[len]  crc:u32le
//! ```
//!
//! `crc` is the CRC-32 (IEEE) of tag, len and payload, so every record checks
//! itself; the last record is a trailer with counts, so truncation is found
//! too. Integers are little-endian; byte strings are `len:u32le bytes`.
//! `docs/stream-format.md` describes every record.

use std::io::{self, Read, Write};

use crate::error::{EngineError, Result};
use crate::relpath::RelPath;

/// Magic at the start of a snapshot stream.
pub const STREAM_MAGIC: &[u8; 8] = b"\x89STRATA\n";
/// Magic at the start of an index file.
pub const INDEX_MAGIC: &[u8; 8] = b"\x89STRIDX\n";
/// The stream format version this build writes. Version 2 added sub-file
/// patches (FILE_PATCH, PATCH_DATA, PATCH_END); version 1 streams, which
/// never contain them, are still read.
pub const STREAM_VERSION: u32 = 2;
/// The oldest stream format version this build reads.
pub const STREAM_VERSION_MIN: u32 = 1;
/// The index format version (local state: an index of another version is
/// not used, and the next save is a full stream).
pub const INDEX_VERSION: u32 = 2;
/// Largest payload accepted in one record.
pub const MAX_RECORD: u32 = 2 << 20;
/// Largest file-content payload written in one data record.
pub const DATA_RECORD: usize = 1 << 20;

/// Record tags.
#[allow(missing_docs)]
pub mod tag {
    pub const HEADER: u8 = 1;
    pub const DIR: u8 = 2;
    pub const FILE: u8 = 3;
    pub const DATA: u8 = 4;
    pub const FILE_END: u8 = 5;
    pub const FILE_ABORT: u8 = 6;
    pub const SYMLINK: u8 = 7;
    pub const HARDLINK: u8 = 8;
    pub const FIFO: u8 = 9;
    pub const DELETE: u8 = 10;
    pub const INDEX_ENTRY: u8 = 11;
    pub const FILE_PATCH: u8 = 12;
    pub const PATCH_DATA: u8 = 13;
    pub const PATCH_END: u8 = 14;
    pub const TRAILER: u8 = 15;
}

/// Metadata carried by every entry that creates something.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits and set-id/sticky bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner (recorded; applied only when restoring as root with owners on).
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes records and keeps the counts the trailer needs.
pub struct RecordWriter<W: Write> {
    out: W,
    records: u64,
    bytes: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a file with `magic`.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn new(mut out: W, magic: &[u8; 8]) -> Result<Self> {
        out.write_all(magic).map_err(EngineError::Stream)?;
        Ok(Self {
            out,
            records: 0,
            bytes: 8,
        })
    }

    /// Writes one record.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn record(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        debug_assert!(payload.len() <= MAX_RECORD as usize);
        let len = payload.len() as u32;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(payload);
        let sum = crc.finalize().to_le_bytes();
        self.out.write_all(&head).map_err(EngineError::Stream)?;
        self.out.write_all(payload).map_err(EngineError::Stream)?;
        self.out.write_all(&sum).map_err(EngineError::Stream)?;
        self.records += 1;
        self.bytes += 9 + u64::from(len);
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far, magic included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sink, to write bytes after the records that are not records
    /// (the zfs engine's raw `zfs send` stream follows its header).
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Flushes and returns the sink.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(EngineError::Stream)?;
        Ok(self.out)
    }
}

/// A record read back, with the offset it started at.
#[derive(Debug)]
pub struct Record<'a> {
    /// Its tag.
    pub tag: u8,
    /// Its payload.
    pub payload: &'a [u8],
    /// Byte offset of the record in the file.
    pub offset: u64,
}

/// Reads records, checking lengths and checksums.
pub struct RecordReader<R: Read> {
    input: R,
    buf: Vec<u8>,
    offset: u64,
    records: u64,
}

impl<R: Read> RecordReader<R> {
    /// Checks the magic and gets ready to read records.
    ///
    /// # Errors
    /// [`EngineError::Corrupt`] when the magic is wrong or missing.
    pub fn new(mut input: R, magic: &[u8; 8], what: &str) -> Result<Self> {
        let mut m = [0u8; 8];
        read_full(&mut input, &mut m)
            .map_err(EngineError::Stream)?
            .then_some(())
            .ok_or_else(|| EngineError::Corrupt {
                offset: 0,
                why: format!("not a strata {what}: shorter than its magic"),
            })?;
        if &m != magic {
            return Err(EngineError::Corrupt {
                offset: 0,
                why: format!("not a strata {what} (bad magic)"),
            });
        }
        Ok(Self {
            input,
            buf: Vec::new(),
            offset: 8,
            records: 0,
        })
    }

    /// The next record, or `None` at a clean end of input (only at a record
    /// boundary).
    ///
    /// # Errors
    /// [`EngineError::Corrupt`] for a truncated record, an oversized length
    /// or a checksum mismatch.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let start = self.offset;
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match self.input.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(EngineError::Corrupt {
                        offset: start,
                        why: "truncated inside a record header".into(),
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EngineError::Stream(e)),
            }
        }
        let tag = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(EngineError::Corrupt {
                offset: start,
                why: format!("record length {len} exceeds the limit of {MAX_RECORD}"),
            });
        }
        self.buf.resize(len as usize + 4, 0);
        if !read_full(&mut self.input, &mut self.buf).map_err(EngineError::Stream)? {
            return Err(EngineError::Corrupt {
                offset: start,
                why: format!("truncated: record of {len} bytes runs past the end"),
            });
        }
        let (payload, sum) = self.buf.split_at(len as usize);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(payload);
        if crc.finalize().to_le_bytes() != sum {
            return Err(EngineError::Corrupt {
                offset: start,
                why: format!("checksum mismatch in record {} (tag {tag})", self.records),
            });
        }
        self.offset += 9 + u64::from(len);
        self.records += 1;
        Ok(Some(Record {
            tag,
            payload,
            offset: start,
        }))
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// True when the input has no byte left.
    ///
    /// # Errors
    /// When reading fails.
    pub fn at_end(&mut self) -> Result<bool> {
        let mut b = [0u8; 1];
        loop {
            match self.input.read(&mut b) {
                Ok(n) => return Ok(n == 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EngineError::Stream(e)),
            }
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The input, positioned after the last record read.
    pub fn into_inner(self) -> R {
        self.input
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the input ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Builds a payload.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Appends a u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    /// Appends entry metadata.
    pub fn meta(&mut self, m: &Meta) -> &mut Self {
        self.u32(m.mode)
            .u32(m.uid)
            .u32(m.gid)
            .i64(m.mtime_sec)
            .u32(m.mtime_nsec);
        self.u32(m.xattrs.len() as u32);
        for (k, v) in &m.xattrs {
            self.bytes(k).bytes(v);
        }
        self
    }
}

/// Reads a payload, with errors that name the record.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    offset: u64,
}

impl<'a> Dec<'a> {
    /// Decodes `rec`'s payload.
    pub fn new(rec: &Record<'a>) -> Self {
        Self {
            buf: rec.payload,
            pos: 0,
            offset: rec.offset,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(EngineError::Corrupt {
                offset: self.offset,
                why: format!("field {what} runs past the end of its record"),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Reads a u8.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    /// Reads a u32.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    /// Reads a u64.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    /// Reads an i64.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    /// Reads `N` bytes.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }
    /// Reads the rest of the record.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Reads a byte string.
    ///
    /// # Errors
    /// When its length runs past the record.
    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// Reads a relative path, refusing hostile ones.
    ///
    /// # Errors
    /// [`EngineError::Refused`] naming the path.
    pub fn path(&mut self, what: &str) -> Result<RelPath> {
        let b = self.bytes(what)?;
        RelPath::new(b).map_err(|why| EngineError::refused(b, why))
    }
    /// Reads entry metadata.
    ///
    /// # Errors
    /// When the record is too short.
    pub fn meta(&mut self) -> Result<Meta> {
        let mode = self.u32("mode")?;
        let uid = self.u32("uid")?;
        let gid = self.u32("gid")?;
        let mtime_sec = self.i64("mtime")?;
        let mtime_nsec = self.u32("mtime nanoseconds")?;
        let n = self.u32("xattr count")?;
        let mut xattrs = Vec::new();
        for _ in 0..n {
            let k = self.bytes("xattr name")?.to_vec();
            let v = self.bytes("xattr value")?.to_vec();
            xattrs.push((k, v));
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime_sec,
            mtime_nsec,
            xattrs,
        })
    }
    /// Checks that the whole payload was read.
    ///
    /// # Errors
    /// When bytes are left over.
    pub fn end(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(EngineError::Corrupt {
                offset: self.offset,
                why: format!(
                    "{} unexpected bytes at the end of a record",
                    self.buf.len() - self.pos
                ),
            });
        }
        Ok(())
    }
}
