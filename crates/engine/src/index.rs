//! The index of a snapshot as this host saw it: one entry per path with the
//! `lstat` fields that tell whether it changed (kind, mode, size, mtime,
//! ctime, inode). Written in walk order during a save (or after a restore),
//! read sequentially and merge-joined with the next walk, so memory does not
//! grow with the number of files. Same record format as the stream, with its
//! own magic; see `docs/stream-format.md`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use crate::error::{EngineError, Result};
use crate::format::{
    DATA_RECORD, Dec, Enc, INDEX_MAGIC, INDEX_VERSION as VERSION, RecordReader, RecordWriter, tag,
};
use crate::relpath::RelPath;

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir = 1,
    /// A regular file.
    File = 2,
    /// A symbolic link.
    Symlink = 3,
    /// A named pipe.
    Fifo = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            _ => return None,
        })
    }
}

/// One path of a snapshot with the fields that tell if it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The path.
    pub path: RelPath,
    /// Its kind.
    pub kind: Kind,
    /// `st_mode`.
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime`, seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// `st_ctime`, seconds and nanoseconds.
    pub ctime: (i64, u32),
    /// `st_ino`.
    pub ino: u64,
    /// Hashes of the file's content in blocks, for sub-file patches; only
    /// for regular files whose content this host sent.
    pub blocks: Option<Blocks>,
}

/// Most blocks hashed per file: block sizes double from 64 KiB until a file
/// has at most this many, so a file's list is at most 1 MiB.
pub const MAX_BLOCKS: u64 = 1 << 16;
const MIN_BLOCK: u64 = 64 << 10;

/// A file's content as fixed-size blocks, each named by the first 16 bytes
/// of its BLAKE3 hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    /// Block size in bytes (a power of two, at least 64 KiB).
    pub block_size: u32,
    /// One hash per block; the last block may be short.
    pub hashes: Vec<[u8; 16]>,
}

impl Blocks {
    /// The block size used for a file of `size` bytes, or `None` when the
    /// file is too large to patch (blocks would exceed a data record).
    pub fn block_size_for(size: u64) -> Option<u32> {
        let mut bs = MIN_BLOCK;
        while size.div_ceil(bs) > MAX_BLOCKS {
            bs *= 2;
        }
        (bs <= DATA_RECORD as u64).then_some(bs as u32)
    }

    /// The hash of one block.
    pub fn hash(block: &[u8]) -> [u8; 16] {
        blake3::hash(block).as_bytes()[..16]
            .try_into()
            .expect("16 bytes")
    }
}

impl IndexEntry {
    /// The entry for `path` with metadata `md` (from `lstat`).
    pub fn from_metadata(path: RelPath, kind: Kind, md: &std::fs::Metadata) -> Self {
        Self {
            path,
            kind,
            mode: md.mode(),
            size: if kind == Kind::Dir { 0 } else { md.size() },
            mtime: (md.mtime(), md.mtime_nsec() as u32),
            ctime: (md.ctime(), md.ctime_nsec() as u32),
            ino: md.ino(),
            blocks: None,
        }
    }

    /// True when nothing the index tracks differs.
    pub fn same_as(&self, other: &IndexEntry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
            && self.ino == other.ino
    }
}

/// Writes an index in walk order.
pub struct IndexWriter<W: Write> {
    w: RecordWriter<W>,
    entries: u64,
    last: Option<RelPath>,
}

impl<W: Write> IndexWriter<W> {
    /// Starts the index of `snapshot`.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn new(out: W, snapshot: &str) -> Result<Self> {
        let mut w = RecordWriter::new(out, INDEX_MAGIC)?;
        w.record(
            tag::HEADER,
            &Enc::default().u32(VERSION).bytes(snapshot.as_bytes()).0,
        )?;
        Ok(Self {
            w,
            entries: 0,
            last: None,
        })
    }

    /// Appends an entry; entries must come in walk order.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn push(&mut self, e: &IndexEntry) -> Result<()> {
        debug_assert!(
            self.last.as_ref().is_none_or(|l| *l < e.path),
            "index out of order"
        );
        let mut enc = Enc::default();
        enc.bytes(e.path.as_bytes())
            .u8(e.kind as u8)
            .u32(e.mode)
            .u64(e.size)
            .i64(e.mtime.0)
            .u32(e.mtime.1)
            .i64(e.ctime.0)
            .u32(e.ctime.1)
            .u64(e.ino);
        match &e.blocks {
            Some(b) => {
                enc.u8(1).u32(b.block_size).u32(b.hashes.len() as u32);
                for h in &b.hashes {
                    enc.0.extend_from_slice(h);
                }
            }
            None => {
                enc.u8(0);
            }
        }
        self.w.record(tag::INDEX_ENTRY, &enc.0)?;
        self.entries += 1;
        if cfg!(debug_assertions) {
            self.last = Some(e.path.clone());
        }
        Ok(())
    }

    /// Writes the trailer and returns the sink.
    ///
    /// # Errors
    /// When the sink fails.
    pub fn finish(mut self) -> Result<W> {
        self.w
            .record(tag::TRAILER, &Enc::default().u64(self.entries).0)?;
        self.w.finish()
    }
}

/// Reads an index back, checking order, checksums and the trailer.
pub struct IndexReader<R: Read> {
    r: RecordReader<R>,
    snapshot: String,
    entries: u64,
    last: Option<RelPath>,
    done: bool,
}

impl<R: Read> IndexReader<R> {
    /// Opens an index.
    ///
    /// # Errors
    /// When it is not an index, or of another version.
    pub fn new(input: R) -> Result<Self> {
        let mut r = RecordReader::new(input, INDEX_MAGIC, "index")?;
        let snapshot = {
            let rec = r.next_record()?.ok_or_else(|| EngineError::Corrupt {
                offset: 8,
                why: "index has no header".into(),
            })?;
            if rec.tag != tag::HEADER {
                return Err(EngineError::Corrupt {
                    offset: rec.offset,
                    why: "index does not start with a header".into(),
                });
            }
            let mut d = Dec::new(&rec);
            let version = d.u32("version")?;
            if version != VERSION {
                return Err(EngineError::Version {
                    found: version,
                    supported: VERSION,
                });
            }
            String::from_utf8_lossy(d.bytes("snapshot")?).into_owned()
        };
        Ok(Self {
            r,
            snapshot,
            entries: 0,
            last: None,
            done: false,
        })
    }

    /// The snapshot this index describes.
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// The next entry, `None` after the trailer.
    ///
    /// # Errors
    /// When the index is damaged or out of order.
    pub fn next_entry(&mut self) -> Result<Option<IndexEntry>> {
        if self.done {
            return Ok(None);
        }
        let Some(rec) = self.r.next_record()? else {
            return Err(EngineError::Corrupt {
                offset: self.r.offset(),
                why: "index truncated (no trailer)".into(),
            });
        };
        let offset = rec.offset;
        let mut d = Dec::new(&rec);
        match rec.tag {
            tag::INDEX_ENTRY => {
                let path = d.path("path")?;
                let kind = Kind::from_u8(d.u8("kind")?).ok_or_else(|| EngineError::Corrupt {
                    offset,
                    why: "unknown entry kind in index".into(),
                })?;
                let e = IndexEntry {
                    path,
                    kind,
                    mode: d.u32("mode")?,
                    size: d.u64("size")?,
                    mtime: (d.i64("mtime")?, d.u32("mtime")?),
                    ctime: (d.i64("ctime")?, d.u32("ctime")?),
                    ino: d.u64("ino")?,
                    blocks: None,
                };
                let mut e = e;
                if d.u8("blocks flag")? == 1 {
                    let block_size = d.u32("block size")?;
                    let n = d.u32("block count")? as usize;
                    if n as u64 > MAX_BLOCKS || !block_size.is_power_of_two() {
                        return Err(EngineError::Corrupt {
                            offset,
                            why: "invalid block list in index".into(),
                        });
                    }
                    let mut hashes = Vec::with_capacity(n);
                    for _ in 0..n {
                        hashes.push(d.fixed::<16>("block hash")?);
                    }
                    e.blocks = Some(Blocks { block_size, hashes });
                }
                d.end()?;
                if self.last.as_ref().is_some_and(|l| *l >= e.path) {
                    return Err(EngineError::Corrupt {
                        offset,
                        why: format!("index entry {:?} out of order", e.path),
                    });
                }
                self.last = Some(e.path.clone());
                self.entries += 1;
                Ok(Some(e))
            }
            tag::TRAILER => {
                let n = d.u64("entry count")?;
                d.end()?;
                if n != self.entries {
                    return Err(EngineError::Corrupt {
                        offset,
                        why: format!("index trailer counts {n} entries, read {}", self.entries),
                    });
                }
                self.done = true;
                Ok(None)
            }
            t => Err(EngineError::Corrupt {
                offset,
                why: format!("unexpected record tag {t} in index"),
            }),
        }
    }
}
