//! Relative paths inside a project, as bytes with `/` between components.
//!
//! A valid path has no leading `/`, no empty, `.` or `..` component and no
//! NUL byte; the empty path is the project root. Paths sort component by
//! component, which is the order of a depth-first walk that visits each
//! directory's entries sorted by name: `a` < `a/b` < `a.txt`.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// A validated path relative to a project root.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The project root (the empty path).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Validates `bytes` as a relative path.
    ///
    /// # Errors
    /// A message naming what is wrong with it.
    pub fn new(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes.len() > MAX_PATH {
            return Err("path longer than 4096 bytes");
        }
        if bytes[0] == b'/' {
            return Err("absolute path");
        }
        if bytes.contains(&0) {
            return Err("NUL byte in path");
        }
        for c in bytes.split(|&b| b == b'/') {
            match c {
                b"" => return Err("empty path component (a '/' too many)"),
                b"." => return Err("'.' component"),
                b".." => return Err("'..' component"),
                _ => {}
            }
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The path of `name` inside this directory.
    ///
    /// # Errors
    /// When `name` is not a valid single component.
    pub fn join(&self, name: &[u8]) -> Result<Self, &'static str> {
        if name.is_empty() || name == b"." || name == b".." {
            return Err("invalid file name");
        }
        if name.contains(&b'/') || name.contains(&0) {
            return Err("file name contains '/' or NUL");
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        if v.len() > MAX_PATH {
            return Err("path longer than 4096 bytes");
        }
        Ok(Self(v))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for the project root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.iter().filter(|&&b| b == b'/').count() + 1
        }
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// The parent directory (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Self(self.0[..i].to_vec()),
            None => Self::root(),
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// The path under `root` on this host.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.0.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&self.0))
        }
    }

    /// Lossy text form for messages.
    pub fn display(&self) -> String {
        if self.0.is_empty() {
            ".".to_string()
        } else {
            String::from_utf8_lossy(&self.0).into_owned()
        }
    }
}

impl std::fmt::Debug for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

/// Walk order: component by component, each compared as bytes, so a
/// directory's entries come right after it and before its next sibling
/// (`a` < `a/b` < `a.txt`). Computed on the bytes with `/` counted as
/// lower than any byte a name can hold (names hold no NUL and no empty
/// component), which gives the same order without splitting: a receiver
/// compares paths for every entry, and more often with a session's held
/// metadata.
impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        let key = |b: u8| if b == b'/' { 0 } else { b };
        let (a, b) = (&self.0, &other.0);
        match a.iter().zip(b.iter()).position(|(x, y)| x != y) {
            Some(i) => key(a[i]).cmp(&key(b[i])),
            None => a.len().cmp(&b.len()),
        }
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn walk_order() {
        assert!(p("") < p("a"));
        assert!(p("a") < p("a/b"));
        assert!(p("a/b") < p("a.txt"));
        assert!(p("a/z") < p("b"));
    }

    proptest::proptest! {
        /// The byte order with `/` lowest is the order of components.
        #[test]
        fn byte_order_is_component_order(
            a in proptest::collection::vec("[a._-]{1,3}|\\x01|\\xff", 0..4),
            b in proptest::collection::vec("[a._-]{1,3}|\\x01|\\xff", 0..4),
        ) {
            let valid = |v: &Vec<String>| v.iter().all(|c| c != "." && c != "..");
            proptest::prop_assume!(valid(&a) && valid(&b));
            let (pa, pb) = (p(&a.join("/")), p(&b.join("/")));
            proptest::prop_assert_eq!(pa.cmp(&pb), pa.components().cmp(pb.components()));
        }
    }

    #[test]
    fn hostile_paths() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
        ] {
            assert!(RelPath::new(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(RelPath::new(&[b'a'; 5000]).is_err());
    }

    #[test]
    fn parents_and_prefixes() {
        assert_eq!(p("a/b/c").parent(), p("a/b"));
        assert_eq!(p("a").parent(), p(""));
        assert!(p("a/b").starts_with(&p("a")));
        assert!(!p("ab").starts_with(&p("a")));
        assert!(p("a").starts_with(&p("")));
        assert_eq!(p("a/b").depth(), 2);
    }
}
