//! The S3 chunk store (the distributed deployment's, Garage in tests), on
//! the `object_store` crate behind the synchronous [`ChunkStore`] trait: a
//! private tokio runtime runs each call.
//!
//! URL: `s3://BUCKET?endpoint=https://HOST:PORT&region=REGION&ca=CA.pem
//! &credentials=FILE&prefix=chunks/`. Only `https` endpoints: plain HTTP is
//! refused, and the server's certificate is checked against `ca` (else the
//! system's roots). Credentials come from `credentials` (a file of mode
//! 0600 with `access_key_id = "…"` and `secret_access_key = "…"`), else
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; never from the URL, never
//! shown.
//!
//! Object keys: `PREFIX<64 hex digits>` for generation 0 and
//! `PREFIX<hex>.<generation as 8 hex digits>` otherwise, so S3's lexical
//! listing order is exactly [`ChunkKey`] order (ids have one length; the
//! generation's fixed width orders like the number). Listings are checked
//! to come back in that order.
//!
//! `object_store`'s own retries are off: the repository's retry policy
//! ([`crate::RetryingStore`]) bounds attempts and time. Nothing relies on
//! conditional writes (Garage ignores `If-None-Match`): chunks are
//! immutable and the catalog decides who writes what (`docs/gc.md`).
//! A PUT that returned is durable on the store's write quorum, so
//! [`ChunkStore::flush`] has nothing left to do.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use strata_core::{ChunkId, ChunkKey};

use crate::{ChunkStore, Result, StoreError, StoredObject};

/// A chunk store in an S3 bucket.
pub struct S3Store {
    store: Arc<AmazonS3>,
    rt: tokio::runtime::Runtime,
    prefix: String,
    shown: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("at", &self.shown).finish()
    }
}

fn config_error(url: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Config(format!("chunk store {url}: {why}"))
}

/// `access_key_id` and `secret_access_key` from a credentials file.
fn read_credentials(url: &str, path: &std::path::Path) -> Result<(String, String)> {
    let md = std::fs::metadata(path)
        .map_err(|e| config_error(url, format!("credentials file {}: {e}", path.display())))?;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(config_error(
            url,
            format!(
                "credentials file {} is readable by others (mode {mode:04o}); chmod 600 it",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(url, format!("credentials file {}: {e}", path.display())))?;
    let mut id = None;
    let mut secret = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "access_key_id" => id = Some(v),
            "secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) => Ok((i, s)),
        _ => Err(config_error(
            url,
            format!(
                "credentials file {} needs access_key_id and secret_access_key",
                path.display()
            ),
        )),
    }
}

impl S3Store {
    /// Opens the bucket an `s3://` URL names (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL, a plain-HTTP endpoint, a CA
    /// bundle that does not read, or a credentials file others can read.
    pub fn open(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| config_error(url, "expected s3://BUCKET?endpoint=https://…"))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(config_error(url, "no bucket"));
        }
        let mut endpoint = None;
        let mut region = "garage".to_string();
        let mut ca: Option<PathBuf> = None;
        let mut credentials: Option<PathBuf> = None;
        let mut prefix = "chunks/".to_string();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "endpoint" => endpoint = Some(v.to_string()),
                "region" => region = v.to_string(),
                "ca" => ca = Some(PathBuf::from(v)),
                "credentials" => credentials = Some(PathBuf::from(v)),
                "prefix" => prefix = v.to_string(),
                other => return Err(config_error(url, format!("unknown parameter {other:?}"))),
            }
        }
        let endpoint = endpoint.ok_or_else(|| config_error(url, "no endpoint=https://…"))?;
        if !endpoint.starts_with("https://") {
            return Err(config_error(
                url,
                format!(
                    "endpoint {endpoint} is refused: chunks travel over TLS only (https://, with a verified certificate)"
                ),
            ));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let (key_id, secret) = match &credentials {
            Some(f) => read_credentials(url, f)?,
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(i), Ok(s)) if !i.is_empty() && !s.is_empty() => (i, s),
                _ => {
                    return Err(config_error(
                        url,
                        "no credentials: name a file with credentials=FILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    ));
                }
            },
        };
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60))
            .with_pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca)
                .map_err(|e| config_error(url, format!("CA bundle {}: {e}", ca.display())))?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_error(url, format!("CA bundle {}: {e}", ca.display())))?
            {
                options = options.with_root_certificate(cert);
            }
        }
        let store = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&endpoint)
            .with_region(&region)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| config_error(url, e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-s3")
            .enable_all()
            .build()
            .map_err(|e| config_error(url, format!("runtime: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            rt,
            prefix,
            shown: format!("s3://{bucket} at {endpoint}"),
        })
    }

    fn path(&self, k: &ChunkKey) -> ObjPath {
        let hex = k.id.to_hex();
        ObjPath::from(if k.generation == 0 {
            format!("{}{hex}", self.prefix)
        } else {
            format!("{}{hex}.{:08x}", self.prefix, k.generation)
        })
    }

    fn key_of(&self, p: &ObjPath) -> Option<ChunkKey> {
        let name = p.as_ref().strip_prefix(&self.prefix)?;
        let (hex, generation) = match name.split_once('.') {
            Some((h, g)) if g.len() == 8 => (h, u32::from_str_radix(g, 16).ok()?),
            Some(_) => return None,
            None => (name, 0),
        };
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        Some(ChunkKey::new(ChunkId::from_slice(&bytes).ok()?, generation))
    }
}

/// An `object_store` error as a store error: a missing object is
/// [`StoreError::NotFound`]; refused credentials or permissions, and TLS
/// certificates that do not verify, are permanent; the rest (timeouts,
/// resets, 5xx, "slow down") is transient.
fn backend(op: &'static str, key: Option<ChunkKey>, e: object_store::Error) -> StoreError {
    if let (object_store::Error::NotFound { .. }, Some(k)) = (&e, key) {
        return StoreError::NotFound(k);
    }
    let text = strata_core::error_chain(&e);
    let permanent = matches!(
        e,
        object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::InvalidPath { .. }
    ) || text.contains("certificate")
        || text.contains("InvalidAccessKeyId")
        || text.contains("AccessDenied")
        || text.contains("Forbidden")
        // The status, not any "403": the text names the key, and about
        // one key in 66 holds "403" in its hex (62 places, 1/4096 each).
        || text.contains("status 403");
    StoreError::Backend {
        op,
        key,
        transient: !permanent,
        source: text.into(),
    }
}

impl ChunkStore for S3Store {
    fn put(&self, id: &ChunkKey, data: &[u8]) -> Result<()> {
        self.put_bytes(id, bytes::Bytes::copy_from_slice(data))
    }

    fn put_bytes(&self, id: &ChunkKey, payload: bytes::Bytes) -> Result<()> {
        let path = self.path(id);
        self.rt
            .block_on(self.store.put(&path, payload.into()))
            .map(drop)
            .map_err(|e| backend("put", Some(*id), e))
    }

    fn get(&self, id: &ChunkKey) -> Result<Vec<u8>> {
        let path = self.path(id);
        self.rt
            .block_on(async { self.store.get(&path).await?.bytes().await })
            // Without a copy when the body is one buffer (it usually is).
            .map(Vec::from)
            .map_err(|e| backend("get", Some(*id), e))
    }

    fn size(&self, id: &ChunkKey) -> Result<Option<u64>> {
        let path = self.path(id);
        match self.rt.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend("head", Some(*id), e)),
        }
    }

    fn delete(&self, id: &ChunkKey) -> Result<()> {
        let path = self.path(id);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend("delete", Some(*id), e)),
        }
    }

    fn list_page(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<StoredObject>> {
        let prefix = ObjPath::from(self.prefix.trim_end_matches('/'));
        let offset = after.map(|k| self.path(k));
        let store = self.store.clone();
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(async move {
                let listing = match &offset {
                    Some(o) => store.list_with_offset(Some(&prefix), o),
                    None => store.list(Some(&prefix)),
                };
                listing.take(limit).try_collect().await
            })
            .map_err(|e| backend("list", after.copied(), e))?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            // Objects that are not chunks (another tool's) are not ours.
            let Some(key) = self.key_of(&m.location) else {
                continue;
            };
            if out.last().is_some_and(|o: &StoredObject| o.key >= key)
                || after.is_some_and(|a| key <= *a)
            {
                return Err(StoreError::Backend {
                    op: "list",
                    key: Some(key),
                    transient: false,
                    source: format!(
                        "the store listed {} out of key order; scrub and check need ordered listings",
                        m.location
                    )
                    .into(),
                });
            }
            out.push(StoredObject {
                key,
                size: m.size,
                modified_ms: m.last_modified.timestamp_millis(),
            });
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    /// Round trips of a few milliseconds each: 16 requests in flight (and
    /// the pipelines' memory bound grows with it: at most 16 chunks of up
    /// to the chunker's maximum size).
    fn io_parallelism(&self) -> Option<usize> {
        Some(16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credentials file `name` in `dir` (secret "hunter2") of `mode`.
    fn credentials(dir: &std::path::Path, name: &str, mode: u32) -> std::path::PathBuf {
        let cred = dir.join(name);
        std::fs::write(
            &cred,
            "access_key_id = \"GK1\"\nsecret_access_key = \"hunter2\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(mode)).unwrap();
        cred
    }

    fn store() -> S3Store {
        let cred = credentials(&tempfile_dir(), "cred", 0o600);
        S3Store::open(&format!(
            "s3://b?endpoint=https://127.0.0.1:1&credentials={}",
            cred.display()
        ))
        .unwrap()
    }

    #[test]
    fn key_names_sort_like_keys_and_read_back() {
        let s = store();
        let mut keys: Vec<ChunkKey> = (0..40u8)
            .flat_map(|i| {
                let id = ChunkId::of(&[i]);
                [0, 1, 2, 9, 10, 16, 255, 4096].map(|g| ChunkKey::new(id, g))
            })
            .collect();
        keys.sort();
        let mut names: Vec<String> = keys.iter().map(|k| s.path(k).to_string()).collect();
        let sorted = {
            let mut n = names.clone();
            n.sort();
            n
        };
        assert_eq!(names, sorted, "lexical order must be key order");
        for (k, n) in keys.iter().zip(names.drain(..)) {
            assert_eq!(s.key_of(&ObjPath::from(n.as_str())), Some(*k));
        }
        assert_eq!(s.key_of(&ObjPath::from("chunks/not-a-chunk")), None);
    }

    /// A dropped TLS handshake (nginx out of connections) is transient
    /// whatever the key it was for; a 403 is not.
    #[test]
    fn errors_are_classified_by_what_failed_not_by_the_key_named() {
        use strata_core::Transient;
        let key = ChunkKey::new(ChunkId::from_slice(&[0x40, 0x3f].repeat(16)).unwrap(), 0);
        let e = object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Error performing PUT https://h/b/{key} in 1ms - HTTP error: error sending request: client error (Connect): tls handshake eof"
            )
            .into(),
        };
        let e = backend("put", Some(key), e);
        assert!(e.to_string().contains("403"), "{e}");
        assert!(e.is_transient(), "{e}");
        let denied = object_store::Error::Generic {
            store: "S3",
            source:
                "Client error with status 403 Forbidden: <Error><Code>AccessDenied</Code></Error>"
                    .into(),
        };
        assert!(!backend("put", Some(key), denied).is_transient());
    }

    #[test]
    fn urls_refuse_plain_http_and_loose_credentials_without_secrets() {
        let e = S3Store::open("s3://b?endpoint=http://127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("TLS only"), "{e}");
        let cred = credentials(&tempfile_dir(), "loose", 0o644);
        let e = S3Store::open(&format!(
            "s3://b?endpoint=https://127.0.0.1:1&credentials={}",
            cred.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("chmod 600") && !e.contains("hunter2"), "{e}");
        let s = store();
        assert!(!format!("{s:?} {}", s.describe()).contains("hunter2"));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-s3-test-b-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
