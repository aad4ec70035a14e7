//! strata repositories and the operations on them.
//!
//! A [`Repository`] joins a chunk store and a catalog under one
//! configuration ([`config`]); [`save()`] and [`restore()`] run the engine and
//! the chunk pipeline against it; [`worktree`] keeps, per host, which
//! project and snapshot each local directory holds, so that the next save
//! from it is an incremental.

pub mod agent;
pub mod backends;
pub mod check;
pub mod config;
pub mod engines;
pub mod error;
pub mod liveness;
pub mod monitor;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod save;
pub mod scrub;
pub mod trim;
pub mod worktree;

pub use check::{CheckOptions, CheckReport, Problem, ProblemKind, check};
pub use error::{Error, ErrorKind, Result, catalog_kind};
pub use progress::{NoProgress, Progress};
pub use repository::Repository;
pub use restore::{RestoreOptions, RestoreReport, restore};
pub use save::{SaveOptions, SaveReport, save};
pub use scrub::{ScrubOptions, ScrubReport, scrub};
pub use strata_catalog::CatalogError;
pub use strata_engine::EngineKind;
pub use strata_engine::native::Owners;
pub use trim::{TrimReport, forget_fork, retention_of, trim};
