//! The regrouped layout of a file system's send stream (zfs and btrfs
//! stream version 2, `docs/engines.md`): the same bytes, rearranged so
//! that file content dedupes.
//!
//! A send stream interleaves small record headers with the file data they
//! introduce. Some header fields are unique to each send (zfs puts the
//! snapshot's guid in every write record), so with 1 MiB chunks no chunk of
//! file data was ever the same twice: not across snapshots, not across
//! projects holding the same files. Here the stream is cut into groups:
//! each holds a *skeleton* (every byte that is not file data, with the
//! lengths of the data runs between them) followed by the group's data
//! runs, back to back. Identical content sends identical data sections,
//! which the chunker cuts into identical chunks.
//!
//! ```text
//! regrouped := group* end
//! group     := 'G' skeleton_len:u32le data_len:u32le skeleton data
//! skeleton  := entry*
//! entry     := 0x00 len:u32le bytes[len]   (bytes of the stream, as they are)
//!            | 0x01 len:u32le              (the next len bytes of data)
//! end       := 'E' total:u64le             (the stream's length)
//! ```
//!
//! Only [`Splitter`]s know a stream's records, and only the writer uses
//! them: the reader replays what the skeleton says, so whatever a splitter
//! decides (even on a stream it misreads) the bytes come back exactly. A
//! splitter that meets something it does not know gives up, and the rest
//! of the stream is data, as in version 1. Memory: the writer holds one
//! group ([`GROUP_DATA`] of data, [`GROUP_META`] of skeleton) and the
//! record it is reading; the reader one skeleton.

use std::io::{self, Read, Write};

/// Most data bytes in one group.
pub const GROUP_DATA: usize = 16 << 20;
/// The skeleton of a group is flushed once it holds this many bytes.
pub const GROUP_META: usize = 1 << 20;
/// Most bytes a splitter may ask to see at once (one record).
const MAX_NEED: usize = 1 << 20;
/// The largest skeleton the reader accepts: a full one, plus the entry
/// that crossed the limit.
const MAX_SKELETON: usize = GROUP_META + MAX_NEED + 16;

/// What the next bytes of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `meta` bytes of headers, then `data` bytes of file data.
    Split {
        /// Bytes that go to the skeleton.
        meta: usize,
        /// Bytes that follow them and go to the data section.
        data: usize,
    },
    /// The splitter must see at least this many bytes to decide.
    Need(usize),
    /// The splitter does not know what follows: the rest is data.
    Opaque,
}

/// Reads the records of one kind of send stream.
pub trait Splitter: Send {
    /// What starts at `buf[0]` (`buf` holds what has arrived and not been
    /// placed yet; at the stream's end it may be shorter than asked).
    fn next(&mut self, buf: &[u8]) -> Piece;
}

/// Writes the regrouped layout of the stream written into it.
pub struct Regrouper<W: Write, S: Splitter> {
    out: W,
    splitter: S,
    /// Arrived, not yet placed.
    pending: Vec<u8>,
    skeleton: Vec<u8>,
    data: Vec<u8>,
    /// Where the length of the skeleton's last entry is, and its kind.
    last: Option<(usize, u8)>,
    meta_left: usize,
    data_left: usize,
    /// How many bytes `next` asked for.
    need: usize,
    opaque: bool,
    total: u64,
    written: u64,
}

impl<W: Write, S: Splitter> Regrouper<W, S> {
    /// A regrouper writing into `out`, reading records with `splitter`.
    pub fn new(out: W, splitter: S) -> Self {
        Self {
            out,
            splitter,
            pending: Vec::new(),
            skeleton: Vec::new(),
            data: Vec::new(),
            last: None,
            meta_left: 0,
            data_left: 0,
            need: 0,
            opaque: false,
            total: 0,
            written: 0,
        }
    }

    fn entry(&mut self, kind: u8, bytes: &[u8]) {
        let n = bytes.len();
        match self.last {
            Some((at, k)) if k == kind => {
                let len = u32::from_le_bytes(self.skeleton[at..at + 4].try_into().unwrap());
                self.skeleton[at..at + 4].copy_from_slice(&(len + n as u32).to_le_bytes());
            }
            _ => {
                self.skeleton.push(kind);
                self.last = Some((self.skeleton.len(), kind));
                self.skeleton.extend_from_slice(&(n as u32).to_le_bytes());
            }
        }
        if kind == 0 {
            self.skeleton.extend_from_slice(bytes);
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn flush_group(&mut self) -> io::Result<()> {
        if self.skeleton.is_empty() {
            return Ok(());
        }
        let mut head = [0u8; 9];
        head[0] = b'G';
        head[1..5].copy_from_slice(&(self.skeleton.len() as u32).to_le_bytes());
        head[5..9].copy_from_slice(&(self.data.len() as u32).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&self.skeleton)?;
        self.out.write_all(&self.data)?;
        self.written += (9 + self.skeleton.len() + self.data.len()) as u64;
        self.skeleton.clear();
        self.data.clear();
        self.last = None;
        Ok(())
    }

    /// Places what `pending` holds, as far as the splitter can tell
    /// (`eof`: nothing more comes).
    fn place(&mut self, eof: bool) -> io::Result<()> {
        let mut at = 0;
        loop {
            let avail = self.pending.len() - at;
            if avail == 0 {
                break;
            }
            if self.meta_left > 0 || self.data_left > 0 || self.opaque {
                let (kind, left) = if self.meta_left > 0 {
                    (0u8, self.meta_left)
                } else {
                    (
                        1u8,
                        if self.opaque {
                            usize::MAX
                        } else {
                            self.data_left
                        },
                    )
                };
                let room = if kind == 0 {
                    GROUP_META.saturating_sub(self.skeleton.len()).max(1)
                } else {
                    GROUP_DATA - self.data.len()
                };
                let n = avail.min(left).min(room);
                let bytes = std::mem::take(&mut self.pending);
                self.entry(kind, &bytes[at..at + n]);
                self.pending = bytes;
                at += n;
                if kind == 0 {
                    self.meta_left -= n;
                } else if !self.opaque {
                    self.data_left -= n;
                }
                if self.data.len() >= GROUP_DATA || self.skeleton.len() >= GROUP_META {
                    self.flush_group()?;
                }
                continue;
            }
            if avail < self.need && !eof {
                break;
            }
            match self.splitter.next(&self.pending[at..]) {
                Piece::Split { meta, data } if meta + data > 0 => {
                    self.need = 0;
                    self.meta_left = meta;
                    self.data_left = data;
                }
                Piece::Need(n) if n > avail && n <= MAX_NEED && !eof => {
                    self.need = n;
                    break;
                }
                // Nothing to place, more than a record may be, or a stream
                // that ends inside a record: the rest is data.
                _ => self.opaque = true,
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Writes the last group and the end; returns the bytes written.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(mut self) -> io::Result<u64> {
        self.place(true)?;
        debug_assert!(self.pending.is_empty());
        self.flush_group()?;
        let mut end = [0u8; 9];
        end[0] = b'E';
        end[1..].copy_from_slice(&self.total.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.written + 9)
    }
}

impl<W: Write, S: Splitter> Write for Regrouper<W, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.total += buf.len() as u64;
        self.place(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a regrouped stream back into the stream it was made from.
pub struct Ungrouped<R: Read> {
    inner: R,
    skeleton: Vec<u8>,
    /// Where the next entry of the skeleton starts.
    at: usize,
    /// Left of the current entry: (kind, bytes; for meta, from `at`).
    entry: Option<(u8, usize)>,
    /// Data bytes of the group not yet named by an entry.
    group_data: u64,
    total: u64,
    done: bool,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("regrouped stream: {}", why.into()),
    )
}

impl<R: Read> Ungrouped<R> {
    /// Reads the regrouped stream `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            skeleton: Vec::new(),
            at: 0,
            entry: None,
            group_data: 0,
            total: 0,
            done: false,
        }
    }

    /// Reads the next group's head and skeleton, or the end; false at the
    /// end.
    fn next_group(&mut self) -> io::Result<bool> {
        if self.group_data != 0 {
            return Err(bad(format!(
                "a group's skeleton names {} bytes less than its data section",
                self.group_data
            )));
        }
        let mut tag = [0u8; 1];
        self.inner
            .read_exact(&mut tag)
            .map_err(|e| cut(e, "before its end"))?;
        match tag[0] {
            b'G' => {
                let mut head = [0u8; 8];
                self.inner
                    .read_exact(&mut head)
                    .map_err(|e| cut(e, "in a group's head"))?;
                let skel = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
                let data = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
                if skel == 0 || skel > MAX_SKELETON || data > GROUP_DATA {
                    return Err(bad(format!(
                        "a group of {skel} skeleton and {data} data bytes (at most {MAX_SKELETON} and {GROUP_DATA})"
                    )));
                }
                self.skeleton.clear();
                self.skeleton.resize(skel, 0);
                self.inner
                    .read_exact(&mut self.skeleton)
                    .map_err(|e| cut(e, "in a group's skeleton"))?;
                self.at = 0;
                self.group_data = data as u64;
                Ok(true)
            }
            b'E' => {
                let mut t = [0u8; 8];
                self.inner
                    .read_exact(&mut t)
                    .map_err(|e| cut(e, "in its end"))?;
                let total = u64::from_le_bytes(t);
                if total != self.total {
                    return Err(bad(format!(
                        "its end says {total} bytes, its groups hold {}",
                        self.total
                    )));
                }
                let mut extra = [0u8; 1];
                if self.inner.read(&mut extra)? != 0 {
                    return Err(bad("bytes after its end"));
                }
                Ok(false)
            }
            t => Err(bad(format!("unknown group tag {t:#04x}"))),
        }
    }

    /// The next entry of the current skeleton, if any.
    fn next_entry(&mut self) -> io::Result<Option<(u8, usize)>> {
        if self.at == self.skeleton.len() {
            return Ok(None);
        }
        let s = &self.skeleton[self.at..];
        if s.len() < 5 {
            return Err(bad("a skeleton entry is cut"));
        }
        let (kind, len) = (
            s[0],
            u32::from_le_bytes(s[1..5].try_into().unwrap()) as usize,
        );
        self.at += 5;
        match kind {
            0 if len <= self.skeleton.len() - self.at => Ok(Some((0, len))),
            0 => Err(bad("a skeleton entry runs past its skeleton")),
            1 if len as u64 <= self.group_data => {
                self.group_data -= len as u64;
                Ok(Some((1, len)))
            }
            1 => Err(bad("a skeleton names more data than its group holds")),
            k => Err(bad(format!("unknown skeleton entry {k:#04x}"))),
        }
    }
}

fn cut(e: io::Error, where_: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad(format!("it ends {where_}"))
    } else {
        e
    }
}

impl<R: Read> Read for Ungrouped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            match self.entry {
                Some((_, 0)) => self.entry = None,
                Some((0, left)) => {
                    let n = left.min(buf.len());
                    buf[..n].copy_from_slice(&self.skeleton[self.at..self.at + n]);
                    self.at += n;
                    self.entry = Some((0, left - n));
                    self.total += n as u64;
                    return Ok(n);
                }
                Some((kind, left)) => {
                    let want = left.min(buf.len());
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad("it ends in a group's data"));
                    }
                    self.entry = Some((kind, left - n));
                    self.total += n as u64;
                    return Ok(n);
                }
                None => match self.next_entry()? {
                    Some(e) => self.entry = Some(e),
                    None => {
                        if !self.next_group()? {
                            self.done = true;
                        }
                    }
                },
            }
        }
    }
}

/// The records of a `zfs send` stream (`dmu_replay_record_t`, 312 bytes,
/// then its payload): the payload of every write record is data; all
/// else (record headers, object bonus buffers, the begin record's nvlist)
/// is skeleton.
#[derive(Debug, Default)]
pub struct ZfsSplitter {
    /// Byte-swapped stream (made on a host of the other endianness).
    swapped: Option<bool>,
}

/// The size of a zfs replay record.
const DRR_SIZE: usize = 312;
/// `DMU_BACKUP_MAGIC`, in the begin record.
const ZFS_MAGIC: u64 = 0x2_f5ba_cbac;

impl Splitter for ZfsSplitter {
    fn next(&mut self, buf: &[u8]) -> Piece {
        if buf.len() < DRR_SIZE {
            return Piece::Need(DRR_SIZE);
        }
        let swapped = *self.swapped.get_or_insert_with(|| {
            let m = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            m != ZFS_MAGIC && m.swap_bytes() == ZFS_MAGIC
        });
        let u32_at = |o: usize| {
            let v = u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
            if swapped { v.swap_bytes() } else { v }
        };
        let u64_at = |o: usize| {
            let v = u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
            if swapped { v.swap_bytes() } else { v }
        };
        let kind = u32_at(0);
        let payloadlen = u32_at(4) as usize;
        // Newer zfs sets drr_payloadlen on every record; older on the
        // begin record only, the others' payload follows from their type.
        let payload = match kind {
            0 => {
                if u64_at(8) != ZFS_MAGIC {
                    return Piece::Opaque;
                }
                payloadlen
            }
            1 if payloadlen == 0 => (u32_at(28) as usize).div_ceil(8) * 8,
            3 | 7 if payloadlen == 0 => {
                let len = u64_at(if kind == 3 { 32 } else { 16 });
                match usize::try_from(len) {
                    Ok(l) if l <= 64 << 20 => l,
                    _ => return Piece::Opaque,
                }
            }
            1..=10 => payloadlen,
            _ => return Piece::Opaque,
        };
        if kind == 3 {
            Piece::Split {
                meta: DRR_SIZE,
                data: payload,
            }
        } else {
            Piece::Split {
                meta: DRR_SIZE + payload,
                data: 0,
            }
        }
    }
}

/// The commands of a `btrfs send` stream (version 1): its magic and
/// version, then commands (`len:u32 cmd:u16 crc:u32` and `len` bytes of
/// attributes); the value of a write command's data attribute is data,
/// all else skeleton.
#[derive(Debug, Default)]
pub struct BtrfsSplitter {
    started: bool,
    /// Skeleton left of the command whose data was just placed.
    tail: usize,
}

const BTRFS_MAGIC: &[u8] = b"btrfs-stream\0";
const BTRFS_CMD_WRITE: u16 = 15;
const BTRFS_ATTR_DATA: u16 = 19;

impl Splitter for BtrfsSplitter {
    fn next(&mut self, buf: &[u8]) -> Piece {
        if self.tail > 0 {
            let meta = std::mem::take(&mut self.tail);
            return Piece::Split { meta, data: 0 };
        }
        if !self.started {
            if buf.len() < 17 {
                return Piece::Need(17);
            }
            if &buf[..13] != BTRFS_MAGIC || u32::from_le_bytes(buf[13..17].try_into().unwrap()) != 1
            {
                return Piece::Opaque;
            }
            self.started = true;
            return Piece::Split { meta: 17, data: 0 };
        }
        if buf.len() < 10 {
            return Piece::Need(10);
        }
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        let cmd = u16::from_le_bytes(buf[4..6].try_into().unwrap());
        let whole = 10 + len;
        if cmd != BTRFS_CMD_WRITE {
            return Piece::Split {
                meta: whole,
                data: 0,
            };
        }
        if buf.len() < whole {
            return Piece::Need(whole);
        }
        let mut at = 10;
        while at + 4 <= whole {
            let t = u16::from_le_bytes(buf[at..at + 2].try_into().unwrap());
            let l = u16::from_le_bytes(buf[at + 2..at + 4].try_into().unwrap()) as usize;
            if at + 4 + l > whole {
                break;
            }
            if t == BTRFS_ATTR_DATA {
                self.tail = whole - (at + 4 + l);
                return Piece::Split {
                    meta: at + 4,
                    data: l,
                };
            }
            at += 4 + l;
        }
        Piece::Split {
            meta: whole,
            data: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regroup<S: Splitter>(input: &[u8], splitter: S, write_size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Regrouper::new(&mut out, splitter);
        for part in input.chunks(write_size.max(1)) {
            w.write_all(part).unwrap();
        }
        let n = w.finish().unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    fn ungroup(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut back = Vec::new();
        Ungrouped::new(bytes).read_to_end(&mut back)?;
        Ok(back)
    }

    /// A zfs replay record of `kind` with the given fields (little-endian).
    fn drr(kind: u32, fields: &[(usize, u64)]) -> Vec<u8> {
        let mut r = vec![0u8; DRR_SIZE];
        r[..4].copy_from_slice(&kind.to_le_bytes());
        for &(at, v) in fields {
            r[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        r
    }

    /// A zfs stream: begin, an object with a bonus buffer, writes of
    /// `blocks`, end; `guid` goes where zfs puts the snapshot's guid.
    fn zfs_stream(guid: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut s = drr(0, &[(8, ZFS_MAGIC), (40, guid)]);
        let mut obj = drr(1, &[(8, 5), (40, guid)]);
        obj[28..32].copy_from_slice(&13u32.to_le_bytes());
        s.extend(obj);
        s.extend([7u8; 16]); // 13 bytes of bonus, rounded up to 8
        for (i, b) in blocks.iter().enumerate() {
            s.extend(drr(
                3,
                &[
                    (8, 5),
                    (24, i as u64 * 131072),
                    (32, b.len() as u64),
                    (40, guid),
                ],
            ));
            s.extend(b);
        }
        s.extend(drr(5, &[(40, guid)]));
        s
    }

    fn blocks(seed: u8, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                (0..131072)
                    .map(|j| (j as u8) ^ seed ^ (i as u8).wrapping_mul(31))
                    .collect()
            })
            .collect()
    }

    /// The data sections of a regrouped stream, concatenated.
    fn data_sections(mut g: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        while g[0] == b'G' {
            let s = u32::from_le_bytes(g[1..5].try_into().unwrap()) as usize;
            let d = u32::from_le_bytes(g[5..9].try_into().unwrap()) as usize;
            data.extend_from_slice(&g[9 + s..9 + s + d]);
            g = &g[9 + s + d..];
        }
        data
    }

    #[test]
    fn zfs_write_payloads_are_the_data_and_come_back_exactly() {
        let content = blocks(1, 200); // 25 MiB: two groups
        let a = zfs_stream(0x1111, &content);
        let b = zfs_stream(0x2222, &content);
        let (ga, gb) = (
            regroup(&a, ZfsSplitter::default(), 65536),
            regroup(&b, ZfsSplitter::default(), 1000),
        );
        assert_eq!(ungroup(&ga).unwrap(), a);
        assert_eq!(ungroup(&gb).unwrap(), b);
        assert_ne!(ga, gb, "the guids differ");
        // Same content, different snapshots: the same data sections.
        let (da, db) = (data_sections(&ga), data_sections(&gb));
        assert_eq!(da, db);
        assert_eq!(da, content.concat());
    }

    #[test]
    fn btrfs_write_data_is_the_data_and_comes_back_exactly() {
        let cmd = |c: u16, attrs: &[(u16, &[u8])]| {
            let mut body = Vec::new();
            for (t, v) in attrs {
                body.extend(t.to_le_bytes());
                body.extend((v.len() as u16).to_le_bytes());
                body.extend(*v);
            }
            let mut s = (body.len() as u32).to_le_bytes().to_vec();
            s.extend(c.to_le_bytes());
            s.extend(0xdead_beefu32.to_le_bytes());
            s.extend(body);
            s
        };
        let data: Vec<u8> = (0..49152).map(|i| (i % 251) as u8).collect();
        let mut s = BTRFS_MAGIC.to_vec();
        s.extend(1u32.to_le_bytes());
        s.extend(cmd(3, &[(15, b"f")]));
        s.extend(cmd(
            BTRFS_CMD_WRITE,
            &[
                (15, b"f"),
                (18, &0u64.to_le_bytes()),
                (BTRFS_ATTR_DATA, &data),
                (20, b"x"),
            ],
        ));
        s.extend(cmd(21, &[]));
        let g = regroup(&s, BtrfsSplitter::default(), 333);
        assert_eq!(ungroup(&g).unwrap(), s);
        assert_eq!(data_sections(&g), data);
    }

    #[test]
    fn cut_or_damaged_regrouped_streams_are_errors() {
        let s = zfs_stream(9, &blocks(2, 3));
        let g = regroup(&s, ZfsSplitter::default(), 4096);
        for cut in [0, 1, 5, 9, 400, g.len() / 2, g.len() - 9, g.len() - 1] {
            let e = ungroup(&g[..cut]).unwrap_err();
            assert!(
                e.to_string().contains("regrouped stream: it ends"),
                "{cut}: {e}"
            );
        }
        let mut extra = g.clone();
        extra.push(0);
        assert!(
            ungroup(&extra)
                .unwrap_err()
                .to_string()
                .contains("after its end")
        );
        let mut huge = g.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            ungroup(&huge)
                .unwrap_err()
                .to_string()
                .contains("skeleton and")
        );
        let mut total = g.clone();
        let n = total.len();
        total[n - 8] ^= 1;
        assert!(
            ungroup(&total)
                .unwrap_err()
                .to_string()
                .contains("its end says")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the bytes (a stream a splitter misreads, garbage, a
        /// cut record), they come back exactly.
        #[test]
        fn any_bytes_come_back_exactly(
            head in proptest::collection::vec(any::<u8>(), 0..2000),
            body in proptest::collection::vec(any::<u8>(), 0..5000),
            write in 1usize..700,
            btrfs in any::<bool>(),
        ) {
            // Start some inputs like a real stream, so the splitters read on.
            let mut input = if btrfs {
                let mut s = BTRFS_MAGIC.to_vec();
                s.extend(1u32.to_le_bytes());
                s
            } else {
                drr(0, &[(8, ZFS_MAGIC)])
            };
            input.extend(head);
            input.extend(body);
            let g = if btrfs {
                regroup(&input, BtrfsSplitter::default(), write)
            } else {
                regroup(&input, ZfsSplitter::default(), write)
            };
            prop_assert_eq!(ungroup(&g).unwrap(), input);
        }
    }
}
