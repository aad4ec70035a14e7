//! File-system calls that never follow a symlink at the last component.
//!
//! The receiver sets owners, modes, times and extended attributes through a
//! descriptor opened with `O_NOFOLLOW` (or `O_PATH|O_NOFOLLOW` when the
//! entry is not readable), so that swapping an entry for a symlink between
//! the check and the call cannot redirect the call to a file outside the
//! restore. Restores also run inside a private (`0700`) staging directory,
//! so no other unprivileged user can reach the entries at all; these calls
//! are the second line.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Opens `path` without following a symlink, for reading its metadata and
/// changing its attributes: directories `O_RDONLY|O_DIRECTORY`, FIFOs
/// `O_RDONLY|O_NONBLOCK` (never blocks waiting for a writer), always
/// `O_NOFOLLOW|O_CLOEXEC`.
pub(crate) fn open_entry(path: &Path, dir: bool) -> io::Result<File> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    let fd: OwnedFd = rustix::fs::open(path, flags, Mode::empty())?;
    Ok(File::from(fd))
}

/// Sets the permission bits of the entry at `path` (not following a
/// symlink), even when the entry is neither readable nor writable by the
/// caller: through an `O_PATH` descriptor, which pins the inode, and its
/// `/proc/self/fd` name (what glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)`
/// does). `expect` must match the opened entry's type, else nothing
/// changes and the call fails with `InvalidInput`.
pub(crate) fn chmod(path: &Path, mode: u32, expect: rustix::fs::FileType) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != expect {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the entry changed type (replaced while being restored)",
        ));
    }
    let proc = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    match rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(mode)) {
        Ok(()) => Ok(()),
        // No /proc: the parent directories were checked to be real ones
        // inside the private staging directory, so the path is ours.
        Err(rustix::io::Errno::NOENT) => {
            rustix::fs::chmodat(rustix::fs::CWD, path, Mode::from_raw_mode(mode), {
                rustix::fs::AtFlags::empty()
            })
            .map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes the owner of a symlink itself (`lchown`).
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(Into::into)
}

/// Changes the owner of an open entry.
pub(crate) fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        f,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(Into::into)
}

/// Sets the permission bits of an open entry.
pub(crate) fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode)).map_err(Into::into)
}

/// Sets the access and modification times of an open entry to `sec.nsec`.
pub(crate) fn futimens(f: &File, sec: i64, nsec: u32) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec.min(999_999_999)) as _,
    };
    rustix::fs::futimens(
        f,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(Into::into)
}

/// True when this process can set owners (its effective uid is 0).
pub fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}
