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

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt as _, MetadataExt, OpenOptionsExt};
use std::path::Path;

use filetime::FileTime;
use rustix::fs::FileType;
use xattr::FileExt;

use super::nofollow;
use super::owners::Owners;
use super::record::NativeRecord;
use crate::Observer;
use crate::engine::EngineKind;
use crate::error::{EngineError, Result};
use crate::format::{Meta, STREAM_VERSION, STREAM_VERSION_MIN};
use crate::relpath::RelPath;
use crate::stream::{StreamHeader, read_header};

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

/// Files up to this size have their content hashed as they are written,
/// so a later stream of the same chain that changes only their metadata
/// (a patch without data) needs no read-back ([`ReceiveSession`]).
const HASH_WRITTEN_UP_TO: u64 = 1 << 20;
/// Most files a [`ReceiveSession`] remembers (about 80 bytes each).
const KNOWN_MAX: usize = 1 << 18;

/// Most bytes of metadata a [`ReceiveSession`] holds back for the end of
/// the chain (paths, modes, times, extended attributes; about 100 bytes a
/// typical entry): past it, metadata is applied at once, as without a
/// session.
const PENDING_MAX_BYTES: usize = 16 << 20;

/// State kept across the streams of one chain applied by one process into
/// a directory nobody else writes (a restore's private staging tree).
///
/// It remembers the content hash of the files it wrote (by device and
/// inode), so that a later FILE_PATCH without data, which a save writes for
/// every file whose mtime changed but whose bytes did not, is checked
/// against the hash instead of reading the file back. A file it did not
/// write, or wrote too large to hash, is read back as before. Bounded:
/// at most [`KNOWN_MAX`] files are recorded; files written after that are
/// read back.
///
/// While more streams follow, it also holds back the metadata that only
/// the end state needs: directories' modes and times, and those of files
/// whose patch changed no byte (a file with one link, whose content the
/// session recorded). Each is applied once, at the end of the last stream
/// or when something needs it in place earlier (a directory applied at
/// once, a hard link made to the file), deepest first; an entry a later
/// stream writes, replaces or deletes drops what was held for it. A chain
/// whose every file was touched (each stream rewrites every mtime) then
/// costs no system call per entry between its second and its last stream
/// (a held entry is known to be what it was: see [`Held`]) instead of an
/// open, a stat, an xattr listing and a utimens per file and per
/// directory. Bounded by [`PENDING_MAX_BYTES`]
/// ([`ReceiveSession::with_hold_budget`] for another bound). Before
/// each stream, [`ReceiveSession::set_more_follow`] says whether more
/// streams follow it.
pub struct ReceiveSession {
    known: HashMap<(u64, u64), (u64, [u8; 32])>,
    /// More streams follow this one: hash what is written, hold metadata
    /// back.
    more_follow: bool,
    buf: Vec<u8>,
    /// Metadata held back for the end of the chain, by path.
    pending: BTreeMap<RelPath, Held>,
    pending_bytes: usize,
    /// The most bytes `pending` may hold.
    budget: usize,
}

impl Default for ReceiveSession {
    fn default() -> Self {
        Self::with_hold_budget(PENDING_MAX_BYTES)
    }
}

/// Metadata held back for one entry ([`ReceiveSession`]). While it is
/// held, nothing else touched the entry: it is still the directory (with
/// its owner's rwx, as entered) or the file (device and inode `key`, one
/// link) it was, so a later stream needs no system call to know that.
struct Held {
    meta: Meta,
    dir: bool,
    key: Option<(u64, u64)>,
    /// What it counts against the budget: about its bytes in memory.
    cost: usize,
}

impl ReceiveSession {
    /// A session that holds back at most about `bytes` of metadata (the
    /// default is [`PENDING_MAX_BYTES`]; 0 holds nothing back). Past it,
    /// metadata is applied at once, as without a session: the restore is
    /// the same, only slower for long chains of metadata-only streams.
    pub fn with_hold_budget(bytes: usize) -> Self {
        Self {
            known: HashMap::new(),
            more_follow: false,
            buf: Vec::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            budget: bytes,
        }
    }

    /// Sets whether streams after the next one will be applied (when none
    /// will, nothing is hashed and nothing is held back: nobody would use
    /// it, and what was held is applied by the end of that stream).
    pub fn set_more_follow(&mut self, more_follow: bool) {
        self.more_follow = more_follow;
    }

    fn remember(&mut self, key: (u64, u64), size: u64, hash: [u8; 32]) {
        if self.known.len() < KNOWN_MAX || self.known.contains_key(&key) {
            self.known.insert(key, (size, hash));
        }
    }

    /// Holds `meta` back for `path` when more streams follow and the
    /// budget allows; false when it must be applied now.
    fn hold(&mut self, path: &RelPath, meta: &Meta, dir: bool, key: Option<(u64, u64)>) -> bool {
        if !self.more_follow {
            return false;
        }
        let cost = 96
            + path.as_bytes().len()
            + meta
                .xattrs
                .iter()
                .map(|(k, v)| 48 + k.len() + v.len())
                .sum::<usize>();
        if self.pending_bytes + cost > self.budget {
            return false;
        }
        self.take(path);
        self.pending_bytes += cost;
        let held = Held {
            meta: meta.clone(),
            dir,
            key,
            cost,
        };
        self.pending.insert(path.clone(), held);
        true
    }

    /// Takes what was held for `path` (a later stream sets it itself).
    fn take(&mut self, path: &RelPath) -> Option<Held> {
        let old = self.pending.remove(path)?;
        self.pending_bytes -= old.cost;
        Some(old)
    }

    /// Takes what is held for `dir` and everything below it, deepest
    /// (last in walk order) first.
    fn take_under(&mut self, dir: &RelPath) -> Vec<(RelPath, Held)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        if dir.is_root() {
            self.pending_bytes = 0;
            return std::mem::take(&mut self.pending)
                .into_iter()
                .rev()
                .collect();
        }
        let keys: Vec<RelPath> = self
            .pending
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(dir))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .rev()
            .map(|k| {
                let held = self.take(&k).expect("a key just listed");
                (k, held)
            })
            .collect()
    }
}

struct OpenFile {
    path: RelPath,
    /// `None` for a patch not opened yet: it is opened by its first data,
    /// or at its end unless it changed nothing ([`ReceiveSession`]).
    file: Option<File>,
    meta: Meta,
    written: u64,
    /// For a patch: the declared new size and the lowest offset the next
    /// PATCH_DATA may write at (ranges come in order and do not overlap).
    patch: Option<(u64, u64)>,
    /// The hash of what was written, while it is small enough to track.
    hasher: Option<blake3::Hasher>,
    /// A patched file's device and inode, the key of its session record.
    key: Option<(u64, u64)>,
    /// A patched file's status: when it was opened, or (not opened yet)
    /// found at its path, if it was looked at.
    opened: Option<fs::Metadata>,
}

impl OpenFile {
    /// The file, opened now if it was not yet (a patch): read and write,
    /// and only if it is still the inode found at its path. A read-only
    /// file (0444, 0400) is patched like any other: its owner gets read
    /// and write until [`Receiver::finish_file`] sets the recorded mode.
    /// Root needs no permission bits.
    fn file(&mut self, root: &Path, owners: Owners) -> Result<&File> {
        if self.file.is_none() {
            let full = self.path.under(root);
            let md = match self.opened.take() {
                Some(md) => md,
                None => regular_file_at(&full, &self.path)?,
            };
            if self.key.is_some_and(|k| k != (md.dev(), md.ino())) {
                return Err(EngineError::refused(
                    self.path.as_bytes(),
                    "replaced while being patched",
                ));
            }
            if owners == Owners::Unprivileged && md.mode() & 0o600 != 0o600 {
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
                    self.path.as_bytes(),
                    "replaced while being patched",
                ));
            }
            self.key = Some((opened.dev(), opened.ino()));
            self.opened = Some(opened);
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }
}

struct Receiver<'a> {
    session: &'a mut ReceiveSession,
    /// The process umask takes owner bits away from a new directory's
    /// 0700, so it needs a chmod (see [`umask_bites_owner`]).
    umask_bites: bool,
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
    receive_in(target, input, opts, obs, &mut ReceiveSession::default())
}

/// [`receive`] as one stream of a chain that `session` spans: the
/// streams of one chain applied in order into a directory only this
/// process writes.
///
/// # Errors
/// As [`receive`].
pub fn receive_in<R: Read>(
    target: &Path,
    input: R,
    opts: &ReceiveOptions,
    obs: &dyn Observer,
    session: &mut ReceiveSession,
) -> Result<ReceiveSummary> {
    let (mut r, header, _version) = read_header(
        io::BufReader::with_capacity(256 << 10, input),
        EngineKind::Native,
        STREAM_VERSION_MIN..=STREAM_VERSION,
    )?;
    crate::stream::check_ends(&header, opts)?;
    let mut rx = Receiver {
        session,
        umask_bites: umask_bites_owner(),
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
        let Some(raw) = r.next_record()? else {
            return Err(EngineError::Corrupt {
                offset: r.offset(),
                why: "truncated: the stream ends without its trailer".into(),
            });
        };
        let offset = raw.offset;
        match NativeRecord::read(&raw)? {
            NativeRecord::Trailer {
                entries,
                records,
                data_bytes,
            } => {
                rx.check_trailer(offset, (entries, records, data_bytes), records_before)?;
                break;
            }
            rec => rx.apply(offset, rec)?,
        }
    }
    if !r.at_end()? {
        return Err(EngineError::Corrupt {
            offset: r.offset(),
            why: "bytes after the trailer".into(),
        });
    }
    rx.finish_dirs(None)?;
    if !rx.session.more_follow {
        rx.apply_held_under(&RelPath::root())?;
    }
    Ok(ReceiveSummary {
        header,
        entries: rx.entries,
        file_bytes: rx.file_bytes,
        setid_dropped: rx.setid_dropped,
        xattrs_skipped: rx.xattrs_skipped,
    })
}

impl Receiver<'_> {
    /// Checks the trailer's counts (entries, records before it, data
    /// bytes) against what was read, and that no file is left open.
    fn check_trailer(
        &self,
        offset: u64,
        (entries, records, bytes): (u64, u64, u64),
        read: u64,
    ) -> Result<()> {
        if let Some(f) = &self.open {
            return Err(EngineError::Corrupt {
                offset,
                why: format!("stream ends inside file {:?}", f.path),
            });
        }
        if entries != self.entries || records != read || bytes != self.file_bytes {
            return Err(EngineError::Corrupt {
                offset,
                why: format!(
                    "trailer counts {entries} entries, {records} records, {bytes} bytes; read {}, {}, {}",
                    self.entries, read, self.file_bytes
                ),
            });
        }
        Ok(())
    }

    /// Applies one record (not the trailer) that starts at byte `offset`.
    fn apply(&mut self, offset: u64, rec: NativeRecord<'_>) -> Result<()> {
        match rec {
            NativeRecord::Data(data) => self.data(offset, data),
            NativeRecord::PatchData { offset: at, data } => self.patch_data(offset, at, data),
            NativeRecord::PatchEnd { size, hash } => self.patch_end(offset, size, hash),
            NativeRecord::FileEnd { size } => self.file_end(offset, size),
            NativeRecord::FileAbort => self.file_abort(offset),
            NativeRecord::Trailer { .. } => unreachable!("the loop reads the trailer"),
            entry => self.entry(entry),
        }
    }

    fn data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let Some(f) = self.open.as_mut().filter(|f| f.patch.is_none()) else {
            return Err(corrupt(offset, "file data outside a file"));
        };
        let mut file = f.file.as_ref().expect("a FILE is opened by its record");
        file.write_all(data)
            .map_err(|e| EngineError::io("write", f.path.under(self.root), e))?;
        f.written += data.len() as u64;
        if f.written > HASH_WRITTEN_UP_TO {
            f.hasher = None;
        } else if let Some(h) = f.hasher.as_mut() {
            h.update(data);
        }
        self.file_bytes += data.len() as u64;
        self.obs.file_bytes(data.len() as u64);
        Ok(())
    }

    fn patch_data(&mut self, offset: u64, at: u64, data: &[u8]) -> Result<()> {
        let (root, owners) = (self.root, self.owners);
        let Some(f) = self.open.as_mut().filter(|f| f.patch.is_some()) else {
            return Err(corrupt(offset, "patch data outside a patch"));
        };
        let (size, min) = f.patch.expect("a patch");
        let end = at.checked_add(data.len() as u64);
        if at < min || end.is_none_or(|e| e > size) {
            return Err(EngineError::refused(
                f.path.as_bytes(),
                format!(
                    "patch range at {at} (+{}) out of order or past the size {size}",
                    data.len()
                ),
            ));
        }
        f.file(root, owners)?
            .write_all_at(data, at)
            .map_err(|e| EngineError::io("write", f.path.under(self.root), e))?;
        f.patch = Some((size, at + data.len() as u64));
        f.written += data.len() as u64;
        self.file_bytes += data.len() as u64;
        self.obs.file_bytes(data.len() as u64);
        Ok(())
    }

    fn patch_end(&mut self, offset: u64, size: u64, want: [u8; 32]) -> Result<()> {
        let Some(mut f) = self.open.take_if(|f| f.patch.is_some()) else {
            return Err(corrupt(offset, "end of patch outside a patch"));
        };
        let (declared, _) = f.patch.expect("a patch");
        let full = f.path.under(self.root);
        if size != declared {
            return Err(EngineError::refused(
                f.path.as_bytes(),
                format!("patch declares {declared} bytes, ends with {size}"),
            ));
        }
        // A patch without data of a file this session wrote, with the size
        // and content hash the session recorded: the file holds exactly
        // those bytes, no read-back needed.
        let known = f.key.and_then(|k| self.session.known.get(&k)).copied();
        let unchanged =
            f.written == 0 && known.is_some_and(|(len, hash)| len == size && hash == want);
        // Nothing changed and more streams follow: its metadata can wait
        // for the end of the chain, unopened.
        if unchanged && f.file.is_none() && self.session.hold(&f.path, &f.meta, false, f.key) {
            return Ok(());
        }
        let file = f.file(self.root, self.owners)?;
        if !unchanged {
            file.set_len(size)
                .map_err(|e| EngineError::io("truncate", &full, e))?;
        }
        // The patched file must be exactly what the sender read.
        let mut h = blake3::Hasher::new();
        let buf = &mut self.session.buf;
        if !unchanged && buf.is_empty() {
            buf.resize(1 << 20, 0);
        }
        let mut at = 0u64;
        while !unchanged && at < size {
            let n = file
                .read_at(buf, at)
                .map_err(|e| EngineError::io("read", &full, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        if !unchanged && *h.finalize().as_bytes() != want {
            return Err(EngineError::Corrupt {
                offset,
                why: format!(
                    "patched file {:?} does not match its content hash (the target did not hold the base content)",
                    f.path
                ),
            });
        }
        if let Some(k) = f.key
            && (self.session.more_follow || known.is_some())
        {
            self.session.remember(k, size, want);
        }
        self.finish_file(f)
    }

    fn file_end(&mut self, offset: u64, size: u64) -> Result<()> {
        let Some(f) = self.open.take_if(|f| f.patch.is_none()) else {
            return Err(corrupt(offset, "end of file outside a file"));
        };
        if size != f.written {
            return Err(EngineError::refused(
                f.path.as_bytes(),
                format!("declares {size} bytes but carries {}", f.written),
            ));
        }
        self.record_written(&f)?;
        self.finish_file(f)
    }

    fn file_abort(&mut self, offset: u64) -> Result<()> {
        let Some(f) = self.open.take() else {
            return Err(corrupt(offset, "file abort outside a file"));
        };
        let p = f.path.under(self.root);
        if let Some(k) = f.key {
            self.session.known.remove(&k);
        }
        drop(f.file);
        fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
        self.after_abort = true;
        Ok(())
    }

    /// An entry record: checked against the walk order and the target's
    /// directories, then applied by its kind.
    fn entry(&mut self, rec: NativeRecord<'_>) -> Result<()> {
        if let Some(f) = &self.open {
            return Err(EngineError::refused(
                f.path.as_bytes(),
                "file content not terminated before the next entry",
            ));
        }
        let path = rec.path().expect("an entry record has a path").clone();
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
        if path.is_root() && !matches!(rec, NativeRecord::Dir { .. }) {
            return Err(EngineError::refused(b".", "the root must be a directory"));
        }
        self.finish_dirs(Some(&path))?;
        self.check_parent(&path)?;
        self.last = Some(path.clone());
        // This stream sets the entry itself: what was held for it is
        // stale, but says what is at the path.
        let held = self.session.take(&path);
        self.entries += 1;
        self.obs.entry();
        let full = path.under(self.root);
        match rec {
            NativeRecord::Delete { .. } => self.remove_existing(&path, false),
            NativeRecord::Dir { meta, .. } => self.dir(path, &full, meta.into_owned(), held),
            NativeRecord::File { meta, .. } => self.file(path, &full, meta.into_owned()),
            NativeRecord::FilePatch { meta, size, .. } => {
                self.patch(path, &full, meta.into_owned(), size, held)
            }
            NativeRecord::Symlink { meta, target, .. } => self.symlink(&path, &full, &meta, target),
            NativeRecord::Hardlink { target, .. } => self.hardlink(&path, &full, &target),
            NativeRecord::Fifo { meta, .. } => self.fifo(&path, &full, &meta),
            _ => unreachable!("entry() is called for entry records only"),
        }
    }

    fn dir(&mut self, path: RelPath, full: &Path, meta: Meta, held: Option<Held>) -> Result<()> {
        // Writable while its contents arrive; final mode on leaving (a
        // directory held since an earlier stream is there, with its
        // owner's rwx).
        let needs_chmod = !held.as_ref().is_some_and(|h| h.dir) && self.make_dir(&path, full)?;
        if needs_chmod {
            nofollow::chmod(full, 0o700, FileType::Directory)
                .map_err(|e| EngineError::io("chmod", full, e))?;
        }
        self.dirs.push((path, meta));
        Ok(())
    }

    fn file(&mut self, path: RelPath, full: &Path, meta: Meta) -> Result<()> {
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(full)
        };
        // O_EXCL never follows or reuses what is there: when something is,
        // remove it (never followed) and create again.
        let file = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(&path, false)?;
                create()
            }
            other => other,
        }
        .map_err(|e| EngineError::io("create", full, e))?;
        self.open = Some(OpenFile {
            path,
            file: Some(file),
            meta,
            written: 0,
            patch: None,
            hasher: self.session.more_follow.then(blake3::Hasher::new),
            key: None,
            opened: None,
        });
        Ok(())
    }

    fn patch(
        &mut self,
        path: RelPath,
        full: &Path,
        meta: Meta,
        size: u64,
        held: Option<Held>,
    ) -> Result<()> {
        // A file held since an earlier stream is still what it was (one
        // link, its device and inode); any other is looked at.
        let (key, nlink, md) = match held.and_then(|h| h.key) {
            Some(key) => (key, 1, None),
            None => {
                let md = regular_file_at(full, &path)?;
                ((md.dev(), md.ino()), md.nlink(), Some(md))
            }
        };
        // A patch that may change nothing of a file this session wrote,
        // and whose metadata no other path shares (one link), is opened
        // only if its data or its end need it.
        let lazy = self.session.more_follow
            && nlink == 1
            && self
                .session
                .known
                .get(&key)
                .is_some_and(|&(len, _)| len == size);
        let mut f = OpenFile {
            path,
            file: None,
            meta,
            written: 0,
            patch: Some((size, 0)),
            hasher: None,
            key: Some(key),
            opened: md,
        };
        if !lazy {
            f.file(self.root, self.owners)?;
        }
        self.open = Some(f);
        Ok(())
    }

    fn symlink(&mut self, path: &RelPath, full: &Path, meta: &Meta, target: &[u8]) -> Result<()> {
        if target.is_empty() || target.contains(&0) {
            return Err(EngineError::refused(
                path.as_bytes(),
                "empty link target or NUL in it",
            ));
        }
        self.remove_existing(path, false)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), full)
            .map_err(|e| EngineError::io("create symlink", full, e))?;
        if let Some((uid, gid)) = self.owners.owner(meta.uid, meta.gid) {
            nofollow::lchown(full, uid, gid).map_err(|e| EngineError::io("chown", full, e))?;
        }
        let t = FileTime::from_unix_time(meta.mtime_sec, meta.mtime_nsec);
        filetime::set_symlink_file_times(full, t, t)
            .map_err(|e| EngineError::io("set mtime", full, e))
    }

    fn hardlink(&mut self, path: &RelPath, full: &Path, target: &RelPath) -> Result<()> {
        if target.is_root() || target == path {
            return Err(EngineError::refused(
                path.as_bytes(),
                "hard link to itself or to the root",
            ));
        }
        self.check_parent(target).map_err(|_| {
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
        self.remove_existing(path, false)?;
        // Once linked, the file's metadata is shared: what was held for it
        // is set now, so that it cannot later overwrite what a stream sets
        // through the other path.
        self.apply_held_under(target)?;
        fs::hard_link(&tfull, full).map_err(|e| EngineError::io("hard link", full, e))?;
        // check_parent for the target may have moved the cache.
        self.parent_ok = None;
        Ok(())
    }

    fn fifo(&mut self, path: &RelPath, full: &Path, meta: &Meta) -> Result<()> {
        self.remove_existing(path, false)?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            full,
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| EngineError::io("create fifo", full, e.into()))?;
        // O_NONBLOCK: opening a FIFO for reading never waits.
        let fifo =
            nofollow::open_entry(full, false).map_err(|e| EngineError::io("open", full, e))?;
        self.apply_meta(&fifo, meta, false, path, None)
    }

    /// Refuses `path` unless every directory above it inside the target is a
    /// real directory (not a symlink) that exists.
    fn check_parent(&mut self, path: &RelPath) -> Result<()> {
        let parent = path.parent();
        // The innermost directory this stream entered and has not left was
        // checked (its parents too) and made or found a real directory
        // when its DIR record came.
        if parent.is_root()
            || self.parent_ok.as_ref() == Some(&parent)
            || self.dirs.last().is_some_and(|(d, _)| *d == parent)
        {
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

    /// Makes the directory `path` (at `full`) `0700`, or keeps the one
    /// there (anything else is removed, never followed); true when it
    /// still needs a chmod to give its owner rwx for what follows.
    fn make_dir(&mut self, path: &RelPath, full: &Path) -> Result<bool> {
        let mkdir = || fs::DirBuilder::new().mode(0o700).create(full);
        match mkdir() {
            Ok(()) => Ok(self.umask_bites),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match fs::symlink_metadata(full) {
                    Ok(md) if md.file_type().is_dir() => Ok(md.mode() & 0o700 != 0o700),
                    _ => {
                        self.remove_existing(path, false)?;
                        mkdir().map_err(|e| EngineError::io("create directory", full, e))?;
                        Ok(self.umask_bites)
                    }
                }
            }
            Err(e) => Err(EngineError::io("create directory", full, e)),
        }
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
                // Nothing below it is left to set.
                drop(self.session.take_under(path));
                make_writable_tree(&full);
                fs::remove_dir_all(&full).map_err(|e| EngineError::io("remove directory", &full, e))
            }
            Ok(_) => fs::remove_file(&full).map_err(|e| EngineError::io("remove", &full, e)),
        }
    }

    /// Records the content hash of a file just written whole, or forgets
    /// what was recorded for its inode (a number the file system may have
    /// reused) when it was too large to hash.
    fn record_written(&mut self, f: &OpenFile) -> Result<()> {
        if !self.session.more_follow && self.session.known.is_empty() {
            return Ok(());
        }
        let md = f
            .file
            .as_ref()
            .expect("a FILE is opened by its record")
            .metadata()
            .map_err(|e| EngineError::io("stat", f.path.under(self.root), e))?;
        let key = (md.dev(), md.ino());
        match (&f.hasher, self.session.more_follow) {
            (Some(h), true) => {
                let hash = *h.finalize().as_bytes();
                self.session.remember(key, f.written, hash);
            }
            _ => {
                self.session.known.remove(&key);
            }
        }
        Ok(())
    }

    fn finish_file(&mut self, f: OpenFile) -> Result<()> {
        let file = f.file.as_ref().expect("a file is open when it ends");
        // A patched file is the old inode: skip what it already has. Its
        // status at open holds unless data was written (a write can clear
        // set-id bits).
        let now = match (&f.opened, f.written) {
            (Some(md), 0) => Some(md.clone()),
            (Some(_), _) => Some(
                file.metadata()
                    .map_err(|e| EngineError::io("stat", f.path.under(self.root), e))?,
            ),
            (None, _) => None,
        };
        self.apply_meta(file, &f.meta, false, &f.path, now.as_ref())
    }

    /// Applies what the session held back for `dir` and below, deepest
    /// first (a directory after its contents).
    fn apply_held_under(&mut self, dir: &RelPath) -> Result<()> {
        for (path, held) in self.session.take_under(dir) {
            self.set_meta_at(&path, &held.meta, held.dir)?;
        }
        Ok(())
    }

    /// Gives the directory or regular file at `path` its recorded
    /// metadata ([`Self::apply_meta`]) through a descriptor opened
    /// without following a symlink. A directory was made 0700, so it opens
    /// whatever its final mode; a file its owner may not read (0200,
    /// 0000, as nobody) gets read permission first.
    fn set_meta_at(&mut self, path: &RelPath, meta: &Meta, dir: bool) -> Result<()> {
        let full = path.under(self.root);
        let opened = match nofollow::open_entry(&full, dir) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !dir => {
                let md =
                    fs::symlink_metadata(&full).map_err(|e| EngineError::io("stat", &full, e))?;
                nofollow::chmod(&full, (md.mode() & 0o7777) | 0o400, FileType::RegularFile)
                    .map_err(|e| EngineError::io("chmod", &full, e))?;
                nofollow::open_entry(&full, false)
            }
            other => other,
        };
        let f = opened.map_err(|e| EngineError::io("open", &full, e))?;
        let now = f
            .metadata()
            .map_err(|e| EngineError::io("stat", &full, e))?;
        if now.is_dir() != dir || (!dir && !now.is_file()) {
            return Err(EngineError::refused(
                path.as_bytes(),
                "changed type while being restored",
            ));
        }
        self.apply_meta(&f, meta, dir, path, Some(&now))
    }

    /// Gives the open entry `f` (at `path`) its recorded owner, extended
    /// attributes, mode and mtime, in that order: the owner first, since
    /// chown clears set-id bits, then only the bits [`Owners::mode`] allows.
    /// A patched file or a kept directory is the old inode, so attributes
    /// it no longer has are removed.
    fn apply_meta(
        &mut self,
        f: &File,
        meta: &Meta,
        is_dir: bool,
        path: &RelPath,
        now: Option<&fs::Metadata>,
    ) -> Result<()> {
        let full = || path.under(self.root);
        if let Some((uid, gid)) = self.owners.owner(meta.uid, meta.gid)
            && now.is_none_or(|m| (m.uid(), m.gid()) != (uid, gid))
        {
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
        if now.is_none_or(|m| m.mode() & 0o7777 != mode) {
            nofollow::fchmod(f, mode).map_err(|e| EngineError::io("chmod", full(), e))?;
        }
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
            if self.session.hold(&p, &meta, true, None) {
                // Stays 0700 (as entered) until the end of the chain.
                continue;
            }
            self.apply_held_under(&p)?;
            self.set_meta_at(&p, &meta, true)?;
        }
        Ok(())
    }
}

/// The status of the regular file at `full` (not followed), or a refusal
/// naming `path`: a patch applies to a regular file only.
fn regular_file_at(full: &Path, path: &RelPath) -> Result<fs::Metadata> {
    match fs::symlink_metadata(full) {
        Ok(md) if md.file_type().is_file() => Ok(md),
        _ => Err(EngineError::refused(
            path.as_bytes(),
            "patch of a path that is not a regular file in the target",
        )),
    }
}

/// Whether the umask removes any owner bit (read once from
/// `/proc/self/status`, which does not change it; when unknown, assume it
/// does).
fn umask_bites_owner() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_none_or(|m| m & 0o700 != 0)
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

fn corrupt(offset: u64, why: &str) -> EngineError {
    EngineError::Corrupt {
        offset,
        why: why.to_string(),
    }
}
