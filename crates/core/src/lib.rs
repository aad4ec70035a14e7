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

/// An error with its causes, `"a: b: c"`, skipping a cause whose text the
/// message already holds. Drivers' top-level messages often say what
/// failed ("error performing TLS handshake") but not why.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut s = e.source();
    while let Some(err) = s {
        let t = err.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        s = err.source();
    }
    text
}
pub use graph::{ChainReport, Fork, Role, Unreachable, analyze};
pub use ids::{ChunkId, ChunkKey, IdError, ProjectId, SaveId, SnapshotId, StreamId};
pub use plan::{PlanError, apply_plan};
pub use retention::Retention;
pub use retry::{RetryPolicy, Transient};
pub use stream::{ChunkLookup, ManifestEntry, StreamInfo, StreamKind};
pub use trim::{TrimPlan, forget_fork_plan, trim_plan};

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_names_the_causes_once() {
        let inner = std::io::Error::other("certificate verify failed");
        let outer = std::io::Error::other(inner);
        // io::Error's message is its inner error's: no repetition.
        assert_eq!(super::error_chain(&outer), "certificate verify failed");
        #[derive(Debug)]
        struct Handshake(std::io::Error);
        impl std::fmt::Display for Handshake {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error performing TLS handshake")
            }
        }
        impl std::error::Error for Handshake {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Handshake(std::io::Error::other("certificate verify failed"));
        assert_eq!(
            super::error_chain(&e),
            "error performing TLS handshake: certificate verify failed"
        );
    }
}
