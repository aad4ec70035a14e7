//! strata's vocabulary, shared by every other crate: identifiers
//! ([`ChunkId`], [`SnapshotId`], [`StreamId`], [`ProjectId`]), the records the
//! catalog keeps ([`StreamInfo`]), the [`Clock`] that protocols are tested
//! with, and the apply plan ([`plan`]) that turns a project's streams into the
//! ordered list a restore applies. Nothing here does I/O.

pub mod clock;
pub mod faults;
pub mod graph;
pub mod ids;
pub mod plan;
pub mod retention;
pub mod retry;
pub mod stream;
pub mod trim;

pub use clock::{Clock, SystemClock};
pub use graph::{ChainReport, Fork, Role, Unreachable, analyze};
pub use ids::{ChunkId, ChunkKey, IdError, ProjectId, SaveId, SnapshotId, StreamId};
pub use plan::{PlanError, apply_plan};
pub use retention::Retention;
pub use retry::{RetryPolicy, Transient};
pub use stream::{ChunkLookup, ManifestEntry, StreamInfo, StreamKind};
pub use trim::{TrimPlan, forget_fork_plan, trim_plan};
