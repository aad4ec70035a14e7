//! `strata save DIR`.

use std::path::PathBuf;

use serde_json::json;
use strata_repo::{Repository, SaveOptions};

use crate::output::{Output, human, rate};

/// Arguments of `save`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to save.
    pub dir: PathBuf,
    /// Project name; default: the project this directory holds, else the
    /// directory's name (on first save).
    #[arg(long, short)]
    pub project: Option<String>,
    /// Upload threads (default: one per core, or more for an object store;
    /// compression uses at most one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The engine: native, zfs for a ZFS dataset's mount point, or btrfs
    /// for a btrfs subvolume (default:
    /// detected from what holds DIR; a project keeps its engine unless
    /// this says otherwise).
    #[arg(long)]
    pub engine: Option<strata_repo::EngineKind>,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let opts = SaveOptions {
        project: a.project.clone(),
        workers: a.workers,
        host: None,
        estimate_total: out.has_bar(),
        engine: a.engine,
    };
    let r = strata_repo::save(repo, &a.dir, &opts, out)?;
    out.finish_progress();
    let s = &r.stream;
    if out.json {
        out.json(json!({
            "event": "saved",
            "project": r.project.name,
            "project_id": r.project.id.to_string(),
            "created_project": r.created_project,
            "rebased": r.rebased,
            "snapshot": s.end.to_string(),
            "start": s.start.as_ref().map(ToString::to_string),
            "kind": s.kind().as_str(),
            "stream": s.id.to_string(),
            "bytes": s.bytes,
            "chunks": s.chunks,
            "new_bytes": s.new_bytes,
            "stored_bytes": s.new_stored_bytes,
            "entries": r.sent.entries,
            "changed": r.sent.emitted,
            "deleted": r.sent.deleted,
            "file_bytes": r.sent.file_bytes,
            "warnings": r.sent.warnings,
            "seconds": r.elapsed.as_secs_f64(),
        }));
    } else {
        let kind = match &s.start {
            None if r.rebased => "full: the chain had grown too long or heavy".to_string(),
            None => "full".to_string(),
            Some(b) => format!("incremental on {b}"),
        };
        out.line(&format!(
            "saved {}: snapshot {} ({kind})\n  {} entries, {} changed, {} deleted; stream {} in {:.2}s ({}); new {} stored as {}",
            r.project.name,
            s.end,
            r.sent.entries,
            r.sent.emitted,
            r.sent.deleted,
            human(s.bytes),
            r.elapsed.as_secs_f64(),
            rate(r.sent.file_bytes.max(s.bytes), r.elapsed),
            human(s.new_bytes),
            human(s.new_stored_bytes),
        ));
    }
    Ok(())
}
