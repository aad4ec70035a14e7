//! `strata agent`: the per-host agent (`docs/fleet.md`). Runs until SIGTERM
//! or SIGINT, then saves every project it serves and hands it back.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use strata_repo::Repository;
use strata_repo::agent::{Agent, AgentOptions, Event, ProjectOwner};

use crate::output::Output;

/// Arguments of `agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where this host keeps open projects: DIR/<project name>.
    #[arg(long, value_name = "DIR")]
    pub projects_dir: std::path::PathBuf,
    /// Seconds between saves of an open project.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub save_every: u64,
    /// Milliseconds between heartbeats (default: a third of the lease).
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Milliseconds between reads of this host's placements (each followed
    /// by a reconcile pass): how soon a request is acted on.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// Seconds a move's source waits for the target to catch up before it
    /// freezes the project anyway.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub move_wait: u64,
    /// Give every restored project to UID:GID (root only).
    #[arg(long, value_name = "UID:GID", value_parser = crate::commands::restore::parse_owner, conflicts_with = "owner_named_like_project")]
    pub owner: Option<(u32, u32)>,
    /// Give each restored project to the local user named like the
    /// project, and that user's group (root only).
    #[arg(long)]
    pub owner_named_like_project: bool,
    /// This host's chunk cache (default: .strata-cache in the projects
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// The chunk cache's budget: a number with an optional K, M, G or T
    /// (powers of 1024); 0 turns the cache off.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = crate::commands::hosts::parse_size)]
    pub cache_bytes: u64,
}

fn print(out: &Output, e: &Event) {
    if out.json {
        match serde_json::to_value(e) {
            Ok(v) => out.json(v),
            Err(err) => out.line(&format!("cannot print an event as JSON: {err}")),
        }
        return;
    }
    out.line(&match e {
        Event::Opened {
            project,
            snapshot,
            streams,
            bytes,
            in_place,
            fetched,
            ms,
        } => format!(
            "opened {project} at {} ({streams} stream(s), {bytes} bytes applied{}{}, {ms} ms)",
            snapshot
                .as_ref()
                .map_or("no snapshot yet".into(), ToString::to_string),
            if *in_place {
                ", caught up in place"
            } else {
                ""
            },
            fetched.map_or(String::new(), |n| format!(", {n} chunk(s) fetched"))
        ),
        Event::Prepared { project, snapshot } => {
            format!("prepared {project} at {snapshot} for its move here")
        }
        Event::Saving { project } => format!("saving {project}"),
        Event::Saved { project, snapshot } => format!("saved {project}: {snapshot}"),
        Event::Closed { project } => format!("closed {project}"),
        Event::Frozen { project, .. } => format!("froze {project} for its move"),
        Event::MovedOut {
            project,
            to,
            freeze_ms,
        } => {
            format!("moved {project} to {to} (frozen {freeze_ms} ms)")
        }
        Event::Lost { project, why } => format!("stopped serving {project}: {why}"),
        Event::Failed {
            project,
            action,
            error,
        } => format!("{action} {project} failed: {error}"),
    });
}

pub fn run(mut repo: Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let lease = repo.config.fleet.lease_ms() as u64;
    let mut opts = AgentOptions {
        projects_dir: a.projects_dir.clone(),
        save_every: Duration::from_secs(a.save_every),
        tick: Duration::from_millis(a.tick_ms.unwrap_or(lease / 3).max(10)),
        poll: Duration::from_millis(a.poll_ms.max(10)),
        owner: match (a.owner, a.owner_named_like_project) {
            (Some((uid, gid)), _) => ProjectOwner::Fixed { uid, gid },
            (None, true) => ProjectOwner::NamedLikeProject,
            (None, false) => ProjectOwner::Default,
        },
        move_wait: Duration::from_secs(a.move_wait),
        cache: None,
    };
    std::fs::create_dir_all(&opts.projects_dir)?;
    if a.cache_bytes > 0 {
        let dir = a
            .cache_dir
            .clone()
            .unwrap_or_else(|| opts.projects_dir.join(".strata-cache"));
        let inner = std::mem::replace(&mut repo.store, Box::new(strata_store::MemoryStore::new()));
        let cache = Arc::new(strata_store::CachedStore::new(inner, &dir, a.cache_bytes)?);
        repo.store = Box::new(Arc::clone(&cache));
        opts.cache = Some(cache);
    }
    let repo = &repo;
    let events = |e: &Event| print(out, e);
    let mut agent = Agent::new(repo, opts, &events);
    agent.run(&stop)?;
    Ok(())
}
