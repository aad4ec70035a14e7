//! The fleet's records (`docs/fleet.md`): compute hosts, where each
//! project is open, and the project lease with its fencing token.
//!
//! A project is open on at most one host at a time, under a lease the
//! catalog grants: a host id, a token and an expiry. Every grant of the
//! lease to a host (an open, a takeover after expiry, a move's cut-over)
//! takes a token one higher than any before it for that project, and a
//! commit of a stream is accepted only from the save that holds the
//! current token of an unexpired lease ([`crate::Catalog::commit_stream`]),
//! so a host that lost its lease can never commit for that project again.

use std::fmt;
use std::str::FromStr;

use strata_core::ProjectId;

/// Whether a host takes projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostState {
    /// Chosen for projects.
    Enabled,
    /// Never chosen; keeps what it has open.
    Disabled,
    /// Never chosen; its projects are being moved away, after which it is
    /// disabled.
    Draining,
}

impl HostState {
    /// Its name in the catalog and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Enabled => "enabled",
            HostState::Disabled => "disabled",
            HostState::Draining => "draining",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for HostState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" => Ok(HostState::Enabled),
            "disabled" => Ok(HostState::Disabled),
            "draining" => Ok(HostState::Draining),
            other => Err(format!(
                "host state {other:?} is not enabled, disabled or draining"
            )),
        }
    }
}

/// A compute host as registered by `strata hosts add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// Its id: what its agent and its saves call it (`STRATA_HOST_ID`).
    pub id: String,
    /// Where operators reach it (informational; the catalog never connects).
    pub address: String,
    /// Its failure zone.
    pub zone: String,
    /// Whether it takes projects.
    pub state: HostState,
    /// How many projects it may have open at once.
    pub max_projects: u64,
    /// How many bytes of projects it may hold open (their newest full
    /// streams' lengths, summed).
    pub max_bytes: u64,
    /// Its agent's last heartbeat (ms since the epoch), if any.
    pub heartbeat_ms: Option<i64>,
    /// The version its agent reported with that heartbeat.
    pub agent_version: Option<String>,
    /// Bytes in its agent's chunk cache, as last reported.
    pub cache_bytes: u64,
    /// Its chunk cache's budget, as last reported (0: none).
    pub cache_budget: u64,
    /// Its agent's last failure, as last reported (`MS ACTION PROJECT:
    /// ERROR`).
    pub last_error: Option<String>,
    /// When it was added.
    pub added_ms: i64,
}

/// What an agent reports with its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// Its version.
    pub agent_version: String,
    /// Bytes in its chunk cache.
    pub cache_bytes: u64,
    /// Its chunk cache's budget (0: no cache).
    pub cache_budget: u64,
    /// Its last failure since it started (`MS ACTION PROJECT: ERROR`).
    pub last_error: Option<String>,
}

impl HostReport {
    /// A report of `agent_version` with no cache.
    pub fn version(agent_version: &str) -> Self {
        Self {
            agent_version: agent_version.to_string(),
            cache_bytes: 0,
            cache_budget: 0,
            last_error: None,
        }
    }
}

impl HostRecord {
    /// An enabled host `id` in `zone` taking up to `max_projects` projects
    /// (no byte limit, no address), added at `added_ms`, its agent not yet
    /// heard from.
    pub fn new(id: &str, zone: &str, max_projects: u64, added_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            address: String::new(),
            zone: zone.to_string(),
            state: HostState::Enabled,
            max_projects,
            max_bytes: 0,
            heartbeat_ms: None,
            agent_version: None,
            cache_bytes: 0,
            cache_budget: 0,
            last_error: None,
            added_ms,
        }
    }
}

/// A host with what it has open, for listings and the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host.
    pub host: HostRecord,
    /// Projects it holds the lease of (open or closing, expired or not).
    pub open: u64,
    /// Their bytes, as counted against [`HostRecord::max_bytes`].
    pub open_bytes: u64,
    /// Projects it has a local copy of.
    pub copies: u64,
}

/// Where a project stands in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlacementState {
    /// Open on its host, which serves and saves it.
    Open,
    /// Its host is asked to save it a last time and let it go.
    Closing,
    /// Open nowhere; its last saved snapshot is what it holds.
    Closed,
}

impl PlacementState {
    /// Its name in the catalog and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementState::Open => "open",
            PlacementState::Closing => "closing",
            PlacementState::Closed => "closed",
        }
    }
}

impl fmt::Display for PlacementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for PlacementState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(PlacementState::Open),
            "closing" => Ok(PlacementState::Closing),
            "closed" => Ok(PlacementState::Closed),
            other => Err(format!(
                "placement state {other:?} is not open, closing or closed"
            )),
        }
    }
}

/// A project's placement and lease. One per project that was ever
/// opened; a closed one keeps its token, so tokens only grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The project.
    pub project: ProjectId,
    /// Its state.
    pub state: PlacementState,
    /// The host holding the lease (`None` when closed).
    pub host: Option<String>,
    /// The fencing token of the newest grant of the lease.
    pub token: u64,
    /// When the lease was granted to `host` (ms since the epoch).
    pub since_ms: i64,
    /// When the lease runs out unless its host renews it.
    pub expires_ms: i64,
    /// The host a requested move goes to.
    pub move_to: Option<String>,
    /// The host that held the lease before this one (whose zone and local
    /// copy placement prefers).
    pub last_host: Option<String>,
}

impl Placement {
    /// The host holding a lease that has not run out at `now_ms`.
    pub fn holder(&self, now_ms: i64) -> Option<&str> {
        match self.state {
            PlacementState::Closed => None,
            _ if self.expires_ms < now_ms => None,
            _ => self.host.as_deref(),
        }
    }
}

/// What a save holds of a project's lease: the host and the token it was
/// granted. Checked by the commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The host.
    pub host: String,
    /// The token.
    pub token: u64,
}

/// What an operator (or the platform) asks of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Open it: on the host named, else on one placement chooses.
    Open {
        /// The host asked for.
        on: Option<String>,
    },
    /// Close it: its host saves it and lets it go. A project whose lease
    /// ran out is closed at once (nobody holds anything to save).
    Close,
    /// Move it to a host: its host hands it over (`docs/fleet.md`). A
    /// project whose lease ran out is granted to that host at once.
    Move {
        /// The target.
        to: String,
    },
}

/// A commit the fencing token refused, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When (the committing host's clock).
    pub at_ms: i64,
    /// The project.
    pub project: ProjectId,
    /// The host that tried (empty for a save that held no lease).
    pub host: String,
    /// The token it held (0 for none).
    pub token: u64,
    /// Why it was refused.
    pub why: String,
}

/// What one project really costs in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectUsage {
    /// The project.
    pub project: ProjectId,
    /// Stored bytes of chunks only this project's streams name.
    pub unique_bytes: u64,
    /// Stored bytes of chunks other projects' streams name too.
    pub shared_bytes: u64,
}

/// The repository's totals, for the monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepoStats {
    /// Chunk rows.
    pub chunks: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
    /// Chunk rows no stream names, waiting out scrub's grace period.
    pub waiting_chunks: u64,
    /// Their stored bytes.
    pub waiting_bytes: u64,
    /// Objects a scrub doomed and has not deleted yet.
    pub doomed: u64,
    /// Their stored bytes.
    pub doomed_bytes: u64,
}
