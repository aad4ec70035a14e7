//! The save pipeline: chunk, hash, deduplicate, compress, upload.

use std::collections::HashSet;
use std::io::{self, Read};

use crossbeam_channel::bounded;
use strata_core::{ChunkId, ManifestEntry};
use strata_store::{ChunkStore, StoreError};

use crate::ChunkerConfig;
use crate::codec::encode;

/// What [`save_stream`] stored.
#[derive(Debug, Default)]
pub struct SaveOutput {
    /// The stream as (chunk, length) in order.
    pub manifest: Vec<ManifestEntry>,
    /// The chunks this stream was first to store: (id, plain length, stored length).
    pub new_chunks: Vec<(ChunkId, u32, u32)>,
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
    /// Asking whether a chunk is known failed.
    #[error("looking up chunk {id}: {why}")]
    Lookup {
        /// The chunk.
        id: ChunkId,
        /// The catalog's error.
        why: String,
    },
}

/// Cuts `input` into chunks and stores those that `is_known` does not know,
/// compressing and uploading on `workers` threads.
///
/// Memory: one maximum-size chunk in the chunker, at most `2 × workers`
/// chunks queued, one chunk plus its encoding per worker.
///
/// # Errors
/// The first failure of the input, a lookup or an upload; the caller must
/// not commit anything then (chunks already uploaded are garbage for scrub).
pub fn save_stream<R: Read>(
    input: R,
    store: &dyn ChunkStore,
    is_known: &(dyn Fn(&ChunkId) -> Result<bool, String> + Sync),
    cfg: &ChunkerConfig,
    workers: usize,
) -> Result<SaveOutput, SaveError> {
    let workers = workers.max(1);
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<(ChunkId, Vec<u8>)>(workers * 2);
        let (done_tx, done_rx) =
            crossbeam_channel::unbounded::<Result<(ChunkId, u32, u32), StoreError>>();
        for _ in 0..workers {
            let rx = rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || {
                let mut z = zstd::bulk::Compressor::new(cfg.zstd_level).expect("zstd context");
                for (id, data) in rx {
                    let enc = encode(&data, cfg.zstd_level, &mut z);
                    let r = store
                        .put(&id, &enc)
                        .map(|()| (id, data.len() as u32, enc.len() as u32));
                    let failed = r.is_err();
                    let _ = done_tx.send(r);
                    if failed {
                        break;
                    }
                }
            });
        }
        drop(rx);
        drop(done_tx);

        let mut out = SaveOutput::default();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut failure: Option<SaveError> = None;
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
            out.manifest.push(ManifestEntry { id, len });
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
                match is_known(&id) {
                    Ok(true) => {}
                    Ok(false) => {
                        if tx.send((id, chunk.data)).is_err() {
                            break; // every worker stopped; their error follows
                        }
                    }
                    Err(why) => {
                        failure = Some(SaveError::Lookup { id, why });
                        break;
                    }
                }
            }
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
