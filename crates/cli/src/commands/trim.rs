//! `strata trim [PROJECT|--all] [--dry-run]`: show the plan, then delete the
//! streams no retained snapshot or fork needs. Chunk bytes are left to scrub.

use serde_json::json;
use strata_repo::{Repository, TrimReport};

use crate::output::{Output, human};

/// Arguments of `trim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub project: Option<String>,
    /// Trim every project.
    #[arg(long)]
    pub all: bool,
    /// Show the plan; delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let names: Vec<String> = match &a.project {
        Some(p) => vec![p.clone()],
        None => repo
            .catalog
            .projects()?
            .into_iter()
            .map(|p| p.project.name)
            .collect(),
    };
    for name in names {
        let r = strata_repo::trim(repo, &name, a.dry_run)?;
        show(&r, out);
    }
    Ok(())
}

/// Prints a trim (or fork removal) plan and what was done.
pub fn show(r: &TrimReport, out: &Output) {
    let end_of = |id: &strata_core::StreamId| {
        r.streams
            .iter()
            .find(|s| s.id == *id)
            .map(|s| s.end.to_string())
            .unwrap_or_default()
    };
    if out.json {
        out.json(json!({
            "event": if r.executed { "trimmed" } else { "trim-plan" },
            "project": r.project.name,
            "dry_run": !r.executed,
            "delete": r.plan.delete.iter().map(|id| json!({"stream": id.to_string(), "end": end_of(id)})).collect::<Vec<_>>(),
            "keep": r.plan.keep.len(),
            "retained": r.plan.retained.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "lost": r.plan.lost.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "stream_bytes": r.plan.stream_bytes,
            "stored_bytes_at_most": r.plan.stored_bytes_at_most,
        }));
        return;
    }
    out.line(&format!(
        "{}: {} stream(s) to delete, {} kept; {} snapshot(s) retained",
        r.project.name,
        r.plan.delete.len(),
        r.plan.keep.len(),
        r.plan.retained.len()
    ));
    for id in &r.plan.delete {
        out.line(&format!(
            "  delete stream {} (to {})",
            &id.to_string()[..8],
            end_of(id)
        ));
    }
    for s in &r.plan.lost {
        out.line(&format!("  snapshot {s} stops being restorable"));
    }
    out.line(&format!(
        "  {} of streams; up to {} of chunks become garbage for scrub",
        human(r.plan.stream_bytes),
        human(r.plan.stored_bytes_at_most)
    ));
    if !r.executed && !r.plan.delete.is_empty() {
        out.line("  dry run: nothing deleted");
    }
}
