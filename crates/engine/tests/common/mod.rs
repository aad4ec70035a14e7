//! Helpers for the engine tests: save a tree into an in-memory stream and
//! apply a chain of streams into a fresh directory.
#![allow(dead_code)]

use std::path::Path;

use strata_engine::index::IndexReader;
use strata_engine::native::{self, ReceiveOptions, SendOptions, SendSummary, StreamHeader};
use strata_engine::{EngineError, Quiet};

/// One saved snapshot: its stream and the index of the tree it saw.
pub struct Saved {
    pub end: String,
    pub stream: Vec<u8>,
    pub index: Vec<u8>,
    pub summary: SendSummary,
}

pub fn save(root: &Path, base: Option<&Saved>, n: usize) -> Saved {
    let end = format!("snap-{n}");
    let header = StreamHeader {
        start: base.map(|b| b.end.clone()),
        end: end.clone(),
        created_ms: 1,
    };
    let mut stream = Vec::new();
    let mut index = Vec::new();
    let reader = base.map(|b| IndexReader::new(&b.index[..]).expect("index"));
    let summary = native::send(
        root,
        reader,
        &header,
        &SendOptions::default(),
        &mut stream,
        &mut index,
        &Quiet,
    )
    .expect("send");
    Saved {
        end,
        stream,
        index,
        summary,
    }
}

/// Applies `chain` into a new directory `target` as a restore does: one
/// [`native::ReceiveSession`] across the chain.
pub fn restore(chain: &[&Saved], target: &Path) -> Result<(), EngineError> {
    restore_holding(chain, target, native::ReceiveSession::default())
}

/// [`restore`] with `session` (for example one with a small budget of
/// held metadata).
pub fn restore_holding(
    chain: &[&Saved],
    target: &Path,
    session: native::ReceiveSession,
) -> Result<(), EngineError> {
    let streams: Vec<&[u8]> = chain.iter().map(|s| &s.stream[..]).collect();
    apply_streams(&streams, target, session)
}

/// Applies raw `streams` (a chain: each starts where the one before
/// ends) into a new directory `target` with `session`.
pub fn apply_streams(
    streams: &[&[u8]],
    target: &Path,
    mut session: native::ReceiveSession,
) -> Result<(), EngineError> {
    std::fs::create_dir(target).expect("mkdir target");
    let mut holds: Option<String> = None;
    for (i, s) in streams.iter().enumerate() {
        session.set_more_follow(i + 1 < streams.len());
        let r = native::receive_in(
            target,
            *s,
            &ReceiveOptions::new(holds.as_deref()),
            &Quiet,
            &mut session,
        )?;
        holds = Some(r.header.end);
    }
    Ok(())
}

/// What a restore records for `root` holding snapshot `end`: the index
/// `build_index` makes with `renamed_at` as its racy threshold, as a base
/// for the next save.
pub fn indexed_after_restore(root: &Path, end: &str, renamed_at: std::time::SystemTime) -> Saved {
    let mut index = Vec::new();
    native::build_index(root, end, &SendOptions::default(), renamed_at, &mut index).expect("index");
    Saved {
        end: end.to_string(),
        stream: Vec::new(),
        index,
        summary: SendSummary::default(),
    }
}
