//! The streams of the file-system engines (zfs, btrfs): the header every
//! engine's stream starts with ([`crate::stream`]), then the bytes the
//! file system's own send command wrote: as they are (version 1), or
//! regrouped so that file data dedupes (version 2, [`crate::regroup`]).
//! One send and one receive for every such engine; what differs is the
//! command and the splitter that knows its records.

use std::io::{self, BufReader, Read, Write};

use crate::Observer;
use crate::command::{Cmd, CommandError};
use crate::engine::{EngineKind, SendJob};
use crate::error::{EngineError, Result};
use crate::index::IndexWriter;
use crate::native::{ReceiveOptions, ReceiveSummary, SendSummary};
use crate::regroup::{Regrouper, Splitter, Ungrouped};
use crate::stream::{check_ends, read_header, write_header};

/// Passes bytes through, telling the observer how many went by: the
/// progress of a send or receive whose content only the command knows.
struct Progress<'a, T> {
    inner: T,
    obs: &'a dyn Observer,
}

impl<T: Write> Write for Progress<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.obs.file_bytes(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Progress<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.obs.file_bytes(n as u64);
        Ok(n)
    }
}

/// The version of the regrouped layout: streams of this version or later
/// are regrouped, earlier ones hold the command's bytes as they are.
pub(crate) const REGROUPED: u32 = 2;

/// Writes `job`'s stream: the header (`kind`, `version`), then what `send`
/// prints, regrouped by `splitter` ([`crate::regroup`]); and the new
/// snapshot's local state, an index that only names it (the file system's
/// snapshot is the state). The command's bytes count as progress
/// (`obs.file_bytes`).
pub(crate) fn send(
    job: SendJob<'_>,
    obs: &dyn Observer,
    kind: EngineKind,
    version: u32,
    send: Cmd,
    splitter: impl Splitter,
) -> Result<SendSummary> {
    debug_assert!(version >= REGROUPED);
    let mut w = write_header(&mut *job.out, job.header, kind, version)?;
    let header_bytes = w.bytes();
    let mut regrouped = Regrouper::new(w.inner_mut(), splitter);
    let raw = send.stream_out(&mut Progress {
        inner: &mut regrouped,
        obs,
    })?;
    let body = regrouped
        .finish()
        .map_err(|e| EngineError::io("write", "the stream", e))?;
    w.finish()?;
    IndexWriter::new(&mut *job.state, &job.header.end)?.finish()?;
    Ok(SendSummary {
        entries: 0,
        emitted: 0,
        deleted: 0,
        file_bytes: raw,
        stream_bytes: header_bytes + body,
        warnings: 0,
    })
}

/// Applies one stream of `kind` (any version up to `version`: regrouped
/// ones are put back together first) with `receive`, after checking its
/// header against what the caller expects (`opts`). A refusal by the command is
/// bad input ([`EngineError::Rejected`]), unless `recognise` knows its
/// standard error for another error (a target written to after its
/// snapshot, a busy file system). The bytes
/// fed to the command count as progress (`obs.file_bytes`).
pub(crate) fn receive(
    input: &mut dyn Read,
    obs: &dyn Observer,
    opts: &ReceiveOptions,
    kind: EngineKind,
    version: u32,
    receive: Cmd,
    recognise: impl Fn(&str) -> Option<EngineError>,
) -> Result<ReceiveSummary> {
    let (r, header, found) = read_header(
        BufReader::with_capacity(256 << 10, input),
        kind,
        1..=version,
    )?;
    check_ends(&header, opts)?;
    let rest = r.into_inner();
    let mut body: Box<dyn Read> = if found >= REGROUPED {
        Box::new(Ungrouped::new(rest))
    } else {
        Box::new(rest)
    };
    let mut rest = Progress {
        inner: &mut body,
        obs,
    };
    let bytes = receive.stream_in(&mut rest).map_err(|e| match e {
        CommandError::Failed { ref stderr, .. } => {
            recognise(stderr).unwrap_or_else(|| EngineError::Rejected { why: e.to_string() })
        }
        // A regrouped stream that does not hold together.
        CommandError::Data { ref source, .. } if source.kind() == io::ErrorKind::InvalidData => {
            EngineError::Rejected { why: e.to_string() }
        }
        other => EngineError::Command(other),
    })?;
    Ok(ReceiveSummary {
        header,
        entries: 0,
        file_bytes: bytes,
        setid_dropped: 0,
        xattrs_skipped: 0,
    })
}

/// The local state of a snapshot an engine of this kind restored: an index
/// that only names it (the file system's snapshot is the state).
pub(crate) fn restored_state(snapshot: &str, out: &mut dyn Write) -> Result<u64> {
    IndexWriter::new(out, snapshot)?.finish()?;
    Ok(0)
}
