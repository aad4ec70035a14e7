//! Trim plans: which streams can go, and what that costs.
//!
//! A trim keeps every stream on the cheapest plan to a retained snapshot
//! (the retention policy applied to the main line, plus the head), every
//! stream a fork needs (its own streams and the plans to its snapshots),
//! and every unreachable stream (it is reported; deleting what cannot be
//! reasoned about is not trim's job). Everything else is deleted. Chunk
//! bytes are never deleted here: chunks that lose their last reference are
//! garbage for scrub.

use std::collections::BTreeSet;

use crate::graph::analyze;
use crate::plan::{cheapest, plan_to, validate};
use crate::{PlanError, Retention, SnapshotId, StreamId, StreamInfo};

/// What a trim (or a fork removal) will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimPlan {
    /// Streams to delete.
    pub delete: Vec<StreamId>,
    /// Streams kept.
    pub keep: Vec<StreamId>,
    /// Snapshots that must stay restorable.
    pub retained: Vec<SnapshotId>,
    /// Snapshots that are restorable now and will not be after the trim.
    pub lost: Vec<SnapshotId>,
    /// Sum of the deleted streams' lengths.
    pub stream_bytes: u64,
    /// Stored bytes the deleted streams were first to write: an upper bound
    /// of what scrub can free (other streams may share the chunks).
    pub stored_bytes_at_most: u64,
}

fn finish(valid: &[&StreamInfo], keep: &BTreeSet<StreamId>, retained: Vec<SnapshotId>) -> TrimPlan {
    let before = cheapest(valid);
    let kept: Vec<&StreamInfo> = valid
        .iter()
        .filter(|s| keep.contains(&s.id))
        .copied()
        .collect();
    let after = cheapest(&kept);
    let mut lost: Vec<SnapshotId> = before
        .keys()
        .filter(|s| !after.contains_key(*s))
        .map(|s| (*s).clone())
        .collect();
    lost.sort();
    let deleted: Vec<&StreamInfo> = valid
        .iter()
        .filter(|s| !keep.contains(&s.id))
        .copied()
        .collect();
    TrimPlan {
        delete: deleted.iter().map(|s| s.id).collect(),
        keep: kept.iter().map(|s| s.id).collect(),
        retained,
        lost,
        stream_bytes: deleted.iter().map(|s| s.bytes).sum(),
        stored_bytes_at_most: deleted.iter().map(|s| s.new_stored_bytes).sum(),
    }
}

/// The trim plan for a project's streams under `policy`.
///
/// # Errors
/// [`PlanError`] for an impossible catalog.
pub fn trim_plan(streams: &[StreamInfo], policy: &Retention) -> Result<TrimPlan, PlanError> {
    let report = analyze(streams)?;
    let valid = validate(streams)?;
    let best = cheapest(&valid);
    let candidates: Vec<SnapshotId> = report
        .main_line
        .iter()
        .filter(|s| best.contains_key(s))
        .cloned()
        .collect();
    let mut retained = policy.select(&candidates);
    if let Some(h) = &report.head {
        retained.insert(h.clone());
    }
    let mut keep: BTreeSet<StreamId> = BTreeSet::new();
    let fork_snaps = report.forks.iter().flat_map(|f| f.snapshots.iter());
    for snap in retained.iter().chain(fork_snaps) {
        if let Some(plan) = plan_to(&best, snap) {
            keep.extend(plan.iter().map(|s| s.id));
        }
    }
    for f in &report.forks {
        keep.extend(f.streams.iter().copied());
    }
    keep.extend(report.unreachable.iter().map(|u| u.stream));
    Ok(finish(&valid, &keep, retained.into_iter().collect()))
}

/// The plan that removes the fork whose head is `fork_head`: the streams
/// ending at its snapshots, unless another fork or a retained snapshot
/// still needs them.
///
/// # Errors
/// [`PlanError::UnknownSnapshot`] when no fork has that head.
pub fn forget_fork_plan(
    streams: &[StreamInfo],
    fork_head: &SnapshotId,
) -> Result<TrimPlan, PlanError> {
    let report = analyze(streams)?;
    let valid = validate(streams)?;
    let best = cheapest(&valid);
    let fork = report
        .forks
        .iter()
        .find(|f| f.head == *fork_head)
        .ok_or_else(|| PlanError::UnknownSnapshot(fork_head.clone()))?;
    let doomed: BTreeSet<&SnapshotId> = fork.snapshots.iter().collect();
    // Everything else stays exactly as restorable as it is.
    let mut keep: BTreeSet<StreamId> = valid
        .iter()
        .filter(|s| !doomed.contains(&s.end))
        .map(|s| s.id)
        .collect();
    for snap in best.keys().filter(|s| !doomed.contains(*s)) {
        if let Some(plan) = plan_to(&best, snap) {
            keep.extend(plan.iter().map(|s| s.id));
        }
    }
    Ok(finish(&valid, &keep, report.main_line.clone()))
}
