//! The apply plan: which streams, in which order, rebuild a snapshot.
//!
//! Streams are edges of a graph whose nodes are snapshots; the empty state is
//! the root and full streams leave it. The plan to a snapshot is the cheapest
//! path to it (fewest bytes, then fewest streams). Snapshot ids order by time,
//! and a stream whose end is not after its start is refused, so the graph has
//! no cycles and a single pass in id order finds every cheapest path.

use std::collections::{BTreeMap, HashMap};

use crate::{SnapshotId, StreamId, StreamInfo};

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The project has no streams at all.
    #[error("the project has no snapshots")]
    Empty,
    /// The requested snapshot is the end of no stream.
    #[error("snapshot {0} does not exist in this project")]
    UnknownSnapshot(SnapshotId),
    /// The requested snapshot exists but no chain from a full stream reaches it.
    #[error("snapshot {0} is not reachable: no chain of streams from a full stream leads to it")]
    Unreachable(SnapshotId),
    /// A stream goes backwards in time or nowhere.
    #[error("stream {id} is invalid: its end {end} is not after its start {start}")]
    BackwardStream {
        /// The stream.
        id: StreamId,
        /// Its start.
        start: SnapshotId,
        /// Its end.
        end: SnapshotId,
    },
    /// Two records share a stream id but differ.
    #[error("stream id {0} appears twice with different contents")]
    DuplicateStream(StreamId),
}

/// The cheapest known way to reach each snapshot: `(bytes, streams)` and
/// the last stream of that path.
pub(crate) type Best<'a> = HashMap<&'a SnapshotId, ((u64, u64), &'a StreamInfo)>;

/// Checks the catalog's streams for impossible records and returns them
/// without duplicates.
pub(crate) fn validate(streams: &[StreamInfo]) -> Result<Vec<&StreamInfo>, PlanError> {
    let mut by_id: HashMap<StreamId, &StreamInfo> = HashMap::new();
    let mut out = Vec::new();
    for s in streams {
        if let Some(start) = &s.start
            && s.end <= *start
        {
            return Err(PlanError::BackwardStream {
                id: s.id,
                start: start.clone(),
                end: s.end.clone(),
            });
        }
        match by_id.insert(s.id, s) {
            Some(prev) if prev != s => return Err(PlanError::DuplicateStream(s.id)),
            Some(_) => {}
            None => out.push(s),
        }
    }
    Ok(out)
}

/// Cheapest paths from the root to every reachable snapshot. Streams are
/// visited in end order: every edge points forward in time, so when a
/// snapshot is visited all of its incoming edges' starts are final.
pub(crate) fn cheapest<'a>(streams: &[&'a StreamInfo]) -> Best<'a> {
    let mut incoming: BTreeMap<&SnapshotId, Vec<&StreamInfo>> = BTreeMap::new();
    for s in streams {
        incoming.entry(&s.end).or_default().push(s);
    }
    let mut best: Best<'a> = HashMap::new();
    for (snap, edges) in incoming {
        let mut choice: Option<((u64, u64), &StreamInfo)> = None;
        for s in edges {
            let base = match &s.start {
                None => Some((0, 0)),
                Some(start) => best.get(start).map(|(c, _)| *c),
            };
            if let Some((bytes, n)) = base {
                let cost = (bytes.saturating_add(s.bytes), n + 1);
                let better = match &choice {
                    None => true,
                    Some((c, cur)) => cost < *c || (cost == *c && s.id < cur.id),
                };
                if better {
                    choice = Some((cost, s));
                }
            }
        }
        if let Some(c) = choice {
            best.insert(snap, c);
        }
    }
    best
}

/// The plan to `target` from a finished [`cheapest`] table.
pub(crate) fn plan_to<'a>(best: &Best<'a>, target: &SnapshotId) -> Option<Vec<&'a StreamInfo>> {
    let mut plan = Vec::new();
    let mut at = target;
    loop {
        let (_, s) = best.get(at)?;
        plan.push(*s);
        match &s.start {
            None => break,
            Some(start) => at = start,
        }
    }
    plan.reverse();
    Some(plan)
}

/// The cheapest chain of streams that rebuilds `target`, or the newest
/// reachable snapshot when `target` is `None`. The returned streams are in
/// apply order: a full stream first, then incrementals, each starting where
/// the previous one ended.
///
/// # Errors
/// [`PlanError`] when the catalog is inconsistent or the target cannot be
/// reached.
pub fn apply_plan<'a>(
    streams: &'a [StreamInfo],
    target: Option<&SnapshotId>,
) -> Result<Vec<&'a StreamInfo>, PlanError> {
    if streams.is_empty() {
        return Err(PlanError::Empty);
    }
    let valid = validate(streams)?;
    let best = cheapest(&valid);
    let target = match target {
        Some(t) => {
            if !valid.iter().any(|s| s.end == *t) {
                return Err(PlanError::UnknownSnapshot(t.clone()));
            }
            t.clone()
        }
        None => match best.keys().max() {
            Some(t) => (*t).clone(),
            None => {
                let newest = valid.iter().map(|s| &s.end).max().expect("non-empty");
                return Err(PlanError::Unreachable(newest.clone()));
            }
        },
    };
    plan_to(&best, &target).ok_or(PlanError::Unreachable(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProjectId;

    fn snap(n: i64) -> SnapshotId {
        SnapshotId::new(n * 1000, 0)
    }

    fn stream(start: Option<i64>, end: i64, bytes: u64) -> StreamInfo {
        StreamInfo {
            id: StreamId::random(),
            project: ProjectId(uuid::Uuid::nil()),
            start: start.map(snap),
            parent: start.map(snap),
            end: snap(end),
            engine: "native".into(),
            bytes,
            chunks: 1,
            new_bytes: bytes,
            new_stored_bytes: bytes,
            created_ms: end,
            host: "h".into(),
        }
    }

    #[test]
    fn linear_chain() {
        let s = vec![
            stream(None, 1, 100),
            stream(Some(1), 2, 10),
            stream(Some(2), 3, 10),
        ];
        let plan = apply_plan(&s, None).unwrap();
        let ends: Vec<_> = plan.iter().map(|s| s.end.clone()).collect();
        assert_eq!(ends, vec![snap(1), snap(2), snap(3)]);
        let plan = apply_plan(&s, Some(&snap(2))).unwrap();
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn newer_full_is_cheaper() {
        let s = vec![
            stream(None, 1, 100),
            stream(Some(1), 2, 80),
            stream(None, 2, 50),
            stream(Some(2), 3, 1),
        ];
        let plan = apply_plan(&s, None).unwrap();
        assert_eq!(plan.len(), 2);
        assert!(plan[0].start.is_none());
        assert_eq!(plan[0].bytes, 50);
    }

    #[test]
    fn missing_middle_stream_plans_to_newest_reachable() {
        let s = vec![stream(None, 1, 100), stream(Some(2), 3, 10)];
        let plan = apply_plan(&s, None).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(
            apply_plan(&s, Some(&snap(3))).unwrap_err(),
            PlanError::Unreachable(snap(3))
        );
        assert_eq!(
            apply_plan(&s, Some(&snap(9))).unwrap_err(),
            PlanError::UnknownSnapshot(snap(9))
        );
    }

    #[test]
    fn backward_stream_is_refused() {
        let s = vec![stream(None, 1, 100), stream(Some(3), 2, 10)];
        assert!(matches!(
            apply_plan(&s, None),
            Err(PlanError::BackwardStream { .. })
        ));
    }
}
