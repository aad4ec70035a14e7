//! A project's stream graph, analysed: the chain to the newest reachable
//! snapshot, its history, forks, and streams that cannot be applied.
//!
//! Two relations matter. *Reachability* comes from the streams (a snapshot
//! is reachable when some chain from a full stream ends at it). *Lineage*
//! comes from each stream's `parent`: the snapshot the saved directory held
//! before. The newest reachable snapshot is the **head**; the head's lineage
//! ancestors are the **main line**. A reachable snapshot off the main line
//! belongs to a **fork** (two hosts saved from the same base, or a directory
//! saved into the project from scratch); forks are reported with their head,
//! the main-line snapshot they left from, and the hosts that wrote them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::plan::{Best, cheapest, plan_to, validate};
use crate::{PlanError, SnapshotId, StreamId, StreamInfo};

/// What a stream is to the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// On the cheapest plan to the head.
    Chain,
    /// Ends on the main line but is not on the current chain (older
    /// snapshots, superseded streams): trim may remove it.
    History,
    /// Ends at a snapshot off the main line: never trimmed.
    Fork,
    /// Cannot be applied: its start is not reachable.
    Unreachable,
}

impl Role {
    /// `chain`, `history`, `fork` or `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chain => "chain",
            Role::History => "history",
            Role::Fork => "fork",
            Role::Unreachable => "unreachable",
        }
    }
}

/// A branch off the main line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The branch's newest snapshot.
    pub head: SnapshotId,
    /// The main-line snapshot it left from (`None` when it starts from
    /// nothing: a directory saved into the project from scratch).
    pub base: Option<SnapshotId>,
    /// Its snapshots from just after `base` to `head`.
    pub snapshots: Vec<SnapshotId>,
    /// The streams that end at those snapshots.
    pub streams: Vec<StreamId>,
    /// The hosts that wrote them.
    pub hosts: Vec<String>,
}

/// A stream that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The stream.
    pub stream: StreamId,
    /// The snapshot it would produce.
    pub end: SnapshotId,
    /// Why it cannot be reached.
    pub why: String,
}

/// The analysis of a project's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The newest reachable snapshot.
    pub head: Option<SnapshotId>,
    /// The cheapest plan to the head, in apply order.
    pub chain: Vec<StreamId>,
    /// The head's lineage ancestors and the head, oldest first.
    pub main_line: Vec<SnapshotId>,
    /// Branches off the main line.
    pub forks: Vec<Fork>,
    /// Streams whose start is not reachable.
    pub unreachable: Vec<Unreachable>,
    /// Snapshots newer than the head that cannot be restored, with why.
    pub lost_newer: Vec<(SnapshotId, String)>,
    roles: HashMap<StreamId, Role>,
}

impl ChainReport {
    /// The role of a stream of the analysed project.
    pub fn role(&self, id: &StreamId) -> Option<Role> {
        self.roles.get(id).copied()
    }
}

/// Each snapshot's lineage parent, from the streams that end at it (the
/// earliest committed stream wins when they disagree).
pub(crate) fn parents<'a>(
    streams: &[&'a StreamInfo],
) -> HashMap<&'a SnapshotId, Option<&'a SnapshotId>> {
    let mut sorted: Vec<&&StreamInfo> = streams.iter().collect();
    sorted.sort_by_key(|s| (s.created_ms, s.id));
    let mut out = HashMap::new();
    for s in sorted {
        out.entry(&s.end)
            .or_insert(s.parent.as_ref().or(s.start.as_ref()));
    }
    out
}

/// Analyses a project's streams.
///
/// # Errors
/// [`PlanError`] for impossible catalogs (a stream that does not go
/// forward in time, two different streams with one id).
pub fn analyze(streams: &[StreamInfo]) -> Result<ChainReport, PlanError> {
    let valid = validate(streams)?;
    let best = cheapest(&valid);
    let head = best.keys().max().map(|s| (*s).clone());
    let chain: Vec<StreamId> = head
        .as_ref()
        .and_then(|h| plan_to(&best, h))
        .map(|p| p.iter().map(|s| s.id).collect())
        .unwrap_or_default();
    let parent = parents(&valid);
    let mut main_line = Vec::new();
    let mut on_main: BTreeSet<&SnapshotId> = BTreeSet::new();
    if let Some(h) = &head {
        let mut at = valid.iter().map(|s| &s.end).find(|e| *e == h);
        while let Some(snap) = at {
            if !on_main.insert(snap) {
                break;
            }
            main_line.push(snap.clone());
            at = parent.get(snap).copied().flatten();
            // A parent that no stream produces ends the line.
            at = at.and_then(|p| parent.get_key_value(p).map(|(k, _)| *k));
        }
    }
    main_line.reverse();

    let (unreachable, lost_newer) = unreachable_streams(&valid, &best, head.as_ref());
    let unreachable_ids: BTreeSet<StreamId> = unreachable.iter().map(|u| u.stream).collect();
    let forks = forks(&valid, &best, &parent, &on_main, &unreachable_ids);

    let chain_ids: BTreeSet<StreamId> = chain.iter().copied().collect();
    let fork_snaps: BTreeSet<&SnapshotId> = forks.iter().flat_map(|f| f.snapshots.iter()).collect();
    let roles = valid
        .iter()
        .map(|s| {
            let role = if chain_ids.contains(&s.id) {
                Role::Chain
            } else if unreachable_ids.contains(&s.id) {
                Role::Unreachable
            } else if fork_snaps.contains(&s.end) {
                Role::Fork
            } else {
                Role::History
            };
            (s.id, role)
        })
        .collect();
    Ok(ChainReport {
        head,
        chain,
        main_line,
        forks,
        unreachable,
        lost_newer,
        roles,
    })
}

type Lost = Vec<(SnapshotId, String)>;

fn unreachable_streams(
    valid: &[&StreamInfo],
    best: &Best<'_>,
    head: Option<&SnapshotId>,
) -> (Vec<Unreachable>, Lost) {
    let produced: BTreeSet<&SnapshotId> = valid.iter().map(|s| &s.end).collect();
    let mut out = Vec::new();
    let mut why_of: BTreeMap<&SnapshotId, String> = BTreeMap::new();
    let mut sorted: Vec<&&StreamInfo> = valid.iter().collect();
    sorted.sort_by(|a, b| a.end.cmp(&b.end).then(a.id.cmp(&b.id)));
    for s in sorted {
        let Some(start) = &s.start else { continue };
        if best.contains_key(start) {
            continue;
        }
        let why = if produced.contains(start) {
            format!("its start snapshot {start} is itself unreachable")
        } else {
            format!("no stream produces its start snapshot {start} (missing)")
        };
        if !best.contains_key(&s.end) {
            why_of.entry(&s.end).or_insert_with(|| why.clone());
        }
        out.push(Unreachable {
            stream: s.id,
            end: s.end.clone(),
            why,
        });
    }
    let lost = why_of
        .into_iter()
        .filter(|(snap, _)| head.is_none_or(|h| *snap > h))
        .map(|(snap, why)| (snap.clone(), why))
        .collect();
    (out, lost)
}

fn forks(
    valid: &[&StreamInfo],
    best: &Best<'_>,
    parent: &HashMap<&SnapshotId, Option<&SnapshotId>>,
    on_main: &BTreeSet<&SnapshotId>,
    unreachable: &BTreeSet<StreamId>,
) -> Vec<Fork> {
    // Reachable snapshots off the main line.
    let off: BTreeSet<&SnapshotId> = best
        .keys()
        .filter(|s| !on_main.contains(*s))
        .copied()
        .collect();
    let has_child: BTreeSet<&SnapshotId> = off
        .iter()
        .filter_map(|s| parent.get(s).copied().flatten())
        .collect();
    let mut out = Vec::new();
    for head in off.iter().filter(|s| !has_child.contains(*s)) {
        let mut snaps = Vec::new();
        let mut at: Option<&SnapshotId> = Some(head);
        let mut base = None;
        while let Some(snap) = at {
            if on_main.contains(snap) {
                base = Some(snap.clone());
                break;
            }
            if !off.contains(snap) || snaps.contains(&snap) {
                break;
            }
            snaps.push(snap);
            at = parent.get(snap).copied().flatten();
        }
        snaps.reverse();
        let in_branch: BTreeSet<&SnapshotId> = snaps.iter().copied().collect();
        let streams: Vec<&StreamInfo> = valid
            .iter()
            .filter(|s| in_branch.contains(&s.end) && !unreachable.contains(&s.id))
            .copied()
            .collect();
        let hosts: BTreeSet<String> = streams.iter().map(|s| s.host.clone()).collect();
        out.push(Fork {
            head: (*head).clone(),
            base,
            snapshots: snaps.into_iter().cloned().collect(),
            streams: streams.iter().map(|s| s.id).collect(),
            hosts: hosts.into_iter().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProjectId;

    fn snap(n: i64) -> SnapshotId {
        SnapshotId::new(n * 1000, 0)
    }

    fn stream(start: Option<i64>, end: i64, parent: Option<i64>, host: &str) -> StreamInfo {
        StreamInfo {
            id: StreamId::random(),
            project: ProjectId(uuid::Uuid::nil()),
            start: start.map(snap),
            end: snap(end),
            parent: parent.map(snap),
            engine: "native".into(),
            bytes: 10,
            chunks: 1,
            new_bytes: 10,
            new_stored_bytes: 10,
            created_ms: end,
            host: host.into(),
        }
    }

    #[test]
    fn missing_stream_is_reported_with_what_it_cost() {
        // 1 -> 2 -> 3 -> 4, and the stream to 2 is gone.
        let s = vec![
            stream(None, 1, None, "a"),
            stream(Some(2), 3, Some(2), "a"),
            stream(Some(3), 4, Some(3), "a"),
        ];
        let r = analyze(&s).unwrap();
        assert_eq!(r.head, Some(snap(1)));
        assert_eq!(r.unreachable.len(), 2);
        assert!(
            r.unreachable[0].why.contains("missing"),
            "{:?}",
            r.unreachable
        );
        assert!(r.unreachable[1].why.contains("itself unreachable"));
        let lost: Vec<_> = r.lost_newer.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(lost, vec![snap(3), snap(4)]);
        assert_eq!(r.role(&s[1].id), Some(Role::Unreachable));
    }

    #[test]
    fn two_saves_from_one_base_make_a_fork() {
        let s = vec![
            stream(None, 1, None, "a"),
            stream(Some(1), 2, Some(1), "host-a"),
            stream(Some(1), 3, Some(1), "host-b"),
        ];
        let r = analyze(&s).unwrap();
        assert_eq!(r.head, Some(snap(3)));
        assert_eq!(r.main_line, vec![snap(1), snap(3)]);
        assert_eq!(r.forks.len(), 1);
        let f = &r.forks[0];
        assert_eq!((f.head.clone(), f.base.clone()), (snap(2), Some(snap(1))));
        assert_eq!(f.hosts, vec!["host-a".to_string()]);
        assert_eq!(r.role(&s[1].id), Some(Role::Fork));
        assert_eq!(r.role(&s[2].id), Some(Role::Chain));
    }
}
