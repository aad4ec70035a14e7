//! `strata projects`.

use serde_json::json;
use strata_repo::Repository;

use crate::output::{Output, human};

pub fn run(repo: &Repository, out: &Output) -> anyhow::Result<()> {
    let list = repo.catalog.projects()?;
    if out.json {
        for p in &list {
            out.json(json!({
                "name": p.project.name,
                "id": p.project.id.to_string(),
                "streams": p.streams,
                "newest": p.newest.as_ref().map(ToString::to_string),
                "bytes": p.bytes,
                "stored_bytes": p.stored_bytes,
                "engine": p.engine,
            }));
        }
        return Ok(());
    }
    out.line(&format!(
        "{:<24} {:<36} {:<6} {:>7} {:<27} {:>11} {:>11}",
        "NAME", "ID", "ENGINE", "STREAMS", "NEWEST", "STREAMED", "STORED"
    ));
    for p in &list {
        out.line(&format!(
            "{:<24} {:<36} {:<6} {:>7} {:<27} {:>11} {:>11}",
            p.project.name,
            p.project.id,
            p.engine.as_deref().unwrap_or("-"),
            p.streams,
            p.newest
                .as_ref()
                .map_or("-".to_string(), ToString::to_string),
            human(p.bytes),
            human(p.stored_bytes),
        ));
    }
    Ok(())
}
