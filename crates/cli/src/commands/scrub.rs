//! `strata scrub [--grace DURATION] [--dry-run]`: delete chunk bytes that
//! no committed stream and no running save needs (`docs/gc.md`).

use std::time::Duration;

use serde_json::json;
use strata_repo::{Repository, ScrubOptions};

use crate::output::{Output, human};

/// Arguments of `scrub`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long a chunk must stay unreferenced (and a stored object no
    /// catalog row names must have existed) before it is deleted, e.g.
    /// `0`, `90s`, `30m`, `2h`, `1d`. A restore that began before a trim
    /// still finds its chunks for this long.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 0, 90s, 30m, 2h or 1d"))
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let opts = ScrubOptions {
        grace: a.grace,
        dry_run: a.dry_run,
        ..ScrubOptions::default()
    };
    let r = strata_repo::scrub(repo, &opts)?;
    if out.json {
        for s in &r.expired_saves {
            out.json(json!({
                "type": "expired-save",
                "save": s.id.to_string(),
                "host": s.host,
                "pid": s.pid,
                "started_ms": s.started_ms,
            }));
        }
        out.json(json!({
            "type": "summary",
            "dry_run": r.dry_run,
            "resumed": r.resumed,
            "grace_s": a.grace.as_secs(),
            "expired_saves": r.expired_saves.len(),
            "rows_scanned": r.rows_scanned,
            "objects_scanned": r.objects_scanned,
            "kept_referenced": r.kept_referenced,
            "kept_in_grace": r.kept_in_grace,
            "deleted": r.deleted,
            "freed_bytes": r.freed_bytes,
        }));
    } else {
        for s in &r.expired_saves {
            out.line(&format!(
                "expired save {} (host {}, pid {}): it stopped renewing or its process is gone",
                s.id, s.host, s.pid
            ));
        }
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        out.line(&format!(
            "{}scanned {} chunk row(s) and {} stored object(s); kept {} referenced and {} within the grace period ({}); {verb} {} object(s), {} {}",
            if r.resumed { "resumed an interrupted scrub; " } else { "" },
            r.rows_scanned,
            r.objects_scanned,
            r.kept_referenced,
            r.kept_in_grace,
            humantime::format_duration(a.grace),
            r.deleted,
            human(r.freed_bytes),
            if r.dry_run { "to free" } else { "freed" },
        ));
    }
    Ok(())
}
