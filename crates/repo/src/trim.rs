//! `trim` and `forget-fork`: delete streams no retained snapshot needs.
//! Both build a plan first (`strata_core::trim`), return it, and execute it
//! only when not a dry run. Chunk bytes are never deleted here.

use strata_catalog::Project;
use strata_core::{Retention, SnapshotId, StreamInfo, TrimPlan, forget_fork_plan, trim_plan};

use crate::error::{Error, Result};
use crate::repository::Repository;

/// What a trim planned and (unless a dry run) did.
#[derive(Debug, Clone)]
pub struct TrimReport {
    /// The project.
    pub project: Project,
    /// The policy applied.
    pub policy: Retention,
    /// The plan.
    pub plan: TrimPlan,
    /// The project's streams before the trim.
    pub streams: Vec<StreamInfo>,
    /// True when the plan was carried out.
    pub executed: bool,
}

/// The retention policy of `project`: its own, else the repository's.
///
/// # Errors
/// When the stored policy does not parse.
pub fn retention_of(repo: &Repository, project: &Project) -> Result<Retention> {
    match repo.catalog.retention(project.id)? {
        Some(text) => toml::from_str(&text).map_err(|e| {
            Error::Input(format!(
                "project {:?} has an invalid retention policy: {e}",
                project.name
            ))
        }),
        None => Ok(repo.config.retention),
    }
}

fn plan_error(project: &Project, e: strata_core::PlanError) -> Error {
    match e {
        strata_core::PlanError::UnknownSnapshot(_) => {
            Error::Input(format!("project {:?}: {e}", project.name))
        }
        other => Error::corrupt(format!("project {:?}", project.name), other),
    }
}

fn execute(
    repo: &Repository,
    project: Project,
    policy: Retention,
    streams: Vec<StreamInfo>,
    plan: TrimPlan,
    dry_run: bool,
) -> Result<TrimReport> {
    let executed = !dry_run && !plan.delete.is_empty();
    if executed {
        repo.catalog.delete_streams(project.id, &plan.delete)?;
    }
    Ok(TrimReport {
        project,
        policy,
        plan,
        streams,
        executed,
    })
}

/// Plans and (unless `dry_run`) carries out the trim of `project`.
///
/// # Errors
/// For an unknown project or an impossible catalog.
pub fn trim(repo: &Repository, project: &str, dry_run: bool) -> Result<TrimReport> {
    let project = repo.project(project)?;
    let policy = retention_of(repo, &project)?;
    let streams = repo.catalog.streams(project.id)?;
    let plan = trim_plan(&streams, &policy).map_err(|e| plan_error(&project, e))?;
    execute(repo, project, policy, streams, plan, dry_run)
}

/// Plans and (unless `dry_run`) removes the fork of `project` whose head is
/// `head`.
///
/// # Errors
/// [`Error::Input`] when no fork has that head.
pub fn forget_fork(
    repo: &Repository,
    project: &str,
    head: &SnapshotId,
    dry_run: bool,
) -> Result<TrimReport> {
    let project = repo.project(project)?;
    let streams = repo.catalog.streams(project.id)?;
    let plan = forget_fork_plan(&streams, head).map_err(|e| match e {
        strata_core::PlanError::UnknownSnapshot(s) => Error::Input(format!(
            "project {:?} has no fork whose head is {s} (see `strata streams {}`)",
            project.name, project.name
        )),
        other => plan_error(&project, other),
    })?;
    let policy = retention_of(repo, &project)?;
    execute(repo, project, policy, streams, plan, dry_run)
}
