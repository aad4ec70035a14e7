//! The restore pipeline: fetch, verify and decompress chunks in parallel,
//! in order, with a bounded read-ahead.

use std::collections::VecDeque;
use std::io::{self, Read};

use crossbeam_channel::{Receiver, Sender, bounded};
use strata_core::ManifestEntry;
use strata_store::ChunkStore;

use crate::codec::{ChunkError, decode};

type Job = (ManifestEntry, Sender<Result<Vec<u8>, ChunkError>>);

/// Reads the chunks of a manifest as one byte stream.
struct ChunkReader<'a> {
    pages: &'a mut dyn FnMut(u64) -> Result<Vec<ManifestEntry>, String>,
    page: VecDeque<ManifestEntry>,
    next_seq: u64,
    exhausted: bool,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<Result<Vec<u8>, ChunkError>>>,
    readahead: usize,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader<'_> {
    fn top_up(&mut self) -> Result<(), ChunkError> {
        while self.pending.len() < self.readahead {
            if self.page.is_empty() && !self.exhausted {
                let page = (self.pages)(self.next_seq).map_err(ChunkError::Manifest)?;
                self.next_seq += page.len() as u64;
                self.exhausted = page.is_empty();
                self.page.extend(page);
            }
            let Some(entry) = self.page.pop_front() else {
                return Ok(());
            };
            let (tx, rx) = bounded(1);
            self.jobs
                .as_ref()
                .expect("jobs open while reading")
                .send((entry, tx))
                .map_err(|_| ChunkError::Manifest("restore workers stopped".into()))?;
            self.pending.push_back(rx);
        }
        Ok(())
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            self.top_up().map_err(io::Error::other)?;
            let Some(rx) = self.pending.pop_front() else {
                return Ok(0);
            };
            let data = rx
                .recv()
                .map_err(|_| {
                    io::Error::other(ChunkError::Manifest("restore worker vanished".into()))
                })?
                .map_err(io::Error::other)?;
            self.cur = data;
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `consume` on a reader that yields the stream spelled by the
/// manifest that `pages(from)` returns page by page (an empty page ends it).
/// Chunks are fetched and verified by `workers` threads, at most `readahead`
/// ahead of the reader. A chunk that is missing, damaged or of the wrong
/// length makes the reader fail with an `io::Error` wrapping a
/// [`ChunkError`] that names it.
pub fn restore_stream<T>(
    store: &dyn ChunkStore,
    pages: &mut dyn FnMut(u64) -> Result<Vec<ManifestEntry>, String>,
    workers: usize,
    readahead: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> T {
    std::thread::scope(|s| {
        let (jobs_tx, jobs_rx) = bounded::<Job>(readahead.max(1));
        for _ in 0..workers.max(1) {
            let jobs_rx = jobs_rx.clone();
            s.spawn(move || {
                for (entry, reply) in jobs_rx {
                    let r = store
                        .get(&entry.key())
                        .map_err(ChunkError::from)
                        .and_then(|b| {
                            let plain = decode(&entry.id, &b)?;
                            if plain.len() != entry.len as usize {
                                return Err(ChunkError::Corrupt {
                                    id: entry.id,
                                    why: format!(
                                        "holds {} bytes, the manifest says {}",
                                        plain.len(),
                                        entry.len
                                    ),
                                });
                            }
                            Ok(plain)
                        });
                    let _ = reply.send(r);
                }
            });
        }
        drop(jobs_rx);
        let mut reader = ChunkReader {
            pages,
            page: VecDeque::new(),
            next_seq: 0,
            exhausted: false,
            jobs: Some(jobs_tx),
            pending: VecDeque::new(),
            readahead: readahead.max(1),
            cur: Vec::new(),
            pos: 0,
        };
        let out = consume(&mut reader);
        reader.jobs = None;
        reader.pending.clear();
        out
    })
}
