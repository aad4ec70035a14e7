//! strata's chunk pipeline.
//!
//! - [`codec`]: how one chunk is stored (zstd or raw, checked by its BLAKE3
//!   id on the way back); see `docs/chunk-format.md`.
//! - [`save_stream`]: cuts a byte stream with FastCDC, hashes each chunk,
//!   skips chunks the repository already holds, compresses and uploads the
//!   rest on worker threads; returns the manifest.
//! - [`restore_stream`]: reads a manifest's chunks back in parallel with a
//!   bounded read-ahead, verifies and decompresses them, and hands the
//!   caller one ordered byte stream.
//! - [`pipe`]: a bounded in-memory pipe that connects an engine writing a
//!   stream on one thread to the chunker reading it on another.
//!
//! Memory is bounded by construction: the pipe holds at most
//! `PIPE_BUFFERS` buffers of 1 MiB, the chunker one maximum-size chunk, the
//! worker queue `2 × workers` chunks, the restore read-ahead a fixed number
//! of chunks. Nothing holds a whole file or stream.

pub mod codec;
pub mod pipe;
mod restore;
mod save;

pub use codec::{ChunkError, decode, encode};
pub use restore::restore_stream;
pub use save::{Claim, IN_FLIGHT_BYTES, SaveError, SaveOutput, save_stream};

/// Chunking and compression settings. They are fixed per repository: chunk
/// boundaries must be the same on every host for deduplication to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Smallest chunk (FastCDC minimum), bytes.
    pub min_size: u32,
    /// Average chunk (FastCDC target), bytes.
    pub avg_size: u32,
    /// Largest chunk (FastCDC maximum), bytes.
    pub max_size: u32,
    /// zstd level for chunk compression.
    pub zstd_level: i32,
}

impl Default for ChunkerConfig {
    /// 256 KiB / 1 MiB / 4 MiB, zstd level 3; `docs/chunk-format.md` says why.
    fn default() -> Self {
        Self {
            min_size: 256 << 10,
            avg_size: 1 << 20,
            max_size: 4 << 20,
            zstd_level: 3,
        }
    }
}

/// The number of worker threads to use: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
