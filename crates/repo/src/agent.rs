//! The per-host agent (`strata agent`, `docs/fleet.md`): it heartbeats,
//! and carries out what the catalog asks of its host, with no inbound
//! port: opens projects (catching a local copy up in place, else restoring
//! it), saves them on a schedule, closes them (a last save, then the
//! lease handed back), moves them (a save while the project is served, the
//! target catches up, then a last incremental and the cut-over in one
//! catalog transaction), and on shutdown saves and releases everything.
//!
//! One reconcile pass ([`Agent::tick`]) handles the projects one after the
//! other: actions on one project never overlap, and at most one engine
//! runs at a time (bounded engine work whatever the number of projects).
//! A failed action is reported and tried again on a later pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_catalog::{Fence, HostReport, Placement, PlacementState, Project};
use strata_core::{ProjectId, SnapshotId};
use strata_engine::native::Owners;
use strata_store::CachedStore;

use crate::error::{Error, Result};
use crate::progress::NoProgress;
use crate::repository::Repository;
use crate::restore::{RestoreOptions, restore};
use crate::save::{SaveOptions, save};

/// How often the agent reconciles while a move from or to its host is
/// under way.
const HURRY_TICK: Duration = Duration::from_millis(200);

/// The agent's version, reported with every heartbeat.
pub const AGENT_VERSION: &str = concat!("strata ", env!("CARGO_PKG_VERSION"));

/// Who owns a project's files once restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectOwner {
    /// As the restore does by default: as saved when root, the agent's
    /// user otherwise.
    Default,
    /// Every project's files belong to this uid:gid (root only).
    Fixed {
        /// The owner.
        uid: u32,
        /// The group.
        gid: u32,
    },
    /// Each project's files belong to the local user named like the
    /// project, and that user's primary group (root only): the platform's
    /// one Unix user per project.
    NamedLikeProject,
}

/// How an agent works.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where open projects live: `<dir>/<project name>`.
    pub projects_dir: PathBuf,
    /// How often an open project is saved.
    pub save_every: Duration,
    /// How often the agent heartbeats (default: a third of the lease).
    pub tick: Duration,
    /// How often it reads its placements between heartbeats and
    /// reconciles (default 1 s): how soon it acts on a request.
    pub poll: Duration,
    /// Who owns restored files.
    pub owner: ProjectOwner,
    /// How long a move's source waits for the target to catch up before
    /// it freezes the project anyway.
    pub move_wait: Duration,
    /// The host's chunk cache, when the repository's store reads through
    /// one: its figures go with the heartbeat and the open events.
    pub cache: Option<Arc<CachedStore>>,
}

/// What the agent did, for its log and for tests; as JSON, an object
/// whose `event` names the variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A project is served here now.
    Opened {
        /// Its name.
        project: String,
        /// The snapshot it holds.
        snapshot: Option<SnapshotId>,
        /// Streams applied (0: the local copy was current).
        streams: usize,
        /// Stream bytes fetched and applied.
        bytes: u64,
        /// Whether a local copy was caught up in place.
        in_place: bool,
        /// Chunks fetched from the store (past the host's cache; `None`
        /// without a cache).
        #[serde(rename = "fetched_chunks")]
        fetched: Option<u64>,
        /// How long it took.
        ms: u64,
    },
    /// A move's target brought its local copy up to date while the source
    /// still serves.
    Prepared {
        /// The project.
        project: String,
        /// The snapshot it holds now.
        snapshot: SnapshotId,
    },
    /// A save of a served project begins.
    Saving {
        /// The project.
        project: String,
    },
    /// A project was saved.
    Saved {
        /// The project.
        project: String,
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A project was saved a last time and handed back (closed).
    Closed {
        /// The project.
        project: String,
    },
    /// A move's freeze began: writes from now on are not carried over.
    Frozen {
        /// The project.
        project: String,
        /// When (ms since the epoch).
        at_ms: i64,
    },
    /// A project was handed over to another host.
    #[serde(rename = "moved")]
    MovedOut {
        /// The project.
        project: String,
        /// The target.
        to: String,
        /// From the freeze to the cut-over's commit.
        freeze_ms: u64,
    },
    /// The lease of a project served here is gone (expired, granted
    /// elsewhere): it is no longer served here and nothing of it is saved.
    Lost {
        /// The project.
        project: String,
        /// Why.
        why: String,
    },
    /// An action failed; it is tried again on a later pass.
    Failed {
        /// The project (empty for the heartbeat).
        project: String,
        /// What was tried.
        action: &'static str,
        /// The error.
        error: String,
    },
}

/// A project this host serves.
#[derive(Debug)]
struct Served {
    name: String,
    dir: PathBuf,
    token: u64,
    last_save: Instant,
    /// A move in progress: the snapshot saved for the target to catch up
    /// to, and since when it waits.
    move_base: Option<(SnapshotId, Instant)>,
}

/// An agent on one host.
pub struct Agent<'a> {
    repo: &'a Repository,
    opts: AgentOptions,
    events: &'a (dyn Fn(&Event) + Sync),
    served: BTreeMap<ProjectId, Served>,
    /// Until when the last successful heartbeat renewed the leases.
    renewed_until: i64,
    /// A move from or to this host is under way: reconcile often, so the
    /// freeze ends as soon as both sides are ready.
    hurry: bool,
    /// The last failure, reported with the heartbeat (for the monitor).
    last_error: std::sync::Mutex<Option<String>>,
}

/// A project's directory name: its name, which must be one plain path
/// component (the catalog's names are not trusted to be).
fn dir_name(name: &str) -> Result<&str> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with(".strata")
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(Error::Input(format!(
            "project name {name:?} cannot be a directory name; the agent does not open it"
        )));
    }
    Ok(name)
}

impl<'a> Agent<'a> {
    /// An agent for `repo`'s host ([`Repository::host_id`]).
    pub fn new(
        repo: &'a Repository,
        opts: AgentOptions,
        events: &'a (dyn Fn(&Event) + Sync),
    ) -> Self {
        Self {
            repo,
            opts,
            events,
            served: BTreeMap::new(),
            renewed_until: i64::MIN,
            hurry: false,
            last_error: std::sync::Mutex::new(None),
        }
    }

    fn host(&self) -> &str {
        &self.repo.host_id
    }

    fn lease_ms(&self) -> i64 {
        self.repo.config.fleet.lease_ms()
    }

    /// The heartbeat's report: version and cache.
    fn report(&self) -> HostReport {
        let mut r = HostReport::version(AGENT_VERSION);
        r.last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(c) = &self.opts.cache {
            let s = c.stats();
            (r.cache_bytes, r.cache_budget) = (s.bytes, s.budget);
        }
        r
    }

    fn misses(&self) -> Option<u64> {
        self.opts.cache.as_ref().map(|c| c.stats().misses)
    }

    fn failed(&self, project: &str, action: &'static str, e: &Error) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "{} {action} {}: {e}",
            self.repo.clock.now_ms(),
            if project.is_empty() { "-" } else { project }
        ));
        (self.events)(&Event::Failed {
            project: project.to_string(),
            action,
            error: e.to_string(),
        });
    }

    /// Runs until `stop` is set (SIGTERM), then saves every project it
    /// serves and hands it back.
    ///
    /// # Errors
    /// When the host is not registered (the first heartbeat says so).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        // An unregistered host is a configuration error, not a transient one.
        if let Err(e) = self.repo.catalog.heartbeat(
            self.host(),
            &self.report(),
            self.repo.clock.now_ms(),
            self.lease_ms(),
        ) && matches!(e, strata_catalog::CatalogError::UnknownHost(_))
        {
            return Err(e.into());
        }
        let mut beat: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let due = beat.is_none_or(|b| b.elapsed() >= self.opts.tick);
            if due {
                beat = Some(started);
            }
            self.pass(due);
            let poll = self.opts.poll.min(self.opts.tick);
            let pause = if self.hurry {
                poll.min(HURRY_TICK)
            } else {
                poll
            };
            while started.elapsed() < pause && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50).min(pause));
            }
        }
        self.shutdown();
        Ok(())
    }

    /// One reconcile pass: heartbeat, then every placement naming this
    /// host handled in turn.
    pub fn tick(&mut self) {
        self.pass(true);
    }

    /// A reconcile pass; with `heartbeat`, after a heartbeat (a write that
    /// renews the leases), else after a read of the placements only.
    fn pass(&mut self, heartbeat: bool) {
        let now = self.repo.clock.now_ms();
        let read = if heartbeat {
            self.repo
                .catalog
                .heartbeat(self.host(), &self.report(), now, self.lease_ms())
        } else {
            self.repo.catalog.placements_of(self.host())
        };
        let placements = match read {
            Ok(p) => {
                if heartbeat {
                    self.renewed_until = now + self.lease_ms();
                }
                p
            }
            Err(e) => {
                self.failed("", if heartbeat { "heartbeat" } else { "poll" }, &e.into());
                // Unrenewed, the leases run out on their own: stop
                // serving what they covered once they have.
                if now > self.renewed_until {
                    let lost: Vec<ProjectId> = self.served.keys().copied().collect();
                    for id in lost {
                        self.lose(
                            id,
                            "its lease ran out while the catalog could not be reached",
                        );
                    }
                }
                return;
            }
        };
        self.drop_lost(&placements, now);
        self.hurry = placements.iter().any(|p| p.move_to.is_some());
        for p in &placements {
            let r = self.reconcile(p, now);
            if let Err((action, e)) = r {
                let name = self
                    .served
                    .get(&p.project)
                    .map(|s| s.name.clone())
                    .or_else(|| {
                        self.repo
                            .catalog
                            .project(p.project)
                            .ok()
                            .flatten()
                            .map(|p| p.name)
                    })
                    .unwrap_or_else(|| p.project.to_string());
                self.failed(&name, action, &e);
            }
        }
    }

    /// Stops serving projects whose lease this host no longer holds.
    fn drop_lost(&mut self, placements: &[Placement], now: i64) {
        let lost: Vec<(ProjectId, String)> = self
            .served
            .iter()
            .filter_map(|(id, s)| {
                let p = placements.iter().find(|p| p.project == *id);
                let why = match p {
                    None => "the project was closed or granted elsewhere".to_string(),
                    Some(p) if p.host.as_deref() != Some(self.host()) => format!(
                        "the lease was granted to {}",
                        p.host.as_deref().unwrap_or("nobody")
                    ),
                    Some(p) if p.token != s.token => {
                        format!("the lease was granted again (token {})", p.token)
                    }
                    Some(p) if p.holder(now).is_none() => "its lease ran out".to_string(),
                    Some(_) => return None,
                };
                Some((*id, why))
            })
            .collect();
        for (id, why) in lost {
            self.lose(id, &why);
        }
    }

    fn lose(&mut self, id: ProjectId, why: &str) {
        if let Some(s) = self.served.remove(&id) {
            (self.events)(&Event::Lost {
                project: s.name,
                why: why.to_string(),
            });
        }
    }

    fn reconcile(
        &mut self,
        p: &Placement,
        now: i64,
    ) -> std::result::Result<(), (&'static str, Error)> {
        let mine = p.holder(now) == Some(self.host());
        if !mine {
            // A move coming here: catch the local copy up while the source
            // still serves, so the cut-over applies only the last
            // incremental.
            if p.move_to.as_deref() == Some(self.host()) && p.holder(now).is_some() {
                return self.prepare(p).map_err(|e| ("prepare", e));
            }
            return Ok(());
        }
        match p.state {
            PlacementState::Closing => self.close(p).map_err(|e| ("close", e)),
            PlacementState::Open => {
                if !self.served.contains_key(&p.project) {
                    self.open(p).map_err(|e| ("open", e))?;
                }
                if let Some(to) = p.move_to.clone() {
                    return self.move_out(p, &to).map_err(|e| ("move", e));
                }
                let due = self
                    .served
                    .get(&p.project)
                    .is_some_and(|s| s.last_save.elapsed() >= self.opts.save_every);
                if due {
                    self.save_served(p.project).map_err(|e| ("save", e))?;
                }
                Ok(())
            }
            PlacementState::Closed => Ok(()),
        }
    }

    fn project(&self, id: ProjectId) -> Result<Project> {
        self.repo
            .catalog
            .project(id)?
            .ok_or_else(|| Error::Input(format!("no project has id {id}")))
    }

    fn restore_options(&self, project: &str) -> Result<RestoreOptions> {
        let owners = match self.opts.owner {
            ProjectOwner::Default => None,
            ProjectOwner::Fixed { uid, gid } => Some(Owners::Map { uid, gid }),
            ProjectOwner::NamedLikeProject => {
                let user = uzers::get_user_by_name(project).ok_or_else(|| {
                    Error::Input(format!(
                        "no local user is named {project:?}: the project's files would have no owner"
                    ))
                })?;
                Some(Owners::Map {
                    uid: user.uid(),
                    gid: user.primary_group_id(),
                })
            }
        };
        Ok(RestoreOptions {
            owners,
            in_place: true,
            ..RestoreOptions::default()
        })
    }

    /// Brings the local copy of `project` at `dir` up to its newest
    /// snapshot: in place when it holds an earlier one unchanged, else
    /// restored whole (a copy that cannot be caught up is moved aside
    /// under `.strata-aside/`, never deleted). Returns the snapshot,
    /// streams and bytes applied, and whether it was in place.
    fn bring_up(
        &self,
        project: &Project,
        dir: &Path,
    ) -> Result<(Option<SnapshotId>, usize, u64, bool)> {
        if self.repo.catalog.streams(project.id)?.is_empty() {
            // Never saved: an empty project.
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::system(format!("create {}", dir.display()), e))?;
            return Ok((None, 0, 0, false));
        }
        let opts = self.restore_options(&project.name)?;
        let had_copy = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        let (r, in_place) =
            match restore(self.repo, &project.id.to_string(), dir, &opts, &NoProgress) {
                Ok(r) => (r, had_copy),
                Err(e) if had_copy && e.kind() == crate::ErrorKind::Input => {
                    self.clear_copy(project, dir, &e)?;
                    let opts = RestoreOptions {
                        in_place: false,
                        ..opts
                    };
                    (
                        restore(self.repo, &project.id.to_string(), dir, &opts, &NoProgress)?,
                        false,
                    )
                }
                Err(e) => return Err(e),
            };
        self.repo.catalog.set_copy(
            self.host(),
            project.id,
            Some(&r.snapshot),
            self.repo.clock.now_ms(),
        )?;
        Ok((Some(r.snapshot), r.streams.len(), r.bytes, in_place))
    }

    /// Clears the way for a whole restore of `project` at `dir`, whose copy
    /// could not be caught up (`why`): a copy that holds nothing unsaved
    /// (an unchanged snapshot off the chain, after a rebase) is removed;
    /// any other is set aside under `.strata-aside/`, never deleted, and
    /// said so.
    fn clear_copy(&self, project: &Project, dir: &Path, why: &Error) -> Result<()> {
        match crate::restore::local_copy(self.repo, project, dir)? {
            crate::restore::LocalCopy::Absent => Ok(()),
            crate::restore::LocalCopy::Unchanged(_) => {
                strata_engine::native::remove_tree(dir);
                Ok(())
            }
            _ => {
                let aside = self.opts.projects_dir.join(".strata-aside").join(format!(
                    "{}-{}",
                    project.name,
                    self.repo.clock.now_ms()
                ));
                std::fs::create_dir_all(aside.parent().expect("has a parent"))
                    .and_then(|()| std::fs::rename(dir, &aside))
                    .map_err(|e| {
                        Error::system(format!("set {} aside after: {why}", dir.display()), e)
                    })?;
                (self.events)(&Event::Failed {
                    project: project.name.clone(),
                    action: "catch up",
                    error: format!("{why}; the copy was set aside at {}", aside.display()),
                });
                Ok(())
            }
        }
    }

    fn open(&mut self, p: &Placement) -> Result<()> {
        let started = Instant::now();
        let misses = self.misses();
        let project = self.project(p.project)?;
        let dir = self.opts.projects_dir.join(dir_name(&project.name)?);
        let (snapshot, streams, bytes, in_place) = self.bring_up(&project, &dir)?;
        (self.events)(&Event::Opened {
            project: project.name.clone(),
            snapshot,
            streams,
            bytes,
            in_place,
            fetched: misses.zip(self.misses()).map(|(a, b)| b - a),
            ms: started.elapsed().as_millis() as u64,
        });
        self.served.insert(
            p.project,
            Served {
                name: project.name,
                dir,
                token: p.token,
                last_save: Instant::now(),
                move_base: None,
            },
        );
        Ok(())
    }

    fn prepare(&mut self, p: &Placement) -> Result<()> {
        let project = self.project(p.project)?;
        let Some(newest) = self
            .repo
            .catalog
            .streams(project.id)?
            .iter()
            .map(|s| s.end.clone())
            .max()
        else {
            return Ok(());
        };
        let here = self
            .repo
            .catalog
            .copies(project.id)?
            .into_iter()
            .find(|(h, _)| h == self.host())
            .map(|(_, s)| s);
        if here.as_ref() == Some(&newest) {
            return Ok(());
        }
        let dir = self.opts.projects_dir.join(dir_name(&project.name)?);
        if let (Some(snapshot), ..) = self.bring_up(&project, &dir)? {
            (self.events)(&Event::Prepared {
                project: project.name,
                snapshot,
            });
        }
        Ok(())
    }

    /// Saves a served project under its lease.
    fn save_served(&mut self, id: ProjectId) -> Result<SnapshotId> {
        let s = self.served.get_mut(&id).expect("served");
        (self.events)(&Event::Saving {
            project: s.name.clone(),
        });
        let opts = SaveOptions {
            project: Some(s.name.clone()),
            ..SaveOptions::default()
        };
        let r = save(self.repo, &s.dir, &opts, &NoProgress);
        s.last_save = Instant::now();
        let r = r?;
        let name = s.name.clone();
        self.repo.catalog.set_copy(
            self.host(),
            id,
            Some(&r.stream.end),
            self.repo.clock.now_ms(),
        )?;
        (self.events)(&Event::Saved {
            project: name,
            snapshot: r.stream.end.clone(),
        });
        Ok(r.stream.end)
    }

    fn fence(&self, p: &Placement) -> Fence {
        Fence {
            host: self.host().to_string(),
            token: p.token,
        }
    }

    fn close(&mut self, p: &Placement) -> Result<()> {
        if self.served.contains_key(&p.project) {
            self.save_served(p.project)?;
        }
        self.repo.catalog.hand_over(
            p.project,
            &self.fence(p),
            None,
            self.repo.clock.now_ms(),
            self.lease_ms(),
        )?;
        let name = match self.served.remove(&p.project) {
            Some(s) => s.name,
            None => self.project(p.project)?.name,
        };
        (self.events)(&Event::Closed { project: name });
        Ok(())
    }

    /// A move, one step per pass: save while serving (the target catches
    /// up to it), then, once the target holds that snapshot (or after
    /// `move_wait`), freeze, save the last incremental and cut over.
    fn move_out(&mut self, p: &Placement, to: &str) -> Result<()> {
        let base = self
            .served
            .get(&p.project)
            .and_then(|s| s.move_base.clone());
        let Some((base, since)) = base else {
            let snap = self.save_served(p.project)?;
            if let Some(s) = self.served.get_mut(&p.project) {
                s.move_base = Some((snap, Instant::now()));
            }
            return Ok(());
        };
        let ready = self
            .repo
            .catalog
            .copies(p.project)?
            .iter()
            .any(|(h, s)| h == to && *s >= base);
        if !ready && since.elapsed() < self.opts.move_wait {
            return Ok(());
        }
        let frozen = Instant::now();
        let name = self.served[&p.project].name.clone();
        (self.events)(&Event::Frozen {
            project: name.clone(),
            at_ms: self.repo.clock.now_ms(),
        });
        self.save_served(p.project)?;
        self.repo.catalog.hand_over(
            p.project,
            &self.fence(p),
            Some(to),
            self.repo.clock.now_ms(),
            self.lease_ms(),
        )?;
        self.served.remove(&p.project);
        (self.events)(&Event::MovedOut {
            project: name,
            to: to.to_string(),
            freeze_ms: frozen.elapsed().as_millis() as u64,
        });
        Ok(())
    }

    /// A last save of every served project, each handed back (closed).
    pub fn shutdown(&mut self) {
        let now = self.repo.clock.now_ms();
        let ids: Vec<ProjectId> = self.served.keys().copied().collect();
        for id in ids {
            let placement = self.repo.catalog.placement(id).ok().flatten();
            let Some(p) = placement.filter(|p| p.holder(now) == Some(self.host())) else {
                self.lose(id, "its lease is gone");
                continue;
            };
            if let Err(e) = self.close(&p) {
                let name = self
                    .served
                    .get(&id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                self.failed(&name, "close on shutdown", &e);
                self.served.remove(&id);
            }
        }
    }
}
