//! The local-directory store: `<root>/<2 hex>/<key>`, one file per chunk,
//! where the key is the chunk id's 64 hex digits, followed by `.<generation>`
//! for the rare generation above 0 (`docs/gc.md`).
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use strata_core::ChunkKey;

use crate::{ChunkStore, Result, StoreError, StoredObject};

/// Chunks in a local directory.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    tmp: PathBuf,
    dirty: Mutex<BTreeSet<u8>>,
    /// The sorted keys of the prefix directory a listing is in.
    listing: Mutex<Option<Listing>>,
}

/// One prefix directory's keys, as a listing read them.
#[derive(Debug)]
struct Listing {
    prefix: u8,
    keys: Arc<Vec<ChunkKey>>,
    /// The key the last page returned from it ended with.
    ended_at: Option<ChunkKey>,
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
            listing: Mutex::new(None),
        })
    }

    /// The sorted keys in directory `prefix`. A listing reads each prefix
    /// directory once and keeps its keys (36 bytes each, 1/256 of the
    /// store) for the pages that follow: the cache is used only when
    /// `resume` is the key the previous page of that directory ended with.
    fn prefix_keys(&self, prefix: u8, resume: Option<&ChunkKey>) -> Result<Arc<Vec<ChunkKey>>> {
        let mut cache = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(c), Some(r)) = (cache.as_ref(), resume)
            && c.prefix == prefix
            && c.ended_at == Some(*r)
        {
            return Ok(c.keys.clone());
        }
        let dir = self.root.join(format!("{prefix:02x}"));
        let mut keys: Vec<ChunkKey> = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.map_err(io_err("list", &dir))?;
                    if let Some(key) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                        keys.push(key);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("list", &dir)(e)),
        }
        keys.sort_unstable();
        let keys = Arc::new(keys);
        *cache = Some(Listing {
            prefix,
            keys: keys.clone(),
            ended_at: None,
        });
        Ok(keys)
    }

    /// Notes that a page ended at `key` in directory `prefix`.
    fn listed_up_to(&self, prefix: u8, key: ChunkKey) {
        let mut cache = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_mut()
            && c.prefix == prefix
        {
            c.ended_at = Some(key);
        }
    }

    fn path_of(&self, key: &ChunkKey) -> PathBuf {
        let hex = key.id.to_hex();
        self.root.join(&hex[..2]).join(key.to_string())
    }
}

impl ChunkStore for FileStore {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        let dest = self.path_of(id);
        let dir = dest.parent().expect("chunk path has a parent");
        let tmp = self
            .tmp
            .join(format!("{id}.{}", uuid::Uuid::new_v4().simple()));
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
            .insert(id.id.0[0]);
        Ok(())
    }

    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        let p = self.path_of(id);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(*id)
            } else {
                io_err("read", &p)(e)
            }
        })
    }

    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        let p = self.path_of(id);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    fn delete(&self, id: &ChunkKey) -> Result<()> {
        let p = self.path_of(id);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &p)(e)),
            _ => Ok(()),
        }
    }

    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        let first = after.map_or(0, |a| a.id.0[0]);
        for prefix in first..=255u8 {
            // Continue from the cached directory only when this call picks up
            // exactly where the listing that read it stopped.
            let resume = if prefix == first { after } else { None };
            let keys = self.prefix_keys(prefix, resume)?;
            let start = after.map_or(0, |a| keys.partition_point(|k| k <= a));
            for key in &keys[start..] {
                let path = self.path_of(key);
                let meta = match fs::metadata(&path) {
                    Ok(m) => m,
                    // Deleted since the directory was read.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("stat", &path)(e)),
                };
                out.push(StoredObject {
                    key: *key,
                    size: meta.len(),
                    modified_ms: meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64),
                });
                if out.len() == limit {
                    self.listed_up_to(prefix, *key);
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
