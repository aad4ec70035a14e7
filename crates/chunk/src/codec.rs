//! The stored form of a chunk:
//!
//! ```text
//! "SK"  version:u8=1  codec:u8 (0 raw, 1 zstd)  plain_len:u32le  payload
//! ```
//!
//! A chunk is compressed with zstd unless that does not make it smaller.
//! [`decode`] checks the header, decompresses into at most `plain_len`
//! bytes and verifies the BLAKE3 hash against the chunk id, so a truncated,
//! flipped or swapped chunk is an error that names the chunk.

use strata_core::ChunkId;

/// Largest plaintext chunk accepted (FastCDC's maximum maximum).
pub const MAX_CHUNK: u32 = 16 << 20;
const MAGIC: &[u8; 2] = b"SK";
const VERSION: u8 = 1;
const RAW: u8 = 0;
const ZSTD: u8 = 1;
const HEADER: usize = 8;

/// A chunk that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The stored bytes are damaged.
    #[error("chunk {id} is corrupt: {why}")]
    Corrupt {
        /// The chunk.
        id: ChunkId,
        /// What is wrong.
        why: String,
    },
    /// The store could not return it.
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    /// The manifest could not be read.
    #[error("reading the manifest: {0}")]
    Manifest(String),
}

/// Encodes a plaintext chunk for storage. Returns the bytes and whether
/// they are compressed.
///
/// # Panics
/// When `plain` is larger than [`MAX_CHUNK`] (the chunker never makes one).
pub fn encode(plain: &[u8], level: i32, scratch: &mut zstd::bulk::Compressor<'_>) -> Vec<u8> {
    assert!(plain.len() <= MAX_CHUNK as usize);
    let _ = scratch.set_compression_level(level);
    let mut out = Vec::with_capacity(HEADER + plain.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(ZSTD);
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    let bound = zstd::zstd_safe::compress_bound(plain.len());
    out.resize(HEADER + bound, 0);
    match scratch.compress_to_buffer(plain, &mut out[HEADER..]) {
        Ok(n) if n < plain.len() => {
            out.truncate(HEADER + n);
        }
        _ => {
            out.truncate(HEADER);
            out[3] = RAW;
            out.extend_from_slice(plain);
        }
    }
    out
}

/// Decodes a stored chunk and verifies it is the plaintext of `id`.
///
/// # Errors
/// [`ChunkError::Corrupt`] naming the chunk and what is wrong.
pub fn decode(id: &ChunkId, stored: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let bad = |why: String| ChunkError::Corrupt { id: *id, why };
    if stored.len() < HEADER || &stored[..2] != MAGIC {
        return Err(bad("not a strata chunk (bad header)".into()));
    }
    if stored[2] != VERSION {
        return Err(bad(format!("unknown chunk format version {}", stored[2])));
    }
    let len = u32::from_le_bytes(stored[4..8].try_into().expect("4 bytes"));
    if len > MAX_CHUNK {
        return Err(bad(format!("declares {len} bytes, more than the maximum")));
    }
    let payload = &stored[HEADER..];
    let plain = match stored[3] {
        RAW => payload.to_vec(),
        ZSTD => {
            zstd::bulk::decompress(payload, len as usize).map_err(|e| bad(format!("zstd: {e}")))?
        }
        c => return Err(bad(format!("unknown codec {c}"))),
    };
    if plain.len() != len as usize {
        return Err(bad(format!(
            "holds {} bytes, header says {len}",
            plain.len()
        )));
    }
    if ChunkId::of(&plain) != *id {
        return Err(bad("content does not match its hash".into()));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: &[u8]) -> Vec<u8> {
        encode(d, 3, &mut zstd::bulk::Compressor::new(3).unwrap())
    }

    #[test]
    fn round_trip_compressible_and_random() {
        let text = b"hello world ".repeat(10_000);
        let e = enc(&text);
        assert!(e.len() < text.len() / 10);
        assert_eq!(decode(&ChunkId::of(&text), &e).unwrap(), text);
        let random: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let e = enc(&random);
        assert_eq!(decode(&ChunkId::of(&random), &e).unwrap(), random);
    }

    #[test]
    fn damage_is_named() {
        let text = b"abc".repeat(1000);
        let id = ChunkId::of(&text);
        let mut e = enc(&text);
        let last = e.len() - 1;
        e[last] ^= 1;
        let err = decode(&id, &e).unwrap_err().to_string();
        assert!(err.contains(&id.to_hex()), "{err}");
        let e = enc(&text);
        assert!(decode(&id, &e[..e.len() - 3]).is_err());
        assert!(decode(&id, &e[..4]).is_err());
        assert!(decode(&ChunkId::of(b"other"), &e).is_err());
    }
}
