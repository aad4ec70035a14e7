//! The small interface through which operations report progress; the CLI
//! turns it into bars, plain lines or JSON.

/// Receives progress; every method has a no-op default.
pub trait Progress: Sync {
    /// A phase starts (`"save"`, `"restore"`), with its total bytes if known.
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// An entry was skipped, retried or saved in a state worth knowing.
    fn warning(&self, _path: &str, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Passes engine warnings on to a [`Progress`].
pub(crate) struct EngineObserver<'a>(pub &'a dyn Progress);

impl strata_engine::Observer for EngineObserver<'_> {
    fn warning(&self, path: &str, message: &str) {
        self.0.warning(path, message);
    }
}
