//! `trim` and `forget-fork`: delete streams no retained snapshot needs.
//! Both build a plan first (`strata_core::trim`), return it, and execute it
//! only when not a dry run. The deleting transaction checks the plan still
//! holds (no stream committed since loses its start) and the trim plans
//! again if not. Chunk bytes are never deleted here.

use strata_catalog::{CatalogError, Project};
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

/// How often a trim plans again when a stream committed after its plan
/// makes the deleting transaction refuse it.
const REPLANS: u32 = 8;

/// Reads the project's streams, plans with `plan`, and (unless `dry_run`)
/// deletes what the plan says. The deleting transaction re-validates the
/// plan ([`strata_catalog::Catalog::delete_streams`]): when a save committed
/// a stream on a snapshot the plan deletes, nothing is deleted and the
/// trim plans again from a fresh read.
fn plan_and_execute(
    repo: &Repository,
    project: Project,
    policy: Retention,
    dry_run: bool,
    plan: impl Fn(&[StreamInfo]) -> Result<TrimPlan>,
) -> Result<TrimReport> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let streams = repo.catalog.streams(project.id)?;
        let plan = plan(&streams)?;
        let executed = !dry_run && !plan.delete.is_empty();
        if executed {
            match repo.catalog.delete_streams(project.id, &plan.delete) {
                Ok(()) => {}
                Err(e @ CatalogError::StartNeeded { .. }) if attempt < REPLANS => {
                    tracing::info!("project {:?}: {e}", project.name);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(TrimReport {
            project,
            policy,
            plan,
            streams,
            executed,
        });
    }
}

/// Plans and (unless `dry_run`) carries out the trim of `project`.
///
/// # Errors
/// For an unknown project or an impossible catalog; [`Error::Retry`] when
/// saves kept committing onto what the plan deleted.
pub fn trim(repo: &Repository, project: &str, dry_run: bool) -> Result<TrimReport> {
    let project = repo.project(project)?;
    let policy = retention_of(repo, &project)?;
    plan_and_execute(repo, project.clone(), policy, dry_run, |streams| {
        trim_plan(streams, &policy).map_err(|e| plan_error(&project, e))
    })
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
    let policy = retention_of(repo, &project)?;
    plan_and_execute(repo, project.clone(), policy, dry_run, |streams| {
        forget_fork_plan(streams, head).map_err(|e| match e {
            strata_core::PlanError::UnknownSnapshot(s) => Error::Input(format!(
                "project {:?} has no fork whose head is {s} (see `strata streams {}`)",
                project.name, project.name
            )),
            other => plan_error(&project, other),
        })
    })
}
