//! `save`: a full or incremental snapshot stream of a directory.
//!
//! Protocol (`docs/gc.md`): record the save in the catalog (renewed while
//! it runs) → walk and stream (engine thread) → chunk, record intents in
//! batches, dedupe, upload (pipeline) → flush the store → one catalog
//! transaction commits stream, manifest and new chunks and ends the save →
//! the directory's local state records the new snapshot and its index. A
//! failure before the commit leaves the catalog's streams as they were.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_catalog::{Fence, NewChunk, PlacementState, Project, SaveRecord};
use strata_chunk::pipe::pipe;
use strata_chunk::save_stream;
use strata_core::{SaveId, SnapshotId, StreamId, StreamInfo};
use strata_engine::index::IndexReader;
use strata_engine::native::SendSummary;
use strata_engine::{Engine, EngineKind, SendJob, StreamHeader};

use crate::error::{Error, Result};
use crate::liveness::{SAVE_TTL, process_start, with_heartbeat};
use crate::progress::{EngineObserver, Progress};
use crate::repository::Repository;
use crate::worktree::{Worktree, WorktreeState};

/// Settings for [`save`].
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// The project to save into; default: the one this directory was saved
    /// or restored as, else a new project named after the directory.
    pub project: Option<String>,
    /// Worker threads for compression and upload (default: one per core).
    pub workers: Option<usize>,
    /// The host recorded with the stream (default: [`Repository::host_id`]).
    pub host: Option<String>,
    /// Scan the tree's size alongside the save so progress has a total
    /// (and an ETA); costs a second walk of metadata.
    pub estimate_total: bool,
    /// The engine; default: detected from what holds the directory
    /// ([`strata_engine::detect`]: `zfs` for a ZFS dataset's mount point,
    /// else `native`), and it must be the project's (its newest stream's).
    pub engine: Option<EngineKind>,
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The project.
    pub project: Project,
    /// True when this save created the project.
    pub created_project: bool,
    /// True when a full stream was written because the chain since the
    /// last full grew too long or too heavy (`[rebase]` in `strata.toml`).
    pub rebased: bool,
    /// The committed stream.
    pub stream: StreamInfo,
    /// What the engine sent.
    pub sent: SendSummary,
    /// Wall time.
    pub elapsed: Duration,
}

/// This host's name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who runs a save, as its catalog record names it: the repository's host
/// id ([`Repository::host_id`]), this machine's boot id and pid namespace
/// (`ID boot:BOOT pidns:INODE`), so scrub judges a save's process dead only
/// from the same host, boot and namespace (containers and cloned machines
/// may share a host name; simulated hosts on one machine have their own
/// ids).
pub fn save_host(repo: &Repository) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut host = repo.host_id.clone();
    // The boot id tells apart machines that share a host id (the
    // initial pid namespace has the same inode everywhere).
    if let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        host.push_str(&format!(" boot:{}", boot.trim()));
    }
    if let Ok(m) = std::fs::metadata("/proc/self/ns/pid") {
        host.push_str(&format!(" pidns:{}", m.ino()));
    }
    host
}

/// The project lease a save on this host holds (`docs/fleet.md`): the
/// current grant when this host ([`Repository::host_id`]) holds it, run out
/// or not (the commit judges that); none for a project open nowhere. A
/// project open on another host is not saved here: its commit would be
/// refused.
fn lease_held(repo: &Repository, project: &Project) -> Result<Option<Fence>> {
    let Some(p) = repo.catalog.placement(project.id)? else {
        return Ok(None);
    };
    if p.state != PlacementState::Closed && p.host.as_deref() == Some(repo.host_id.as_str()) {
        return Ok(Some(Fence {
            host: repo.host_id.clone(),
            token: p.token,
        }));
    }
    match p.holder(repo.clock.now_ms()) {
        Some(h) => Err(Error::Input(format!(
            "project {} is open on host {h}: save it there, or close it (strata close {}) first",
            project.name, project.name
        ))),
        None => Ok(None),
    }
}

/// Saves the directory `dir` into `repo`.
///
/// # Errors
/// [`Error::Input`] for a missing directory, a project name already taken
/// by another directory, or a save of the same directory already running;
/// system errors naming the file, chunk or catalog call that failed.
pub fn save(
    repo: &Repository,
    dir: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<SaveReport> {
    let started = Instant::now();
    let dir: PathBuf = std::fs::canonicalize(dir)
        .map_err(|e| Error::Input(format!("cannot save {}: {e}", dir.display())))?;
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "cannot save {}: not a directory",
            dir.display()
        )));
    }
    let mut wt = Worktree::open(&repo.state_dir, &repo.id, &dir)?;
    wt.lock(&dir)?;
    let state = wt.load()?;
    let (project, created_project) = pick_project(repo, &dir, state.as_ref(), opts)?;
    if created_project {
        // Bound at once: a first save killed before its commit leaves the
        // directory holding the project it created, not a name it cannot
        // save under again.
        wt.bind(&WorktreeState {
            path: dir.clone(),
            repo_id: repo.id.clone(),
            project_id: project.id.to_string(),
            project_name: project.name.clone(),
            snapshot: String::new(),
        })?;
    }

    let fence = lease_held(repo, &project)?;

    // The base: the snapshot the directory's index describes (its header
    // names it; the index rename is what records a save or restore, so a
    // kill between writing the index and state.toml cannot pair an index
    // with another snapshot), if the catalog still has it for this project.
    let streams = repo.catalog.streams(project.id)?;
    let kind = pick_engine(&dir, &project, &streams, opts)?;
    let engine = repo.engine(kind);
    let same_project = state
        .as_ref()
        .is_some_and(|s| s.project_id == project.id.to_string());
    let mut base: Option<SnapshotId> = None;
    let open_state = || {
        File::open(wt.index_path())
            .map_err(|e| Error::system(format!("open {}", wt.index_path().display()), e))
    };
    if same_project && wt.index_path().exists() {
        // The local state's header names the snapshot it describes.
        match IndexReader::new(BufReader::new(open_state()?)) {
            // Only a base a restore can reach: an incremental on anything
            // else would be a save that returned success and never restores.
            Ok(r) => match r.snapshot().parse::<SnapshotId>() {
                Ok(snap) => match strata_core::apply_plan(&streams, Some(&snap)) {
                    // A base of another engine (the directory was saved
                    // with it before) or one the engine lost (a snapshot
                    // destroyed) cannot be built on.
                    Ok(plan) if plan.last().is_some_and(|s| s.engine != kind.as_str()) => {
                        progress.warning(
                            &dir.display().to_string(),
                            &format!("this directory holds snapshot {snap}, saved by another engine than {kind}; saving a full stream"),
                        )
                    }
                    Ok(_) if !engine.base_usable(&dir, snap.as_str()).map_err(|e| crate::engines::engine_error(format!("saving {}", dir.display()), e))? => {
                        progress.warning(
                            &dir.display().to_string(),
                            &format!("snapshot {snap}, which this directory held, is gone from it; saving a full stream"),
                        )
                    }
                    Ok(_) => base = Some(snap),
                    Err(e) => progress.warning(
                        &dir.display().to_string(),
                        &format!(
                            "this directory holds snapshot {snap}, which cannot be built on ({e}); saving a full stream"
                        ),
                    ),
                },
                Err(_) => progress.warning(
                    &dir.display().to_string(),
                    "the local index names no valid snapshot; saving a full stream",
                ),
            },
            Err(e) => progress.warning(
                &dir.display().to_string(),
                &format!("local index unusable ({e}); saving a full stream"),
            ),
        }
    }
    // The lineage parent is what the directory held, even when this save
    // writes a full stream.
    let parent = base.clone();
    let held_before = parent.clone();
    let rebased = base
        .as_ref()
        .is_some_and(|b| needs_rebase(repo, &streams, b));
    let base = if rebased { None } else { base };
    let base_state = match &base {
        Some(_) => Some(BufReader::with_capacity(1 << 16, open_state()?)),
        None => None,
    };

    let end = SnapshotId::generate(repo.clock.as_ref());
    let header = StreamHeader {
        start: base.as_ref().map(ToString::to_string),
        end: end.to_string(),
        created_ms: repo.clock.now_ms(),
    };
    let index_tmp = wt.temp_index_path();
    // The save's record: its intents live while it renews them
    // (docs/gc.md); a killed save's record expires, or scrub finds its
    // process gone.
    let save_id = SaveId::random();
    let pid = std::process::id();
    let now = repo.clock.now_ms();
    let ttl_ms = SAVE_TTL.as_millis() as i64;
    repo.catalog.begin_save(&SaveRecord {
        id: save_id,
        host: save_host(repo),
        pid,
        process_start: process_start(pid).unwrap_or(0),
        started_ms: now,
        expires_ms: now + ttl_ms,
        fence,
    })?;
    let renew = || {
        if let Err(e) = repo
            .catalog
            .renew_save(save_id, repo.clock.now_ms() + ttl_ms)
        {
            tracing::warn!("renewing save {save_id}: {e}");
        }
    };
    let result = with_heartbeat(SAVE_TTL / 3, renew, || {
        let (sent, stored) = run_pipeline(
            repo,
            engine.as_ref(),
            save_id,
            &dir,
            base_state,
            &header,
            &index_tmp,
            opts,
            progress,
        )?;
        repo.store.flush()?;
        let new_bytes = stored.new_chunks.iter().map(|c| u64::from(c.1)).sum();
        let new_stored_bytes = stored.new_chunks.iter().map(|c| u64::from(c.2)).sum();
        let stream = StreamInfo {
            id: StreamId::random(),
            project: project.id,
            start: base,
            end: end.clone(),
            parent,
            engine: engine.kind().as_str().into(),
            bytes: stored.bytes,
            chunks: stored.manifest.len() as u64,
            new_bytes,
            new_stored_bytes,
            created_ms: repo.clock.now_ms(),
            host: opts.host.clone().unwrap_or_else(|| repo.host_id.clone()),
        };
        let new_chunks: Vec<NewChunk> = stored
            .new_chunks
            .iter()
            .map(|&(key, len, stored_len)| NewChunk {
                id: key.id,
                generation: key.generation,
                len,
                stored_len,
            })
            .collect();
        repo.catalog
            .commit_stream(save_id, &stream, &stored.manifest, &new_chunks)
            .map_err(|e| match e {
                // Named for people: the fencing token refused it.
                e @ strata_catalog::CatalogError::Fenced { .. } => {
                    Error::Input(e.naming(project.id, &project.name))
                }
                e => e.into(),
            })?;
        Ok::<_, Error>((sent, stream))
    });
    let (sent, stream) = match result {
        Ok(x) => x,
        Err(e) => {
            engine.abandoned(&dir, end.as_str());
            let _ = std::fs::remove_file(&index_tmp);
            // Its intents protect nothing any more; what it uploaded is
            // garbage for scrub.
            let _ = repo.catalog.end_save(save_id);
            return Err(e);
        }
    };
    wt.record(
        &WorktreeState {
            path: dir.clone(),
            repo_id: repo.id.clone(),
            project_id: project.id.to_string(),
            project_name: project.name.clone(),
            snapshot: end.to_string(),
        },
        &index_tmp,
    )?;
    // Committed and recorded: the engine may now let go of the old base.
    if let Err(e) = engine.committed(
        &dir,
        end.as_str(),
        held_before.as_ref().map(SnapshotId::as_str),
    ) {
        progress.warning(
            &dir.display().to_string(),
            &format!("saved, but keeping the engine's snapshots in order failed: {e}"),
        );
    }
    Ok(SaveReport {
        project,
        created_project,
        rebased,
        stream,
        sent,
        elapsed: started.elapsed(),
    })
}

/// The engine of this save: the one asked for, else the one detected from
/// what holds `dir`; it must be the project's (its newest stream's), so
/// that a dataset that is not mounted is never saved as an empty
/// directory.
fn pick_engine(
    dir: &Path,
    project: &Project,
    streams: &[StreamInfo],
    opts: &SaveOptions,
) -> Result<EngineKind> {
    let kind = match opts.engine {
        Some(k) => k,
        None => strata_engine::detect(dir)
            .map_err(|e| crate::engines::engine_error(format!("saving {}", dir.display()), e))?,
    };
    let newest = streams.iter().max_by_key(|s| s.created_ms);
    if opts.engine.is_none()
        && let Some(s) = newest
        && s.engine != kind.as_str()
    {
        return Err(Error::Input(format!(
            "project {:?} is saved with the {} engine, but {} is a {kind} project here ({}); pass --engine {kind} to save it with {kind} from now on",
            project.name,
            s.engine,
            dir.display(),
            match kind {
                EngineKind::Native => "neither a ZFS dataset's mount point nor a btrfs subvolume",
                EngineKind::Zfs => "a ZFS dataset's mount point",
                EngineKind::Btrfs => "a btrfs subvolume",
            }
        )));
    }
    Ok(kind)
}

/// True when the chain that rebuilds `base` has, since its last full
/// stream, as many incrementals as `[rebase] max-incrementals` allows or
/// incrementals weighing `max-incremental-ratio` of that full stream.
fn needs_rebase(repo: &Repository, streams: &[StreamInfo], base: &SnapshotId) -> bool {
    let Ok(plan) = strata_core::apply_plan(streams, Some(base)) else {
        return false;
    };
    let Some(full_at) = plan.iter().rposition(|s| s.start.is_none()) else {
        return false;
    };
    let full = plan[full_at];
    let incrementals = &plan[full_at + 1..];
    let inc_bytes: u64 = incrementals.iter().map(|s| s.bytes).sum();
    let cfg = repo.config.rebase;
    incrementals.len() as u64 >= u64::from(cfg.max_incrementals)
        || inc_bytes as f64 >= cfg.max_incremental_ratio * full.bytes as f64
}

fn pick_project(
    repo: &Repository,
    dir: &Path,
    state: Option<&WorktreeState>,
    opts: &SaveOptions,
) -> Result<(Project, bool)> {
    let recorded = match state {
        Some(s) => match s.project_id.parse() {
            Ok(id) => repo.catalog.project(id)?,
            Err(_) => None,
        },
        None => None,
    };
    match (&opts.project, recorded) {
        (None, Some(p)) => Ok((p, false)),
        (Some(name), Some(p)) if *name == p.name || *name == p.id.to_string() => Ok((p, false)),
        (Some(name), Some(p)) => Err(Error::Input(format!(
            "{} holds project {:?}; it cannot be saved as {name:?} (restore {name:?} elsewhere, or save another directory)",
            dir.display(),
            p.name
        ))),
        (Some(name), None) => match repo.catalog.project_by_name(name)? {
            Some(p) => Ok((p, false)),
            None => Ok((
                repo.catalog.create_project(name, repo.clock.now_ms())?,
                true,
            )),
        },
        (None, None) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "root".into());
            if repo.catalog.project_by_name(&name)?.is_some() {
                return Err(Error::Input(format!(
                    "a project named {name:?} already exists and {} is not known to hold it; \
                     pass --project {name} to save this directory into it, or --project OTHER-NAME",
                    dir.display()
                )));
            }
            Ok((
                repo.catalog.create_project(&name, repo.clock.now_ms())?,
                true,
            ))
        }
    }
}

type Stored = strata_chunk::SaveOutput;

#[allow(clippy::too_many_arguments)]
fn run_pipeline(
    repo: &Repository,
    engine: &dyn Engine,
    save: SaveId,
    dir: &Path,
    base: Option<BufReader<File>>,
    header: &StreamHeader,
    index_tmp: &Path,
    opts: &SaveOptions,
    progress: &dyn Progress,
) -> Result<(SendSummary, Stored)> {
    let index_file = File::create(index_tmp)
        .map_err(|e| Error::system(format!("create {}", index_tmp.display()), e))?;
    let workers = opts.workers.unwrap_or_else(|| {
        strata_chunk::default_workers().max(repo.store.io_parallelism().unwrap_or(0))
    });
    let cfg = repo.config.chunker();
    progress.phase("save", None);
    std::thread::scope(|s| {
        if opts.estimate_total {
            s.spawn(move || progress.total(crate::progress::tree_bytes(dir)));
        }
        let (mut writer, reader) = pipe(4);
        let observer = EngineObserver {
            progress,
            count_files: true,
        };
        let sender = s.spawn(move || {
            let obs = observer;
            let mut base = base;
            let mut state = BufWriter::with_capacity(1 << 16, index_file);
            let job = SendJob {
                source: dir,
                header,
                base: base.as_mut().map(|b| b as &mut (dyn std::io::Read + Send)),
                out: &mut writer,
                state: &mut state,
            };
            let sent = engine.send(job, &obs)?;
            // The pipe's end tells the pipeline the stream is complete.
            drop(writer);
            state
                .into_inner()
                .map_err(|e| strata_engine::EngineError::Stream(e.into_error()))?;
            Ok::<_, strata_engine::EngineError>(sent)
        });
        let claim = |ids: &[strata_core::ChunkId]| {
            repo.catalog
                .claim_chunks(save, ids)
                .map_err(|e| e.to_string())
        };
        let stored = save_stream(reader, repo.store.as_ref(), &claim, &cfg, workers);
        let sent = sender.join().expect("the send thread does not panic");
        // The engine's error explains a pipeline that saw the pipe close.
        let sent = sent.map_err(|e| {
            if e.is_bad_input() {
                Error::corrupt(format!("saving {}", dir.display()), e)
            } else {
                Error::system(format!("saving {}", dir.display()), e)
            }
        })?;
        let stored = stored
            .map_err(|e| Error::system(format!("storing the stream of {}", dir.display()), e))?;
        Ok((sent, stored))
    })
}
