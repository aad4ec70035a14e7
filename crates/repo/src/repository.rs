//! Opening (and on first use creating) a repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_catalog::Catalog;
use strata_core::{Clock, SystemClock};
use strata_store::ChunkStore;

use crate::config::{CONFIG_FILE, RepoConfig};
use crate::error::{Error, Result};

/// A chunk store and a catalog under one configuration.
pub struct Repository {
    /// The repository directory (holds `strata.toml`).
    pub path: PathBuf,
    /// Its configuration.
    pub config: RepoConfig,
    /// Where chunks live.
    pub store: Box<dyn ChunkStore>,
    /// Where metadata lives.
    pub catalog: Box<dyn Catalog>,
    /// The repository's id (from the catalog).
    pub id: String,
    /// The clock snapshot ids and times come from.
    pub clock: Arc<dyn Clock>,
    /// This host's local state (which directory holds which snapshot):
    /// `$STRATA_STATE_DIR` or `~/.local/state/strata` unless replaced.
    pub state_dir: PathBuf,
    /// This host's id: `STRATA_HOST_ID`, else `host-id` in `strata.toml`,
    /// else the machine id (`/etc/machine-id`), else the host name. Recorded
    /// with every stream and save, so liveness and forks are told apart
    /// per host even when several simulated hosts share a machine.
    pub host_id: String,
}

/// The settings key under which the catalog records what every host must
/// agree on ([`RepoConfig::shared_settings`]).
pub const SETTINGS_KEY: &str = "settings";

fn host_id(config: &RepoConfig) -> String {
    std::env::var("STRATA_HOST_ID")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| config.host_id.clone())
        .or_else(|| {
            std::fs::read_to_string("/etc/machine-id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(crate::save::hostname)
}

/// Compares this host's shared settings with the catalog's record, and
/// records them when the catalog has none (the first host to open a new
/// repository; a role that may not write the record leaves it to `strata
/// init`).
///
/// # Errors
/// [`Error::Input`] naming both when they differ.
fn agree_on_settings(config: &RepoConfig, catalog: &dyn Catalog, path: &Path) -> Result<()> {
    let mine = config.shared_settings();
    match catalog.repo_value(SETTINGS_KEY)? {
        Some(theirs) if theirs == mine => Ok(()),
        Some(theirs) => Err(Error::Input(format!(
            "this host's settings ({} in {}) differ from the repository's ({theirs}); every host of a repository must use the same chunker and formats: copy the repository's [chunker] section, or use another repository",
            mine,
            path.join(CONFIG_FILE).display()
        ))),
        None => match catalog.set_repo_value(SETTINGS_KEY, Some(&mine)) {
            Ok(()) | Err(strata_catalog::CatalogError::PermissionDenied { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .field("store", &self.store.describe())
            .field("id", &self.id)
            .finish()
    }
}

/// The repository used when none is named: `$STRATA_REPO`, else
/// `<data dir>/strata` (`~/.local/share/strata` on Linux).
///
/// # Errors
/// When there is no home directory to put it in.
pub fn default_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_REPO").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::data_dir()
        .map(|d| d.join("strata"))
        .ok_or_else(|| Error::Input("no data directory (set STRATA_REPO or HOME)".into()))
}

/// The catalog URL: `STRATA_CATALOG`, else the configuration's.
fn catalog_url(config: &RepoConfig) -> Option<String> {
    std::env::var("STRATA_CATALOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| config.storage.catalog.clone())
}

impl Repository {
    /// Creates the repository at `path` if needed and its catalog's schema
    /// (`strata init`): on PostgreSQL this runs the migrations, with the
    /// role the catalog URL names.
    ///
    /// # Errors
    /// As [`Repository::open_or_create`].
    pub fn init(path: &Path, on_create: &dyn Fn(&Path)) -> Result<Self> {
        let cfg_path = path.join(CONFIG_FILE);
        let config = if cfg_path.exists() {
            RepoConfig::load(&cfg_path)?
        } else {
            RepoConfig::default()
        };
        crate::backends::init_catalog(catalog_url(&config).as_deref())?;
        Self::open_or_create(path, on_create)
    }

    /// Opens the existing repository at `path`.
    ///
    /// # Errors
    /// [`Error::Input`] when there is no repository there (commands that
    /// only read never create one: a mistyped path must not leave an empty
    /// repository behind); otherwise as [`Repository::open_or_create`].
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(CONFIG_FILE).exists() {
            return Err(Error::Input(format!(
                "no strata repository at {} (check --repo or STRATA_REPO; `strata save` or `strata init` creates one)",
                path.display()
            )));
        }
        Self::open_or_create(path, &|_| {})
    }

    /// Opens the repository at `path`, creating it first if it does not
    /// exist; `on_create` is told when that happens.
    ///
    /// Environment overrides: `STRATA_CHUNKS` (a chunk store URL) and
    /// `STRATA_CATALOG` (a catalog URL) win over `strata.toml`.
    ///
    /// # Errors
    /// A configuration, store or catalog error naming what failed.
    pub fn open_or_create(path: &Path, on_create: &dyn Fn(&Path)) -> Result<Self> {
        let cfg_path = path.join(CONFIG_FILE);
        let config = if cfg_path.exists() {
            RepoConfig::load(&cfg_path)?
        } else {
            std::fs::create_dir_all(path)
                .map_err(|e| Error::system(format!("create repository {}", path.display()), e))?;
            let config = RepoConfig::default();
            let text = toml::to_string(&config).expect("config serialises");
            let tmp = path.join(format!(".{CONFIG_FILE}.tmp"));
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &cfg_path))
                .map_err(|e| Error::system(format!("write {}", cfg_path.display()), e))?;
            on_create(path);
            config
        };
        let chunks_url = std::env::var("STRATA_CHUNKS")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| config.storage.chunks.clone());
        let store = crate::backends::open_store(chunks_url.as_deref(), path)?;
        let catalog_url = catalog_url(&config);
        let catalog = crate::backends::open_catalog(catalog_url.as_deref(), path)?;
        agree_on_settings(&config, catalog.as_ref(), path)?;
        let id = catalog.repo_id()?;
        Ok(Self {
            path: path.to_path_buf(),
            host_id: host_id(&config),
            config,
            store,
            catalog,
            id,
            clock: Arc::new(SystemClock),
            state_dir: crate::worktree::state_root()?,
        })
    }

    /// The project named `name` (or with that id).
    ///
    /// # Errors
    /// [`Error::Input`] when there is none.
    pub fn project(&self, name: &str) -> Result<strata_catalog::Project> {
        if let Some(p) = self.catalog.project_by_name(name)? {
            return Ok(p);
        }
        if let Ok(id) = name.parse()
            && let Some(p) = self.catalog.project(id)?
        {
            return Ok(p);
        }
        Err(Error::Input(format!(
            "no project named {name:?} in {} (see `strata projects`)",
            self.path.display()
        )))
    }
}
