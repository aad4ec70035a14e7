//! `strata restore PROJECT TARGET`.

use std::path::PathBuf;

use serde_json::json;
use strata_core::SnapshotId;
use strata_repo::{Owners, Repository, RestoreOptions};

use crate::output::{Output, human, rate};

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    pub project: String,
    /// Where to restore; must not exist, or be an empty directory (for a
    /// ZFS project: a path under a dataset's mount point, or a dataset
    /// that holds part of the chain; for a btrfs project: a path on a
    /// btrfs file system, or a subvolume that holds part of the chain).
    pub target: PathBuf,
    /// The snapshot to restore (default: the newest).
    #[arg(long, short)]
    pub snapshot: Option<SnapshotId>,
    /// Chunk fetching threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Give every restored entry to this numeric owner and group (root
    /// only): how a host hands a project to its local project user. Without
    /// it, root restores the saved numeric owners and other users own what
    /// they restore. Set-id bits are never restored onto root-owned files.
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,
    /// When TARGET is a ZFS dataset or btrfs subvolume holding part of the
    /// chain that has
    /// diverged from it (snapshots the chain does not know, writes after
    /// its snapshot): roll it back to its newest snapshot on the chain,
    /// discarding what differs. Without it such a restore changes nothing.
    #[arg(long)]
    pub rollback: bool,
    /// When TARGET holds an earlier snapshot of the project, restored or
    /// saved there on this host and unchanged since: apply only the
    /// missing streams onto it (nothing when it is current). A copy that
    /// changed since is refused and left as it is.
    #[arg(long)]
    pub in_place: bool,
}

pub fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not UID:GID (two numbers, like 1000:1000)");
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let opts = RestoreOptions {
        snapshot: a.snapshot.clone(),
        workers: a.workers,
        owners: a.owner.map(|(uid, gid)| Owners::Map { uid, gid }),
        rollback: a.rollback,
        in_place: a.in_place,
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
