//! `restore`: rebuild a snapshot into a new directory.
//!
//! The chain's engine stages the restore where nobody else can reach it
//! ([`strata_engine::Engine::restore_into`]: for the native engine a
//! private directory beside the target) and puts it at the target only
//! when every stream applied cleanly and is durable, so a failed or
//! interrupted restore never leaves a target that looks complete. Each
//! stream's header and length must match the catalog's record. The restored directory then
//! remembers its project and snapshot in local state, so saving it again is
//! incremental.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use strata_catalog::Project;
use strata_core::{SnapshotId, StreamInfo, apply_plan};
use strata_engine::native::{self, Owners, ReceiveOptions};
use strata_engine::{Engine, RestoreTarget};

use crate::error::{Error, Result};
use crate::progress::{EngineObserver, Progress};
use crate::repository::Repository;
use crate::worktree::{Worktree, WorktreeState};

/// Settings for [`restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The snapshot to restore; default the newest reachable one.
    pub snapshot: Option<SnapshotId>,
    /// Worker threads fetching chunks (default: one per core, at least 4).
    pub workers: Option<usize>,
    /// How recorded owners are applied (default
    /// [`Owners::for_this_process`]: as saved when root, not at all
    /// otherwise). [`Owners::Map`] needs root.
    pub owners: Option<Owners>,
    /// Restoring onto a dataset or subvolume that holds part of the chain
    /// but diverged from it (other snapshots, later writes): roll it back
    /// to its newest snapshot on the chain, discarding what differs.
    /// Without it such a restore is refused and nothing changes.
    pub rollback: bool,
    /// A target that holds an earlier (or the same) snapshot of this
    /// project's chain, as this host restored or saved it and unchanged
    /// since (its walk matches the recorded local state), is caught up in
    /// place: only the missing streams are fetched and applied. The zfs
    /// and btrfs engines always do this; for the native engine a non-empty
    /// target is refused without it.
    pub in_place: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The project.
    pub project: Project,
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// The streams applied, in order (not those the target held already).
    pub streams: Vec<StreamInfo>,
    /// Stream bytes applied.
    pub bytes: u64,
    /// The target directory.
    pub target: PathBuf,
    /// The owners policy applied.
    pub owners: Owners,
    /// Files whose set-id bits were not restored (the policy could not
    /// grant them; see [`Owners::mode`]).
    pub setid_dropped: u64,
    /// Extended attributes not restored (file capabilities; `security.*`
    /// and `trusted.*` without root).
    pub xattrs_skipped: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Restores `project` into `target`, which must not exist or be an empty
/// directory.
///
/// # Errors
/// [`Error::Input`] for an unknown project or snapshot or an occupied
/// target; [`Error::Corrupt`] naming project, stream and chunk or entry for
/// damaged or hostile data; system errors otherwise. The target is untouched
/// on error.
pub fn restore(
    repo: &Repository,
    project: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let owners = opts.owners.unwrap_or_else(Owners::for_this_process);
    if matches!(owners, Owners::Map { .. }) && !native::can_chown() {
        return Err(Error::Input(
            "--owner needs root: only root can give files to another user".into(),
        ));
    }
    let project = repo.project(project)?;
    let streams = repo.catalog.streams(project.id)?;
    let mut plan: Vec<StreamInfo> = apply_plan(&streams, opts.snapshot.as_ref())
        .map_err(|e| match e {
            strata_core::PlanError::UnknownSnapshot(_) | strata_core::PlanError::Empty => {
                Error::Input(format!("project {:?}: {e}", project.name))
            }
            other => Error::corrupt(format!("project {:?}", project.name), other),
        })?
        .into_iter()
        .cloned()
        .collect();
    let snapshot = plan.last().expect("a plan has a stream").end.clone();
    let engine = repo.engine(crate::engines::chain_engine(&project.name, &plan)?);

    let snapshots: Vec<String> = plan.iter().map(|s| s.end.to_string()).collect();
    let held = if opts.in_place {
        local_copy_holds(repo, engine.as_ref(), &project, &plan, target)?
    } else {
        None
    };
    let mut dest = match held {
        Some(held) => engine.catch_up(target, held),
        None => engine.restore_into(target, &snapshots, opts.rollback),
    }
    .map_err(|e| crate::engines::engine_error(format!("restore into {}", target.display()), e))?;
    // What the target holds of the chain already is not applied again.
    let skip = dest.holds().min(plan.len());
    let applied = apply_chain(
        repo,
        &project,
        &plan[skip..],
        dest.as_mut(),
        opts,
        owners,
        progress,
    );
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            dest.abort();
            return Err(vanished_meanwhile(repo, &project, &plan).unwrap_or(e));
        }
    };
    if applied.setid_dropped > 0 {
        progress.warning(
            &target.display().to_string(),
            &format!(
                "{} file(s) restored without their set-user-id/set-group-id bits ({})",
                applied.setid_dropped,
                match owners {
                    Owners::Unprivileged => "only root can restore owners",
                    _ => "never granted to root",
                }
            ),
        );
    }
    if applied.xattrs_skipped > 0 {
        progress.warning(
            &target.display().to_string(),
            &format!(
                "{} privileged extended attribute(s) not restored (file capabilities{})",
                applied.xattrs_skipped,
                if owners == Owners::Unprivileged {
                    ", security.* and trusted.* without root"
                } else {
                    ""
                }
            ),
        );
    }
    let renamed_at = dest.finish().map_err(|e| {
        crate::engines::engine_error(format!("restore into {}", target.display()), e)
    })?;
    let target = fs::canonicalize(target)
        .map_err(|e| Error::system(format!("resolve {}", target.display()), e))?;
    remember(
        repo,
        engine.as_ref(),
        &project,
        &snapshot,
        &target,
        renamed_at,
    )?;
    Ok(RestoreReport {
        project,
        snapshot,
        bytes: plan[skip..].iter().map(|s| s.bytes).sum(),
        streams: plan.split_off(skip),
        target,
        owners,
        setid_dropped: applied.setid_dropped,
        xattrs_skipped: applied.xattrs_skipped,
        elapsed: started.elapsed(),
    })
}

/// What a directory holds as a local copy of a project on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCopy {
    /// Nothing (no directory, or an empty one).
    Absent,
    /// Files strata did not restore or save there on this host.
    Unbound,
    /// A copy of another project (its name).
    Foreign(String),
    /// Bound to the project, but no save of it committed.
    Uncommitted,
    /// The snapshot it holds, changed since (what differs first): it may
    /// hold work no save took.
    Changed {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The first difference.
        what: String,
    },
    /// The snapshot it holds, unchanged since: nothing in it is unsaved.
    Unchanged(SnapshotId),
}

/// What the native directory `target` holds of `project`, as its recorded
/// local state on this host says and a walk of it (no file read) checks.
///
/// # Errors
/// When the local state cannot be read or the walk fails.
pub fn local_copy(repo: &Repository, project: &Project, target: &Path) -> Result<LocalCopy> {
    if fs::read_dir(target).map_or(true, |mut d| d.next().is_none()) {
        return Ok(LocalCopy::Absent);
    }
    let mut wt = Worktree::open(&repo.state_dir, &repo.id, target)?;
    wt.lock(target)?;
    let Some(state) = wt.load()? else {
        return Ok(LocalCopy::Unbound);
    };
    if state.project_id != project.id.to_string() {
        return Ok(LocalCopy::Foreign(state.project_name));
    }
    let Ok(snapshot) = state.snapshot.parse::<SnapshotId>() else {
        return Ok(LocalCopy::Uncommitted);
    };
    let mut index = fs::File::open(wt.index_path())
        .map_err(|e| Error::system(format!("open {}", wt.index_path().display()), e))?;
    let engine = repo.engine(strata_engine::EngineKind::Native);
    let differs = engine
        .differs_from_state(target, &mut index)
        .map_err(|e| crate::engines::engine_error(format!("compare {}", target.display()), e))?;
    Ok(match differs {
        Some(what) => LocalCopy::Changed { snapshot, what },
        None => LocalCopy::Unchanged(snapshot),
    })
}

/// How many streams of `plan` the native local copy at `target` holds,
/// for a catch-up in place: `None` when there is nothing to catch up (no
/// such directory, an empty one, or another engine's, which catches up in
/// its own restore). The copy must be bound to `project` on this host,
/// unchanged since its snapshot, and that snapshot on the plan.
///
/// # Errors
/// [`Error::Input`] naming the target and what disqualifies it.
fn local_copy_holds(
    repo: &Repository,
    engine: &dyn Engine,
    project: &Project,
    plan: &[StreamInfo],
    target: &Path,
) -> Result<Option<usize>> {
    if engine.kind() != strata_engine::EngineKind::Native {
        return Ok(None);
    }
    let why = match local_copy(repo, project, target)? {
        LocalCopy::Absent => return Ok(None),
        LocalCopy::Unbound => "strata did not restore or save it on this host".to_string(),
        LocalCopy::Foreign(name) => format!("it holds project {name:?}"),
        LocalCopy::Uncommitted => "no save of it committed".into(),
        LocalCopy::Changed { snapshot, what } => {
            format!("it changed since snapshot {snapshot} ({what})")
        }
        LocalCopy::Unchanged(snapshot) => match plan.iter().position(|s| s.end == snapshot) {
            Some(at) => return Ok(Some(at + 1)),
            None => format!(
                "it holds snapshot {snapshot} (unchanged), which is not on the chain to {}",
                plan.last().map_or(String::new(), |s| s.end.to_string())
            ),
        },
    };
    Err(Error::Input(format!(
        "{} cannot be caught up in place: {why}",
        target.display()
    )))
}

/// The plan was made from one read of the catalog and its streams are read
/// later: a trim (of a snapshot retention no longer keeps) may delete one
/// in between, and what follows (an empty manifest, a chunk scrub removed)
/// looks like damage. When a stream of the plan is gone, say that instead.
fn vanished_meanwhile(repo: &Repository, project: &Project, plan: &[StreamInfo]) -> Option<Error> {
    let now = repo.catalog.streams(project.id).ok()?;
    let gone = plan.iter().find(|s| !now.iter().any(|n| n.id == s.id))?;
    Some(Error::Retry(format!(
        "project {:?}: stream {} (to {}) was deleted by a trim while this restore ran; nothing was restored, restore again",
        project.name, gone.id, gone.end
    )))
}

/// What applying a chain did, summed over its streams.
#[derive(Debug, Default)]
struct Applied {
    setid_dropped: u64,
    xattrs_skipped: u64,
}

/// How often a stream is received again while the file system says it is
/// busy, and how long between: 10 s in all.
const BUSY_TRIES: u32 = 50;
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn apply_chain(
    repo: &Repository,
    project: &Project,
    plan: &[StreamInfo],
    dest: &mut dyn RestoreTarget,
    opts: &RestoreOptions,
    owners: Owners,
    progress: &dyn Progress,
) -> Result<Applied> {
    let workers = opts.workers.unwrap_or_else(|| {
        strata_chunk::default_workers()
            .max(4)
            .max(repo.store.io_parallelism().unwrap_or(0))
    });
    let total: u64 = plan.iter().map(|s| s.bytes).sum();
    progress.phase("restore", Some(total));
    let mut applied = Applied::default();
    for (i, stream) in plan.iter().enumerate() {
        let more_follow = i + 1 < plan.len();
        let context = format!(
            "project {:?}, stream {} ({})",
            project.name, stream.id, stream.end
        );
        let mut pages = |from: u64| {
            repo.catalog
                .manifest_page(stream.id, from, 1024)
                .map_err(|e| e.to_string())
        };
        // The stream must be the one the catalog describes: same start
        // (the snapshot the tree holds now), same end, same length. A
        // damaged catalog can never restore another tree with exit 0.
        let receive_opts = ReceiveOptions {
            holds: stream.start.as_ref().map(ToString::to_string),
            expect_end: Some(stream.end.to_string()),
            owners,
        };
        let mut read: u64;
        // A file system too busy to start the receive changed nothing: the
        // stream is read again from its chunks, for up to BUSY_TRIES.
        let mut tries = 0;
        let result = loop {
            read = 0;
            let result = strata_chunk::restore_stream(
                repo.store.as_ref(),
                &mut pages,
                workers,
                workers * 2 + 2,
                |r| {
                    dest.receive(
                        &mut CountingReader {
                            inner: r,
                            progress,
                            read: &mut read,
                        },
                        &receive_opts,
                        more_follow,
                        &EngineObserver {
                            progress,
                            count_files: false,
                        },
                    )
                },
            );
            match result {
                Err(strata_engine::EngineError::Busy { .. }) if tries < BUSY_TRIES => {
                    tries += 1;
                    std::thread::sleep(BUSY_WAIT);
                }
                other => break other,
            }
        };
        match result {
            Ok(_) if read != stream.bytes => {
                return Err(Error::corrupt(
                    context,
                    std::io::Error::other(format!(
                        "the stream is {read} bytes long, but the catalog records {}",
                        stream.bytes
                    )),
                ));
            }
            Ok(summary) => {
                applied.setid_dropped += summary.setid_dropped;
                applied.xattrs_skipped += summary.xattrs_skipped;
            }
            Err(strata_engine::EngineError::Stream(io)) => {
                // A chunk that could not be read: name it.
                if let Some(inner) = io
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<strata_chunk::ChunkError>())
                {
                    let text = inner.to_string();
                    return Err(match inner {
                        strata_chunk::ChunkError::Store(
                            strata_store::StoreError::Io { .. }
                            | strata_store::StoreError::Backend { .. },
                        ) => Error::system(context, std::io::Error::other(text)),
                        _ => Error::corrupt(context, std::io::Error::other(text)),
                    });
                }
                return Err(Error::system(context, io));
            }
            // A diverged target is the caller's to resolve (--rollback).
            Err(e) => return Err(crate::engines::engine_error(context, e)),
        }
    }
    Ok(applied)
}

/// Counts the stream bytes read through it and reports them as progress.
struct CountingReader<'a> {
    inner: &'a mut dyn std::io::Read,
    progress: &'a dyn Progress,
    read: &'a mut u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.read += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Records that `target` holds `snapshot` of `project`, with its index;
/// entries changed since `renamed_at` are indexed as racy.
fn remember(
    repo: &Repository,
    engine: &dyn Engine,
    project: &Project,
    snapshot: &SnapshotId,
    target: &Path,
    renamed_at: SystemTime,
) -> Result<()> {
    let mut wt = Worktree::open(&repo.state_dir, &repo.id, target)?;
    wt.lock(target)?;
    let tmp = wt.temp_index_path();
    let file = fs::File::create(&tmp)
        .map_err(|e| Error::system(format!("create {}", tmp.display()), e))?;
    let mut out = BufWriter::new(file);
    let built = engine
        .restored_state(target, snapshot.as_str(), renamed_at, &mut out)
        .and_then(|_| {
            out.into_inner()
                .map(drop)
                .map_err(|e| strata_engine::EngineError::Stream(e.into_error()))
        });
    if let Err(e) = built {
        let _ = fs::remove_file(&tmp);
        return Err(Error::system(format!("index {}", target.display()), e));
    }
    sync_path(&tmp)?;
    wt.record(
        &WorktreeState {
            path: target.to_path_buf(),
            repo_id: repo.id.clone(),
            project_id: project.id.to_string(),
            project_name: project.name.clone(),
            snapshot: snapshot.to_string(),
        },
        &tmp,
    )
}

/// Makes the file or directory at `p` durable (`fsync`).
fn sync_path(p: &Path) -> Result<()> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::system(format!("sync {}", p.display()), e))
}
