//! The local-directory store: `<root>/<2 hex>/<64 hex>`, one file per chunk.
//!
//! A put writes a temporary file in `<root>/tmp`, syncs it and renames it
//! into place, so a chunk file is either absent or complete; a killed
//! process leaves at most a temporary file behind, which [`FileStore::open`]
//! removes when it is older than an hour. `flush` syncs the directories that
//! received chunks so the renames are durable too.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use strata_core::ChunkId;

use crate::{ChunkStore, Result, StoreError};

/// Chunks in a local directory.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    tmp: PathBuf,
    dirty: Mutex<BTreeSet<u8>>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// Opens (creating it if needed) the store at `root`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        // Leftovers of killed writers.
        if let Ok(rd) = fs::read_dir(&tmp) {
            let hour_ago = SystemTime::now() - Duration::from_secs(3600);
            for e in rd.flatten() {
                if e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < hour_ago)
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Self {
            root,
            tmp,
            dirty: Mutex::new(BTreeSet::new()),
        })
    }

    fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }
}

impl ChunkStore for FileStore {
    fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        let dest = self.path_of(id);
        let dir = dest.parent().expect("chunk path has a parent");
        let tmp = self
            .tmp
            .join(format!("{}.{}", id.to_hex(), uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
        let rename = || match fs::rename(&tmp, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                fs::rename(&tmp, &dest)
            }
            r => r,
        };
        if let Err(e) = rename() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename into", &dest)(e));
        }
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.0[0]);
        Ok(())
    }

    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let p = self.path_of(id);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(*id)
            } else {
                io_err("read", &p)(e)
            }
        })
    }

    fn size(&self, id: &ChunkId) -> Result<Option<u64>> {
        let p = self.path_of(id);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        let p = self.path_of(id);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &p)(e)),
            _ => Ok(()),
        }
    }

    fn list_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        let first = after.map_or(0, |a| a.0[0]);
        for prefix in first..=255u8 {
            let dir = self.root.join(format!("{prefix:02x}"));
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", &dir)(e)),
            };
            let mut ids: Vec<ChunkId> = Vec::new();
            for e in rd {
                let e = e.map_err(io_err("list", &dir))?;
                if let Some(id) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<ChunkId>().ok())
                    && after.is_none_or(|a| id > *a)
                {
                    ids.push(id);
                }
            }
            ids.sort_unstable();
            for id in ids {
                out.push(id);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        for prefix in dirty {
            let dir = self.root.join(format!("{prefix:02x}"));
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("sync", &dir))?;
        }
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &self.root))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
