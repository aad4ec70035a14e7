//! Property tests over random stream graphs: plans are valid and cheapest
//! (checked against a brute-force search), and trims never remove a stream
//! a retained snapshot or a fork needs.

use std::collections::BTreeSet;

use proptest::prelude::*;
use strata_core::{
    ProjectId, Retention, Role, SnapshotId, StreamId, StreamInfo, analyze, apply_plan, trim_plan,
};

fn snap(i: usize) -> SnapshotId {
    SnapshotId::new(1_795_000_000_000 + i as i64 * 1_800_000, i as u32)
}

/// (end, start offset or none, bytes, parent kind, host)
type Edge = (usize, Option<usize>, u64, bool, bool);

fn graph(n: usize, edges: &[Edge]) -> Vec<StreamInfo> {
    edges
        .iter()
        .enumerate()
        .map(|(k, &(end, start_back, bytes, rebase_parent, host_b))| {
            let end = end % n;
            let start = start_back.filter(|_| end > 0).map(|b| end - 1 - (b % end));
            let parent = match start {
                Some(s) => Some(snap(s)),
                None if rebase_parent && end > 0 => Some(snap(end - 1)),
                None => None,
            };
            StreamInfo {
                id: StreamId(uuid::Uuid::from_u128(k as u128 + 1)),
                project: ProjectId(uuid::Uuid::nil()),
                start: start.map(snap),
                end: snap(end),
                parent,
                engine: "native".into(),
                bytes,
                chunks: 1,
                new_bytes: bytes,
                new_stored_bytes: bytes,
                created_ms: k as i64,
                host: if host_b { "b".into() } else { "a".into() },
            }
        })
        .collect()
}

/// Cheapest (bytes, streams) to every snapshot by exhaustive search.
fn brute(streams: &[StreamInfo], target: &SnapshotId) -> Option<(u64, u64)> {
    fn go(
        streams: &[StreamInfo],
        at: Option<&SnapshotId>,
        target: &SnapshotId,
        cost: (u64, u64),
        best: &mut Option<(u64, u64)>,
    ) {
        if at == Some(target) {
            if best.is_none_or(|b| cost < b) {
                *best = Some(cost);
            }
            return;
        }
        for s in streams.iter().filter(|s| s.start.as_ref() == at) {
            if s.end <= *target {
                go(
                    streams,
                    Some(&s.end),
                    target,
                    (cost.0 + s.bytes, cost.1 + 1),
                    best,
                );
            }
        }
    }
    let mut best = None;
    go(streams, None, target, (0, 0), &mut best);
    best
}

fn edges() -> impl Strategy<Value = (usize, Vec<Edge>)> {
    (2usize..7).prop_flat_map(|n| {
        let e = (
            0..n,
            prop::option::weighted(0.7, 0..n),
            1u64..1000,
            any::<bool>(),
            any::<bool>(),
        );
        (Just(n), prop::collection::vec(e, 1..11))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_and_cheapest((n, e) in edges()) {
        let streams = graph(n, &e);
        let reachable: BTreeSet<SnapshotId> = (0..n).map(snap).filter(|s| brute(&streams, s).is_some()).collect();
        match apply_plan(&streams, None) {
            Ok(plan) => {
                prop_assert!(plan[0].start.is_none());
                for w in plan.windows(2) {
                    prop_assert_eq!(w[1].start.as_ref(), Some(&w[0].end));
                }
                let end = &plan.last().unwrap().end;
                prop_assert_eq!(Some(end), reachable.iter().max());
                let cost = (plan.iter().map(|s| s.bytes).sum::<u64>(), plan.len() as u64);
                prop_assert_eq!(Some(cost), brute(&streams, end));
            }
            Err(_) => prop_assert!(reachable.is_empty()),
        }
        for target in &reachable {
            let plan = apply_plan(&streams, Some(target)).unwrap();
            let cost = (plan.iter().map(|s| s.bytes).sum::<u64>(), plan.len() as u64);
            prop_assert_eq!(Some(cost), brute(&streams, target));
        }
        let report = analyze(&streams).unwrap();
        prop_assert_eq!(report.head.as_ref(), reachable.iter().max());
        for s in &streams {
            let role = report.role(&s.id).unwrap();
            let startable = s.start.as_ref().is_none_or(|st| reachable.contains(st));
            prop_assert_eq!(role == Role::Unreachable, !startable);
        }
    }

    #[test]
    fn trim_keeps_what_retention_and_forks_need(
        (n, e) in edges(),
        last in 0u32..4,
        hourly in 0u32..4,
    ) {
        let streams = graph(n, &e);
        let policy = Retention { keep_last: last, keep_hourly: hourly, ..Retention::newest_only() };
        let report = analyze(&streams).unwrap();
        let plan = trim_plan(&streams, &policy).unwrap();
        let deleted: BTreeSet<StreamId> = plan.delete.iter().copied().collect();
        let after: Vec<StreamInfo> = streams.iter().filter(|s| !deleted.contains(&s.id)).cloned().collect();
        // Every retained snapshot restores as cheaply as before.
        for r in &plan.retained {
            prop_assert_eq!(brute(&after, r), brute(&streams, r), "retained {} lost", r);
        }
        // The head is retained; forks and unreachable streams are never deleted.
        if let Some(h) = &report.head {
            prop_assert!(plan.retained.contains(h));
        }
        for f in &report.forks {
            for s in &f.snapshots {
                prop_assert!(brute(&after, s).is_some(), "fork snapshot {} lost", s);
            }
            for id in &f.streams {
                prop_assert!(!deleted.contains(id));
            }
        }
        for u in &report.unreachable {
            prop_assert!(!deleted.contains(&u.stream));
        }
        // What the plan says is lost is exactly what became unreachable.
        let lost: BTreeSet<SnapshotId> = (0..n).map(snap)
            .filter(|s| brute(&streams, s).is_some() && brute(&after, s).is_none())
            .collect();
        prop_assert_eq!(lost, plan.lost.iter().cloned().collect::<BTreeSet<_>>());
        for l in &plan.lost {
            prop_assert!(!plan.retained.contains(l));
        }
    }
}
