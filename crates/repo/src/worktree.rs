//! Per-host state of local directories: which project and snapshot a
//! directory holds, and the index of that snapshot as this host sees it.
//!
//! Kept under `$STRATA_STATE_DIR` (default `~/.local/state/strata`), never
//! inside the user's tree: `worktrees/<key>/state.toml` and
//! `worktrees/<key>/index`, where `key` hashes the repository id and the
//! directory's canonical path. A lock file keeps two saves of one
//! directory from running at once.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The local state root: `$STRATA_STATE_DIR`, else `<state dir>/strata`.
///
/// # Errors
/// When there is no home directory.
pub fn state_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_STATE_DIR").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("strata"))
        .ok_or_else(|| Error::Input("no state directory (set STRATA_STATE_DIR or HOME)".into()))
}

/// What a directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorktreeState {
    /// The directory (canonical).
    pub path: PathBuf,
    /// The repository it belongs to.
    pub repo_id: String,
    /// The project.
    pub project_id: String,
    /// The project's name when this was written.
    pub project_name: String,
    /// The snapshot the directory held after the last save or restore;
    /// empty when a first save created the project and has not committed.
    pub snapshot: String,
}

/// The state slot of one directory in one repository.
#[derive(Debug)]
pub struct Worktree {
    dir: PathBuf,
    _lock: Option<File>,
}

impl Worktree {
    /// The slot for `path` (canonical) in repository `repo_id`, under the
    /// state directory `state`.
    ///
    /// # Errors
    /// When the state directory cannot be created.
    pub fn open(state: &Path, repo_id: &str, path: &Path) -> Result<Self> {
        let mut h = blake3::Hasher::new();
        h.update(repo_id.as_bytes());
        h.update(b"\0");
        h.update(path.as_os_str().as_bytes());
        let key = &h.finalize().to_hex()[..32];
        let dir = state.join("worktrees").join(key);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::system(format!("create {}", dir.display()), e))?;
        Ok(Self { dir, _lock: None })
    }

    /// Takes the exclusive lock of this slot.
    ///
    /// # Errors
    /// [`Error::Input`] when another strata process holds it.
    pub fn lock(&mut self, what: &Path) -> Result<()> {
        let p = self.dir.join("lock");
        let f =
            File::create(&p).map_err(|e| Error::system(format!("create {}", p.display()), e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                Error::Input(format!(
                    "another strata process is saving or restoring {} right now",
                    what.display()
                ))
            },
        )?;
        self._lock = Some(f);
        Ok(())
    }

    /// The recorded state, if any.
    ///
    /// # Errors
    /// When the state file exists but cannot be read.
    pub fn load(&self) -> Result<Option<WorktreeState>> {
        let p = self.dir.join("state.toml");
        match fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).map(Some).map_err(|e| Error::Config {
                path: p,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::system(format!("read {}", p.display()), e)),
        }
    }

    /// Path of the index of the recorded snapshot.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index")
    }

    /// A fresh temporary path for an index being written.
    pub fn temp_index_path(&self) -> PathBuf {
        self.dir
            .join(format!("index.{}.tmp", uuid::Uuid::new_v4().simple()))
    }

    /// Records that the directory belongs to `state`'s project before any
    /// snapshot of it is committed (a first save that created the project),
    /// so a first save that is killed leaves the directory bound to the
    /// project it created. Leaves any index alone.
    ///
    /// # Errors
    /// When writing fails.
    pub fn bind(&self, state: &WorktreeState) -> Result<()> {
        self.write_state(state)
    }

    fn write_state(&self, state: &WorktreeState) -> Result<()> {
        let p = self.dir.join("state.toml");
        let tmp = self.dir.join("state.toml.tmp");
        let sys = |what: &Path| {
            let what = what.display().to_string();
            move |e| Error::system(format!("write {what}"), e)
        };
        // Durable before the rename: a power cut leaves the old state or
        // the new one, never an empty file.
        fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(toml::to_string(state).expect("state serialises").as_bytes())?;
                f.sync_all()
            })
            .map_err(sys(&tmp))?;
        fs::rename(&tmp, &p).map_err(sys(&p))
    }

    /// Records `state` with the index at `index_tmp`, replacing what was
    /// recorded (index first, then state, each by rename).
    ///
    /// # Errors
    /// When writing fails.
    pub fn record(&self, state: &WorktreeState, index_tmp: &Path) -> Result<()> {
        let sys = |what: &Path| {
            let what = what.display().to_string();
            move |e| Error::system(format!("write {what}"), e)
        };
        fs::rename(index_tmp, self.index_path()).map_err(sys(&self.index_path()))?;
        self.write_state(state)
    }
}
