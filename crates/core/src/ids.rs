//! Identifiers. Each has a canonical text form that `Display` writes and
//! `FromStr` reads back, with an error that names what was wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An identifier that did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} {text:?}: {why}")]
pub struct IdError {
    /// Which kind of id was expected.
    pub what: &'static str,
    /// The text that was given.
    pub text: String,
    /// Why it was refused.
    pub why: &'static str,
}

/// The id of a chunk: the BLAKE3 hash of its plaintext (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Hashes `data` into its chunk id.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The 64-character lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds an id from a 32-byte slice.
    ///
    /// # Errors
    /// When the slice is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| IdError {
            what: "chunk id",
            text: hex::encode(bytes),
            why: "not 32 bytes",
        })?;
        Ok(Self(arr))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ChunkId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let err = |why| IdError {
            what: "chunk id",
            text: s.to_string(),
            why,
        };
        if s.len() != 64 {
            return Err(err("not 64 hex digits"));
        }
        let bytes = hex::decode(s).map_err(|_| err("not hex"))?;
        Self::from_slice(&bytes)
    }
}

/// Where a chunk's bytes live in a store: its id and a generation.
///
/// Almost every chunk is stored under generation 0. A save uploads under a
/// higher generation only when scrub is deleting the chunk's earlier
/// objects (`docs/gc.md`): a new upload then never lands on a key that a
/// delete in flight may remove. The text form is the id's hex for
/// generation 0 and `<hex>.<generation>` otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    /// The chunk.
    pub id: ChunkId,
    /// The generation.
    pub generation: u32,
}

impl ChunkKey {
    /// The key of `id` at generation `generation`.
    pub fn new(id: ChunkId, generation: u32) -> Self {
        Self { id, generation }
    }
}

impl From<ChunkId> for ChunkKey {
    fn from(id: ChunkId) -> Self {
        Self { id, generation: 0 }
    }
}

impl fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.generation == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}", self.id, self.generation)
        }
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkKey({self})")
    }
}

impl FromStr for ChunkKey {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (hex, generation) = match s.split_once('.') {
            None => (s, 0),
            Some((hex, g)) => {
                let generation = g
                    .parse::<u32>()
                    .ok()
                    // Canonical only: one text per key ("01" and "+1" are refused).
                    .filter(|&n| n > 0 && n.to_string() == g)
                    .ok_or(IdError {
                        what: "chunk key",
                        text: s.to_string(),
                        why: "generation is not a positive decimal number",
                    })?;
                (hex, generation)
            }
        };
        Ok(Self {
            id: hex.parse()?,
            generation,
        })
    }
}

macro_rules! uuid_id {
    ($name:ident, $what:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| IdError {
                    what: $what,
                    text: s.to_string(),
                    why: "not a UUID",
                })
            }
        }
    };
}

uuid_id!(ProjectId, "project id", "The id of a project (a UUID).");
uuid_id!(StreamId, "stream id", "The id of a stream (a UUID).");
uuid_id!(
    SaveId,
    "save id",
    "The id of a running save (a UUID): it owns the save's intents."
);

/// The id of a snapshot: the UTC time it was taken, to the millisecond, plus
/// a random suffix so that two hosts saving in the same millisecond never
/// collide. Text form: `20261124T014500.123Z-7f3a9c` (sorts by time).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId {
    text: String,
}

impl SnapshotId {
    /// Builds the id of a snapshot taken at `ms` (milliseconds since the
    /// epoch) with the 24-bit random `suffix`.
    pub fn new(ms: i64, suffix: u32) -> Self {
        let (y, mo, d, h, mi, s, milli) = civil_from_ms(ms);
        Self {
            text: format!(
                "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{milli:03}Z-{:06x}",
                suffix & 0xff_ffff
            ),
        }
    }

    /// A new id for a snapshot taken now by `clock`.
    pub fn generate(clock: &dyn crate::Clock) -> Self {
        let suffix = uuid::Uuid::new_v4().as_u128() as u32;
        Self::new(clock.now_ms(), suffix)
    }

    /// When the snapshot was taken, in milliseconds since the epoch (UTC).
    pub fn ms(&self) -> i64 {
        let b = self.text.as_bytes();
        let num = |r: std::ops::Range<usize>| -> i64 {
            b[r].iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
        };
        let (y, m, d) = (num(0..4), num(4..6), num(6..8));
        // Days from civil (Howard Hinnant), the inverse of `civil_from_ms`.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + num(9..11) * 3600 + num(11..13) * 60 + num(13..15);
        secs * 1000 + num(16..19)
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({})", self.text)
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.text
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl FromStr for SnapshotId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let err = |why| IdError {
            what: "snapshot id",
            text: s.to_string(),
            why,
        };
        // 20261124T014500.123Z-7f3a9c
        let b = s.as_bytes();
        if b.len() != 27 {
            return Err(err("expected the form 20261124T014500.123Z-7f3a9c"));
        }
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let ok = digits(0..8)
            && b[8] == b'T'
            && digits(9..15)
            && b[15] == b'.'
            && digits(16..19)
            && b[19] == b'Z'
            && b[20] == b'-'
            && b[21..]
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if !ok {
            return Err(err("expected the form 20261124T014500.123Z-7f3a9c"));
        }
        Ok(Self {
            text: s.to_string(),
        })
    }
}

/// Splits milliseconds since the epoch into UTC calendar fields
/// (Howard Hinnant's days-from-civil algorithm, inverted).
fn civil_from_ms(ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_id_formats_utc() {
        // 2026-11-24T01:45:00.123Z
        let id = SnapshotId::new(1_795_484_700_123, 0x7f3a9c);
        assert_eq!(id.as_str(), "20261124T014500.123Z-7f3a9c");
        assert_eq!(id.as_str().parse::<SnapshotId>().unwrap(), id);
        assert_eq!(
            SnapshotId::new(0, 1).as_str(),
            "19700101T000000.000Z-000001"
        );
    }

    #[test]
    fn snapshot_time_round_trips() {
        for ms in [0, 1_795_484_700_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(SnapshotId::new(ms, 5).ms(), ms);
        }
    }

    #[test]
    fn snapshot_ids_sort_by_time() {
        let a = SnapshotId::new(1_000_000, 0xffffff);
        let b = SnapshotId::new(1_000_001, 0);
        assert!(a < b);
    }

    #[test]
    fn bad_ids_are_named() {
        let e = "2026".parse::<SnapshotId>().unwrap_err();
        assert_eq!(e.what, "snapshot id");
        assert!(e.to_string().contains("\"2026\""));
        assert!("zz".parse::<ChunkId>().is_err());
        assert!("not-a-uuid".parse::<ProjectId>().is_err());
    }

    #[test]
    fn chunk_id_round_trips() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
    }
}
