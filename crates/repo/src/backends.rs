//! Backend selection: every chunk store and catalog URL is parsed here,
//! once, into an enum with helpful errors, and opened here behind the
//! retrying decorators (rustic's `backend/choose.rs` is the model). The
//! rest of strata sees only the `ChunkStore` and `Catalog` traits.
//!
//! Accepted today: `file:///absolute/path` for chunks and
//! `sqlite:///absolute/path` for the catalog; the embedded default (no URL)
//! is `<repo>/chunks` and `<repo>/catalog.sqlite`.

use std::path::{Path, PathBuf};

use strata_catalog::{Catalog, RetryingCatalog, SqliteCatalog};
use strata_store::{ChunkStore, FileStore, RetryPolicy, RetryingStore};

use crate::error::{Error, Result};

/// Where chunks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunksUrl {
    /// A local directory.
    File(PathBuf),
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
}

fn local_path(url: &str, scheme: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
    rest.starts_with('/').then(|| PathBuf::from(rest))
}

impl ChunksUrl {
    /// Parses a chunk store URL.
    ///
    /// # Errors
    /// [`Error::Input`] saying which forms are accepted.
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(p) = local_path(url, "file") {
            return Ok(ChunksUrl::File(p));
        }
        let scheme = url.split("://").next().unwrap_or("");
        Err(Error::Input(if scheme == "s3" {
            format!(
                "chunk store {url:?}: S3 stores are not part of this build yet; use file:///absolute/path"
            )
        } else {
            format!("chunk store {url:?}: expected file:///absolute/path")
        }))
    }
}

impl CatalogUrl {
    /// Parses a catalog URL.
    ///
    /// # Errors
    /// [`Error::Input`] saying which forms are accepted.
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(p) = local_path(url, "sqlite") {
            return Ok(CatalogUrl::Sqlite(p));
        }
        let scheme = url.split("://").next().unwrap_or("");
        Err(Error::Input(if scheme.starts_with("postgres") {
            format!(
                "catalog {url:?}: PostgreSQL catalogs are not part of this build yet; use sqlite:///absolute/path"
            )
        } else {
            format!("catalog {url:?}: expected sqlite:///absolute/path")
        }))
    }
}

/// Opens the chunk store at `url` (the repository's `chunks/` directory
/// when `None`), every call retried when it fails transiently.
///
/// # Errors
/// [`Error::Input`] for a bad URL; the store's error when it cannot open.
pub fn open_store(url: Option<&str>, repo: &Path) -> Result<Box<dyn ChunkStore>> {
    let store = match url.map(ChunksUrl::parse).transpose()? {
        Some(ChunksUrl::File(p)) => FileStore::open(p)?,
        None => FileStore::open(repo.join("chunks"))?,
    };
    Ok(Box::new(RetryingStore::new(store, RetryPolicy::default())))
}

/// Opens the catalog at `url` (the repository's `catalog.sqlite` when
/// `None`), every call retried when it fails transiently.
///
/// # Errors
/// [`Error::Input`] for a bad URL; the catalog's error when it cannot open.
pub fn open_catalog(url: Option<&str>, repo: &Path) -> Result<Box<dyn Catalog>> {
    let path = match url.map(CatalogUrl::parse).transpose()? {
        Some(CatalogUrl::Sqlite(p)) => p,
        None => repo.join("catalog.sqlite"),
    };
    Ok(Box::new(RetryingCatalog::new(
        SqliteCatalog::open(&path)?,
        RetryPolicy::default(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            ChunksUrl::parse("file:///x/y").unwrap(),
            ChunksUrl::File("/x/y".into())
        );
        assert!(ChunksUrl::parse("file://relative").is_err());
        assert!(
            ChunksUrl::parse("s3://b")
                .unwrap_err()
                .to_string()
                .contains("S3")
        );
        assert_eq!(
            CatalogUrl::parse("sqlite:///c.db").unwrap(),
            CatalogUrl::Sqlite("/c.db".into())
        );
        assert!(CatalogUrl::parse("postgres://h/db").is_err());
    }
}
