//! The catalog as one SQL protocol over a small transaction trait.
//!
//! [`SqlCatalog`] implements every [`crate::Catalog`] method once, in
//! `protocol.rs`: the claim, commit, trim re-validation, scrub (the
//! keep/wait/doom rule), doom and lease logic, as statements in the SQL
//! both SQLite and PostgreSQL speak. A [`Dialect`] only opens transactions
//! of the kind asked for, runs statements with positional parameters
//! (`?1`, `?2`, …) and turns its errors into [`CatalogError::Backend`]
//! (garage's `src/db/lib.rs` with its adapters is the model). Schemas and
//! migrations are the dialect's, since column types differ.
//!
//! The shared vocabulary the statements keep to: `ON CONFLICT … DO
//! NOTHING/UPDATE` for upserts, `CASE` instead of scalar `MAX`/`GREATEST`,
//! `CAST(… AS BIGINT)` on sums and untyped parameters, row-value
//! comparisons, `WITH RECURSIVE`, integers as 64-bit, chunk ids as blobs.

mod fleet;
pub(crate) mod postgres;
mod protocol;
pub(crate) mod sqlite;

pub use protocol::SqlCatalog;

use crate::{CatalogError, Result};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| CatalogError::Invalid(format!("a row has no column {i}")))
    }

    fn wrong(&self, i: usize, want: &str) -> CatalogError {
        CatalogError::Invalid(format!("column {i} holds {:?}, not {want}", self.0.get(i)))
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.get(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.wrong(i, "an integer")),
        }
    }

    /// Column `i` as an integer or NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// Column `i` as an unsigned 32-bit integer.
    pub fn u32(&self, i: usize) -> Result<u32> {
        u32::try_from(self.int(i)?).map_err(|_| self.wrong(i, "a 32-bit count"))
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String> {
        match self.get(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.wrong(i, "text")),
        }
    }

    /// Column `i` as text or NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<&[u8]> {
        match self.get(i)? {
            Value::Blob(v) => Ok(v),
            _ => Err(self.wrong(i, "bytes")),
        }
    }
}

/// A statement run inside a transaction: positional parameters `?1`, `?2`…
pub trait Tx {
    /// Runs a statement; returns how many rows it changed.
    ///
    /// # Errors
    /// [`CatalogError::Backend`].
    fn exec(&mut self, sql: &'static str, params: &[Value]) -> Result<u64>;

    /// Runs a query and returns its rows (every query of the protocol is
    /// bounded by a key or a `LIMIT`).
    ///
    /// # Errors
    /// [`CatalogError::Backend`].
    fn query(&mut self, sql: &'static str, params: &[Value]) -> Result<Vec<Row>>;

    /// Runs an insert; `false` when it would violate a unique constraint
    /// (nothing was inserted, and the transaction can go on).
    ///
    /// # Errors
    /// [`CatalogError::Backend`] for any other failure.
    fn insert_unique(&mut self, sql: &'static str, params: &[Value]) -> Result<bool>;

    /// The first row of a query, if any.
    ///
    /// # Errors
    /// As [`Tx::query`].
    fn one(&mut self, sql: &'static str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// True when a query returns a row.
    ///
    /// # Errors
    /// As [`Tx::query`].
    fn exists(&mut self, sql: &'static str, params: &[Value]) -> Result<bool> {
        Ok(self.one(sql, params)?.is_some())
    }
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only: a consistent snapshot, no locks held for writing.
    Read,
    /// Writes that must survive a power cut once committed (streams,
    /// deletes, scrub's dooms, leases).
    Write,
    /// Writes that need isolation but not durability: a save's record,
    /// renewals and intents die with the save's host anyway, and the
    /// commit that follows them is durable and syncs everything before it.
    WriteRelaxed,
}

/// A database the protocol runs on.
pub trait Dialect: Send + Sync {
    /// Its transaction.
    type Tx<'a>: Tx
    where
        Self: 'a;

    /// Runs `f` in one transaction of `mode` for the catalog call `op`
    /// (named in errors): commits when `f` returns `Ok`, rolls back
    /// otherwise. Write transactions are serialisable with respect to each
    /// other: the protocol's checks (an intent before a lookup, a start
    /// before a delete) rely on it.
    ///
    /// # Errors
    /// What `f` returns, or [`CatalogError::Backend`] (transient when the
    /// database was busy or the transaction lost a serialisation race).
    fn transaction<T>(
        &self,
        mode: Mode,
        op: &'static str,
        f: impl FnOnce(&mut Self::Tx<'_>) -> Result<T>,
    ) -> Result<T>;
}
