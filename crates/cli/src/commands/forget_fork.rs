//! `strata forget-fork PROJECT HEAD [--dry-run]`: remove a fork explicitly.

use strata_core::SnapshotId;
use strata_repo::Repository;

use crate::output::Output;

/// Arguments of `forget-fork`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    pub project: String,
    /// The fork's head snapshot (as `strata streams` shows it).
    pub head: SnapshotId,
    /// Show the plan; delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let r = strata_repo::forget_fork(repo, &a.project, &a.head, a.dry_run)?;
    super::trim::show(&r, out);
    Ok(())
}
