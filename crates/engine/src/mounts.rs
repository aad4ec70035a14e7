//! What is mounted where (`/proc/self/mountinfo`): how an engine finds the
//! dataset or subvolume that holds a project, and how a project's engine
//! is detected.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The path inside its file system that is mounted there (`/` for a
    /// file system's root; a btrfs subvolume's path).
    pub root: String,
    /// The file system type (`zfs`, `fuse.zfs` for zfs-fuse, `btrfs`).
    pub fstype: String,
    /// What is mounted (a ZFS dataset's name; a device).
    pub source: String,
}

impl Mount {
    /// True for a ZFS dataset (the kernel module's or zfs-fuse's).
    pub fn is_zfs(&self) -> bool {
        self.fstype == "zfs" || self.fstype == "fuse.zfs"
    }
}

/// Every mount of this process's namespace, in mount order.
///
/// # Errors
/// When `/proc/self/mountinfo` cannot be read.
pub fn mounts() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read(Path::new("/proc/self/mountinfo"))?;
    Ok(text.split(|&b| b == b'\n').filter_map(parse_line).collect())
}

/// The mount whose mount point is exactly `path` (the last one mounted
/// there: it is the one visible), if any. `path` should be canonical.
///
/// # Errors
/// When `/proc/self/mountinfo` cannot be read.
pub fn mount_at(path: &Path) -> std::io::Result<Option<Mount>> {
    Ok(mounts()?.into_iter().rfind(|m| m.mount_point == path))
}

/// One line: `id parent major:minor root mount-point options [optional
/// fields] - fstype source super-options`, with spaces and other bytes
/// escaped as `\ooo`.
fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let dash = fields.iter().position(|f| *f == b"-")?;
    if dash < 6 || fields.len() < dash + 3 {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
    Some(Mount {
        root: text(fields[3]),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fstype: text(fields[dash + 1]),
        source: text(fields[dash + 2]),
    })
}

fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_optional_fields_and_escapes() {
        let m = parse_line(
            b"47 45 0:42 / /tmp/zt/mnt\\0401/proj rw,relatime shared:5 - fuse.zfs sp1/proj rw,user_id=0",
        )
        .unwrap();
        assert_eq!(m.mount_point, Path::new("/tmp/zt/mnt 1/proj"));
        assert_eq!(
            (m.fstype.as_str(), m.source.as_str()),
            ("fuse.zfs", "sp1/proj")
        );
        assert!(m.is_zfs());
        let b =
            parse_line(b"60 27 0:50 /vol/p /mnt/p rw - btrfs /dev/loop0 rw,space_cache").unwrap();
        assert_eq!((b.root.as_str(), b.fstype.as_str()), ("/vol/p", "btrfs"));
        assert!(parse_line(b"garbage").is_none());
    }

    #[test]
    fn the_root_is_mounted() {
        assert!(mount_at(Path::new("/")).unwrap().is_some());
    }
}
