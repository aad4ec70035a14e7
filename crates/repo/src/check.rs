//! `check`: is everything the catalog promises really there?
//!
//! - every project's streams form valid chains: no impossible records,
//!   no stream that cannot be applied;
//! - every chunk a manifest names is known to the catalog;
//! - every chunk the catalog knows is in the store, under its generation,
//!   with the stored size it recorded (catalog and store are paged through
//!   in key order together,
//!   so memory stays flat however many chunks there are);
//! - with `read_data`, a deterministic share of the chunks is read back,
//!   decoded and verified against its BLAKE3 id and recorded length.
//!
//! Each problem names the project, stream and chunk it concerns and is
//! handed to the caller as it is found; the report keeps counts only.

use std::collections::VecDeque;

use strata_catalog::NewChunk;
use strata_core::{ChunkId, ChunkKey, ProjectId, StreamId};
use strata_store::{StoreError, StoredObject};

use crate::error::Result;
use crate::repository::Repository;

/// Settings for [`check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read back and verify this percentage of the chunks (1–100); `None`
    /// checks presence and sizes only.
    pub read_data_percent: Option<u8>,
}

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The catalog's streams of a project are impossible.
    BadChain,
    /// A stream cannot be applied (its start is not reachable).
    UnreachableStream,
    /// A manifest names a chunk the catalog does not know.
    UnknownChunk,
    /// A chunk the catalog knows is not in the store.
    MissingChunk,
    /// A chunk's stored size differs from what the catalog recorded.
    SizeMismatch,
    /// A chunk's bytes do not decode to its id and length.
    CorruptChunk,
}

impl ProblemKind {
    /// The kebab-case name used in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadChain => "bad-chain",
            ProblemKind::UnreachableStream => "unreachable-stream",
            ProblemKind::UnknownChunk => "unknown-chunk",
            ProblemKind::MissingChunk => "missing-chunk",
            ProblemKind::SizeMismatch => "size-mismatch",
            ProblemKind::CorruptChunk => "corrupt-chunk",
        }
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// The projects (names) and streams it concerns.
    pub streams: Vec<(String, StreamId)>,
    /// The chunk, if it is about one.
    pub chunk: Option<ChunkId>,
    /// What is wrong, in words.
    pub message: String,
}

/// Totals of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Projects checked.
    pub projects: u64,
    /// Streams checked.
    pub streams: u64,
    /// Chunks the catalog knows.
    pub chunks: u64,
    /// Chunks read back and verified.
    pub chunks_read: u64,
    /// Stored bytes read back.
    pub bytes_read: u64,
    /// Chunks in the store that the catalog does not know (garbage of
    /// interrupted saves; not a problem).
    pub unreferenced_in_store: u64,
    /// Problems found.
    pub problems: u64,
}

const PAGE: u32 = 1000;

/// True for the chunks a `percent` sample reads: decided by the id, so the
/// same chunks are read every time.
fn sampled(id: &ChunkId, percent: u8) -> bool {
    u32::from(u16::from_le_bytes([id.0[30], id.0[31]])) * 100 < u32::from(percent) * 65_536
}

/// Checks the repository; `on_problem` sees each problem as it is found.
///
/// # Errors
/// When the catalog or store cannot be read at all (problems in the data
/// are reported, not returned as errors).
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    on_problem: &mut dyn FnMut(&Problem),
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut found = |report: &mut CheckReport, p: Problem| {
        report.problems += 1;
        on_problem(&p);
    };

    for summary in repo.catalog.projects()? {
        let project = summary.project;
        report.projects += 1;
        let streams = repo.catalog.streams(project.id)?;
        report.streams += streams.len() as u64;
        match strata_core::analyze(&streams) {
            Err(e) => found(
                &mut report,
                Problem {
                    kind: ProblemKind::BadChain,
                    streams: Vec::new(),
                    chunk: None,
                    message: format!("project {:?}: {e}", project.name),
                },
            ),
            Ok(a) => {
                for u in a.unreachable {
                    found(
                        &mut report,
                        Problem {
                            kind: ProblemKind::UnreachableStream,
                            streams: vec![(project.name.clone(), u.stream)],
                            chunk: None,
                            message: format!(
                                "project {:?}: stream {} to {} cannot be applied: {}",
                                project.name, u.stream, u.end, u.why
                            ),
                        },
                    );
                }
            }
        }
    }

    for (stream, seq, chunk) in repo.catalog.unknown_chunk_refs(PAGE)? {
        let streams = named_streams(repo, &chunk)?;
        found(
            &mut report,
            Problem {
                kind: ProblemKind::UnknownChunk,
                message: format!(
                    "stream {stream} names at position {seq} chunk {chunk}, which the catalog does not know"
                ),
                streams,
                chunk: Some(chunk),
            },
        );
    }

    // Catalog chunks and store listing, merged in key order.
    let mut catalog = Paged::new(
        |after: Option<&ChunkKey>| Ok(repo.catalog.chunks_page(after.map(|k| &k.id), PAGE)?),
        |c: &NewChunk| c.key(),
    );
    let mut store = Paged::new(
        |after: Option<&ChunkKey>| Ok(repo.store.list_page(after, PAGE as usize)?),
        |o: &StoredObject| o.key,
    );
    loop {
        let (c, s) = (catalog.peek()?.copied(), store.peek()?.copied());
        match (c, s) {
            (None, None) => break,
            (None, Some(_)) => {
                report.unreferenced_in_store += 1;
                store.pop();
            }
            (Some(c), Some(s)) if s.key < c.key() => {
                report.unreferenced_in_store += 1;
                store.pop();
            }
            (Some(c), s) => {
                report.chunks += 1;
                catalog.pop();
                if let Some(s) = s.filter(|s| s.key == c.key()) {
                    store.pop();
                    check_chunk(repo, opts, &c, s.size, &mut report, &mut found)?;
                } else if let Some(size) = repo.store.size(&c.key())? {
                    // Stored after the listing read its directory (a save
                    // committed meanwhile).
                    check_chunk(repo, opts, &c, size, &mut report, &mut found)?;
                } else if !still_committed(repo, &c)? {
                    // A scrub running beside this check doomed the row and
                    // deleted the object after the catalog page was read.
                } else {
                    let p = missing(repo, &c)?;
                    found(&mut report, p);
                }
            }
        }
    }
    crate::monitor::record_last(
        repo,
        crate::monitor::LAST_CHECK,
        &format!(
            "{} problem(s), {} chunk(s) read",
            report.problems, report.chunks_read
        ),
    );
    Ok(report)
}

fn check_chunk(
    repo: &Repository,
    opts: &CheckOptions,
    c: &NewChunk,
    size: u64,
    report: &mut CheckReport,
    found: &mut impl FnMut(&mut CheckReport, Problem),
) -> Result<()> {
    if size != u64::from(c.stored_len) {
        let why = format!(
            "chunk {} is {size} bytes in the store, the catalog recorded {}",
            c.key(),
            c.stored_len
        );
        found(
            report,
            chunk_problem(repo, ProblemKind::SizeMismatch, c, why)?,
        );
        return Ok(());
    }
    let Some(percent) = opts.read_data_percent else {
        return Ok(());
    };
    if !sampled(&c.id, percent) {
        return Ok(());
    }
    let bytes = match repo.store.get(&c.key()) {
        Ok(b) => b,
        // Deleted by a scrub after the row was read: nothing to check.
        Err(StoreError::NotFound(_)) if !still_committed(repo, c)? => return Ok(()),
        Err(StoreError::NotFound(_)) => {
            found(report, missing(repo, c)?);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    report.chunks_read += 1;
    report.bytes_read += bytes.len() as u64;
    let why = match strata_chunk::decode(&c.id, &bytes) {
        Ok(plain) if plain.len() == c.len as usize => return Ok(()),
        Ok(plain) => format!(
            "chunk {} holds {} bytes, the catalog recorded {}",
            c.id,
            plain.len(),
            c.len
        ),
        Err(e) => e.to_string(),
    };
    found(
        report,
        chunk_problem(repo, ProblemKind::CorruptChunk, c, why)?,
    );
    Ok(())
}

/// A problem with chunk `c`: `why`, followed by the streams that use it.
fn chunk_problem(
    repo: &Repository,
    kind: ProblemKind,
    c: &NewChunk,
    why: String,
) -> Result<Problem> {
    let streams = named_streams(repo, &c.id)?;
    Ok(Problem {
        kind,
        message: format!("{why} ({})", describe(&streams)),
        streams,
        chunk: Some(c.id),
    })
}

/// The problem of a chunk the store does not have.
fn missing(repo: &Repository, c: &NewChunk) -> Result<Problem> {
    let why = format!("chunk {} is missing from the chunk store", c.key());
    chunk_problem(repo, ProblemKind::MissingChunk, c, why)
}

/// True when the catalog still has `c`'s row, under the same generation.
fn still_committed(repo: &Repository, c: &NewChunk) -> Result<bool> {
    Ok(repo
        .catalog
        .chunk(&c.id)?
        .is_some_and(|now| now.generation == c.generation))
}

/// The (project name, stream) pairs that use `chunk` (at most 20).
fn named_streams(repo: &Repository, chunk: &ChunkId) -> Result<Vec<(String, StreamId)>> {
    let mut out = Vec::new();
    let mut names: Vec<(ProjectId, String)> = Vec::new();
    for (p, s) in repo.catalog.streams_using(chunk, 20)? {
        let name = match names.iter().find(|(id, _)| *id == p) {
            Some((_, n)) => n.clone(),
            None => {
                let n = repo
                    .catalog
                    .project(p)?
                    .map_or_else(|| p.to_string(), |p| p.name);
                names.push((p, n.clone()));
                n
            }
        };
        out.push((name, s));
    }
    Ok(out)
}

fn describe(streams: &[(String, StreamId)]) -> String {
    if streams.is_empty() {
        return "used by no stream".into();
    }
    let list: Vec<String> = streams
        .iter()
        .map(|(p, s)| format!("project {p:?} stream {s}"))
        .collect();
    format!("used by {}", list.join(", "))
}

/// A cursor over a key-ordered listing fetched a page at a time.
struct Paged<T, F, K> {
    buf: VecDeque<T>,
    after: Option<ChunkKey>,
    done: bool,
    fetch: F,
    key: K,
}

impl<T, F, K> Paged<T, F, K>
where
    F: FnMut(Option<&ChunkKey>) -> Result<Vec<T>>,
    K: Fn(&T) -> ChunkKey,
{
    fn new(fetch: F, key: K) -> Self {
        Self {
            buf: VecDeque::new(),
            after: None,
            done: false,
            fetch,
            key,
        }
    }

    fn peek(&mut self) -> Result<Option<&T>> {
        if self.buf.is_empty() && !self.done {
            let page = (self.fetch)(self.after.as_ref())?;
            self.done = page.is_empty();
            if let Some(last) = page.last() {
                self.after = Some((self.key)(last));
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }

    fn pop(&mut self) {
        self.buf.pop_front();
    }
}
