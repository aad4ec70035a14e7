//! The small interface through which operations report progress; the CLI
//! turns it into bars, plain lines or JSON.

/// Receives progress; every method has a no-op default.
pub trait Progress: Sync {
    /// A phase starts (`"save"`, `"restore"`), with its total bytes if known.
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// The current phase's total became known (after a concurrent scan).
    fn total(&self, _bytes: u64) {}
    /// An entry was skipped, retried or saved in a state worth knowing.
    fn warning(&self, _path: &str, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Passes engine warnings on to a [`Progress`], and with `count_files`
/// the file bytes the engine covers as progress.
pub(crate) struct EngineObserver<'a> {
    pub progress: &'a dyn Progress,
    pub count_files: bool,
}

impl strata_engine::Observer for EngineObserver<'_> {
    fn warning(&self, path: &str, message: &str) {
        self.progress.warning(path, message);
    }

    fn file_bytes(&self, bytes: u64) {
        if self.count_files {
            self.progress.advance(bytes);
        }
    }
}

/// Sum of the sizes of the regular files below `dir` (a progress estimate;
/// errors count as nothing).
pub fn tree_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .max_open(16)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.size())
        .sum()
}
