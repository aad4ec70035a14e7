//! `strata retention PROJECT [--keep-* N …] [--clear]`: show or set the
//! project's retention policy (default: the repository's `[retention]`).

use serde_json::json;
use strata_core::Retention;
use strata_repo::Repository;

use crate::output::Output;

/// Arguments of `retention`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    pub project: String,
    /// Keep the N newest snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// … of each of the N most recent days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// … of each of the N most recent weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// … of each of the N most recent months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// … of each of the N most recent years.
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Drop the project's own policy and use the repository's.
    #[arg(long)]
    pub clear: bool,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let project = repo.project(&a.project)?;
    if a.clear {
        repo.catalog.set_retention(project.id, None)?;
    }
    let sets = [
        a.keep_last,
        a.keep_hourly,
        a.keep_daily,
        a.keep_weekly,
        a.keep_monthly,
        a.keep_yearly,
    ];
    if sets.iter().any(Option::is_some) {
        let mut p: Retention = strata_repo::retention_of(repo, &project)?;
        let fields = [
            &mut p.keep_last,
            &mut p.keep_hourly,
            &mut p.keep_daily,
            &mut p.keep_weekly,
            &mut p.keep_monthly,
            &mut p.keep_yearly,
        ];
        for (f, v) in fields.into_iter().zip(sets) {
            if let Some(v) = v {
                *f = v;
            }
        }
        let text = toml::to_string(&p)?;
        repo.catalog.set_retention(project.id, Some(&text))?;
    }
    let own = repo.catalog.retention(project.id)?.is_some();
    let p = strata_repo::retention_of(repo, &project)?;
    if out.json {
        out.json(json!({
            "project": project.name,
            "source": if own { "project" } else { "repository" },
            "keep_last": p.keep_last, "keep_hourly": p.keep_hourly, "keep_daily": p.keep_daily,
            "keep_weekly": p.keep_weekly, "keep_monthly": p.keep_monthly, "keep_yearly": p.keep_yearly,
        }));
    } else {
        out.line(&format!(
            "{} ({}): keep-last {} keep-hourly {} keep-daily {} keep-weekly {} keep-monthly {} keep-yearly {}",
            project.name,
            if own { "its own policy" } else { "the repository's policy" },
            p.keep_last,
            p.keep_hourly,
            p.keep_daily,
            p.keep_weekly,
            p.keep_monthly,
            p.keep_yearly
        ));
    }
    Ok(())
}
