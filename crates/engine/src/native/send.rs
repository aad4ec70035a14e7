//! Send: walk a tree, compare with the base index, write the stream.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::num::NonZeroU64;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use walkdir::WalkDir;
use xattr::FileExt;

use super::record::NativeRecord;
use super::{meta_of, xattr_names_sorted};
use crate::Observer;
use crate::engine::EngineKind;
use crate::error::{EngineError, Result};
use crate::format::{DATA_RECORD, Meta, RecordWriter, STREAM_VERSION};
use crate::index::{Blocks, IndexEntry, IndexReader, IndexWriter, Kind};
use crate::relpath::RelPath;
use crate::stream::{StreamHeader, write_header};

/// How many times a file that changes while it is read is read again.
const READ_ATTEMPTS: u32 = 3;

/// How close to the start of the walk an entry's mtime or ctime may be
/// before the entry counts as "racy" (git's "racy clean" rule): a change in
/// the same timestamp tick would leave its timestamps as they are, so the
/// index records it with a zero mtime and the next save reads it again.
///
/// The margin is the file system's timestamp granularity. Nanosecond file
/// systems stamp from the kernel's coarse clock (a tick of up to 10 ms
/// behind), hence [`FINE_MARGIN_NS`]. File systems with whole-second
/// timestamps (ext4 with 128-byte inodes, ext3, HFS+) or 2-second ones
/// (FAT) are recognised per entry: on them both nanosecond fields are zero,
/// which on a nanosecond file system happens by chance once in 10^18 (the
/// kernel sets ctime, so even a file whose mtime was set to a whole second
/// has a fractional ctime). Such entries get [`COARSE_MARGIN_NS`].
pub const FINE_MARGIN_NS: i128 = 50_000_000;
/// The racy margin for entries whose timestamps have whole-second (or
/// 2-second) granularity; see [`FINE_MARGIN_NS`].
pub const COARSE_MARGIN_NS: i128 = 2_000_000_000;

/// The instant from which entries count as racy, and the rule.
#[derive(Debug, Clone, Copy)]
struct Racy {
    /// Nanoseconds since the epoch.
    since_ns: i128,
}

impl Racy {
    /// Entries changed at or after `t` (within their granularity) are racy.
    fn since(t: std::time::SystemTime) -> Self {
        let since_ns = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Self { since_ns }
    }

    fn is_racy(self, e: &IndexEntry) -> bool {
        let ns = |(s, n): (i64, u32)| i128::from(s) * 1_000_000_000 + i128::from(n);
        let coarse = e.mtime.1 == 0 && e.ctime.1 == 0;
        let margin = if coarse {
            COARSE_MARGIN_NS
        } else {
            FINE_MARGIN_NS
        };
        let from = self.since_ns - margin;
        ns(e.mtime) >= from || ns(e.ctime) >= from
    }
}

/// The index entry to record: racy entries get a zero mtime.
fn settled(mut e: IndexEntry, racy: Racy) -> IndexEntry {
    if racy.is_racy(&e) {
        e.mtime = (0, 0);
    }
    e
}

/// Settings for [`send`].
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Most directories the walk keeps open at once (file descriptors).
    pub max_open_dirs: usize,
    /// For full streams, ask the kernel to read files ahead of the walk
    /// (see [`PREFETCH_WINDOW`]).
    pub prefetch: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            max_open_dirs: 16,
            prefetch: true,
        }
    }
}

/// How far (in file bytes) the prefetcher may run ahead of what send has
/// read. Prefetched data sits in the page cache, not in this process.
pub const PREFETCH_WINDOW: u64 = 64 << 20;
/// The range one read-ahead request covers.
const PREFETCH_STEP: u64 = 8 << 20;

/// Walks the tree in send's order and asks the kernel to read each file
/// (`posix_fadvise(WILLNEED)`), staying at most [`PREFETCH_WINDOW`] bytes
/// ahead of `consumed`, until `done`. While send hashes and compresses, the
/// disk is already reading what comes next; several requests in flight also
/// let the device work in parallel on small files. Failures are ignored:
/// this only changes timing, never content.
fn prefetch(root: &Path, consumed: &AtomicU64, done: &AtomicBool) {
    let mut advised = 0u64;
    let walk = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .max_open(4);
    for e in walk.into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(size) = e.metadata().map(|m| m.len()) else {
            continue;
        };
        let Ok(f) = open_nonblocking(e.path()) else {
            continue;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let mut off = 0;
        while off < size {
            while advised.saturating_sub(consumed.load(Ordering::Relaxed)) >= PREFETCH_WINDOW {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if done.load(Ordering::Relaxed) {
                return;
            }
            let len = (size - off).min(PREFETCH_STEP);
            let _ =
                rustix::fs::fadvise(&f, off, NonZeroU64::new(len), rustix::fs::Advice::WillNeed);
            off += len;
            advised += len;
        }
    }
}

/// What a send did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendSummary {
    /// Entries in the new snapshot.
    pub entries: u64,
    /// Entries written to the stream (new or changed, ancestors included).
    pub emitted: u64,
    /// Deletions written to the stream.
    pub deleted: u64,
    /// File content bytes written.
    pub file_bytes: u64,
    /// Length of the stream in bytes.
    pub stream_bytes: u64,
    /// Warnings reported (skipped, vanished or unstable entries).
    pub warnings: u64,
}

struct Ancestor {
    path: RelPath,
    meta: Meta,
    emitted: bool,
}

struct Sender<'a, W: Write> {
    root: &'a Path,
    out: RecordWriter<BufWriter<W>>,
    obs: &'a dyn Observer,
    stack: Vec<Ancestor>,
    links: HashMap<(u64, u64), RelPath>,
    sum: SendSummary,
    buf: Vec<u8>,
    consumed: &'a AtomicU64,
    /// File content bytes written into DATA and PATCH_DATA records.
    data_bytes: u64,
}

/// Writes the stream from the snapshot described by `base` (or from nothing)
/// to the current state of `root`, and the index of the new snapshot.
///
/// # Errors
/// An I/O error naming the path (an unreadable directory or file fails the
/// save rather than silently dropping it), or a sink error. Entries that
/// vanish during the walk and files that keep changing while read are
/// reported to `obs` and handled, not errors.
pub fn send<W: Write, I: Write, B: Read>(
    root: &Path,
    base: Option<IndexReader<B>>,
    header: &StreamHeader,
    opts: &SendOptions,
    out: W,
    index_out: I,
    obs: &dyn Observer,
) -> Result<SendSummary> {
    let consumed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        // Only full streams read (nearly) every file; an incremental reads
        // few, and prefetching unchanged files would be wasted reads.
        if opts.prefetch && base.is_none() {
            sc.spawn(|| prefetch(root, &consumed, &done));
        }
        let r = send_walk(root, base, header, opts, out, index_out, obs, &consumed);
        done.store(true, Ordering::Relaxed);
        r
    })
}

#[allow(clippy::too_many_arguments)]
fn send_walk<W: Write, I: Write, B: Read>(
    root: &Path,
    base: Option<IndexReader<B>>,
    header: &StreamHeader,
    opts: &SendOptions,
    out: W,
    index_out: I,
    obs: &dyn Observer,
    consumed: &AtomicU64,
) -> Result<SendSummary> {
    let w = write_header(
        BufWriter::with_capacity(256 << 10, out),
        header,
        EngineKind::Native,
        STREAM_VERSION,
    )?;
    let mut index = IndexWriter::new(index_out, &header.end)?;
    let mut s = Sender {
        root,
        out: w,
        obs,
        stack: Vec::new(),
        links: HashMap::new(),
        sum: SendSummary::default(),
        buf: vec![0; DATA_RECORD],
        consumed,
        data_bytes: 0,
    };
    let mut old = OldIndex::new(base)?;
    let racy = Racy::since(std::time::SystemTime::now());

    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .max_open(opts.max_open_dirs.max(1));
    for item in walker {
        let Some((entry, md, kind)) = s.visited(item)? else {
            continue;
        };
        let rel = rel_path(root, entry.path())?;
        // Everything in the old index before this path is gone.
        s.flush_deleted(&mut old, Some(&rel))?;
        s.stack.truncate(entry.depth());
        s.obs.entry();
        s.sum.entries += 1;
        let cur = IndexEntry::from_metadata(rel, kind, &md);
        let (unchanged, prev_blocks) = old.match_entry(&cur)?;
        let visit = if unchanged {
            s.unchanged(cur, &md, prev_blocks)
        } else {
            match kind {
                Kind::Dir => s.dir(cur, &md)?,
                Kind::File => s.file(cur, &md, prev_blocks)?,
                Kind::Symlink => s.symlink(cur, &md)?,
                Kind::Fifo => s.fifo(cur, &md)?,
            }
        };
        match visit {
            Visit::Indexed(e) => index.push(&settled(e, racy))?,
            Visit::Vanished(path) => {
                // Not in the new snapshot; if the base had it, delete it.
                if old.last_consumed_was(&path) {
                    s.emit_ancestors()?;
                    s.delete_record(&path)?;
                }
                s.sum.entries -= 1;
            }
        }
    }
    s.flush_deleted(&mut old, None)?;
    let records = s.out.records();
    NativeRecord::Trailer {
        entries: s.sum.emitted + s.sum.deleted,
        records,
        data_bytes: s.data_bytes,
    }
    .write(&mut s.out)?;
    s.sum.stream_bytes = s.out.bytes();
    s.out
        .finish()?
        .into_inner()
        .map_err(|e| EngineError::Stream(e.into_error()))?;
    index.finish()?;
    Ok(s.sum)
}

/// What became of an entry the walk visited.
enum Visit {
    /// In the new snapshot, as this index entry records it.
    Indexed(IndexEntry),
    /// Gone (or replaced) between the walk's listing and its reading: not
    /// in the new snapshot.
    Vanished(RelPath),
}

enum FileOutcome {
    Vanished,
    Saved {
        stable: bool,
        blocks: Option<Blocks>,
    },
}

impl<W: Write> Sender<'_, W> {
    fn warn(&mut self, path: &str, msg: &str) {
        self.sum.warnings += 1;
        tracing::warn!(path, "{msg}");
        self.obs.warning(path, msg);
    }

    /// The entry the walk reached, its status and kind; `None` for what is
    /// not saved (an entry that vanished, a socket or device: warned).
    ///
    /// # Errors
    /// For a directory that cannot be read or an entry that cannot be
    /// looked at: a save never silently drops them.
    fn visited(
        &mut self,
        item: walkdir::Result<walkdir::DirEntry>,
    ) -> Result<Option<(walkdir::DirEntry, Metadata, Kind)>> {
        let entry = match item {
            Ok(e) => e,
            Err(err) => {
                let path = err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.root.to_path_buf());
                let io = err
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error"));
                if io.kind() == io::ErrorKind::NotFound {
                    self.warn(
                        &path.to_string_lossy(),
                        "vanished during the walk; not saved",
                    );
                    return Ok(None);
                }
                return Err(EngineError::io("read directory", path, io));
            }
        };
        let shown = || rel_path(self.root, entry.path()).map(|r| r.display());
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(err) => {
                let io = err
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("stat error"));
                if io.kind() == io::ErrorKind::NotFound {
                    self.warn(&shown()?, "vanished during the walk; not saved");
                    return Ok(None);
                }
                return Err(EngineError::io("stat", entry.path(), io));
            }
        };
        let Some(kind) = kind_of(&md) else {
            use std::os::unix::fs::FileTypeExt;
            let what = if md.file_type().is_socket() {
                "socket"
            } else {
                "device node"
            };
            self.warn(
                &shown()?,
                &format!("{what} skipped (not kept by the native engine)"),
            );
            return Ok(None);
        };
        Ok(Some((entry, md, kind)))
    }

    /// An entry the base has as it is: nothing in the stream, but a hard
    /// link target or an ancestor the stream may still need.
    fn unchanged(&mut self, mut cur: IndexEntry, md: &Metadata, prev: Option<Blocks>) -> Visit {
        match cur.kind {
            Kind::File => {
                self.obs.file_bytes(md.size());
                cur.blocks = prev;
                if md.nlink() > 1 {
                    self.links
                        .entry((md.dev(), md.ino()))
                        .or_insert_with(|| cur.path.clone());
                }
            }
            Kind::Dir => self.stack.push(Ancestor {
                path: cur.path.clone(),
                meta: meta_of(md),
                emitted: false,
            }),
            Kind::Symlink | Kind::Fifo => {}
        }
        Visit::Indexed(cur)
    }

    fn dir(&mut self, cur: IndexEntry, md: &Metadata) -> Result<Visit> {
        self.emit_ancestors()?;
        let mut meta = meta_of(md);
        meta.xattrs = read_xattrs_path(&cur.path.under(self.root));
        self.entry_record(NativeRecord::Dir {
            path: Cow::Borrowed(&cur.path),
            meta: Cow::Borrowed(&meta),
        })?;
        self.stack.push(Ancestor {
            path: cur.path.clone(),
            meta,
            emitted: true,
        });
        Ok(Visit::Indexed(cur))
    }

    fn file(&mut self, mut cur: IndexEntry, md: &Metadata, prev: Option<Blocks>) -> Result<Visit> {
        let key = (md.dev(), md.ino());
        if md.nlink() > 1
            && let Some(target) = self.links.get(&key).cloned()
        {
            self.emit_ancestors()?;
            self.entry_record(NativeRecord::Hardlink {
                path: Cow::Borrowed(&cur.path),
                target: Cow::Owned(target),
            })?;
            return Ok(Visit::Indexed(cur));
        }
        match self.send_file(&cur.path, md, prev)? {
            FileOutcome::Vanished => Ok(Visit::Vanished(cur.path)),
            FileOutcome::Saved { stable, blocks } => {
                if md.nlink() > 1 {
                    self.links.entry(key).or_insert_with(|| cur.path.clone());
                }
                cur.blocks = blocks;
                if !stable {
                    // Make the next save read it again.
                    cur.mtime = (0, 0);
                    cur.ctime = (0, 0);
                }
                Ok(Visit::Indexed(cur))
            }
        }
    }

    fn symlink(&mut self, cur: IndexEntry, md: &Metadata) -> Result<Visit> {
        let p = cur.path.under(self.root);
        let target = match std::fs::read_link(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(&cur.path.display(), "vanished during the walk; not saved");
                return Ok(Visit::Vanished(cur.path));
            }
            Err(e) => return Err(EngineError::io("read link", p, e)),
        };
        self.emit_ancestors()?;
        self.entry_record(NativeRecord::Symlink {
            path: Cow::Borrowed(&cur.path),
            meta: Cow::Owned(meta_of(md)),
            target: target.as_os_str().as_bytes(),
        })?;
        Ok(Visit::Indexed(cur))
    }

    fn fifo(&mut self, cur: IndexEntry, md: &Metadata) -> Result<Visit> {
        self.emit_ancestors()?;
        self.entry_record(NativeRecord::Fifo {
            path: Cow::Borrowed(&cur.path),
            meta: Cow::Owned(meta_of(md)),
        })?;
        Ok(Visit::Indexed(cur))
    }

    /// Writes the directories above the next entry that are not in the
    /// stream yet, so the receiver can restore their mtimes after changing
    /// their contents.
    fn emit_ancestors(&mut self) -> Result<()> {
        for i in 0..self.stack.len() {
            if !self.stack[i].emitted {
                let mut meta = self.stack[i].meta.clone();
                meta.xattrs = read_xattrs_path(&self.stack[i].path.under(self.root));
                let path = self.stack[i].path.clone();
                self.entry_record(NativeRecord::Dir {
                    path: Cow::Owned(path),
                    meta: Cow::Owned(meta),
                })?;
                self.stack[i].emitted = true;
            }
        }
        Ok(())
    }

    /// Writes an entry record (one that creates something at a path).
    fn entry_record(&mut self, rec: NativeRecord<'_>) -> Result<()> {
        rec.write(&mut self.out)?;
        self.sum.emitted += 1;
        Ok(())
    }

    fn delete_record(&mut self, path: &RelPath) -> Result<()> {
        NativeRecord::Delete {
            path: Cow::Borrowed(path),
        }
        .write(&mut self.out)?;
        self.sum.deleted += 1;
        Ok(())
    }

    /// Writes deletions for every base entry before `limit` (all when `None`).
    fn flush_deleted<B: Read>(
        &mut self,
        old: &mut OldIndex<B>,
        limit: Option<&RelPath>,
    ) -> Result<()> {
        while let Some(o) = old.peek() {
            if limit.is_some_and(|l| o.path >= *l) {
                break;
            }
            if old
                .skip_under
                .as_ref()
                .is_some_and(|p| o.path.starts_with(p))
            {
                old.advance()?;
                continue;
            }
            let (path, was_dir) = (o.path.clone(), o.kind == Kind::Dir);
            self.stack.truncate(path.depth());
            self.emit_ancestors()?;
            self.delete_record(&path)?;
            if was_dir {
                old.skip_under = Some(path);
            }
            old.advance()?;
        }
        Ok(())
    }

    fn send_file(
        &mut self,
        rel: &RelPath,
        lstat: &Metadata,
        prev: Option<Blocks>,
    ) -> Result<FileOutcome> {
        let path = rel.under(self.root);
        for attempt in 1..=READ_ATTEMPTS {
            let file = match open_nonblocking(&path) {
                Ok(f) => f,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
                {
                    self.warn(
                        &rel.display(),
                        "vanished or replaced during the walk; not saved",
                    );
                    return Ok(FileOutcome::Vanished);
                }
                Err(e) => return Err(EngineError::io("open", path, e)),
            };
            let before = file
                .metadata()
                .map_err(|e| EngineError::io("stat", &path, e))?;
            if !before.is_file() || (attempt == 1 && before.ino() != lstat.ino()) {
                self.warn(&rel.display(), "replaced during the walk; not saved");
                return Ok(FileOutcome::Vanished);
            }
            // A regular file: reads block as usual from here on.
            clear_nonblocking(&file).map_err(|e| EngineError::io("fcntl", &path, e))?;
            if attempt == 1 {
                self.emit_ancestors()?;
            }
            let mut meta = meta_of(&before);
            meta.xattrs = read_xattrs_file(&file);
            // A patch against the base's blocks, on the first attempt only:
            // after an abort the receiver no longer holds the base content.
            let base = prev.as_ref().filter(|b| {
                attempt == 1 && Some(b.block_size) == Blocks::block_size_for(before.size())
            });
            match base {
                Some(_) => self.entry_record(NativeRecord::FilePatch {
                    path: Cow::Borrowed(rel),
                    meta: Cow::Borrowed(&meta),
                    size: before.size(),
                })?,
                None => self.entry_record(NativeRecord::File {
                    path: Cow::Borrowed(rel),
                    meta: Cow::Borrowed(&meta),
                })?,
            }
            let copied = self.copy_file(&file, before.size(), &path, base)?;
            let after = file
                .metadata()
                .map_err(|e| EngineError::io("stat", &path, e))?;
            let stable = !copied.ended_early
                && after.size() == before.size()
                && after.mtime() == before.mtime()
                && after.mtime_nsec() == before.mtime_nsec()
                && after.ctime() == before.ctime()
                && after.ctime_nsec() == before.ctime_nsec();
            if stable || attempt == READ_ATTEMPTS {
                match copied.whole_hash {
                    Some(hash) => NativeRecord::PatchEnd {
                        size: copied.bytes,
                        hash,
                    },
                    None => NativeRecord::FileEnd { size: copied.bytes },
                }
                .write(&mut self.out)?;
                self.sum.file_bytes += copied.bytes;
                if !stable {
                    self.warn(
                        &rel.display(),
                        "changed while being read on every attempt; saved as read, it will be saved again next time",
                    );
                }
                return Ok(FileOutcome::Saved {
                    stable,
                    blocks: copied.blocks,
                });
            }
            NativeRecord::FileAbort.write(&mut self.out)?;
            self.warn(&rel.display(), "changed while being read; reading it again");
        }
        unreachable!("the last attempt always returns")
    }

    /// Reads up to `size` bytes of `file` in 1 MiB pieces and hashes its
    /// blocks. Without `base`, every piece goes out as DATA. With `base`
    /// (the blocks of the same path in the base snapshot, same block size),
    /// only runs of blocks whose hash differs go out, as PATCH_DATA at their
    /// offsets, and the whole content is hashed for the receiver to verify.
    fn copy_file(
        &mut self,
        mut file: &File,
        size: u64,
        path: &Path,
        base: Option<&Blocks>,
    ) -> Result<Copied> {
        let bs = Blocks::block_size_for(size);
        let mut hashes: Vec<[u8; 16]> = Vec::new();
        let mut whole = base.map(|_| blake3::Hasher::new());
        let mut done = 0u64;
        let mut ended_early = false;
        while done < size {
            let want = (size - done).min(self.buf.len() as u64) as usize;
            let mut got = 0;
            while got < want {
                match file.read(&mut self.buf[got..want]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(EngineError::io("read", path, e)),
                }
            }
            if got == 0 {
                ended_early = true;
                break;
            }
            let piece = &self.buf[..got];
            let first = hashes.len();
            if let Some(bs) = bs {
                hashes.extend(piece.chunks(bs as usize).map(Blocks::hash));
            }
            match (base, bs, whole.as_mut()) {
                (Some(b), Some(bs), Some(h)) => {
                    h.update(piece);
                    let bs = bs as usize;
                    let changed = |i: usize| b.hashes.get(first + i) != Some(&hashes[first + i]);
                    let n = piece.len().div_ceil(bs);
                    let mut i = 0;
                    while i < n {
                        if !changed(i) {
                            i += 1;
                            continue;
                        }
                        let start = i;
                        while i < n && changed(i) {
                            i += 1;
                        }
                        let (lo, hi) = (start * bs, (i * bs).min(piece.len()));
                        NativeRecord::PatchData {
                            offset: done + lo as u64,
                            data: &piece[lo..hi],
                        }
                        .write(&mut self.out)?;
                        self.data_bytes += (hi - lo) as u64;
                    }
                }
                _ => {
                    NativeRecord::Data(piece).write(&mut self.out)?;
                    self.data_bytes += got as u64;
                }
            }
            self.obs.file_bytes(got as u64);
            self.consumed.fetch_add(got as u64, Ordering::Relaxed);
            done += got as u64;
            if got < want {
                ended_early = true;
                break;
            }
        }
        Ok(Copied {
            bytes: done,
            ended_early,
            blocks: bs.map(|block_size| Blocks { block_size, hashes }),
            whole_hash: whole.map(|h| *h.finalize().as_bytes()),
        })
    }
}

/// What [`Sender::copy_file`] read.
struct Copied {
    bytes: u64,
    ended_early: bool,
    blocks: Option<Blocks>,
    whole_hash: Option<[u8; 32]>,
}

/// The base index, read one entry ahead.
struct OldIndex<B: Read> {
    reader: Option<IndexReader<B>>,
    next: Option<IndexEntry>,
    last: Option<RelPath>,
    skip_under: Option<RelPath>,
}

impl<B: Read> OldIndex<B> {
    fn new(reader: Option<IndexReader<B>>) -> Result<Self> {
        let mut s = Self {
            reader,
            next: None,
            last: None,
            skip_under: None,
        };
        s.next = match &mut s.reader {
            Some(r) => r.next_entry()?,
            None => None,
        };
        Ok(s)
    }

    fn peek(&self) -> Option<&IndexEntry> {
        self.next.as_ref()
    }

    /// The next entry, consumed.
    fn take(&mut self) -> Result<Option<IndexEntry>> {
        let e = self.next.take();
        self.last = e.as_ref().map(|e| e.path.clone());
        if let Some(r) = &mut self.reader {
            self.next = r.next_entry()?;
        }
        Ok(e)
    }

    fn advance(&mut self) -> Result<()> {
        self.last = self.next.take().map(|e| e.path);
        if let Some(r) = &mut self.reader {
            self.next = r.next_entry()?;
        }
        Ok(())
    }

    /// Consumes the base's entry for `cur`'s path, if it has one: whether
    /// it is unchanged, and its block hashes when it was a file (the base
    /// of a sub-file patch). A base directory that is now something else
    /// has its contents skipped (a deletion of the path covers them).
    fn match_entry(&mut self, cur: &IndexEntry) -> Result<(bool, Option<Blocks>)> {
        if self.peek().is_none_or(|o| o.path != cur.path) {
            return Ok((false, None));
        }
        let o = self.take()?.expect("peeked");
        if o.kind == Kind::Dir && cur.kind != Kind::Dir {
            self.skip_under = Some(o.path.clone());
        }
        let unchanged = o.same_as(cur);
        Ok((unchanged, o.blocks.filter(|_| o.kind == Kind::File)))
    }

    fn last_consumed_was(&self, p: &RelPath) -> bool {
        self.last.as_ref() == Some(p)
    }
}

/// Opens a file for reading without following a symlink and without
/// blocking: if the walk's regular file was swapped for a FIFO, the open
/// returns at once (and the caller sees it is not a regular file) instead
/// of waiting forever for a writer.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
}

fn clear_nonblocking(f: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(f)?;
    rustix::fs::fcntl_setfl(f, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Writes the index of the tree at `root` as it is now, reading no file
/// contents: used after a restore, so that the next save from the restored
/// directory is an incremental. Entries whose timestamps are at or after
/// `changed_after` (within the file system's granularity, see
/// [`FINE_MARGIN_NS`]) are recorded as racy, so the next save reads them:
/// a restore passes the instant it renamed the tree into place, so a write
/// in the moments between that rename and this walk is never taken for
/// part of the snapshot.
///
/// # Errors
/// When the tree cannot be walked or the sink fails.
pub fn build_index<I: Write>(
    root: &Path,
    snapshot: &str,
    opts: &SendOptions,
    changed_after: std::time::SystemTime,
    out: I,
) -> Result<u64> {
    let mut index = IndexWriter::new(out, snapshot)?;
    let racy = Racy::since(changed_after);
    let mut n = 0;
    for item in metadata_walk(root, opts) {
        let cur = item?;
        index.push(&settled(cur, racy))?;
        n += 1;
    }
    index.finish()?;
    Ok(n)
}

/// The entries of the tree at `root` the engine keeps, in walk order, as
/// their metadata says (no file is read); a walk or stat error names the
/// path.
fn metadata_walk<'a>(
    root: &'a Path,
    opts: &SendOptions,
) -> impl Iterator<Item = Result<IndexEntry>> + 'a {
    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .max_open(opts.max_open_dirs.max(1));
    walker.into_iter().filter_map(move |item| {
        let failed = |what: &'static str, path: &Path, err: walkdir::Error| {
            let io = err
                .into_io_error()
                .unwrap_or_else(|| io::Error::other(format!("{what} error")));
            EngineError::io(what, path, io)
        };
        let entry = match item {
            Ok(e) => e,
            Err(err) => {
                let path = err.path().unwrap_or(root).to_path_buf();
                return Some(Err(failed("walk", &path, err)));
            }
        };
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(err) => return Some(Err(failed("stat", entry.path(), err))),
        };
        let kind = kind_of(&md)?;
        Some(rel_path(root, entry.path()).map(|rel| IndexEntry::from_metadata(rel, kind, &md)))
    })
}

/// Whether the tree at `root` is still what `index` recorded (its first
/// difference, if not), reading no file contents: the check before a local
/// copy is caught up in place. Every entry must be there with the kind,
/// mode, size, timestamps and inode recorded, and nothing else may be.
/// An entry the index recorded as racy (changed too close to the walk to
/// trust its timestamps) is a difference, except a directory whose ctime
/// and the rest still match: what a directory holds is checked by its
/// entries, and a restore's rename leaves the root racy.
///
/// # Errors
/// When the tree cannot be walked or the index is damaged.
pub fn differs_from_index<B: Read>(
    root: &Path,
    mut index: IndexReader<B>,
    opts: &SendOptions,
) -> Result<Option<String>> {
    let mut old = index.next_entry()?;
    for item in metadata_walk(root, opts) {
        let cur = item?;
        match old.take() {
            Some(o) if o.path == cur.path => {
                let racy_dir = o.mtime == (0, 0) && o.kind == Kind::Dir;
                let same = if racy_dir {
                    IndexEntry {
                        mtime: (0, 0),
                        ..cur.clone()
                    }
                    .same_as(&o)
                } else {
                    o.same_as(&cur)
                };
                if !same {
                    return Ok(Some(format!("{} changed", cur.path.display())));
                }
                old = index.next_entry()?;
            }
            Some(o) if o.path < cur.path => {
                return Ok(Some(format!("{} is gone", o.path.display())));
            }
            _ => return Ok(Some(format!("{} is new", cur.path.display()))),
        }
    }
    Ok(old.map(|o| format!("{} is gone", o.path.display())))
}

/// The kind of an entry the engine keeps; `None` for sockets and devices.
fn kind_of(md: &Metadata) -> Option<Kind> {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    Some(if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return None;
    })
}

fn rel_path(root: &Path, p: &Path) -> Result<RelPath> {
    let rest = p.strip_prefix(root).expect("walk stays under its root");
    RelPath::new(rest.as_os_str().as_bytes())
        .map_err(|why| EngineError::io("walk", p, io::Error::new(io::ErrorKind::InvalidInput, why)))
}

fn read_xattrs_file(f: &File) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = xattr_names_sorted(f.list_xattr()).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|n| {
            f.get_xattr(&n)
                .ok()
                .flatten()
                .map(|v| (n.as_bytes().to_vec(), v))
        })
        .collect()
}

fn read_xattrs_path(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = xattr_names_sorted(xattr::list(p)).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|n| {
            xattr::get(p, &n)
                .ok()
                .flatten()
                .map(|v| (n.as_bytes().to_vec(), v))
        })
        .collect()
}
