//! What every engine's stream starts with: the framing's magic and a
//! HEADER record naming the stream's start and end snapshots, when it was
//! made and the engine that made it (`docs/stream-format.md`).

use std::io::{Read, Write};

use crate::engine::EngineKind;
use crate::error::{EngineError, Result};
use crate::format::{Dec, Enc, RecordReader, RecordWriter, STREAM_MAGIC, tag};

/// Header of a stream: what it goes from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The snapshot the stream applies on; `None` for a full stream.
    pub start: Option<String>,
    /// The snapshot it produces.
    pub end: String,
    /// When the stream was made (milliseconds since the epoch).
    pub created_ms: i64,
}

/// Starts a stream of `engine`'s format `version`: the magic and the
/// header record.
///
/// # Errors
/// When the sink fails.
pub fn write_header<W: Write>(
    out: W,
    header: &StreamHeader,
    engine: EngineKind,
    version: u32,
) -> Result<RecordWriter<W>> {
    let mut w = RecordWriter::new(out, STREAM_MAGIC)?;
    let mut h = Enc::default();
    h.u32(version)
        .bytes(header.start.as_deref().unwrap_or("").as_bytes())
        .bytes(header.end.as_bytes())
        .i64(header.created_ms)
        .bytes(engine.as_str().as_bytes());
    w.record(tag::HEADER, &h.0)?;
    Ok(w)
}

/// Reads the magic and the header of a stream that `engine` applies, in
/// one of the format versions `versions` (inclusive).
///
/// # Errors
/// [`EngineError::Corrupt`] for a missing or damaged header,
/// [`EngineError::Version`] for a version outside `versions`,
/// [`EngineError::WrongEngine`] for a stream another engine made.
pub fn read_header<R: Read>(
    input: R,
    engine: EngineKind,
    versions: std::ops::RangeInclusive<u32>,
) -> Result<(RecordReader<R>, StreamHeader, u32)> {
    let mut r = RecordReader::new(input, STREAM_MAGIC, "stream")?;
    let rec = r.next_record()?.ok_or_else(|| EngineError::Corrupt {
        offset: 8,
        why: "stream ends before its header".into(),
    })?;
    if rec.tag != tag::HEADER {
        return Err(EngineError::Corrupt {
            offset: rec.offset,
            why: "the stream does not start with a header".into(),
        });
    }
    let mut d = Dec::new(&rec);
    let version = d.u32("version")?;
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| EngineError::Corrupt {
            offset: rec.offset,
            why: format!("{what} is not UTF-8"),
        })
    };
    let start = text(d.bytes("start")?, "start snapshot")?;
    let end = text(d.bytes("end")?, "end snapshot")?;
    let created_ms = d.i64("created")?;
    let made_by = d.bytes("engine")?;
    d.end()?;
    // The engine first: another engine's versions mean something else.
    if made_by != engine.as_str().as_bytes() {
        return Err(EngineError::WrongEngine {
            stream: String::from_utf8_lossy(made_by).into_owned(),
            applied: engine,
        });
    }
    if !versions.contains(&version) {
        return Err(EngineError::Version {
            found: version,
            supported: *versions.end(),
        });
    }
    let header = StreamHeader {
        start: (!start.is_empty()).then_some(start),
        end,
        created_ms,
    };
    Ok((r, header, version))
}

/// Refuses a stream whose header is not the one the catalog describes.
pub(crate) fn check_ends(
    header: &StreamHeader,
    opts: &crate::native::ReceiveOptions,
) -> Result<()> {
    if header.start != opts.holds {
        return Err(EngineError::WrongBase {
            stream_start: header
                .start
                .clone()
                .unwrap_or_else(|| "(none: a full stream)".into()),
            target: opts.holds.clone().unwrap_or_else(|| "(empty)".into()),
        });
    }
    if let Some(want) = &opts.expect_end
        && header.end != *want
    {
        return Err(EngineError::Corrupt {
            offset: 8,
            why: format!(
                "the stream's header says it ends at snapshot {}, but it was recorded as ending at {want}",
                header.end
            ),
        });
    }
    Ok(())
}
