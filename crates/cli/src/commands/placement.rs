//! `strata open|close|move|placements`: where projects are open, under the
//! project lease (`docs/fleet.md`). These record what is asked in the
//! catalog; each host's agent carries it out.

use std::collections::HashMap;

use serde_json::json;
use strata_catalog::{Placement, PlacementState, Request};
use strata_core::ProjectId;
use strata_repo::{ErrorKind, Repository};

use crate::output::Output;

/// Arguments of `open`.
#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    /// The project (name or id).
    pub project: String,
    /// The host to open it on (default: an enabled host with room, one
    /// with a local copy of it first, then one in the zone it was last in).
    #[arg(long, value_name = "HOST")]
    pub on: Option<String>,
}

/// Arguments of `close`.
#[derive(Debug, clap::Args)]
pub struct CloseArgs {
    /// The project (name or id).
    pub project: String,
}

/// Arguments of `move`.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The project (name or id).
    pub project: String,
    /// The host to move it to.
    #[arg(long, value_name = "HOST")]
    pub to: String,
}

/// Project names by id.
pub fn names(repo: &Repository) -> anyhow::Result<HashMap<ProjectId, String>> {
    Ok(repo
        .catalog
        .projects()?
        .into_iter()
        .map(|p| (p.project.id, p.project.name))
        .collect())
}

fn placement_json(name: &str, p: &Placement, now: i64) -> serde_json::Value {
    json!({
        "project": name, "id": p.project.to_string(), "state": p.state.as_str(),
        "host": p.host, "token": p.token, "since_ms": p.since_ms,
        "expires_ms": p.expires_ms, "lease_live": p.holder(now).is_some(),
        "move_to": p.move_to, "last_host": p.last_host,
    })
}

fn request(repo: &Repository, project: &str, req: &Request, out: &Output) -> anyhow::Result<()> {
    let project = repo.project(project)?;
    let now = repo.clock.now_ms();
    let lease = repo.config.fleet.lease_ms();
    let p = match repo.catalog.request(project.id, req, now, lease) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.naming(project.id, &project.name);
            return Err(match strata_repo::catalog_kind(&e) {
                ErrorKind::Input => strata_repo::Error::Input(msg).into(),
                _ => anyhow::Error::new(e),
            });
        }
    };
    let name = &project.name;
    if out.json {
        out.json(match &p {
            Some(p) => placement_json(name, p, now),
            None => json!({"project": name, "state": "closed"}),
        });
        return Ok(());
    }
    let host = p.as_ref().and_then(|p| p.host.clone()).unwrap_or_default();
    out.line(&match (req, &p) {
        (_, None) => format!("{name} is not open on any host"),
        (Request::Open { .. }, Some(p)) => format!(
            "{name} open on host {host} (lease token {}, {} s to its agent's first renewal)",
            p.token,
            (p.expires_ms - now).max(0) / 1000
        ),
        (Request::Close, Some(p)) if p.state == PlacementState::Closed => format!(
            "{name} closed{}",
            p.last_host
                .as_deref()
                .map(|h| format!(" (its lease on {h} had run out; its last saved snapshot stands)"))
                .unwrap_or_default()
        ),
        (Request::Close, Some(_)) => {
            format!("{name} closing on host {host}: its agent saves it and lets it go")
        }
        (Request::Move { to }, Some(p)) if p.host.as_deref() == Some(to.as_str()) => format!(
            "{name} is on host {to} (lease token {}{})",
            p.token,
            if p.last_host.is_some() && p.since_ms == now {
                "; its lease on the old host had run out"
            } else {
                ""
            }
        ),
        (Request::Move { to }, Some(_)) => {
            format!("{name} moving from host {host} to {to}: the agents hand it over")
        }
    });
    Ok(())
}

pub fn open(repo: &Repository, a: &OpenArgs, out: &Output) -> anyhow::Result<()> {
    request(repo, &a.project, &Request::Open { on: a.on.clone() }, out)
}

pub fn close(repo: &Repository, a: &CloseArgs, out: &Output) -> anyhow::Result<()> {
    request(repo, &a.project, &Request::Close, out)
}

pub fn move_to(repo: &Repository, a: &MoveArgs, out: &Output) -> anyhow::Result<()> {
    request(repo, &a.project, &Request::Move { to: a.to.clone() }, out)
}

/// `strata placements`: every project open somewhere, and the latest
/// refused commits.
pub fn list(repo: &Repository, out: &Output) -> anyhow::Result<()> {
    let now = repo.clock.now_ms();
    let names = names(repo)?;
    let name = |id: &ProjectId| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let list = repo.catalog.placements()?;
    let refused = repo.catalog.rejections(10)?;
    if out.json {
        for p in &list {
            out.json(placement_json(&name(&p.project), p, now));
        }
        for r in &refused {
            out.json(json!({
                "refused": name(&r.project), "host": r.host, "token": r.token,
                "at_ms": r.at_ms, "why": r.why,
            }));
        }
        return Ok(());
    }
    out.line(&format!(
        "{:<24} {:<8} {:<16} {:>6} {:<14} MOVE TO",
        "PROJECT", "STATE", "HOST", "TOKEN", "LEASE"
    ));
    for p in &list {
        let left = p.expires_ms - now;
        out.line(&format!(
            "{:<24} {:<8} {:<16} {:>6} {:<14} {}",
            name(&p.project),
            p.state,
            p.host.as_deref().unwrap_or("-"),
            p.token,
            if left >= 0 {
                format!("{} s left", left / 1000)
            } else {
                format!("ran out {} s", -left / 1000)
            },
            p.move_to.as_deref().unwrap_or("-"),
        ));
    }
    if !refused.is_empty() {
        out.line("refused commits and hand-overs (newest first):");
        for r in &refused {
            out.line(&format!(
                "  {} {} by {} (token {}): {}",
                r.at_ms,
                name(&r.project),
                if r.host.is_empty() {
                    "a save holding no lease"
                } else {
                    &r.host
                },
                r.token,
                r.why
            ));
        }
    }
    Ok(())
}
