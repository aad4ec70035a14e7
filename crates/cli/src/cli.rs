//! Arguments, dispatch and exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use strata_repo::{ErrorKind, Repository};

use crate::commands;
use crate::output::Output;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when stdout is closed early, as by `| head`)
  1  system failure: I/O, full disk, permissions, database
  2  bad request: unknown project or snapshot, occupied target, bad arguments or config
  3  corrupt or hostile data: a chunk that fails its hash, a damaged or malicious stream
  4  a concurrent change got in the way and nothing was changed: run it again
     (a save whose base was trimmed meanwhile, a trim that raced a save)

Environment:
  STRATA_REPO       repository directory (default ~/.local/share/strata)
  STRATA_STATE_DIR  this host's local state (default ~/.local/state/strata)
  STRATA_CHUNKS     chunk store URL overriding strata.toml (file:///path)
  STRATA_CATALOG    catalog URL overriding strata.toml (sqlite:///path, or
                    postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA&password_file=FILE)
  STRATA_CATALOG_PASSWORD  the PostgreSQL password, when no password_file is named
  STRATA_LOG        log filter for stderr (e.g. debug)";

/// strata: project directories as chains of deduplicated snapshot streams.
#[derive(Debug, Parser)]
#[command(name = "strata", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Repository directory; created on first use.
    #[arg(long, global = true, env = "STRATA_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print one JSON object per line on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// No progress bars or progress lines.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a directory: a full stream the first time, then incrementals.
    Save(commands::save::Args),
    /// Create the repository (if it does not exist yet) and say where it is.
    Init,
    /// Restore a project's newest (or a given) snapshot into a new directory.
    Restore(commands::restore::Args),
    /// List projects.
    Projects,
    /// Show a project's streams: the chain, history, forks, unreachable.
    Streams(commands::streams::Args),
    /// Delete streams no retained snapshot or fork needs (plan first).
    Trim(commands::trim::Args),
    /// Remove a fork explicitly (plan first).
    ForgetFork(commands::forget_fork::Args),
    /// Show or set a project's retention policy.
    Retention(commands::retention::Args),
    /// Verify chains, chunk presence and sizes, and with --read-data the bytes.
    Check(commands::check::Args),
    /// Delete chunk bytes no committed stream or running save needs.
    Scrub(commands::scrub::Args),
    /// The fleet's compute hosts: list, add, disable, enable, drain, remove.
    Hosts(commands::hosts::Args),
    /// Open a project on a host (chosen, or --on HOST), under a lease.
    Open(commands::placement::OpenArgs),
    /// Close a project: its host saves it a last time and lets it go.
    Close(commands::placement::CloseArgs),
    /// Move an open project to another host.
    Move(commands::placement::MoveArgs),
    /// Where projects are open, their leases, and refused commits.
    Placements,
    /// Run this host's agent: heartbeats, opens, saves, closes and moves
    /// the projects the catalog places here (until SIGTERM).
    Agent(commands::agent::Args),
    /// The fleet at a glance: hosts, stale projects, costs, health,
    /// refusals; never stops when a part is down.
    Monitor(commands::monitor::Args),
    /// The monitor as a web page and Prometheus metrics, behind an access
    /// token (STRATA_SERVE_TOKEN_FILE).
    Serve(commands::serve::Args),
}

/// Runs the command line; returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let filter = std::env::var("STRATA_LOG").unwrap_or_else(|_| "error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour only for a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let out = Output::new(cli.json, cli.quiet, cli.no_progress);
    match dispatch(&cli, &out) {
        Ok(()) => 0,
        Err(e) => {
            let kind = match e.downcast_ref::<strata_repo::Error>() {
                Some(r) => Some(r.kind()),
                None => e
                    .downcast_ref::<strata_repo::CatalogError>()
                    .map(strata_repo::catalog_kind),
            };
            let code = match kind {
                Some(ErrorKind::Input) => 2,
                Some(ErrorKind::Corrupt) => 3,
                Some(ErrorKind::Retry) => 4,
                _ => 1,
            };
            out.error(&e);
            code
        }
    }
}

fn dispatch(cli: &Cli, out: &Output) -> anyhow::Result<()> {
    let path = match &cli.repo {
        Some(p) => p.clone(),
        None => strata_repo::repository::default_path()?,
    };
    let quiet = cli.quiet;
    let created = std::cell::Cell::new(false);
    let announce = |p: &std::path::Path| {
        created.set(true);
        if !quiet {
            eprintln!("strata: created a new repository at {}", p.display());
        }
    };
    // Only commands that write a snapshot create a repository; the others
    // say there is none.
    let repo = match &cli.command {
        Command::Init => Repository::init(&path, &announce)?,
        Command::Save(_) => Repository::open_or_create(&path, &announce)?,
        _ => Repository::open(&path)?,
    };
    match &cli.command {
        Command::Init => {
            if !created.get() {
                out.line(&format!("a repository exists at {}", path.display()));
            }
            Ok(())
        }
        Command::Save(a) => commands::save::run(&repo, a, out),
        Command::Restore(a) => commands::restore::run(&repo, a, out),
        Command::Projects => commands::projects::run(&repo, out),
        Command::Streams(a) => commands::streams::run(&repo, a, out),
        Command::Trim(a) => commands::trim::run(&repo, a, out),
        Command::ForgetFork(a) => commands::forget_fork::run(&repo, a, out),
        Command::Retention(a) => commands::retention::run(&repo, a, out),
        Command::Check(a) => commands::check::run(&repo, a, out),
        Command::Scrub(a) => commands::scrub::run(&repo, a, out),
        Command::Hosts(a) => commands::hosts::run(&repo, a, out),
        Command::Open(a) => commands::placement::open(&repo, a, out),
        Command::Close(a) => commands::placement::close(&repo, a, out),
        Command::Move(a) => commands::placement::move_to(&repo, a, out),
        Command::Placements => commands::placement::list(&repo, out),
        Command::Agent(a) => commands::agent::run(repo, a, out),
        Command::Monitor(a) => commands::monitor::run(repo, a, out),
        Command::Serve(a) => commands::serve::run(repo, a, out),
    }
}
