//! Backend selection: every chunk store and catalog URL is parsed here,
//! once, into an enum with helpful errors, and opened here behind the
//! retrying decorators (rustic's `backend/choose.rs` is the model). The
//! rest of strata sees only the `ChunkStore` and `Catalog` traits.
//!
//! Accepted today: `file:///absolute/path` and `s3://BUCKET?endpoint=https://…`
//! (see `strata_store::S3Store`) for chunks;
//! `sqlite:///absolute/path` and `postgres://…?sslmode=verify-full&…` (see
//! `strata_catalog::sql::postgres`) for the catalog. The embedded default
//! (no URL) is `<repo>/chunks` and `<repo>/catalog.sqlite`.

use std::path::{Path, PathBuf};

use strata_catalog::{Catalog, PostgresCatalog, RetryingCatalog, SqliteCatalog};
use strata_store::{ChunkStore, FileStore, RetryPolicy, RetryingStore, S3Store};

use crate::error::{Error, Result};

/// Where chunks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunksUrl {
    /// A local directory.
    File(PathBuf),
    /// An S3 bucket (the whole URL: endpoint, CA, credentials file).
    S3(String),
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the whole URL, TLS settings included).
    Postgres(String),
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
        if url.starts_with("s3://") {
            return Ok(ChunksUrl::S3(url.to_string()));
        }
        Err(Error::Input(format!(
            "chunk store {url:?}: expected file:///absolute/path or s3://BUCKET?endpoint=https://HOST:PORT&ca=CA.pem&credentials=FILE"
        )))
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
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(CatalogUrl::Postgres(url.to_string()));
        }
        Err(Error::Input(format!(
            "catalog {:?}: expected sqlite:///absolute/path or postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA&password_file=FILE",
            url.split('@').next_back().unwrap_or("")
        )))
    }
}

/// Opens the chunk store at `url` (the repository's `chunks/` directory
/// when `None`), every call retried when it fails transiently.
///
/// # Errors
/// [`Error::Input`] for a bad URL; the store's error when it cannot open.
pub fn open_store(url: Option<&str>, repo: &Path) -> Result<Box<dyn ChunkStore>> {
    let policy = RetryPolicy::default();
    Ok(match url.map(ChunksUrl::parse).transpose()? {
        Some(ChunksUrl::S3(u)) => Box::new(RetryingStore::new(S3Store::open(&u)?, policy)),
        Some(ChunksUrl::File(p)) => Box::new(RetryingStore::new(FileStore::open(p)?, policy)),
        None => Box::new(RetryingStore::new(
            FileStore::open(repo.join("chunks"))?,
            policy,
        )),
    })
}

/// Opens the catalog at `url` (the repository's `catalog.sqlite` when
/// `None`), every call retried when it fails transiently.
///
/// # Errors
/// [`Error::Input`] for a bad URL; the catalog's error when it cannot open.
pub fn open_catalog(url: Option<&str>, repo: &Path) -> Result<Box<dyn Catalog>> {
    Ok(match url.map(CatalogUrl::parse).transpose()? {
        Some(CatalogUrl::Postgres(u)) => Box::new(RetryingCatalog::new(
            PostgresCatalog::connect(&u, PG_CONNECTIONS)?,
            RetryPolicy::default(),
        )),
        Some(CatalogUrl::Sqlite(p)) => Box::new(RetryingCatalog::new(
            SqliteCatalog::open(&p)?,
            RetryPolicy::default(),
        )),
        None => Box::new(RetryingCatalog::new(
            SqliteCatalog::open(&repo.join("catalog.sqlite"))?,
            RetryPolicy::default(),
        )),
    })
}

/// Connections one strata process keeps to a PostgreSQL catalog.
const PG_CONNECTIONS: u32 = 8;

/// Creates or upgrades the catalog's schema (`strata init`): a SQLite file
/// migrates itself when opened; a PostgreSQL catalog is migrated here, with
/// the role the URL names (the owner's: hosts never run DDL).
///
/// # Errors
/// [`Error::Input`] for a bad URL; the catalog's error otherwise.
pub fn init_catalog(url: Option<&str>) -> Result<()> {
    if let Some(CatalogUrl::Postgres(u)) = url.map(CatalogUrl::parse).transpose()? {
        PostgresCatalog::migrate(&u)?;
    }
    Ok(())
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
        assert_eq!(
            ChunksUrl::parse("s3://b?endpoint=https://h:1").unwrap(),
            ChunksUrl::S3("s3://b?endpoint=https://h:1".into())
        );
        assert!(ChunksUrl::parse("ftp://b").is_err());
        assert_eq!(
            CatalogUrl::parse("sqlite:///c.db").unwrap(),
            CatalogUrl::Sqlite("/c.db".into())
        );
        assert_eq!(
            CatalogUrl::parse("postgres://u@h/db").unwrap(),
            CatalogUrl::Postgres("postgres://u@h/db".into())
        );
        let e = CatalogUrl::parse("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
