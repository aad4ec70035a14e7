//! What `strata monitor` and `strata serve` show (`docs/fleet.md`): the
//! fleet's hosts, projects past their recovery point, what each project
//! costs, the repository's health and recent refusals, gathered part by
//! part so that a part that fails or hangs (the catalog down, the store
//! timing out) never stops the others or the monitor: it keeps its last
//! good value, marked stale, with the failure named.
//!
//! Each part is fetched on a thread of its own and waited for at most
//! [`MonitorOptions::timeout`]; a part whose fetch is still running is not
//! fetched again until it returns, so a hung backend costs one thread, not
//! one per refresh.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_catalog::PlacementState;
use strata_core::ChunkKey;

use crate::repository::Repository;

/// The repository value under which scrub records its last run.
pub const LAST_SCRUB: &str = "monitor.last-scrub";
/// The repository value under which check records its last run.
pub const LAST_CHECK: &str = "monitor.last-check";

/// Records that `key`'s job ran now with `summary`; a role that may not
/// write repository values (a host's `check`) records nothing.
pub fn record_last(repo: &Repository, key: &str, summary: &str) {
    let v = format!("{} {summary}", repo.clock.now_ms());
    match repo.catalog.set_repo_value(key, Some(&v)) {
        Ok(()) | Err(strata_catalog::CatalogError::PermissionDenied { .. }) => {}
        Err(e) => tracing::warn!("recording {key}: {e}"),
    }
}

/// A recorded last run: when, and its summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    /// When it finished (ms since the epoch).
    pub at_ms: i64,
    /// What it did.
    pub summary: String,
}

fn parse_last(v: Option<String>) -> Option<LastRun> {
    let v = v?;
    let (at, summary) = v.split_once(' ')?;
    Some(LastRun {
        at_ms: at.parse().ok()?,
        summary: summary.to_string(),
    })
}

/// One part of the status: its last good value, when it was fetched, and
/// the current failure (then the value is stale).
#[derive(Debug, Clone, Serialize)]
pub struct Part<T> {
    /// The last value fetched, if any ever was.
    pub value: Option<T>,
    /// When it was fetched (ms since the epoch).
    pub as_of_ms: Option<i64>,
    /// Why the latest fetch failed; `None` when the value is current.
    pub error: Option<String>,
}

impl<T> Default for Part<T> {
    fn default() -> Self {
        Self {
            value: None,
            as_of_ms: None,
            error: None,
        }
    }
}

impl<T> Part<T> {
    /// True when the value shown is not the latest (the part failed).
    pub fn stale(&self) -> bool {
        self.error.is_some()
    }
}

/// A host as the monitor shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// Its id.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// enabled, disabled or draining.
    pub state: String,
    /// `up`, `down` (heartbeats stopped for a lease) or `never` (no agent
    /// heard from).
    pub agent: String,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: Option<i64>,
    /// Projects it holds.
    pub open: u64,
    /// Most projects it may hold.
    pub max_projects: u64,
    /// Bytes in its chunk cache.
    pub cache_bytes: u64,
    /// Its cache's budget.
    pub cache_budget: u64,
    /// Its agent's version.
    pub agent_version: Option<String>,
    /// Its agent's last failure (when, and what).
    pub last_error: Option<LastRun>,
}

/// A project as the monitor shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectView {
    /// Its name.
    pub name: String,
    /// Where it is open, if anywhere.
    pub host: Option<String>,
    /// open, closing or closed.
    pub state: String,
    /// When its newest snapshot was taken (ms since the epoch).
    pub last_save_ms: Option<i64>,
    /// True when it is open and its newest snapshot is older than the
    /// recovery point (or it was never saved).
    pub stale: bool,
}

/// A refusal as the monitor shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalView {
    /// When.
    pub at_ms: i64,
    /// The project.
    pub project: String,
    /// The host that tried (empty: a save holding no lease).
    pub host: String,
    /// The token it held.
    pub token: u64,
    /// Why it was refused.
    pub why: String,
}

/// The fleet and the repository as the catalog has them.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogView {
    /// Every host.
    pub hosts: Vec<HostView>,
    /// Every project.
    pub projects: Vec<ProjectView>,
    /// The repository's totals.
    pub stats: strata_catalog::RepoStats,
    /// The last scrub.
    pub last_scrub: Option<LastRun>,
    /// The last check.
    pub last_check: Option<LastRun>,
    /// The newest refused commits and hand-overs.
    pub refusals: Vec<RefusalView>,
}

/// What one project costs.
#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    /// The project.
    pub project: String,
    /// Stored bytes only it names.
    pub unique_bytes: u64,
    /// Stored bytes it shares with other projects.
    pub shared_bytes: u64,
}

/// The store's answer to a probe.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    /// Where it is.
    pub store: String,
    /// How long a one-object listing took.
    pub latency_ms: u64,
}

/// A TCP probe of a named endpoint (a Garage node, a database server).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeView {
    /// Its name.
    pub name: String,
    /// The address.
    pub address: String,
    /// Whether it accepted a connection.
    pub up: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Everything the monitor shows, at one refresh.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The recovery point projects are held to (ms).
    pub recovery_point_ms: i64,
    /// Hosts, projects, health, refusals.
    pub catalog: Part<CatalogView>,
    /// What each project costs (refreshed less often: it scans every
    /// manifest).
    pub usage: Part<Vec<UsageView>>,
    /// The chunk store.
    pub store: Part<StoreView>,
    /// The configured probes.
    pub probes: Vec<ProbeView>,
}

impl Status {
    /// The parts that failed, as "part: why", for a one-line summary.
    pub fn down(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (name, e) in [
            ("catalog", &self.catalog.error),
            ("usage", &self.usage.error),
            ("store", &self.store.error),
        ] {
            if let Some(e) = e {
                v.push(if e.starts_with(name) {
                    e.clone()
                } else {
                    format!("{name}: {e}")
                });
            }
        }
        for p in &self.probes {
            if let Some(e) = &p.error {
                v.push(format!("{} ({}): {e}", p.name, p.address));
            }
        }
        v
    }
}

/// How the monitor fetches.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// How long a part is waited for at each refresh.
    pub timeout: Duration,
    /// How often the usage part is fetched again.
    pub usage_every: Duration,
    /// Named `host:port` endpoints to probe.
    pub probes: BTreeMap<String, String>,
}

type Fetch<T> = Box<dyn FnOnce() -> Result<T, String> + Send>;

/// A part and its fetch in flight.
struct Slot<T> {
    part: Part<T>,
    inflight: Option<(Receiver<Result<T, String>>, Instant)>,
    fetched: Option<Instant>,
}

impl<T: Send + 'static> Slot<T> {
    fn new() -> Self {
        Self {
            part: Part::default(),
            inflight: None,
            fetched: None,
        }
    }

    /// Starts a fetch unless one runs, then waits for it up to `timeout`.
    fn poll(&mut self, now_ms: i64, timeout: Duration, fetch: impl FnOnce() -> Fetch<T>) {
        if self.inflight.is_none() {
            let (tx, rx) = sync_channel(1);
            let f = fetch();
            let spawned = std::thread::Builder::new()
                .name("strata-monitor".into())
                .spawn(move || {
                    let _ = tx.send(f());
                });
            if let Err(e) = spawned {
                self.part.error = Some(format!("cannot start a fetch: {e}"));
                return;
            }
            self.inflight = Some((rx, Instant::now()));
        }
        let (rx, started) = self.inflight.as_ref().expect("in flight");
        let wait = timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(wait) {
            Ok(Ok(v)) => {
                self.part = Part {
                    value: Some(v),
                    as_of_ms: Some(now_ms),
                    error: None,
                };
                self.inflight = None;
                self.fetched = Some(Instant::now());
            }
            Ok(Err(e)) => {
                self.part.error = Some(e);
                self.inflight = None;
                self.fetched = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {
                self.part.error = Some(format!(
                    "no answer for {} s",
                    started.elapsed().as_secs().max(timeout.as_secs())
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.part.error = Some("the fetch failed without an answer".into());
                self.inflight = None;
            }
        }
    }
}

/// The monitor: refreshes a [`Status`] part by part.
pub struct Monitor {
    repo: Arc<Repository>,
    opts: MonitorOptions,
    catalog: Slot<CatalogView>,
    usage: Slot<Vec<UsageView>>,
    store: Slot<StoreView>,
}

impl Monitor {
    /// A monitor of `repo`.
    pub fn new(repo: Arc<Repository>, opts: MonitorOptions) -> Self {
        Self {
            repo,
            opts,
            catalog: Slot::new(),
            usage: Slot::new(),
            store: Slot::new(),
        }
    }

    /// Fetches every part (waiting at most the timeout for each) and
    /// returns the status, stale parts marked.
    pub fn refresh(&mut self) -> Status {
        let now = self.repo.clock.now_ms();
        let lease = self.repo.config.fleet.lease_ms();
        let rpo = self.repo.config.fleet.recovery_point_ms();
        let t = self.opts.timeout;
        let repo = Arc::clone(&self.repo);
        self.catalog.poll(now, t, || {
            Box::new(move || catalog_view(&repo, now, lease, rpo).map_err(|e| e.to_string()))
        });
        let due = self
            .usage
            .fetched
            .is_none_or(|f| f.elapsed() >= self.opts.usage_every)
            || self.usage.inflight.is_some();
        if due {
            let repo = Arc::clone(&self.repo);
            self.usage.poll(now, t, || {
                Box::new(move || usage_view(&repo).map_err(|e| e.to_string()))
            });
        }
        let repo = Arc::clone(&self.repo);
        self.store.poll(now, t, || {
            Box::new(move || {
                let started = Instant::now();
                repo.store
                    .list_page(None::<&ChunkKey>, 1)
                    .map_err(|e| e.to_string())?;
                Ok(StoreView {
                    store: repo.store.describe(),
                    latency_ms: started.elapsed().as_millis() as u64,
                })
            })
        });
        let probes = self
            .opts
            .probes
            .iter()
            .map(|(name, address)| probe(name, address, t))
            .collect();
        Status {
            at_ms: now,
            recovery_point_ms: rpo,
            catalog: self.catalog.part.clone(),
            usage: self.usage.part.clone(),
            store: self.store.part.clone(),
            probes,
        }
    }
}

fn probe(name: &str, address: &str, timeout: Duration) -> ProbeView {
    let result = (|| -> Result<(), String> {
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve: {e}"))?
            .collect();
        let mut last = "no address".to_string();
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout.min(Duration::from_secs(2))) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("unreachable ({last})"))
    })();
    ProbeView {
        name: name.to_string(),
        address: address.to_string(),
        up: result.is_ok(),
        error: result.err(),
    }
}

fn catalog_view(repo: &Repository, now: i64, lease: i64, rpo: i64) -> crate::Result<CatalogView> {
    let cat = repo.catalog.as_ref();
    let hosts = cat
        .hosts()?
        .into_iter()
        .map(|i| {
            let h = i.host;
            let age = h.heartbeat_ms.map(|t| (now - t).max(0));
            HostView {
                agent: match age {
                    None => "never".into(),
                    Some(a) if a <= lease => "up".into(),
                    Some(_) => "down".into(),
                },
                heartbeat_age_ms: age,
                id: h.id,
                zone: h.zone,
                state: h.state.to_string(),
                open: i.open,
                max_projects: h.max_projects,
                cache_bytes: h.cache_bytes,
                cache_budget: h.cache_budget,
                agent_version: h.agent_version,
                last_error: parse_last(h.last_error),
            }
        })
        .collect();
    let placements: BTreeMap<_, _> = cat
        .placements()?
        .into_iter()
        .map(|p| (p.project, p))
        .collect();
    let summaries = cat.projects()?;
    let names: BTreeMap<_, _> = summaries
        .iter()
        .map(|s| (s.project.id, s.project.name.clone()))
        .collect();
    let projects = summaries
        .into_iter()
        .map(|s| {
            let p = placements.get(&s.project.id);
            let last = s.newest.as_ref().map(strata_core::SnapshotId::ms);
            let open = p.is_some_and(|p| p.state != PlacementState::Closed);
            ProjectView {
                name: s.project.name,
                host: p.and_then(|p| p.host.clone()),
                state: p.map_or("closed".into(), |p| p.state.to_string()),
                last_save_ms: last,
                stale: open && last.is_none_or(|t| now - t > rpo),
            }
        })
        .collect();
    let refusals = cat
        .rejections(20)?
        .into_iter()
        .map(|r| RefusalView {
            at_ms: r.at_ms,
            project: names
                .get(&r.project)
                .cloned()
                .unwrap_or_else(|| r.project.to_string()),
            host: r.host,
            token: r.token,
            why: r.why,
        })
        .collect();
    Ok(CatalogView {
        hosts,
        projects,
        stats: cat.stats()?,
        last_scrub: parse_last(cat.repo_value(LAST_SCRUB)?),
        last_check: parse_last(cat.repo_value(LAST_CHECK)?),
        refusals,
    })
}

fn usage_view(repo: &Repository) -> crate::Result<Vec<UsageView>> {
    let names: BTreeMap<_, _> = repo
        .catalog
        .projects()?
        .into_iter()
        .map(|s| (s.project.id, s.project.name))
        .collect();
    let mut v: Vec<UsageView> = repo
        .catalog
        .usage()?
        .into_iter()
        .map(|u| UsageView {
            project: names
                .get(&u.project)
                .cloned()
                .unwrap_or_else(|| u.project.to_string()),
            unique_bytes: u.unique_bytes,
            shared_bytes: u.shared_bytes,
        })
        .collect();
    v.sort_by(|a, b| a.project.cmp(&b.project));
    Ok(v)
}
