//! `strata check [--read-data[=PERCENT]]`: chains valid, every chunk
//! present with its recorded size, and (with `--read-data`) chunk bytes
//! read back and verified. Problems name project, stream and chunk; any
//! problem makes the exit code 3.

use serde_json::json;
use strata_repo::{CheckOptions, Repository};

use crate::output::{Output, human};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also read back and verify chunks: all of them, or PERCENT of them
    /// (the same ones every time).
    #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "100",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub read_data: Option<u8>,
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let opts = CheckOptions {
        read_data_percent: a.read_data,
    };
    let report = strata_repo::check(repo, &opts, &mut |p| {
        if out.json {
            out.json(json!({
                "type": "problem",
                "kind": p.kind.as_str(),
                "chunk": p.chunk.map(|c| c.to_string()),
                "streams": p.streams.iter().map(|(proj, s)| json!({"project": proj, "stream": s.to_string()})).collect::<Vec<_>>(),
                "message": p.message,
            }));
        } else {
            out.line(&format!("problem: {}: {}", p.kind.as_str(), p.message));
        }
    })?;
    if out.json {
        out.json(json!({
            "type": "summary",
            "projects": report.projects,
            "streams": report.streams,
            "chunks": report.chunks,
            "chunks_read": report.chunks_read,
            "bytes_read": report.bytes_read,
            "unreferenced_in_store": report.unreferenced_in_store,
            "problems": report.problems,
        }));
    } else {
        out.line(&format!(
            "checked {} project(s), {} stream(s), {} chunk(s); read back {} chunk(s) ({}); {} unreferenced chunk(s) in the store; {} problem(s)",
            report.projects,
            report.streams,
            report.chunks,
            report.chunks_read,
            human(report.bytes_read),
            report.unreferenced_in_store,
            report.problems
        ));
    }
    if report.problems > 0 {
        return Err(strata_repo::Error::Corrupt {
            context: "check".into(),
            source: format!("{} problem(s) found", report.problems).into(),
        }
        .into());
    }
    Ok(())
}
