//! The public error of strata operations. Its [`ErrorKind`] tells the caller
//! what to do: fix the input, treat the data as corrupt, or look at the
//! system (disk, permissions).

use std::path::PathBuf;

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: unknown project, target exists, bad config.
    Input,
    /// Data in the repository or a stream is damaged or hostile.
    Corrupt,
    /// The system failed: I/O, full disk, database.
    System,
    /// The operation met a concurrent change (a base trimmed while a save
    /// ran, a stream committed while a trim planned) and changed nothing:
    /// run it again.
    Retry,
}

/// An error of a strata operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Input(String),
    /// A repository configuration file is wrong.
    #[error("configuration {path}: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Damaged or hostile data, with where it was found.
    #[error("{context}: {source}")]
    Corrupt {
        /// Project and stream, for example.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A concurrent change made the operation give up without changing
    /// anything; running it again is the remedy.
    #[error("{0}")]
    Retry(String),
    /// A system failure, with what was being done.
    #[error("{context}: {source}")]
    System {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input(_) | Error::Config { .. } => ErrorKind::Input,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::System { .. } => ErrorKind::System,
            Error::Retry(_) => ErrorKind::Retry,
        }
    }

    pub(crate) fn system(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::System {
            context: context.into(),
            source: Box::new(e),
        }
    }

    pub(crate) fn corrupt(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Corrupt {
            context: context.into(),
            source: Box::new(e),
        }
    }
}

/// What the caller should do about a catalog error (the same mapping as
/// the conversion into [`Error`], for callers that hold the catalog's
/// error itself).
pub fn catalog_kind(e: &strata_catalog::CatalogError) -> ErrorKind {
    use strata_catalog::CatalogError as C;
    match e {
        C::SaveGone(_) | C::BaseGone(_) | C::BaseUnreachable(_) | C::StartNeeded { .. } => {
            ErrorKind::Retry
        }
        C::NameTaken(_)
        | C::Config(_)
        | C::PermissionDenied { .. }
        | C::UnknownHost(_)
        | C::HostExists(_)
        | C::HostUnavailable { .. }
        | C::NoHost { .. }
        | C::AlreadyOpen { .. }
        | C::NotOpen(_)
        | C::HostBusy { .. }
        | C::Fenced { .. } => ErrorKind::Input,
        C::Invalid(_) => ErrorKind::Corrupt,
        _ => ErrorKind::System,
    }
}

impl From<strata_catalog::CatalogError> for Error {
    fn from(e: strata_catalog::CatalogError) -> Self {
        match catalog_kind(&e) {
            ErrorKind::Retry => Error::Retry(e.to_string()),
            ErrorKind::Input => Error::Input(e.to_string()),
            ErrorKind::Corrupt => Error::corrupt("catalog", e),
            ErrorKind::System => Error::system("catalog", e),
        }
    }
}

impl From<strata_store::StoreError> for Error {
    fn from(e: strata_store::StoreError) -> Self {
        match e {
            strata_store::StoreError::Config(_) => Error::Input(e.to_string()),
            _ => Error::system("chunk store", e),
        }
    }
}
