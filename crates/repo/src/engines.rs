//! Which engine a save or restore runs: the one place the repository layer
//! names engines. Everything else goes through [`Engine`].

use strata_core::StreamInfo;
use strata_engine::btrfs::Btrfs;
use strata_engine::native::Native;
use strata_engine::zfs::Zfs;
use strata_engine::{Engine, EngineError, EngineKind};

use crate::error::{Error, Result};
use crate::repository::Repository;

impl Repository {
    /// The engine `kind`, set up from this repository's configuration
    /// (for zfs and btrfs, `[commands] max-children` bounds this
    /// process's external commands).
    pub fn engine(&self, kind: EngineKind) -> Box<dyn Engine> {
        if kind != EngineKind::Native {
            strata_engine::command::set_max_children(self.config.commands.max_children);
        }
        match kind {
            EngineKind::Native => Box::new(Native::default()),
            EngineKind::Zfs => Box::new(self.zfs_engine()),
            EngineKind::Btrfs => Box::new(self.btrfs_engine()),
        }
    }
}

impl Repository {
    /// The ZFS engine with this repository's settings (`[zfs]` in
    /// `strata.toml`).
    pub fn zfs_engine(&self) -> Zfs {
        let c = &self.config.zfs;
        Zfs {
            program: c.program.as_deref().unwrap_or("zfs").into(),
            stall: std::time::Duration::from_secs(c.stall_secs),
            keep_local: c.keep_local.max(1),
        }
    }

    /// The btrfs engine with this repository's settings (`[btrfs]` in
    /// `strata.toml`).
    pub fn btrfs_engine(&self) -> Btrfs {
        let c = &self.config.btrfs;
        Btrfs {
            program: c.program.as_deref().unwrap_or("btrfs").into(),
            stall: std::time::Duration::from_secs(c.stall_secs),
            keep_local: c.keep_local.max(1),
        }
    }
}

/// The repository's error for an engine's, with what was being done: a
/// target the engine cannot use is the caller's to fix, bad input is
/// corrupt data, anything else the system's.
pub fn engine_error(context: String, e: EngineError) -> Error {
    match e {
        EngineError::Target { .. } | EngineError::Diverged { .. } => Error::Input(e.to_string()),
        e if e.is_bad_input() => Error::corrupt(context, e),
        e => Error::system(context, e),
    }
}

/// The engine a chain of streams was made with: the one every stream of
/// it records.
///
/// # Errors
/// [`Error::Corrupt`] naming the stream for an engine this build does not
/// know, or a chain that mixes engines.
pub fn chain_engine(project: &str, plan: &[StreamInfo]) -> Result<EngineKind> {
    let mut kind = None;
    for s in plan {
        let k: EngineKind = s.engine.parse().map_err(|e| {
            Error::corrupt(
                format!("project {project:?}, stream {} ({})", s.id, s.end),
                e,
            )
        })?;
        match kind {
            Some(first) if first != k => {
                return Err(Error::corrupt(
                    format!("project {project:?}, stream {} ({})", s.id, s.end),
                    std::io::Error::other(format!(
                        "made by engine {k}, but the chain it continues by engine {first}"
                    )),
                ));
            }
            _ => kind = Some(k),
        }
    }
    kind.ok_or_else(|| Error::Input(format!("project {project:?} has no stream to restore")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::{ProjectId, SnapshotId, StreamId};

    fn stream(engine: &str) -> StreamInfo {
        StreamInfo {
            id: StreamId::random(),
            project: ProjectId::random(),
            start: None,
            end: SnapshotId::new(1_000, 0),
            parent: None,
            engine: engine.into(),
            bytes: 1,
            chunks: 1,
            new_bytes: 1,
            new_stored_bytes: 1,
            created_ms: 0,
            host: "h".into(),
        }
    }

    #[test]
    fn a_chain_names_its_engine_and_an_unknown_one_is_an_error_naming_the_stream() {
        let ok = [stream("native")];
        assert_eq!(chain_engine("p", &ok).unwrap(), EngineKind::Native);
        let bad = [stream("reiserfs")];
        let e = chain_engine("p", &bad).unwrap_err().to_string();
        assert!(
            e.contains("reiserfs") && e.contains(&bad[0].id.to_string()),
            "{e}"
        );
    }
}
