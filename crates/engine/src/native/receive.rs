//! Receive: apply a stream to a directory, refusing hostile input.
//!
//! Every entry's path is validated ([`RelPath`]), must come strictly after
//! the previous one in walk order (so duplicates are refused with O(1)
//! memory), and must be reached through real directories only: no write
//! ever goes through a symlink. Directory modes and mtimes are applied when
//! the walk leaves the directory, after its contents were written.
//!
//! Owners, modes, times and extended attributes are set through
//! descriptors opened without following symlinks ([`super::nofollow`]),
//! owner before mode, under the [`Owners`] policy: a restore never grants a
//! privilege the saved tree did not have (set-id bits only with their
//! saved, non-root owner; no file capabilities).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt as _, MetadataExt, OpenOptionsExt};
use std::path::Path;

use filetime::FileTime;
use rustix::fs::FileType;
use xattr::FileExt;

use super::owners::Owners;
use super::{StreamHeader, nofollow};
use crate::Observer;
use crate::error::{EngineError, Result};
use crate::format::{
    Dec, Meta, Record, RecordReader, STREAM_MAGIC, STREAM_VERSION, STREAM_VERSION_MIN, tag,
};
use crate::relpath::RelPath;

/// What a receive applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveSummary {
    /// The stream's header.
    pub header: StreamHeader,
    /// Entry records applied (deletions included).
    pub entries: u64,
    /// File content bytes written.
    pub file_bytes: u64,
    /// Files whose set-id bits were not restored ([`Owners::mode`]).
    pub setid_dropped: u64,
    /// Extended attributes not restored because the policy does not allow
    /// them ([`Owners::allows_xattr`]).
    pub xattrs_skipped: u64,
}

/// What [`receive`] checks the stream against and how it applies owners.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The snapshot the target holds (`None` for an empty directory, which
    /// only a full stream applies to); the stream's start must be it.
    pub holds: Option<String>,
    /// The snapshot the stream must end at, when the caller knows it (the
    /// catalog's record): a stream whose header says otherwise is refused
    /// before anything is written.
    pub expect_end: Option<String>,
    /// How recorded owners are applied.
    pub owners: Owners,
}

impl ReceiveOptions {
    /// Options for a target holding `holds`, with the owners policy of
    /// this process ([`Owners::for_this_process`]) and no expected end.
    pub fn new(holds: Option<&str>) -> Self {
        Self {
            holds: holds.map(str::to_string),
            expect_end: None,
            owners: Owners::for_this_process(),
        }
    }
}

struct OpenFile {
    path: RelPath,
    file: File,
    meta: Meta,
    written: u64,
    /// For a patch: the declared new size and the lowest offset the next
    /// PATCH_DATA may write at (ranges come in order and do not overlap).
    patch: Option<(u64, u64)>,
}

struct Receiver<'a> {
    root: &'a Path,
    obs: &'a dyn Observer,
    owners: Owners,
    setid_dropped: u64,
    xattrs_skipped: u64,
    last: Option<RelPath>,
    after_abort: bool,
    open: Option<OpenFile>,
    dirs: Vec<(RelPath, Meta)>,
    parent_ok: Option<RelPath>,
    entries: u64,
    file_bytes: u64,
}

/// Applies the stream read from `input` to the directory `target`, which
/// must hold the snapshot the stream starts at (`opts.holds`).
///
/// # Errors
/// [`EngineError::Corrupt`], [`EngineError::Version`], [`EngineError::Refused`]
/// or [`EngineError::WrongBase`] for bad input, naming the entry or offset;
/// [`EngineError::Io`] when the target cannot be written. On error the target
/// is left partly written: callers apply into a staging directory.
pub fn receive<R: Read>(
    target: &Path,
    input: R,
    opts: &ReceiveOptions,
    obs: &dyn Observer,
) -> Result<ReceiveSummary> {
    let target_holds = opts.holds.as_deref();
    let mut r = RecordReader::new(
        io::BufReader::with_capacity(256 << 10, input),
        STREAM_MAGIC,
        "stream",
    )?;
    let header = {
        let rec = r.next_record()?.ok_or_else(|| EngineError::Corrupt {
            offset: 8,
            why: "stream ends before its header".into(),
        })?;
        parse_header(&rec)?
    };
    if header.start.as_deref() != target_holds {
        return Err(EngineError::WrongBase {
            stream_start: header
                .start
                .clone()
                .unwrap_or_else(|| "(none: a full stream)".into()),
            target: target_holds.unwrap_or("(empty)").to_string(),
        });
    }
    if let Some(want) = &opts.expect_end
        && header.end != *want
    {
        return Err(EngineError::Corrupt {
            offset: 8,
            why: format!(
                "the stream's header says it ends at snapshot {}, but it was recorded as ending at {want}",
                header.end
            ),
        });
    }
    let mut rx = Receiver {
        root: target,
        obs,
        owners: opts.owners,
        setid_dropped: 0,
        xattrs_skipped: 0,
        last: None,
        after_abort: false,
        open: None,
        dirs: Vec::new(),
        parent_ok: None,
        entries: 0,
        file_bytes: 0,
    };
    loop {
        let records_before = r.records();
        let Some(rec) = r.next_record()? else {
            return Err(EngineError::Corrupt {
                offset: r.offset(),
                why: "truncated: the stream ends without its trailer".into(),
            });
        };
        if rec.tag == tag::TRAILER {
            let offset = rec.offset;
            let mut d = Dec::new(&rec);
            let (entries, records, bytes) =
                (d.u64("entries")?, d.u64("records")?, d.u64("data bytes")?);
            d.end()?;
            if let Some(f) = &rx.open {
                return Err(EngineError::Corrupt {
                    offset,
                    why: format!("stream ends inside file {:?}", f.path),
                });
            }
            if entries != rx.entries || records != records_before || bytes != rx.file_bytes {
                return Err(EngineError::Corrupt {
                    offset,
                    why: format!(
                        "trailer counts {entries} entries, {records} records, {bytes} bytes; read {}, {}, {}",
                        rx.entries, records_before, rx.file_bytes
                    ),
                });
            }
            if !r.at_end()? {
                return Err(EngineError::Corrupt {
                    offset: r.offset(),
                    why: "bytes after the trailer".into(),
                });
            }
            break;
        }
        rx.apply(&rec)?;
    }
    rx.finish_dirs(None)?;
    Ok(ReceiveSummary {
        header,
        entries: rx.entries,
        file_bytes: rx.file_bytes,
        setid_dropped: rx.setid_dropped,
        xattrs_skipped: rx.xattrs_skipped,
    })
}

fn parse_header(rec: &Record<'_>) -> Result<StreamHeader> {
    if rec.tag != tag::HEADER {
        return Err(EngineError::Corrupt {
            offset: rec.offset,
            why: "the stream does not start with a header".into(),
        });
    }
    let mut d = Dec::new(rec);
    let version = d.u32("version")?;
    if !(STREAM_VERSION_MIN..=STREAM_VERSION).contains(&version) {
        return Err(EngineError::Version {
            found: version,
            supported: STREAM_VERSION,
        });
    }
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| EngineError::Corrupt {
            offset: rec.offset,
            why: format!("{what} is not UTF-8"),
        })
    };
    let start = text(d.bytes("start")?, "start snapshot")?;
    let end = text(d.bytes("end")?, "end snapshot")?;
    let created_ms = d.i64("created")?;
    let engine = d.bytes("engine")?;
    d.end()?;
    if engine != b"native" {
        return Err(EngineError::Corrupt {
            offset: rec.offset,
            why: format!(
                "stream made by engine {:?}, not native",
                String::from_utf8_lossy(engine)
            ),
        });
    }
    Ok(StreamHeader {
        start: (!start.is_empty()).then_some(start),
        end,
        created_ms,
    })
}

impl Receiver<'_> {
    fn apply(&mut self, rec: &Record<'_>) -> Result<()> {
        match rec.tag {
            tag::DATA => {
                let Some(f) = self.open.as_mut().filter(|f| f.patch.is_none()) else {
                    return Err(corrupt(rec, "file data outside a file"));
                };
                f.file
                    .write_all(rec.payload)
                    .map_err(|e| EngineError::io("write", f.path.under(self.root), e))?;
                f.written += rec.payload.len() as u64;
                self.file_bytes += rec.payload.len() as u64;
                self.obs.file_bytes(rec.payload.len() as u64);
                Ok(())
            }
            tag::PATCH_DATA => {
                let Some(f) = self.open.as_mut().filter(|f| f.patch.is_some()) else {
                    return Err(corrupt(rec, "patch data outside a patch"));
                };
                let mut d = Dec::new(rec);
                let offset = d.u64("patch offset")?;
                let data = d.rest();
                let (size, min) = f.patch.expect("a patch");
                let end = offset.checked_add(data.len() as u64);
                if offset < min || end.is_none_or(|e| e > size) {
                    return Err(EngineError::refused(
                        f.path.as_bytes(),
                        format!(
                            "patch range at {offset} (+{}) out of order or past the size {size}",
                            data.len()
                        ),
                    ));
                }
                f.file
                    .write_all_at(data, offset)
                    .map_err(|e| EngineError::io("write", f.path.under(self.root), e))?;
                f.patch = Some((size, offset + data.len() as u64));
                f.written += data.len() as u64;
                self.file_bytes += data.len() as u64;
                self.obs.file_bytes(data.len() as u64);
                Ok(())
            }
            tag::PATCH_END => {
                let Some(f) = self.open.take_if(|f| f.patch.is_some()) else {
                    return Err(corrupt(rec, "end of patch outside a patch"));
                };
                let mut d = Dec::new(rec);
                let size = d.u64("size")?;
                let want: [u8; 32] = d.fixed("content hash")?;
                d.end()?;
                let (declared, _) = f.patch.expect("a patch");
                let full = f.path.under(self.root);
                if size != declared {
                    return Err(EngineError::refused(
                        f.path.as_bytes(),
                        format!("patch declares {declared} bytes, ends with {size}"),
                    ));
                }
                f.file
                    .set_len(size)
                    .map_err(|e| EngineError::io("truncate", &full, e))?;
                // The patched file must be exactly what the sender read.
                let mut h = blake3::Hasher::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut at = 0u64;
                while at < size {
                    let n = f
                        .file
                        .read_at(&mut buf, at)
                        .map_err(|e| EngineError::io("read", &full, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    at += n as u64;
                }
                if *h.finalize().as_bytes() != want {
                    return Err(EngineError::Corrupt {
                        offset: rec.offset,
                        why: format!(
                            "patched file {:?} does not match its content hash (the target did not hold the base content)",
                            f.path
                        ),
                    });
                }
                self.finish_file(f)
            }
            tag::FILE_END => {
                let Some(f) = self.open.take_if(|f| f.patch.is_none()) else {
                    return Err(corrupt(rec, "end of file outside a file"));
                };
                let mut d = Dec::new(rec);
                let size = d.u64("size")?;
                d.end()?;
                if size != f.written {
                    return Err(EngineError::refused(
                        f.path.as_bytes(),
                        format!("declares {size} bytes but carries {}", f.written),
                    ));
                }
                self.finish_file(f)
            }
            tag::FILE_ABORT => {
                let Some(f) = self.open.take() else {
                    return Err(corrupt(rec, "file abort outside a file"));
                };
                rec_end(rec)?;
                let p = f.path.under(self.root);
                drop(f.file);
                fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
                self.after_abort = true;
                Ok(())
            }
            tag::HEADER => Err(corrupt(rec, "a second header")),
            tag::DIR
            | tag::FILE
            | tag::FILE_PATCH
            | tag::SYMLINK
            | tag::HARDLINK
            | tag::FIFO
            | tag::DELETE => self.entry(rec),
            t => Err(corrupt(rec, &format!("unknown record tag {t}"))),
        }
    }

    fn entry(&mut self, rec: &Record<'_>) -> Result<()> {
        if let Some(f) = &self.open {
            return Err(EngineError::refused(
                f.path.as_bytes(),
                "file content not terminated before the next entry",
            ));
        }
        let mut d = Dec::new(rec);
        let path = d.path("path")?;
        // Strict walk order: no duplicates, nothing out of place. A path may
        // repeat only right after its file was aborted.
        if let Some(last) = &self.last {
            let ok = path > *last || (path == *last && self.after_abort);
            if !ok {
                let why = if path == *last {
                    "duplicate entry"
                } else {
                    "entry out of order"
                };
                return Err(EngineError::refused(path.as_bytes(), why));
            }
        }
        self.after_abort = false;
        if path.is_root() && rec.tag != tag::DIR {
            return Err(EngineError::refused(b".", "the root must be a directory"));
        }
        self.finish_dirs(Some(&path))?;
        self.check_parent(&path)?;
        self.last = Some(path.clone());
        self.entries += 1;
        self.obs.entry();
        let full = path.under(self.root);
        match rec.tag {
            tag::DELETE => {
                d.end()?;
                self.remove_existing(&path, false)?;
            }
            tag::DIR => {
                let meta = d.meta()?;
                d.end()?;
                if !path.is_root() {
                    self.remove_existing(&path, true)?;
                }
                match fs::create_dir(&full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(EngineError::io("create directory", &full, e)),
                }
                // Writable while its contents arrive; final mode on leaving.
                nofollow::chmod(&full, 0o700, FileType::Directory)
                    .map_err(|e| EngineError::io("chmod", &full, e))?;
                self.dirs.push((path, meta));
            }
            tag::FILE => {
                let meta = d.meta()?;
                d.end()?;
                self.remove_existing(&path, false)?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&full)
                    .map_err(|e| EngineError::io("create", &full, e))?;
                self.open = Some(OpenFile {
                    path,
                    file,
                    meta,
                    written: 0,
                    patch: None,
                });
            }
            tag::FILE_PATCH => {
                let meta = d.meta()?;
                let size = d.u64("size")?;
                d.end()?;
                let md = match fs::symlink_metadata(&full) {
                    Ok(md) if md.file_type().is_file() => md,
                    _ => {
                        return Err(EngineError::refused(
                            path.as_bytes(),
                            "patch of a path that is not a regular file in the target",
                        ));
                    }
                };
                // A read-only file (0444, 0400) is patched like any other:
                // its owner gets read and write until finish_file sets the
                // recorded mode. Root needs no permission bits.
                if self.owners == Owners::Unprivileged && md.mode() & 0o600 != 0o600 {
                    nofollow::chmod(&full, (md.mode() & 0o7777) | 0o600, FileType::RegularFile)
                        .map_err(|e| EngineError::io("chmod", &full, e))?;
                }
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&full)
                    .map_err(|e| EngineError::io("open", &full, e))?;
                let opened = file
                    .metadata()
                    .map_err(|e| EngineError::io("stat", &full, e))?;
                if opened.ino() != md.ino() || opened.dev() != md.dev() {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        "replaced while being patched",
                    ));
                }
                self.open = Some(OpenFile {
                    path,
                    file,
                    meta,
                    written: 0,
                    patch: Some((size, 0)),
                });
            }
            tag::SYMLINK => {
                let meta = d.meta()?;
                let target = d.bytes("link target")?;
                d.end()?;
                if target.is_empty() || target.contains(&0) {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        "empty link target or NUL in it",
                    ));
                }
                self.remove_existing(&path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &full)
                    .map_err(|e| EngineError::io("create symlink", &full, e))?;
                if let Some((uid, gid)) = self.owners.owner(meta.uid, meta.gid) {
                    nofollow::lchown(&full, uid, gid)
                        .map_err(|e| EngineError::io("chown", &full, e))?;
                }
                let t = FileTime::from_unix_time(meta.mtime_sec, meta.mtime_nsec);
                filetime::set_symlink_file_times(&full, t, t)
                    .map_err(|e| EngineError::io("set mtime", &full, e))?;
            }
            tag::HARDLINK => {
                let target = d.path("link target")?;
                d.end()?;
                if target.is_root() || target == path {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        "hard link to itself or to the root",
                    ));
                }
                self.check_parent(&target).map_err(|_| {
                    EngineError::refused(
                        path.as_bytes(),
                        format!("hard link target {:?} is not inside the target", target),
                    )
                })?;
                let tfull = target.under(self.root);
                match fs::symlink_metadata(&tfull) {
                    Ok(md) if md.file_type().is_file() => {}
                    _ => {
                        return Err(EngineError::refused(
                            path.as_bytes(),
                            format!("hard link target {target:?} is not an existing regular file"),
                        ));
                    }
                }
                self.remove_existing(&path, false)?;
                fs::hard_link(&tfull, &full).map_err(|e| EngineError::io("hard link", &full, e))?;
                // check_parent for the target may have moved the cache.
                self.parent_ok = None;
            }
            tag::FIFO => {
                let meta = d.meta()?;
                d.end()?;
                self.remove_existing(&path, false)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &full,
                    FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| EngineError::io("create fifo", &full, e.into()))?;
                // O_NONBLOCK: opening a FIFO for reading never waits.
                let fifo = nofollow::open_entry(&full, false)
                    .map_err(|e| EngineError::io("open", &full, e))?;
                self.apply_meta(&fifo, &meta, false, &path)?;
            }
            _ => unreachable!("entry() is called for entry tags only"),
        }
        Ok(())
    }

    /// Refuses `path` unless every directory above it inside the target is a
    /// real directory (not a symlink) that exists.
    fn check_parent(&mut self, path: &RelPath) -> Result<()> {
        let parent = path.parent();
        if parent.is_root() || self.parent_ok.as_ref() == Some(&parent) {
            return Ok(());
        }
        let mut at = self.root.to_path_buf();
        for c in parent.components() {
            at.push(OsStr::from_bytes(c));
            match fs::symlink_metadata(&at) {
                Ok(md) if md.file_type().is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        format!(
                            "reached through the symlink {:?}",
                            at.strip_prefix(self.root).unwrap_or(&at)
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        "its parent is not a directory",
                    ));
                }
                Err(_) => {
                    return Err(EngineError::refused(
                        path.as_bytes(),
                        "its parent directory does not exist",
                    ));
                }
            }
        }
        self.parent_ok = Some(parent);
        Ok(())
    }

    /// Removes whatever is at `path` (never following a symlink). A directory
    /// is kept when `keep_dir` is set and a directory is what comes next.
    fn remove_existing(&mut self, path: &RelPath, keep_dir: bool) -> Result<()> {
        let full = path.under(self.root);
        match fs::symlink_metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EngineError::io("stat", &full, e)),
            Ok(md) if md.file_type().is_dir() => {
                if keep_dir {
                    return Ok(());
                }
                self.parent_ok = None;
                make_writable_tree(&full);
                fs::remove_dir_all(&full).map_err(|e| EngineError::io("remove directory", &full, e))
            }
            Ok(_) => fs::remove_file(&full).map_err(|e| EngineError::io("remove", &full, e)),
        }
    }

    fn finish_file(&mut self, f: OpenFile) -> Result<()> {
        self.apply_meta(&f.file, &f.meta, false, &f.path)
    }

    /// Gives the open entry `f` (at `path`) its recorded owner, extended
    /// attributes, mode and mtime, in that order: the owner first, since
    /// chown clears set-id bits, then only the bits [`Owners::mode`] allows.
    /// A patched file or a kept directory is the old inode, so attributes
    /// it no longer has are removed.
    fn apply_meta(&mut self, f: &File, meta: &Meta, is_dir: bool, path: &RelPath) -> Result<()> {
        let full = || path.under(self.root);
        if let Some((uid, gid)) = self.owners.owner(meta.uid, meta.gid) {
            nofollow::fchown(f, uid, gid).map_err(|e| EngineError::io("chown", full(), e))?;
        }
        let owners = self.owners;
        let allowed: Vec<(Vec<u8>, Vec<u8>)> = meta
            .xattrs
            .iter()
            .filter(|(k, _)| owners.allows_xattr(k))
            .cloned()
            .collect();
        self.xattrs_skipped += (meta.xattrs.len() - allowed.len()) as u64;
        sync_xattrs(
            &allowed,
            f.list_xattr(),
            |n| f.remove_xattr(n),
            |n, v| f.set_xattr(n, v),
            owners,
            &path.display(),
            self.obs,
        );
        let mode = owners.mode(meta.mode, meta.uid, meta.gid, is_dir);
        if mode != meta.mode & 0o7777 {
            self.setid_dropped += 1;
        }
        nofollow::fchmod(f, mode).map_err(|e| EngineError::io("chmod", full(), e))?;
        nofollow::futimens(f, meta.mtime_sec, meta.mtime_nsec)
            .map_err(|e| EngineError::io("set mtime", full(), e))
    }

    /// Applies mode and mtime to the directories the walk has left: all of
    /// them when `next` is `None`, else those that are not above `next`.
    fn finish_dirs(&mut self, next: Option<&RelPath>) -> Result<()> {
        while let Some((p, _)) = self.dirs.last() {
            if next.is_some_and(|n| n.starts_with(p) && n != p) {
                break;
            }
            let (p, meta) = self.dirs.pop().expect("non-empty");
            let full = p.under(self.root);
            // Made 0700 when entered, so it opens whatever its final mode.
            let dir =
                nofollow::open_entry(&full, true).map_err(|e| EngineError::io("open", &full, e))?;
            self.apply_meta(&dir, &meta, true, &p)?;
        }
        Ok(())
    }
}

/// Gives the owner write and search permission on every directory below
/// `dir` so that an unprivileged restore can delete a read-only subtree.
fn make_writable_tree(dir: &Path) {
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if e.file_type().is_dir()
            && let Ok(md) = e.metadata()
        {
            let mode = md.mode() & 0o7777;
            if mode & 0o700 != 0o700 {
                let _ = nofollow::chmod(e.path(), mode | 0o700, FileType::Directory);
            }
        }
    }
}

/// Makes an entry's extended attributes exactly `want`: removes the names
/// it has that `want` lacks (only those the policy manages: a label the
/// system gave the file is not ours to remove), sets the others. Refusals
/// (a file system without xattrs, a namespace that needs privileges) are
/// warnings.
fn sync_xattrs(
    want: &[(Vec<u8>, Vec<u8>)],
    have: io::Result<xattr::XAttrs>,
    remove: impl Fn(&OsStr) -> io::Result<()>,
    set: impl Fn(&OsStr, &[u8]) -> io::Result<()>,
    owners: Owners,
    path: &str,
    obs: &dyn Observer,
) {
    if let Ok(have) = have {
        for name in have {
            if owners.allows_xattr(name.as_bytes())
                && !want.iter().any(|(k, _)| k.as_slice() == name.as_bytes())
                && let Err(e) = remove(&name)
            {
                obs.warning(path, &format!("stale extended attribute not removed: {e}"));
            }
        }
    }
    for (k, v) in want {
        if let Err(e) = set(OsStr::from_bytes(k), v) {
            obs.warning(path, &format!("extended attribute not restored: {e}"));
        }
    }
}

fn corrupt(rec: &Record<'_>, why: &str) -> EngineError {
    EngineError::Corrupt {
        offset: rec.offset,
        why: why.to_string(),
    }
}

fn rec_end(rec: &Record<'_>) -> Result<()> {
    Dec::new(rec).end()
}
