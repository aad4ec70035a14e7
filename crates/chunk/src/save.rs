//! The save pipeline: chunk, hash, deduplicate, compress, upload.

use std::collections::HashSet;
use std::io::{self, Read};

use crossbeam_channel::bounded;
use strata_core::{ChunkId, ChunkKey, ChunkLookup, ManifestEntry};
use strata_store::{ChunkStore, StoreError};

use crate::ChunkerConfig;
use crate::codec::encode;

/// What [`save_stream`] stored.
#[derive(Debug, Default)]
pub struct SaveOutput {
    /// The stream as (chunk, length) in order.
    pub manifest: Vec<ManifestEntry>,
    /// The chunks this stream uploaded: (key, plain length, stored length).
    pub new_chunks: Vec<(ChunkKey, u32, u32)>,
    /// Length of the stream.
    pub bytes: u64,
}

/// Why a save pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Reading the stream failed.
    #[error("reading the stream: {0}")]
    Read(#[source] io::Error),
    /// The store refused a chunk.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Recording the intent to use a batch of chunks failed.
    #[error("recording the intent to use chunk {id} and {more} more: {why}")]
    Intent {
        /// The batch's first chunk.
        id: ChunkId,
        /// How many more the batch held.
        more: usize,
        /// The catalog's error.
        why: String,
    },
}

/// Plain chunk bytes queued for or being compressed and uploaded, at most:
/// the save's memory bound whatever the number of workers (16 for an
/// object store's latency would otherwise hold 16 encodings and 32 queued
/// chunks, up to 4 MiB each).
pub const IN_FLIGHT_BYTES: usize = 32 << 20;

/// A byte budget shared by the queue and the workers: taken before a chunk
/// is queued, given back when its upload is over. A worker that stops on
/// an error closes it, so nothing waits for bytes that never come back.
struct Budget {
    state: std::sync::Mutex<(usize, bool)>,
    freed: std::sync::Condvar,
}

impl Budget {
    fn new(bytes: usize) -> Self {
        Self {
            state: std::sync::Mutex::new((bytes, false)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Takes `n` bytes (a chunk larger than the whole budget takes all of
    /// it), waiting until they are free; false once the budget is closed.
    fn take(&self, n: usize) -> bool {
        let n = n.min(IN_FLIGHT_BYTES);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 < n && !st.1 {
            st = self.freed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.1 {
            return false;
        }
        st.0 -= n;
        true
    }

    fn give(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += n.min(IN_FLIGHT_BYTES);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// Chunks held back for one intent batch: at most this many bytes...
const INTENT_BATCH_BYTES: usize = 8 << 20;
/// ...or this many chunks.
const INTENT_BATCH_CHUNKS: usize = 64;

/// A function that records a save's intent to use `ids` (one catalog
/// transaction) and says, for each, whether to reuse or upload it.
pub type Claim<'a> = dyn Fn(&[ChunkId]) -> Result<Vec<ChunkLookup>, String> + Sync + 'a;

/// Cuts `input` into chunks, records the intent to use each new one with
/// `claim` (in batches, before anything is uploaded or reused: the save
/// protocol of `docs/gc.md`), and uploads those the claim says to upload,
/// compressing on up to one thread per core and uploading on `workers`.
///
/// Memory: one maximum-size chunk in the chunker, one intent batch
/// (8 MiB or 64 chunks, whichever comes first, plus one chunk), and
/// [`IN_FLIGHT_BYTES`] of chunks queued or uploading (each with its
/// encoding while it is compressed and sent), whatever `workers` is.
///
/// # Errors
/// The first failure of the input, a claim or an upload; the caller must
/// not commit anything then (chunks already uploaded are garbage for scrub).
pub fn save_stream<R: Read>(
    input: R,
    store: &dyn ChunkStore,
    claim: &Claim<'_>,
    cfg: &ChunkerConfig,
    workers: usize,
) -> Result<SaveOutput, SaveError> {
    let workers = workers.max(1);
    let budget = Budget::new(IN_FLIGHT_BYTES);
    let budget = &budget;
    std::thread::scope(|s| {
        // Two stages: compression on at most one thread per core (each
        // holds a zstd context of a few MiB), uploads on `workers` threads
        // (an object store wants many requests in flight; they hold only
        // the encoded bytes). Queues are short; the budget bounds bytes.
        let compressors = workers.min(crate::default_workers()).max(1);
        let (tx, rx) = bounded::<(ChunkKey, Vec<u8>)>(compressors);
        let (up_tx, up_rx) = bounded::<(ChunkKey, usize, Vec<u8>)>(workers);
        let (done_tx, done_rx) =
            crossbeam_channel::unbounded::<Result<(ChunkKey, u32, u32), StoreError>>();
        for _ in 0..compressors {
            let (rx, up_tx) = (rx.clone(), up_tx.clone());
            s.spawn(move || {
                let mut z = zstd::bulk::Compressor::new(cfg.zstd_level).expect("zstd context");
                for (key, data) in rx {
                    let enc = encode(&data, cfg.zstd_level, &mut z);
                    let len = data.len();
                    drop(data);
                    if up_tx.send((key, len, enc)).is_err() {
                        break; // the uploads stopped; their error follows
                    }
                }
            });
        }
        drop(up_tx);
        for _ in 0..workers {
            let up_rx = up_rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for (key, len, enc) in up_rx {
                    let stored = enc.len() as u32;
                    // Given away: an S3 store sends it without a copy.
                    let r = store
                        .put_bytes(&key, bytes::Bytes::from(enc))
                        .map(|()| (key, len as u32, stored));
                    budget.give(len);
                    let failed = r.is_err();
                    let _ = done_tx.send(r);
                    if failed {
                        budget.close();
                        break;
                    }
                }
            });
        }
        drop(up_rx);
        drop(rx);
        drop(done_tx);

        let mut out = SaveOutput::default();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut failure: Option<SaveError> = None;
        let mut batch: Vec<(ChunkId, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        // Claims a batch and queues what it says to upload; false when the
        // save must stop (the failure is recorded).
        let flush = |batch: &mut Vec<(ChunkId, Vec<u8>)>, failure: &mut Option<SaveError>| {
            if batch.is_empty() {
                return true;
            }
            let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
            let lookups = match claim(&ids) {
                Ok(l) if l.len() == ids.len() => l,
                Ok(l) => {
                    *failure = Some(SaveError::Intent {
                        id: ids[0],
                        more: ids.len() - 1,
                        why: format!("{} answers for {} chunks", l.len(), ids.len()),
                    });
                    return false;
                }
                Err(why) => {
                    *failure = Some(SaveError::Intent {
                        id: ids[0],
                        more: ids.len() - 1,
                        why,
                    });
                    return false;
                }
            };
            for ((id, data), lookup) in batch.drain(..).zip(lookups) {
                if let ChunkLookup::Upload { generation } = lookup
                    && (!budget.take(data.len())
                        || tx.send((ChunkKey::new(id, generation), data)).is_err())
                {
                    return false; // a worker stopped; its error follows
                }
            }
            true
        };
        let chunker =
            fastcdc::v2020::StreamCDC::new(input, cfg.min_size, cfg.avg_size, cfg.max_size);
        for chunk in chunker {
            let chunk = match chunk {
                Ok(c) => c,
                Err(fastcdc::v2020::Error::IoError(e)) => {
                    failure = Some(SaveError::Read(e));
                    break;
                }
                Err(e) => {
                    failure = Some(SaveError::Read(io::Error::other(e.to_string())));
                    break;
                }
            };
            let id = ChunkId::of(&chunk.data);
            let len = chunk.data.len() as u32;
            // The catalog resolves the generation at commit.
            out.manifest.push(ManifestEntry {
                id,
                len,
                generation: 0,
            });
            out.bytes += u64::from(len);
            // Collect finished uploads as we go, stopping at the first error.
            while let Ok(r) = done_rx.try_recv() {
                match r {
                    Ok(c) => out.new_chunks.push(c),
                    Err(e) => failure = Some(e.into()),
                }
            }
            if failure.is_some() {
                break;
            }
            if seen.insert(id) {
                batch_bytes += chunk.data.len();
                batch.push((id, chunk.data));
                if (batch_bytes >= INTENT_BATCH_BYTES || batch.len() >= INTENT_BATCH_CHUNKS)
                    && !flush(&mut batch, &mut failure)
                {
                    break;
                }
                if batch.is_empty() {
                    batch_bytes = 0;
                }
            }
        }
        if failure.is_none() {
            flush(&mut batch, &mut failure);
        }
        drop(tx);
        for r in done_rx {
            match r {
                Ok(c) => out.new_chunks.push(c),
                Err(e) => {
                    failure.get_or_insert(e.into());
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}
