//! Repository configuration: `strata.toml` in the repository directory,
//! overridden by environment variables, defaulted entirely for the embedded
//! repository. Backend locations are URLs parsed once into enums.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_chunk::ChunkerConfig;

use crate::error::{Error, Result};

/// Name of the configuration file inside a repository directory.
pub const CONFIG_FILE: &str = "strata.toml";
/// The configuration format version this build writes and reads.
pub const CONFIG_VERSION: u32 = 1;

/// `strata.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepoConfig {
    /// Format version of this file.
    pub version: u32,
    /// Chunking; fixed when the repository is created.
    pub chunker: ChunkerSection,
    /// Where chunks and catalog live; defaults inside the repository.
    #[serde(default)]
    pub storage: StorageSection,
    /// The repository-wide retention policy (a project may have its own).
    #[serde(default)]
    pub retention: strata_core::Retention,
    /// When a save writes a full stream instead of an incremental.
    #[serde(default)]
    pub rebase: RebaseSection,
    /// The ZFS engine's settings.
    #[serde(default)]
    pub zfs: FsEngineSection,
    /// The btrfs engine's settings.
    #[serde(default)]
    pub btrfs: FsEngineSection,
    /// How the engines run external commands (host-local).
    #[serde(default)]
    pub commands: CommandsSection,
    /// The fleet: project leases (`docs/fleet.md`).
    #[serde(default)]
    pub fleet: FleetSection,
    /// The monitor's probes and timeout.
    #[serde(default)]
    pub monitor: MonitorSection,
    /// This host's id, when `STRATA_HOST_ID` does not say (default: the
    /// machine id). Hosts sharing a repository must have distinct ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

/// `[rebase]`: a save writes a new full stream when the chain since the
/// last full grows too long or too heavy, so restores stay fast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RebaseSection {
    /// Most incrementals after a full stream (default 50).
    pub max_incrementals: u32,
    /// Most incremental bytes after a full stream, as a fraction of the
    /// full stream's bytes (default 1.0: once the incrementals weigh as much
    /// as the full, restoring from a new full is cheaper).
    pub max_incremental_ratio: f64,
}

impl Default for RebaseSection {
    fn default() -> Self {
        Self {
            max_incrementals: 50,
            max_incremental_ratio: 1.0,
        }
    }
}

impl Eq for RebaseSection {}

/// `[zfs]` and `[btrfs]`: how the engine of a file system runs its
/// program (host-local settings; hosts of one repository may differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct FsEngineSection {
    /// The `zfs` or `btrfs` program (default: that name on the `PATH`;
    /// `sudo` rules name its full path, see `docs/engines.md`).
    pub program: Option<String>,
    /// Seconds a send or receive may move no byte before it is killed
    /// (default 300).
    pub stall_secs: u64,
    /// `strata-*` snapshots a project keeps after a save, the newest
    /// (default 1: the base of the next incremental).
    pub keep_local: usize,
}

impl Default for FsEngineSection {
    fn default() -> Self {
        Self {
            program: None,
            stall_secs: 300,
            keep_local: 1,
        }
    }
}

/// `[commands]`: the external commands the zfs and btrfs engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CommandsSection {
    /// Most commands (`zfs`, `btrfs`) one strata process runs at once; a
    /// caller past it waits (default 8, at least 1).
    pub max_children: usize,
}

impl Default for CommandsSection {
    fn default() -> Self {
        Self {
            max_children: strata_engine::command::DEFAULT_MAX_CHILDREN,
        }
    }
}

/// `[fleet]`: how long a project lease lasts unless its host's agent
/// renews it (`docs/fleet.md`). Every host and operator of a repository
/// should use the same value: it is also how long a host may stay silent
/// before it counts as down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct FleetSection {
    /// Seconds a lease lasts from its grant or last renewal (default 30,
    /// at least 1).
    pub lease_secs: u64,
    /// The fleet's recovery point: an open project whose newest snapshot
    /// is older than this many seconds is shown stale by the monitor
    /// (default 900).
    pub recovery_point_secs: u64,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            recovery_point_secs: 900,
        }
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl FleetSection {
    /// The lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        secs_to_ms(self.lease_secs.max(1))
    }

    /// The recovery point in milliseconds.
    pub fn recovery_point_ms(&self) -> i64 {
        secs_to_ms(self.recovery_point_secs)
    }
}

/// `[monitor]`: what `strata monitor` and `strata serve` probe and how
/// long they wait (host-local).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MonitorSection {
    /// Seconds each part (catalog, store) is waited for per refresh
    /// (default 5).
    pub timeout_secs: u64,
    /// Named `host:port` endpoints whose reachability the monitor shows
    /// (Garage nodes, the database server), for example
    /// `garage-1 = "10.0.0.1:3901"`.
    pub probes: std::collections::BTreeMap<String, String>,
}

impl Default for MonitorSection {
    fn default() -> Self {
        Self {
            timeout_secs: 5,
            probes: std::collections::BTreeMap::new(),
        }
    }
}

/// `[chunker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChunkerSection {
    /// FastCDC minimum chunk size in bytes.
    pub min_size: u32,
    /// FastCDC average chunk size in bytes.
    pub avg_size: u32,
    /// FastCDC maximum chunk size in bytes.
    pub max_size: u32,
    /// zstd level.
    pub zstd_level: i32,
}

/// `[storage]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageSection {
    /// Chunk store URL (`file:///path`); default `<repo>/chunks`.
    pub chunks: Option<String>,
    /// Catalog URL (`sqlite:///path`); default `<repo>/catalog.sqlite`.
    pub catalog: Option<String>,
}

impl RepoConfig {
    /// What every host of the repository must agree on, as the catalog
    /// records it: the chunker (chunk boundaries decide deduplication) and
    /// the stream format this build writes.
    pub fn shared_settings(&self) -> String {
        let c = &self.chunker;
        format!(
            "chunker min-size={} avg-size={} max-size={} zstd-level={}; native stream version {}",
            c.min_size,
            c.avg_size,
            c.max_size,
            c.zstd_level,
            strata_engine::format::STREAM_VERSION
        )
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        let c = ChunkerConfig::default();
        Self {
            version: CONFIG_VERSION,
            chunker: ChunkerSection {
                min_size: c.min_size,
                avg_size: c.avg_size,
                max_size: c.max_size,
                zstd_level: c.zstd_level,
            },
            storage: StorageSection::default(),
            retention: strata_core::Retention::default(),
            rebase: RebaseSection::default(),
            zfs: FsEngineSection::default(),
            btrfs: FsEngineSection::default(),
            commands: CommandsSection::default(),
            fleet: FleetSection::default(),
            monitor: MonitorSection::default(),
            host_id: None,
        }
    }
}

impl RepoConfig {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Config {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let cfg: RepoConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if cfg.version != CONFIG_VERSION {
            return Err(bad(format!(
                "version {} is not supported by this strata (it reads version {CONFIG_VERSION})",
                cfg.version
            )));
        }
        let c = &cfg.chunker;
        let ok = 64 <= c.min_size
            && c.min_size <= c.avg_size
            && c.avg_size <= c.max_size
            && c.avg_size <= 4 << 20
            && c.max_size <= strata_chunk::codec::MAX_CHUNK
            && (1..=22).contains(&c.zstd_level);
        let ratio = cfg.rebase.max_incremental_ratio;
        if ratio.is_nan() || ratio <= 0.0 {
            return Err(bad("[rebase] max-incremental-ratio must be above 0".into()));
        }
        if cfg.fleet.lease_secs == 0 {
            return Err(bad("[fleet] lease-secs must be at least 1".into()));
        }
        if cfg.commands.max_children == 0 {
            return Err(bad("[commands] max-children must be at least 1".into()));
        }
        if !ok {
            return Err(bad(
                "[chunker] needs 64 <= min-size <= avg-size <= max-size, avg-size <= 4 MiB, max-size <= 16 MiB, zstd-level 1..=22".into(),
            ));
        }
        Ok(cfg)
    }

    /// The chunker settings.
    pub fn chunker(&self) -> ChunkerConfig {
        ChunkerConfig {
            min_size: self.chunker.min_size,
            avg_size: self.chunker.avg_size,
            max_size: self.chunker.max_size,
            zstd_level: self.chunker.zstd_level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CONFIG_FILE);
        std::fs::write(&p, toml::to_string(&RepoConfig::default()).unwrap()).unwrap();
        assert_eq!(RepoConfig::load(&p).unwrap(), RepoConfig::default());
        std::fs::write(&p, "version = 1\nbogus = 2\n").unwrap();
        let e = RepoConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("strata.toml"), "{e}");
        std::fs::write(
            &p,
            "version = 1\n[chunker]\nmin-size = 10\navg-size = 5\nmax-size = 1\nzstd-level = 3\n",
        )
        .unwrap();
        assert!(RepoConfig::load(&p).is_err());
        let base = toml::to_string(&RepoConfig::default()).unwrap();
        assert!(base.contains("max-children = 8"), "{base}");
        std::fs::write(&p, base.replace("max-children = 8", "max-children = 3")).unwrap();
        assert_eq!(RepoConfig::load(&p).unwrap().commands.max_children, 3);
        std::fs::write(&p, base.replace("max-children = 8", "max-children = 0")).unwrap();
        let e = RepoConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("[commands] max-children"), "{e}");
    }
}
