//! A store that runs a hook before writes, deletes and listings, for
//! tests: to assert what a caller does (an upload only after its intent)
//! or to make calls fail in a chosen way (a disk that breaks).

use strata_core::ChunkKey;

use crate::{ChunkStore, Result, StoredObject};

/// A hook: called with the key (or, for listings, the `after` key) before
/// the inner call; an error is returned instead of making it.
pub type Hook = Box<dyn Fn(Option<&ChunkKey>) -> Result<()> + Send + Sync>;

/// Wraps a store and calls hooks before its calls.
pub struct HookedStore<S> {
    inner: S,
    on_put: Option<Hook>,
    on_delete: Option<Hook>,
    on_list: Option<Hook>,
}

impl<S: ChunkStore> HookedStore<S> {
    /// Wraps `inner` with no hooks.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            on_put: None,
            on_delete: None,
            on_list: None,
        }
    }

    /// Runs `hook` before every put.
    pub fn on_put(
        mut self,
        hook: impl Fn(&ChunkKey) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_put = Some(Box::new(move |k| hook(k.expect("a put has a key"))));
        self
    }

    /// Runs `hook` before every delete.
    pub fn on_delete(
        mut self,
        hook: impl Fn(&ChunkKey) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_delete = Some(Box::new(move |k| hook(k.expect("a delete has a key"))));
        self
    }

    /// Runs `hook` before every listing page.
    pub fn on_list(
        mut self,
        hook: impl Fn(Option<&ChunkKey>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_list = Some(Box::new(hook));
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

fn run(hook: Option<&Hook>, key: Option<&ChunkKey>) -> Result<()> {
    hook.map_or(Ok(()), |h| h(key))
}

impl<S: ChunkStore> ChunkStore for HookedStore<S> {
    fn put(&self, key: &ChunkKey, data: &[u8]) -> Result<()> {
        run(self.on_put.as_ref(), Some(key))?;
        self.inner.put(key, data)
    }
    fn get(&self, key: &ChunkKey) -> Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn size(&self, key: &ChunkKey) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn delete(&self, key: &ChunkKey) -> Result<()> {
        run(self.on_delete.as_ref(), Some(key))?;
        self.inner.delete(key)
    }
    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        run(self.on_list.as_ref(), after)?;
        self.inner.list_page(after, limit)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        format!("hooked({})", self.inner.describe())
    }
    fn io_parallelism(&self) -> Option<usize> {
        self.inner.io_parallelism()
    }
}
