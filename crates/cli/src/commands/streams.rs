//! `strata streams PROJECT`: every stream with its role (on the chain to
//! the newest snapshot, history, fork, unreachable), then the forks and the
//! unreachable streams with why.
//!
//! With `--json`, one object per line: `{"type":"stream",…}` for each
//! stream, then `{"type":"fork",…}`, `{"type":"unreachable",…}` and
//! `{"type":"lost",…}` (snapshots newer than the head that cannot be
//! restored).

use serde_json::json;
use strata_core::analyze;
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
    let report = analyze(&streams).map_err(|e| {
        anyhow::anyhow!(strata_repo::Error::Corrupt {
            context: format!("project {:?}", project.name),
            source: Box::new(e),
        })
    })?;
    let role = |s: &strata_core::StreamInfo| report.role(&s.id).map_or("?", |r| r.as_str());
    if out.json {
        for s in &streams {
            out.json(json!({
                "type": "stream",
                "stream": s.id.to_string(),
                "project": project.name,
                "start": s.start.as_ref().map(ToString::to_string),
                "end": s.end.to_string(),
                "parent": s.parent.as_ref().map(ToString::to_string),
                "kind": s.kind().as_str(),
                "engine": s.engine,
                "role": role(s),
                "bytes": s.bytes,
                "chunks": s.chunks,
                "new_bytes": s.new_bytes,
                "stored_bytes": s.new_stored_bytes,
                "host": s.host,
                "created_ms": s.created_ms,
            }));
        }
        for f in &report.forks {
            out.json(json!({
                "type": "fork",
                "head": f.head.to_string(),
                "base": f.base.as_ref().map(ToString::to_string),
                "snapshots": f.snapshots.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "streams": f.streams.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "hosts": f.hosts,
            }));
        }
        for u in &report.unreachable {
            out.json(json!({"type": "unreachable", "stream": u.stream.to_string(), "end": u.end.to_string(), "why": u.why}));
        }
        for (snap, why) in &report.lost_newer {
            out.json(json!({"type": "lost", "snapshot": snap.to_string(), "why": why}));
        }
        return Ok(());
    }
    out.line(&format!(
        "{:<8} {:<27} {:<27} {:<11} {:<6} {:<11} {:>11} {:>7} {:>11}  HOST",
        "STREAM", "START", "END", "KIND", "ENGINE", "ROLE", "BYTES", "CHUNKS", "NEW"
    ));
    for s in &streams {
        out.line(&format!(
            "{:<8} {:<27} {:<27} {:<11} {:<6} {:<11} {:>11} {:>7} {:>11}  {}",
            &s.id.to_string()[..8],
            s.start
                .as_ref()
                .map_or("-".to_string(), ToString::to_string),
            s.end,
            s.kind().as_str(),
            s.engine,
            role(s),
            human(s.bytes),
            s.chunks,
            human(s.new_bytes),
            s.host,
        ));
    }
    if let Some(h) = &report.head {
        out.line(&format!(
            "newest snapshot: {h} ({} stream(s) to restore)",
            report.chain.len()
        ));
    }
    for f in &report.forks {
        out.line(&format!(
            "fork: head {} from {} by {}: {} stream(s); restore it with --snapshot {}, remove it with `strata forget-fork {} {}`",
            f.head,
            f.base.as_ref().map_or("(nothing)".to_string(), ToString::to_string),
            f.hosts.join(", "),
            f.streams.len(),
            f.head,
            project.name,
            f.head,
        ));
    }
    for u in &report.unreachable {
        out.line(&format!(
            "unreachable: stream {} to {}: {}",
            &u.stream.to_string()[..8],
            u.end,
            u.why
        ));
    }
    for (snap, why) in &report.lost_newer {
        out.line(&format!("cannot restore newer snapshot {snap}: {why}"));
    }
    Ok(())
}
