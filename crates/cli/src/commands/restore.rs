//! `strata restore PROJECT TARGET`.

use std::path::PathBuf;

use serde_json::json;
use strata_core::SnapshotId;
use strata_repo::{Repository, RestoreOptions};

use crate::output::{Output, human, rate};

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    pub project: String,
    /// Where to restore; must not exist, or be an empty directory.
    pub target: PathBuf,
    /// The snapshot to restore (default: the newest).
    #[arg(long, short)]
    pub snapshot: Option<SnapshotId>,
    /// Chunk fetching threads.
    #[arg(long)]
    pub workers: Option<usize>,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let opts = RestoreOptions {
        snapshot: a.snapshot.clone(),
        workers: a.workers,
    };
    let r = strata_repo::restore(repo, &a.project, &a.target, &opts, out)?;
    out.finish_progress();
    if out.json {
        out.json(json!({
            "event": "restored",
            "project": r.project.name,
            "snapshot": r.snapshot.to_string(),
            "target": r.target,
            "streams": r.streams.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
            "bytes": r.bytes,
            "seconds": r.elapsed.as_secs_f64(),
        }));
    } else {
        out.line(&format!(
            "restored {} snapshot {} into {}\n  {} stream(s), {} in {:.2}s ({})",
            r.project.name,
            r.snapshot,
            r.target.display(),
            r.streams.len(),
            human(r.bytes),
            r.elapsed.as_secs_f64(),
            rate(r.bytes, r.elapsed),
        ));
    }
    Ok(())
}
