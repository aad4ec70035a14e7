//! `strata streams PROJECT`: the chain, in apply order, then any stream
//! that is not on it.

use serde_json::json;
use strata_core::apply_plan;
use strata_repo::Repository;

use crate::output::{Output, human};

/// Arguments of `streams`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project (name or id).
    pub project: String,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let project = repo.project(&a.project)?;
    let streams = repo.catalog.streams(project.id)?;
    let chain: Vec<_> = match apply_plan(&streams, None) {
        Ok(plan) => plan.into_iter().map(|s| s.id).collect(),
        Err(_) => Vec::new(),
    };
    if !out.json {
        out.line(&format!(
            "{:<8} {:<27} {:<27} {:<11} {:>11} {:>7} {:>11} {}",
            "STREAM", "START", "END", "KIND", "BYTES", "CHUNKS", "NEW", "ON CHAIN"
        ));
    }
    for s in &streams {
        let on_chain = chain.contains(&s.id);
        if out.json {
            out.json(json!({
                "stream": s.id.to_string(),
                "project": project.name,
                "start": s.start.as_ref().map(ToString::to_string),
                "end": s.end.to_string(),
                "kind": s.kind().as_str(),
                "bytes": s.bytes,
                "chunks": s.chunks,
                "new_bytes": s.new_bytes,
                "stored_bytes": s.new_stored_bytes,
                "host": s.host,
                "created_ms": s.created_ms,
                "on_chain": on_chain,
            }));
        } else {
            out.line(&format!(
                "{:<8} {:<27} {:<27} {:<11} {:>11} {:>7} {:>11} {}",
                &s.id.to_string()[..8],
                s.start
                    .as_ref()
                    .map_or("-".to_string(), ToString::to_string),
                s.end,
                s.kind().as_str(),
                human(s.bytes),
                s.chunks,
                human(s.new_bytes),
                if on_chain { "yes" } else { "no" },
            ));
        }
    }
    Ok(())
}
