#!/usr/bin/env python3
"""Replay release trees through one project directory, as edits between saves.

    bench-evolve.py sync SRC DST --mode content|touch-all

Makes DST hold exactly the tree SRC holds (regular files, directories and
symlinks; modes too), the way a user's project changes between two saves:

- content: a file whose bytes are the same keeps its mtime and inode (what
  `rsync -c` or a `git checkout` leaves); changed files are rewritten in
  place, new ones created, vanished ones deleted.
- touch-all: every file is rewritten, so every mtime changes, whether its
  bytes changed or not (what a fresh extraction or `cp -r` does).

Prints one line: files written, files unchanged, files deleted, bytes written.
"""

import argparse
import os
import shutil
import stat
import sys


def git_mode(st):
    """The mode a git checkout gives (umask 022): the release archives were
    made with different umasks (0644 in one, 0664 in the next), which is
    not an edit a project sees between two saves."""
    if stat.S_ISDIR(st.st_mode):
        return 0o755
    return 0o755 if st.st_mode & 0o100 else 0o644


def entries(root):
    """Relative path -> lstat of everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = os.lstat(full)
    return out


def same_bytes(a, b, size):
    if os.path.getsize(b) != size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def sync(src, dst, mode):
    os.makedirs(dst, exist_ok=True)
    want = entries(src)
    have = entries(dst)
    written = unchanged = deleted = nbytes = 0
    # Deletions first, deepest first, and anything whose kind changes.
    for rel in sorted(have, key=lambda p: p.count(os.sep), reverse=True):
        h = have[rel]
        w = want.get(rel)
        if w is None or stat.S_IFMT(w.st_mode) != stat.S_IFMT(h.st_mode):
            full = os.path.join(dst, rel)
            if stat.S_ISDIR(h.st_mode):
                shutil.rmtree(full)
            elif os.path.lexists(full):
                os.unlink(full)
            deleted += 1
    for rel in sorted(want):
        w = want[rel]
        s = os.path.join(src, rel)
        d = os.path.join(dst, rel)
        if stat.S_ISDIR(w.st_mode):
            os.makedirs(d, exist_ok=True)
            dmode = git_mode(w)
            if stat.S_IMODE(os.lstat(d).st_mode) != dmode:
                os.chmod(d, dmode)
        elif stat.S_ISLNK(w.st_mode):
            target = os.readlink(s)
            if os.path.lexists(d):
                if os.readlink(d) == target:
                    unchanged += 1
                    continue
                os.unlink(d)
            os.symlink(target, d)
            written += 1
        elif stat.S_ISREG(w.st_mode):
            if mode == "content" and os.path.lexists(d) and same_bytes(s, d, w.st_size):
                if stat.S_IMODE(os.lstat(d).st_mode) != git_mode(w):
                    os.chmod(d, git_mode(w))
                unchanged += 1
                continue
            # Rewrite in place (same inode), as an editor saving or git
            # checking out would.
            with open(s, "rb") as fs, open(d, "wb") as fd:
                shutil.copyfileobj(fs, fd, 1 << 20)
            os.chmod(d, git_mode(w))
            written += 1
            nbytes += w.st_size
    print(f"written {written} unchanged {unchanged} deleted {deleted} bytes {nbytes}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sync")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--mode", choices=["content", "touch-all"], required=True)
    a = p.parse_args()
    if a.cmd == "sync":
        sync(a.src, a.dst, a.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
