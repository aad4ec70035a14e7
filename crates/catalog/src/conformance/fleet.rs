//! The fleet's cases (`docs/fleet.md`): the host lifecycle, placement,
//! the project lease and its fencing token, drains and moves.

use strata_core::{ProjectId, SaveId, SnapshotId};

use super::stream;
use crate::{
    Catalog, CatalogError, Fence, HostRecord, HostReport, HostState, Placement, PlacementState,
    Request, SaveRecord,
};

const LEASE: i64 = 30_000;

fn host(id: &str, zone: &str, max_projects: u64) -> HostRecord {
    HostRecord {
        address: format!("{id}.example:22"),
        ..HostRecord::new(id, zone, max_projects, 1)
    }
}

fn open(
    cat: &dyn Catalog,
    p: ProjectId,
    on: Option<&str>,
    now: i64,
) -> Result<Placement, CatalogError> {
    cat.request(
        p,
        &Request::Open {
            on: on.map(Into::into),
        },
        now,
        LEASE,
    )
    .map(|p| p.expect("an open returns the placement"))
}

fn fence(p: &Placement) -> Fence {
    Fence {
        host: p.host.clone().expect("held"),
        token: p.token,
    }
}

/// Begins a save holding `fence` and commits a stream ending at `end`,
/// made at `now` (the committing host's clock); a refused save is ended.
pub fn commit(
    cat: &dyn Catalog,
    project: ProjectId,
    fence: Option<Fence>,
    start: Option<SnapshotId>,
    end: SnapshotId,
    now: i64,
) -> Result<(), CatalogError> {
    let save = SaveRecord {
        id: SaveId::random(),
        host: "machine".into(),
        pid: 1,
        process_start: 0,
        started_ms: now,
        expires_ms: i64::MAX,
        fence,
    };
    cat.begin_save(&save)?;
    let mut s = stream(project, start, end, 100);
    s.created_ms = now;
    let r = cat.commit_stream(save.id, &s, &[], &[]);
    if r.is_err() {
        cat.end_save(save.id)?;
    }
    r
}

/// Hosts are added (a repeated add is a no-op, another record under the
/// same id is refused), listed, disabled, enabled and removed; a host that
/// holds a project cannot be removed; unknown hosts are named.
pub fn hosts_lifecycle(cat: &dyn Catalog) {
    assert!(cat.hosts().unwrap().is_empty());
    let h1 = host("h1", "zone-a", 10);
    cat.add_host(&h1).unwrap();
    cat.add_host(&h1).unwrap();
    let err = cat.add_host(&host("h1", "zone-b", 10)).unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostExists(h) if h == "h1"),
        "{err}"
    );
    cat.add_host(&host("h0", "zone-b", 5)).unwrap();
    let list = cat.hosts().unwrap();
    assert_eq!(
        list.iter().map(|h| h.host.id.as_str()).collect::<Vec<_>>(),
        ["h0", "h1"]
    );
    assert_eq!(list[1].host, h1);
    assert_eq!(
        (list[1].open, list[1].open_bytes, list[1].copies),
        (0, 0, 0)
    );

    for state in [HostState::Disabled, HostState::Enabled] {
        assert!(
            cat.set_host_state("h1", state, 5, LEASE)
                .unwrap()
                .is_empty()
        );
        assert_eq!(cat.hosts().unwrap()[1].host.state, state);
    }
    let err = cat
        .set_host_state("h9", HostState::Disabled, 5, LEASE)
        .unwrap_err();
    assert!(
        matches!(&err, CatalogError::UnknownHost(h) if h == "h9"),
        "{err}"
    );
    assert!(err.to_string().contains("h9"), "{err}");

    // The heartbeat records the agent; an unknown host's is refused.
    assert!(
        cat.heartbeat("h1", &HostReport::version("strata 9.9"), 7, LEASE)
            .unwrap()
            .is_empty()
    );
    let h = &cat.hosts().unwrap()[1].host;
    assert_eq!(h.last_error, None);
    let failing = HostReport {
        last_error: Some("5 open p: the disk is full".into()),
        ..HostReport::version("strata 9.9")
    };
    cat.heartbeat("h1", &failing, 7, LEASE).unwrap();
    let h = &cat.hosts().unwrap()[1].host;
    assert_eq!(h.last_error.as_deref(), Some("5 open p: the disk is full"));
    assert_eq!(
        (h.heartbeat_ms, h.agent_version.as_deref()),
        (Some(7), Some("strata 9.9"))
    );
    assert!(matches!(
        cat.heartbeat("nope", &HostReport::version("v"), 7, LEASE),
        Err(CatalogError::UnknownHost(_))
    ));

    let p = cat.create_project("busy", 1).unwrap();
    let placed = open(cat, p.id, Some("h1"), 10).unwrap();
    assert_eq!(placed.host.as_deref(), Some("h1"));
    cat.set_copy("h1", p.id, Some(&SnapshotId::new(5, 1)), 10)
        .unwrap();
    assert_eq!(
        cat.copies(p.id).unwrap(),
        [("h1".to_string(), SnapshotId::new(5, 1))]
    );
    let info = cat.hosts().unwrap().remove(1);
    assert_eq!((info.open, info.copies), (1, 1));
    let err = cat.remove_host("h1").unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostBusy { host, projects: 1 } if host == "h1"),
        "{err}"
    );
    cat.hand_over(p.id, &fence(&placed), None, 20, LEASE)
        .unwrap();
    cat.remove_host("h1").unwrap();
    cat.remove_host("h1").unwrap(); // a retried remove
    assert_eq!(cat.hosts().unwrap().len(), 1);
    assert!(
        cat.copies(p.id).unwrap().is_empty(),
        "its copies' records go with it"
    );
}

/// Placement: a disabled host is never chosen, not even by name; a full
/// one neither; a host with the project's local copy is preferred, then
/// one in the zone the project was last in, then the least loaded; a host
/// whose agent stopped heartbeating is down. Opening an open project is a
/// no-op on its host and refused on another.
pub fn placement_choice(cat: &dyn Catalog) {
    let ps: Vec<ProjectId> = (0..6)
        .map(|i| cat.create_project(&format!("p{i}"), 1).unwrap().id)
        .collect();
    let err = open(cat, ps[0], None, 10).unwrap_err();
    assert!(matches!(err, CatalogError::NoHost { .. }), "{err}");
    for (id, zone, max) in [
        ("a1", "a", 2),
        ("a2", "a", 5),
        ("b1", "b", 5),
        ("off", "b", 50),
    ] {
        cat.add_host(&host(id, zone, max)).unwrap();
    }
    cat.set_host_state("off", HostState::Disabled, 10, LEASE)
        .unwrap();
    let err = open(cat, ps[0], Some("off"), 10).unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostUnavailable { host, why, .. } if host == "off" && why.contains("disabled")),
        "{err}"
    );
    assert!(matches!(
        open(cat, ps[0], Some("zz"), 10),
        Err(CatalogError::UnknownHost(_))
    ));

    // Least loaded first (ties by id): a1, a2, b1, then a1 again.
    let mut on = Vec::new();
    for &p in &ps[..4] {
        on.push(open(cat, p, None, 10).unwrap().host.unwrap());
    }
    assert_eq!(on, ["a1", "a2", "b1", "a1"]);
    // a1 is full now (2 projects): never chosen, not even by name.
    let err = open(cat, ps[4], Some("a1"), 10).unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostUnavailable { why, .. } if why.contains("full")),
        "{err}"
    );

    // Opening an open project: the same placement; elsewhere: refused.
    let again = open(cat, ps[0], None, 11).unwrap();
    assert_eq!((again.host.as_deref(), again.token), (Some("a1"), 1));
    let err = open(cat, ps[0], Some("b1"), 11).unwrap_err();
    assert!(
        matches!(&err, CatalogError::AlreadyOpen { host, .. } if host == "a1"),
        "{err}"
    );
    assert!(err.to_string().contains("strata move"), "{err}");

    // A cached copy wins over load; the zone it was last in over load.
    cat.set_copy("b1", ps[4], Some(&SnapshotId::new(1, 1)), 12)
        .unwrap();
    assert_eq!(
        open(cat, ps[4], None, 12).unwrap().host.as_deref(),
        Some("b1")
    );
    let b1 = cat.placement(ps[2]).unwrap().unwrap();
    cat.hand_over(ps[2], &fence(&b1), None, 13, LEASE).unwrap();
    let reopened = open(cat, ps[2], None, 14).unwrap();
    assert_eq!(
        reopened.host.as_deref(),
        Some("b1"),
        "the zone it was last in"
    );
    assert_eq!(reopened.token, b1.token + 1, "every grant a new token");
    assert_eq!(reopened.last_host.as_deref(), Some("b1"));

    // An agent heard from, then silent for a lease: down, not chosen.
    cat.heartbeat("b1", &HostReport::version("v"), 15, LEASE)
        .unwrap();
    cat.heartbeat("a2", &HostReport::version("v"), 15 + 2 * LEASE, LEASE)
        .unwrap();
    let err = open(cat, ps[5], Some("b1"), 15 + 2 * LEASE).unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostUnavailable { why, .. } if why.contains("down")),
        "{err}"
    );
    assert_eq!(
        open(cat, ps[5], None, 15 + 2 * LEASE)
            .unwrap()
            .host
            .as_deref(),
        Some("a2")
    );
    let listed: Vec<ProjectId> = cat
        .placements()
        .unwrap()
        .iter()
        .map(|p| p.project)
        .collect();
    let mut want = ps.clone();
    want.sort();
    assert_eq!(listed, want);
}

/// The lease and its fencing token: only the save holding the current,
/// unexpired grant commits; a heartbeat renews a live lease but never
/// revives a lapsed one; a takeover grants a new token, after which the
/// old holder's commits and hand-overs are refused, with a clear error,
/// and recorded; a save holding no lease cannot commit to a project open
/// on a host; close and reopen keep tokens growing.
pub fn lease_fencing(cat: &dyn Catalog) {
    cat.add_host(&host("h1", "a", 10)).unwrap();
    cat.add_host(&host("h2", "b", 10)).unwrap();
    let p = cat.create_project("fenced", 1).unwrap().id;
    let s = |i: u32| SnapshotId::new(1000 + i64::from(i), i);
    // Open nowhere: an unfenced save commits (the embedded default).
    commit(cat, p, None, None, s(1), 50).unwrap();

    let h1 = open(cat, p, Some("h1"), 100).unwrap();
    assert_eq!(
        (h1.state, h1.token, h1.expires_ms),
        (PlacementState::Open, 1, 100 + LEASE)
    );
    commit(cat, p, Some(fence(&h1)), Some(s(1)), s(2), 200).unwrap();
    let err = commit(cat, p, None, Some(s(2)), s(3), 201).unwrap_err();
    assert!(matches!(err, CatalogError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("open on host h1"), "{err}");

    // Renewed while live; the renewal moves the expiry.
    let seen = cat
        .heartbeat("h1", &HostReport::version("v"), 1000, LEASE)
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(cat.placements_of("h1").unwrap(), seen, "what a poll reads");
    assert!(cat.placements_of("h2").unwrap().is_empty());
    assert_eq!(seen[0].expires_ms, 1000 + LEASE);
    // Paused past its expiry: its commit is refused even before anyone
    // takes the project over, and a late heartbeat does not revive it.
    let late = 1000 + LEASE + 1;
    let err = commit(cat, p, Some(fence(&h1)), Some(s(2)), s(3), late).unwrap_err();
    assert!(err.to_string().contains("ran out"), "{err}");
    cat.heartbeat("h1", &HostReport::version("v"), late, LEASE)
        .unwrap();
    assert_eq!(cat.placement(p).unwrap().unwrap().expires_ms, 1000 + LEASE);

    // Taken over by h2: a new token; h1's commit and hand-over refused.
    let h2 = open(cat, p, Some("h2"), late + 1).unwrap();
    assert_eq!((h2.host.as_deref(), h2.token), (Some("h2"), 2));
    assert_eq!(h2.last_host.as_deref(), Some("h1"));
    let err = commit(cat, p, Some(fence(&h1)), Some(s(2)), s(3), late + 2).unwrap_err();
    assert!(
        err.to_string()
            .contains("granted again, to host h2 (token 2)"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was committed"), "{err}");
    let err = cat
        .hand_over(p, &fence(&h1), None, late + 3, LEASE)
        .unwrap_err();
    assert!(matches!(err, CatalogError::Fenced { .. }), "{err}");
    assert_eq!(
        cat.streams(p).unwrap().len(),
        2,
        "no refused stream is there"
    );
    commit(cat, p, Some(fence(&h2)), Some(s(2)), s(3), late + 4).unwrap();

    let rejected = cat.rejections(10).unwrap();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert_eq!((rejected[0].host.as_str(), rejected[0].token), ("h1", 1));
    assert_eq!(rejected[0].at_ms, late + 3);
    assert!(rejected.iter().all(|r| r.project == p));
    assert_eq!((rejected[3].host.as_str(), rejected[3].token), ("", 0));

    // Close: h2 is asked to let go; its hand-over closes it (retried: a
    // no-op); h2's fence then commits nothing; a reopen takes token 3.
    let closing = cat
        .request(p, &Request::Close, late + 5, LEASE)
        .unwrap()
        .unwrap();
    assert_eq!(closing.state, PlacementState::Closing);
    commit(cat, p, Some(fence(&h2)), Some(s(3)), s(4), late + 6).unwrap();
    let closed = cat
        .hand_over(p, &fence(&h2), None, late + 7, LEASE)
        .unwrap();
    assert_eq!(
        (closed.state, closed.host.as_deref(), closed.token),
        (PlacementState::Closed, None, 2)
    );
    assert_eq!(
        cat.hand_over(p, &fence(&h2), None, late + 8, LEASE)
            .unwrap(),
        closed
    );
    let err = commit(cat, p, Some(fence(&h2)), Some(s(4)), s(5), late + 9).unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    assert!(cat.placements().unwrap().is_empty());
    commit(cat, p, None, Some(s(4)), s(5), late + 10).unwrap();
    assert_eq!(open(cat, p, None, late + 11).unwrap().token, 3);

    // A close of a project whose lease ran out closes it at once; of one
    // never opened, does nothing.
    let gone = cat
        .request(p, &Request::Close, late + 11 + LEASE + 1, LEASE)
        .unwrap()
        .unwrap();
    assert_eq!(gone.state, PlacementState::Closed);
    let never = cat.create_project("never", 1).unwrap().id;
    assert_eq!(cat.request(never, &Request::Close, 1, LEASE).unwrap(), None);
}

/// Moves and drains: a move names an enabled target and is cut over by
/// the holder's hand-over in one transaction (new token, new host); a
/// drain asks every project of the host to move, grants at once those
/// whose lease lapsed, and disables the host when the last one is gone; a
/// drained host is never chosen.
pub fn moves_and_drains(cat: &dyn Catalog) {
    for id in ["src", "dst", "spare"] {
        cat.add_host(&host(id, "a", 10)).unwrap();
    }
    cat.set_host_state("spare", HostState::Disabled, 1, LEASE)
        .unwrap();
    let ps: Vec<ProjectId> = (0..3)
        .map(|i| cat.create_project(&format!("m{i}"), 1).unwrap().id)
        .collect();
    let err = cat
        .request(ps[0], &Request::Move { to: "dst".into() }, 5, LEASE)
        .unwrap_err();
    assert!(matches!(err, CatalogError::NotOpen(_)), "{err}");
    for &p in &ps {
        open(cat, p, Some("src"), 10).unwrap();
    }
    let err = cat
        .request(ps[0], &Request::Move { to: "spare".into() }, 11, LEASE)
        .unwrap_err();
    assert!(matches!(err, CatalogError::HostUnavailable { .. }), "{err}");
    let asked = cat
        .request(ps[0], &Request::Move { to: "dst".into() }, 11, LEASE)
        .unwrap()
        .unwrap();
    assert_eq!(
        (asked.host.as_deref(), asked.move_to.as_deref()),
        (Some("src"), Some("dst"))
    );
    // Repeated: the same request.
    let again = cat
        .request(ps[0], &Request::Move { to: "dst".into() }, 12, LEASE)
        .unwrap();
    assert_eq!(again.as_ref(), Some(&asked));
    let cut = cat
        .hand_over(ps[0], &fence(&asked), Some("dst"), 13, LEASE)
        .unwrap();
    assert_eq!(
        (cut.host.as_deref(), cut.token, cut.move_to.as_deref()),
        (Some("dst"), 2, None)
    );
    assert_eq!(
        cat.hand_over(ps[0], &fence(&asked), Some("dst"), 14, LEASE)
            .unwrap(),
        cut,
        "a retried cut-over"
    );
    let err = commit(
        cat,
        ps[0],
        Some(fence(&asked)),
        None,
        SnapshotId::new(1, 1),
        15,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("dst"),
        "the old host commits nothing after cut-over: {err}"
    );

    // ps[0] back on src, ps[1] live, ps[2] lapsed; then drain src.
    let back = cat
        .request(ps[0], &Request::Move { to: "src".into() }, 20, LEASE)
        .unwrap()
        .unwrap();
    cat.hand_over(ps[0], &fence(&back), Some("src"), 21, LEASE)
        .unwrap();
    // All three renewed; ps[2] then closed and reopened under a lease
    // of 1 ms that nobody renews: lapsed when the drain comes.
    cat.heartbeat("src", &HostReport::version("v"), 100, LEASE)
        .unwrap();
    let p2 = cat.placement(ps[2]).unwrap().unwrap();
    cat.hand_over(ps[2], &fence(&p2), None, 101, LEASE).unwrap();
    cat.request(
        ps[2],
        &Request::Open {
            on: Some("src".into()),
        },
        101,
        1,
    )
    .unwrap();
    let now = 200;
    let changed = cat
        .set_host_state("src", HostState::Draining, now, LEASE)
        .unwrap();
    assert_eq!(changed.len(), 3);
    let by: std::collections::HashMap<ProjectId, Placement> =
        changed.into_iter().map(|p| (p.project, p)).collect();
    for p in &ps[..2] {
        assert_eq!(
            by[p].host.as_deref(),
            Some("src"),
            "live ones stay until handed over"
        );
        assert_eq!(by[p].move_to.as_deref(), Some("dst"));
    }
    assert_eq!(
        by[&ps[2]].host.as_deref(),
        Some("dst"),
        "a lapsed one is granted at once"
    );
    assert_eq!(cat.hosts().unwrap()[2].host.state, HostState::Draining);
    let err = open(
        cat,
        cat.create_project("late", 1).unwrap().id,
        Some("src"),
        now,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CatalogError::HostUnavailable { why, .. } if why.contains("draining")),
        "{err}"
    );
    cat.hand_over(ps[0], &fence(&by[&ps[0]]), Some("dst"), now + 1, LEASE)
        .unwrap();
    let state = |id: &str| {
        cat.hosts()
            .unwrap()
            .into_iter()
            .find(|h| h.host.id == id)
            .unwrap()
            .host
            .state
    };
    assert_eq!(state("src"), HostState::Draining, "one project still on it");
    cat.hand_over(ps[1], &fence(&by[&ps[1]]), Some("dst"), now + 2, LEASE)
        .unwrap();
    assert_eq!(state("src"), HostState::Disabled, "drained, then disabled");
    assert_eq!(
        cat.hosts()
            .unwrap()
            .iter()
            .find(|h| h.host.id == "dst")
            .unwrap()
            .open,
        3
    );
    // Draining a host that holds nothing disables it at once.
    cat.set_host_state("spare", HostState::Enabled, now, LEASE)
        .unwrap();
    cat.set_host_state("spare", HostState::Draining, now, LEASE)
        .unwrap();
    assert_eq!(state("spare"), HostState::Disabled);
}

/// What each project really costs: stored bytes of the chunks only it
/// names, and of those it shares; the repository's totals.
pub fn usage_and_stats(cat: &dyn Catalog) {
    use strata_core::{ChunkId, ManifestEntry};
    let c = |n: u8| ChunkId::of(&[n]);
    let chunk = |id, stored_len| crate::NewChunk {
        id,
        generation: 0,
        len: 100,
        stored_len,
    };
    let entry = |id| ManifestEntry {
        id,
        len: 100,
        generation: 0,
    };
    let (p1, p2) = (
        cat.create_project("one", 1).unwrap().id,
        cat.create_project("two", 1).unwrap().id,
    );
    let save = super::begin(cat, i64::MAX);
    cat.commit_stream(
        save,
        &stream(p1, None, SnapshotId::new(10, 1), 200),
        &[entry(c(1)), entry(c(2)), entry(c(1))],
        &[chunk(c(1), 11), chunk(c(2), 22)],
    )
    .unwrap();
    let save = super::begin(cat, i64::MAX);
    cat.commit_stream(
        save,
        &stream(p2, None, SnapshotId::new(11, 1), 200),
        &[entry(c(2)), entry(c(3))],
        &[chunk(c(3), 33)],
    )
    .unwrap();
    let mut usage = cat.usage().unwrap();
    usage.sort_by_key(|u| u.project == p2);
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.project, u.unique_bytes, u.shared_bytes))
            .collect::<Vec<_>>(),
        [(p1, 11, 22), (p2, 33, 22)]
    );
    let s = cat.stats().unwrap();
    assert_eq!((s.chunks, s.bytes, s.stored_bytes), (3, 300, 66));
    assert_eq!((s.waiting_chunks, s.doomed), (0, 0));
}
