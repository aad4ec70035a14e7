//! Random trees, random edits, exact capture.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use proptest::prelude::*;

/// What a path holds, as far as a restore must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with its permission bits and mtime.
    Dir {
        /// `mode & 0o7777`.
        mode: u32,
        /// mtime (seconds, nanoseconds).
        mtime: (i64, i64),
    },
    /// A regular file.
    File {
        /// `mode & 0o7777`.
        mode: u32,
        /// mtime (seconds, nanoseconds).
        mtime: (i64, i64),
        /// Length.
        size: u64,
        /// BLAKE3 of the content.
        hash: String,
        /// The first path (in walk order) of its hardlink group, if it has
        /// more than one link inside the tree.
        link_group: Option<String>,
        /// `user.*` extended attributes.
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as bytes.
        target: Vec<u8>,
        /// mtime (seconds, nanoseconds).
        mtime: (i64, i64),
    },
    /// A named pipe.
    Fifo {
        /// `mode & 0o7777`.
        mode: u32,
    },
}

/// Captures `root` exactly: every entry below it keyed by relative path
/// (the root itself as `.`).
///
/// # Panics
/// When the tree cannot be read (this is a test utility).
pub fn capture(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<u64, String> = HashMap::new();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let walk: Vec<_> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("walk"))
        .collect();
    for e in &walk {
        let md = e.metadata().expect("stat");
        if md.is_file() {
            *counts.entry(md.ino()).or_default() += 1;
        }
    }
    for e in walk {
        let rel = e.path().strip_prefix(root).expect("under root");
        let key = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        let md = e.metadata().expect("stat");
        let mtime = (md.mtime(), md.mtime_nsec());
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        let node = if ft.is_dir() {
            Node::Dir { mode, mtime }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(e.path())
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
                mtime,
            }
        } else if ft.is_file() {
            let mut h = blake3::Hasher::new();
            h.update_reader(fs::File::open(e.path()).expect("open"))
                .expect("read");
            let link_group = (counts[&md.ino()] > 1).then(|| {
                groups
                    .entry(md.ino())
                    .or_insert_with(|| key.clone())
                    .clone()
            });
            let mut xattrs: Vec<_> = xattr::list(e.path())
                .map(|l| l.collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.as_bytes().starts_with(b"user."))
                .filter_map(|n| {
                    xattr::get(e.path(), &n)
                        .ok()
                        .flatten()
                        .map(|v| (n.as_bytes().to_vec(), v))
                })
                .collect();
            xattrs.sort();
            Node::File {
                mode,
                mtime,
                size: md.size(),
                hash: h.finalize().to_hex().to_string(),
                link_group,
                xattrs,
            }
        } else {
            Node::Fifo { mode }
        };
        out.insert(key, node);
    }
    out
}

/// `t` as a restore that cannot grant set-id bits gives it back: files and
/// FIFOs without their set-user-id and set-group-id bits (directories keep
/// theirs). What a restore as `nobody`, or of root-owned files, yields.
pub fn without_setid(mut t: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    for n in t.values_mut() {
        if let Node::File { mode, .. } | Node::Fifo { mode } = n {
            *mode &= !0o6000;
        }
    }
    t
}

/// Asserts two captures are equal, reporting the first difference by path.
///
/// # Panics
/// When they differ.
pub fn assert_same(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>, what: &str) {
    for (k, v) in expected {
        match actual.get(k) {
            None => panic!("{what}: {k} missing from the restore (expected {v:?})"),
            Some(a) if a != v => panic!("{what}: {k} differs:\n expected {v:?}\n actual   {a:?}"),
            _ => {}
        }
    }
    for k in actual.keys() {
        assert!(
            expected.contains_key(k),
            "{what}: {k} is in the restore but was not saved"
        );
    }
}

/// One change to a tree. Paths are picked from small name pools so that
/// edits collide with each other: replacing files by directories and back,
/// deleting whole subtrees, linking to files that later change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Write a file (creating parents) with `len` bytes from `seed`.
    Write {
        /// Path (pool index).
        path: usize,
        /// Content length.
        len: usize,
        /// Content seed.
        seed: u8,
    },
    /// Append to a file if it exists.
    Append {
        /// Path (pool index).
        path: usize,
        /// Bytes to add.
        len: usize,
    },
    /// Make a directory (creating parents).
    Mkdir {
        /// Path (pool index).
        path: usize,
    },
    /// Make a symlink with an arbitrary (even hostile-looking) target.
    Symlink {
        /// Path (pool index).
        path: usize,
        /// Target (pool index into [`LINK_TARGETS`]).
        target: usize,
    },
    /// Hard-link `path` to the file at `to` if there is one.
    Hardlink {
        /// New path (pool index).
        path: usize,
        /// Existing file (pool index).
        to: usize,
    },
    /// Make a named pipe.
    Fifo {
        /// Path (pool index).
        path: usize,
    },
    /// Remove whatever is at a path (recursively).
    Remove {
        /// Path (pool index).
        path: usize,
    },
    /// Change permission bits.
    Chmod {
        /// Path (pool index).
        path: usize,
        /// New mode (from [`MODES`]).
        mode: usize,
    },
    /// Set an mtime.
    Touch {
        /// Path (pool index).
        path: usize,
        /// Seconds since the epoch.
        secs: i64,
        /// Nanoseconds.
        nanos: u32,
    },
    /// Set a `user.` extended attribute on a file.
    Xattr {
        /// Path (pool index).
        path: usize,
        /// Value length.
        len: usize,
    },
}

/// The path pool: nested names that sort in interesting ways.
pub const PATHS: &[&str] = &[
    "a",
    "a.txt",
    "a/b",
    "a/b/c",
    "a/b.txt",
    "a/b/c/d.bin",
    "b",
    "b/x",
    "b/y",
    "b/y/z",
    "empty",
    "c d",
    "ünï",
    "a/e",
    "b/x/deep",
    "z",
];
/// Symlink targets, including ones that point outside the tree.
pub const LINK_TARGETS: &[&str] = &[
    "a.txt",
    "../outside",
    "/etc/passwd",
    "b/y",
    "dangling",
    "a/b/c",
];
/// Permission bits used by `Chmod`.
pub const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o700, 0o444, 0o400, 0o555, 0o640, 0o4755, 0o2755, 0o1777,
];

/// A random operation.
pub fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        4 => (p.clone(), prop_oneof![Just(0usize), 1..100usize, 1000..300_000usize], any::<u8>())
            .prop_map(|(path, len, seed)| Op::Write { path, len, seed }),
        2 => (p.clone(), 1..5000usize).prop_map(|(path, len)| Op::Append { path, len }),
        2 => p.clone().prop_map(|path| Op::Mkdir { path }),
        1 => (p.clone(), 0..LINK_TARGETS.len()).prop_map(|(path, target)| Op::Symlink { path, target }),
        1 => (p.clone(), p.clone()).prop_map(|(path, to)| Op::Hardlink { path, to }),
        1 => p.clone().prop_map(|path| Op::Fifo { path }),
        2 => p.clone().prop_map(|path| Op::Remove { path }),
        1 => (p.clone(), 0..MODES.len()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (p.clone(), 0..2_000_000_000i64, 0..1_000_000_000u32)
            .prop_map(|(path, secs, nanos)| Op::Touch { path, secs, nanos }),
        1 => (p, 0..200usize).prop_map(|(path, len)| Op::Xattr { path, len }),
    ]
}

/// Deterministic pseudo-random bytes (compressible in parts).
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"lorem ipsum dolor sit amet\n"[i % 27]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

fn make_parents(root: &Path, p: &Path) -> bool {
    // Only create parents that are real directories (or absent) inside root.
    let rel = p.strip_prefix(root).expect("under root");
    let mut at = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {
                let _ = fs::set_permissions(&at, fs::Permissions::from_mode(0o755));
            }
            Ok(_) => return false,
            Err(_) => {
                if fs::create_dir(&at).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            for e in walkdir::WalkDir::new(p).into_iter().flatten() {
                if e.file_type().is_dir() {
                    let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
                }
            }
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Applies `op` to the tree at `root`; operations that do not fit the
/// current tree (appending to a directory, say) do nothing.
pub fn apply(root: &Path, op: &Op) {
    let path = |i: usize| -> PathBuf { root.join(PATHS[i]) };
    match op {
        Op::Write { path: i, len, seed } => {
            let p = path(*i);
            if make_parents(root, &p) {
                remove(&p);
                fs::write(&p, content(*len, *seed)).expect("write");
            }
        }
        Op::Append { path: i, len } => {
            let p = path(*i);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_file())
                .unwrap_or(false)
                && let Ok(mut f) = fs::OpenOptions::new().append(true).open(&p)
            {
                f.write_all(&content(*len, 7)).expect("append");
            }
        }
        Op::Mkdir { path: i } => {
            let p = path(*i);
            if make_parents(root, &p) && !is_dir(&p) {
                remove(&p);
                fs::create_dir(&p).expect("mkdir");
            }
        }
        Op::Symlink { path: i, target } => {
            let p = path(*i);
            if make_parents(root, &p) {
                remove(&p);
                std::os::unix::fs::symlink(LINK_TARGETS[*target], &p).expect("symlink");
            }
        }
        Op::Hardlink { path: i, to } => {
            let (p, t) = (path(*i), path(*to));
            if i != to
                && fs::symlink_metadata(&t)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
                && !Path::new(PATHS[*to]).starts_with(PATHS[*i])
                && make_parents(root, &p)
                && fs::symlink_metadata(&t)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
            {
                remove(&p);
                fs::hard_link(&t, &p).expect("link");
            }
        }
        Op::Fifo { path: i } => {
            let p = path(*i);
            if make_parents(root, &p) {
                remove(&p);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o640),
                    0,
                )
                .expect("mkfifo");
            }
        }
        Op::Remove { path: i } => remove(&path(*i)),
        Op::Chmod { path: i, mode } => {
            let p = path(*i);
            if let Ok(m) = fs::symlink_metadata(&p)
                && !m.file_type().is_symlink()
            {
                let mut mode = MODES[*mode];
                if m.is_dir() {
                    // Readable and searchable, so the walk can save it;
                    // read-only directories stay read-only (make_parents
                    // opens them again before writing inside).
                    mode |= 0o500;
                }
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
            }
        }
        Op::Touch {
            path: i,
            secs,
            nanos,
        } => {
            let p = path(*i);
            if fs::symlink_metadata(&p).is_ok() {
                let t = FileTime::from_unix_time(*secs, *nanos);
                filetime::set_symlink_file_times(&p, t, t).expect("touch");
            }
        }
        Op::Xattr { path: i, len } => {
            let p = path(*i);
            if fs::symlink_metadata(&p)
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                // Not every file system has user xattrs; ignore refusals.
                let _ = xattr::set(&p, "user.strata.test", &content(*len, 3));
            }
        }
    }
}

/// Builds a tree with one of every kind the engine keeps, plus edge cases:
/// empty files and directories, a hardlink pair, a dangling and an escaping
/// symlink, a FIFO, a read-only directory, odd names and an old mtime.
///
/// # Panics
/// When the tree cannot be written.
pub fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/empty-dir")).expect("mkdir");
    fs::create_dir_all(root.join("src/deep/er/still")).expect("mkdir");
    fs::write(root.join("docs/notes.md"), b"# notes\n").expect("write");
    fs::write(root.join("empty"), b"").expect("write");
    fs::write(root.join("src/deep/er/still/data.bin"), content(700_000, 9)).expect("write");
    fs::write(root.join("na me with spaces & ünïcödé"), b"x").expect("write");
    fs::hard_link(root.join("docs/notes.md"), root.join("src/notes-link.md")).expect("link");
    std::os::unix::fs::symlink("../docs/notes.md", root.join("src/rel-link")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/outside", root.join("dangling")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(root.join("ro")).expect("mkdir");
    fs::write(root.join("ro/frozen"), b"cold").expect("write");
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
    let old = FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("docs/notes.md"), old).expect("touch");
}
