//! The PostgreSQL dialect (the distributed deployment's catalog).
//!
//! URL: `postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem
//! &password_file=FILE`. TLS is always on and always verified: `verify-full`
//! (the default) checks the server's certificate against the CA bundle and
//! its name (or IP address) against the host; `verify-ca` checks the
//! certificate only. `disable`, `allow`, `prefer` and `require` are refused:
//! they would accept an unverified or plaintext connection. The `postgres`
//! crate's own `sslmode` stops at `require`, so verification is done by the
//! OpenSSL connector here. The password comes from `password_file` (mode
//! 0600 enforced) or `STRATA_CATALOG_PASSWORD`, never from the URL shown in
//! messages.
//!
//! Write transactions are `SERIALIZABLE` (the protocol's checks need
//! serialisable writes; SQLite gets that from `BEGIN IMMEDIATE`), reads are
//! `REPEATABLE READ READ ONLY`; relaxed writes set `synchronous_commit =
//! off` for their own transaction. Serialisation failures (40001),
//! deadlocks (40P01) and dropped connections are transient: the retrying
//! decorator runs the whole call again, which every call allows. The
//! schema version lives in `strata_schema`; [`MIGRATIONS`] are applied in
//! order under an advisory lock, by [`PostgresCatalog::migrate`] (the owner
//! role: hosts never run DDL).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres_openssl::MakeTlsConnector;
use r2d2_postgres::PostgresConnectionManager;

use super::{Dialect, Mode, Row, SqlCatalog, Tx, Value};
use crate::{CatalogError, Result};

/// Schema migrations; entry `i` takes version `i` to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE repo (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    retention TEXT
);
CREATE TABLE streams (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects(id),
    start_snap TEXT,
    end_snap TEXT NOT NULL,
    engine TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    new_bytes BIGINT NOT NULL,
    new_stored_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    host TEXT NOT NULL,
    parent_snap TEXT
);
CREATE INDEX streams_by_project ON streams(project, end_snap);
CREATE INDEX streams_by_start ON streams(project, start_snap);
CREATE TABLE chunks (
    id BYTEA PRIMARY KEY,
    len BIGINT NOT NULL,
    stored_len BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    unref_since_ms BIGINT
);
CREATE TABLE manifests (
    stream TEXT NOT NULL REFERENCES streams(id),
    seq BIGINT NOT NULL,
    chunk BYTEA NOT NULL,
    len BIGINT NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE INDEX manifests_by_chunk ON manifests(chunk);
CREATE TABLE saves (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    process_start BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE intents (
    save TEXT NOT NULL REFERENCES saves(id),
    chunk BYTEA NOT NULL,
    PRIMARY KEY (save, chunk)
);
CREATE INDEX intents_by_chunk ON intents(chunk);
CREATE TABLE doomed (
    chunk BYTEA NOT NULL,
    generation BIGINT NOT NULL,
    scrub TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    stored_len BIGINT NOT NULL,
    PRIMARY KEY (chunk, generation)
);
CREATE INDEX doomed_live ON doomed(chunk, generation) WHERE scrub <> '';
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#,
    // The fleet: hosts, placement, the project lease (docs/fleet.md).
    r#"
ALTER TABLE saves ADD COLUMN fence_host TEXT;
ALTER TABLE saves ADD COLUMN fence_token BIGINT;
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    max_projects BIGINT NOT NULL,
    max_bytes BIGINT NOT NULL,
    heartbeat_ms BIGINT,
    agent_version TEXT,
    added_ms BIGINT NOT NULL,
    cache_bytes BIGINT NOT NULL DEFAULT 0,
    cache_budget BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE placements (
    project TEXT PRIMARY KEY REFERENCES projects(id),
    state TEXT NOT NULL,
    host TEXT REFERENCES hosts(id),
    token BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    move_to TEXT REFERENCES hosts(id),
    last_host TEXT
);
CREATE INDEX placements_by_host ON placements(host);
CREATE INDEX placements_by_target ON placements(move_to);
CREATE TABLE host_copies (
    host TEXT NOT NULL REFERENCES hosts(id),
    project TEXT NOT NULL REFERENCES projects(id),
    snapshot TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (host, project)
);
CREATE INDEX host_copies_by_project ON host_copies(project);
CREATE TABLE rejections (
    at_ms BIGINT NOT NULL,
    project TEXT NOT NULL,
    host TEXT NOT NULL,
    token BIGINT NOT NULL,
    why TEXT NOT NULL,
    PRIMARY KEY (project, at_ms, host, token)
);
CREATE INDEX rejections_by_time ON rejections(at_ms);
"#,
];

/// Least privilege (`docs/deploy.md`), applied by every migration run to
/// the roles that exist: `strata_host`, what a compute host needs to save,
/// restore and list (no DELETE of streams, manifests or chunk rows, no
/// change of retention, no scrub lease) and what its agent needs
/// (`docs/fleet.md`: heartbeats, renewing and handing over placements that
/// exist, its local copies' records, recording refusals; no host added or
/// removed, no placement created); `strata_maint`, what trim, scrub and
/// check need. The owner (who runs `strata init`) keeps the DDL.
const GRANTS: &str = "
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'strata_host') THEN
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO strata_host;
    GRANT INSERT ON projects, streams, manifests, chunks, saves, intents TO strata_host;
    GRANT UPDATE (unref_since_ms) ON chunks TO strata_host;
    GRANT UPDATE (expires_ms) ON saves TO strata_host;
    GRANT DELETE ON saves, intents TO strata_host;
    GRANT UPDATE (heartbeat_ms, agent_version, cache_bytes, cache_budget, last_error, state)
      ON hosts TO strata_host;
    GRANT UPDATE ON placements TO strata_host;
    GRANT INSERT, UPDATE, DELETE ON host_copies TO strata_host;
    GRANT INSERT ON rejections TO strata_host;
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'strata_maint') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO strata_maint;
  END IF;
END $$;";

/// A pooled connection and the statements prepared on it: each of the
/// protocol's statements is parsed once per connection, not once per call
/// (which cost a round trip per call).
pub struct Conn {
    client: postgres::Client,
    prepared: HashMap<&'static str, postgres::Statement>,
}

impl std::ops::Deref for Conn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// r2d2_postgres's manager, its connections with their statements.
pub struct Manager(PostgresConnectionManager<MakeTlsConnector>);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.0.connect()?,
            prepared: HashMap::new(),
        })
    }

    fn is_valid(&self, c: &mut Conn) -> std::result::Result<(), postgres::Error> {
        self.0.is_valid(&mut c.client)
    }

    fn has_broken(&self, c: &mut Conn) -> bool {
        self.0.has_broken(&mut c.client)
    }
}

type Pool = r2d2::Pool<Manager>;

/// A PostgreSQL database as a [`Dialect`]: a pool of verified TLS
/// connections.
pub struct Postgres {
    pool: Pool,
    shown: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("at", &self.shown).finish()
    }
}

/// The catalog in PostgreSQL: the SQL protocol on the PostgreSQL dialect.
pub type PostgresCatalog = SqlCatalog<Postgres>;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// CA and host name (or IP address).
    Full,
    /// CA only.
    Ca,
}

/// A `postgres://` URL taken apart: the connection settings the driver
/// understands, and ours.
#[derive(Debug)]
struct Parsed {
    config: postgres::Config,
    verify: Verify,
    root_cert: Option<PathBuf>,
    password_file: Option<PathBuf>,
    /// The URL without any password, for messages.
    shown: String,
}

fn bad_url(shown: &str, why: impl std::fmt::Display) -> CatalogError {
    CatalogError::Config(format!("catalog {shown}: {why}"))
}

/// Removes a password from `user:password@` in a URL, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((auth, host)) if auth.contains(':') => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

fn parse(url: &str) -> Result<Parsed> {
    let shown = redact(url);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut verify = Verify::Full;
    let mut root_cert = None;
    let mut password_file = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                verify = match v {
                    "verify-full" => Verify::Full,
                    "verify-ca" => Verify::Ca,
                    other => {
                        return Err(bad_url(
                            &shown,
                            format!(
                                "sslmode={other} is refused: the catalog is reached over TLS with a verified certificate only (sslmode=verify-full, the default, or verify-ca)"
                            ),
                        ));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(v)),
            "password_file" => password_file = Some(PathBuf::from(v)),
            _ => rest.push(kv),
        }
    }
    rest.push("sslmode=require");
    let driver_url = format!("{base}?{}", rest.join("&"));
    let config: postgres::Config = driver_url
        .parse()
        .map_err(|e: postgres::Error| bad_url(&shown, e))?;
    Ok(Parsed {
        config,
        verify,
        root_cert,
        password_file,
        shown,
    })
}

/// The password: from `password_file` (which must not be readable by group
/// or others), else `STRATA_CATALOG_PASSWORD`, else none (the URL's own).
fn password(p: &Parsed) -> Result<Option<Vec<u8>>> {
    if let Some(f) = &p.password_file {
        let md = std::fs::metadata(f)
            .map_err(|e| bad_url(&p.shown, format!("password file {}: {e}", f.display())))?;
        let mode = md.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad_url(
                &p.shown,
                format!(
                    "password file {} is readable by others (mode {mode:04o}); chmod 600 it",
                    f.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(f)
            .map_err(|e| bad_url(&p.shown, format!("password file {}: {e}", f.display())))?;
        return Ok(Some(
            text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
        ));
    }
    Ok(std::env::var("STRATA_CATALOG_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
        .map(String::into_bytes))
}

/// Why OpenSSL last refused the server's certificate ("certificate has
/// expired", "hostname mismatch", "unable to get local issuer
/// certificate"): its handshake error says only "certificate verify
/// failed".
type Refusal = std::sync::Arc<Mutex<Option<String>>>;

fn connector(p: &Parsed, refusal: &Refusal) -> Result<MakeTlsConnector> {
    let tls = |e: openssl::error::ErrorStack| bad_url(&p.shown, format!("TLS setup: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
    let slot = std::sync::Arc::clone(refusal);
    b.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
        if !ok {
            let why = match ctx.error_depth() {
                0 => format!("the server's certificate: {}", ctx.error()),
                d => format!("the certificate {d} above the server's: {}", ctx.error()),
            };
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        }
        ok
    });
    match &p.root_cert {
        Some(ca) => b.set_ca_file(ca).map_err(|e| {
            bad_url(
                &p.shown,
                format!("CA bundle {} (sslrootcert): {e}", ca.display()),
            )
        })?,
        None => b.set_default_verify_paths().map_err(tls)?,
    }
    let mut c = MakeTlsConnector::new(b.build());
    if p.verify == Verify::Ca {
        c.set_callback(|cfg, _| {
            cfg.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(c)
}

/// A failure of PostgreSQL in the catalog call `op`. Transient: a lost
/// serialisation race, a deadlock, a server shutting down or not yet
/// accepting connections, and a connection that dropped or could not be
/// made.
fn backend(op: &'static str, e: postgres::Error) -> CatalogError {
    use postgres::error::SqlState;
    if let Some(d) = e.as_db_error()
        && d.code() == &SqlState::INSUFFICIENT_PRIVILEGE
    {
        return CatalogError::PermissionDenied {
            op,
            why: d.message().to_string(),
        };
    }
    let retryable_state = e.code().is_none_or(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || c.code().starts_with("08")
    });
    CatalogError::Backend {
        op,
        transient: (e.is_closed() || retryable_state) && !is_tls_refusal(&e),
        source: strata_core::error_chain(&e).into(),
    }
}

/// A certificate that does not verify, or a server without TLS, will not
/// get better by retrying.
fn is_tls_refusal(e: &postgres::Error) -> bool {
    let mut s: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = s {
        let text = err.to_string();
        if text.contains("certificate verify failed")
            || text.contains("server does not support TLS")
            || text.contains("wrong version number")
        {
            return true;
        }
        s = err.source();
    }
    false
}

impl SqlCatalog<Postgres> {
    /// Connects to the catalog at `url` (see the module docs): a pool of up
    /// to `max_connections` verified TLS connections. The schema must be
    /// this build's: an older one needs [`PostgresCatalog::migrate`] with
    /// the owner role first, a newer one a newer strata.
    ///
    /// # Errors
    /// [`CatalogError::Config`] for a bad URL, TLS setup or password file;
    /// [`CatalogError::Backend`] when the server cannot be reached, refuses
    /// the certificate or the credentials; [`CatalogError::TooNew`] and
    /// [`CatalogError::Config`] for a schema of another version.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let cat = Self::pool(url, max_connections)?;
        let found = cat.schema_version()?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(CatalogError::TooNew { found, supported });
        }
        if found < supported {
            return Err(CatalogError::Config(format!(
                "catalog {}: schema version {found}, this strata needs {supported}: run `strata init` with the catalog's owner role",
                cat.db.shown
            )));
        }
        Ok(cat)
    }

    /// Brings the schema at `url` up to this build's version (creating it
    /// in an empty database), under an advisory lock so concurrent
    /// migrations wait for each other. Needs a role that may create tables.
    ///
    /// # Errors
    /// As [`PostgresCatalog::connect`]; a permission error for a role
    /// without DDL rights.
    pub fn migrate(url: &str) -> Result<Self> {
        let cat = Self::pool(url, 2)?;
        let mut conn = cat.db.pool.get().map_err(|e| pool_error("migrate", e))?;
        let e = |e| backend("migrate", e);
        loop {
            let mut tx = conn.transaction().map_err(e)?;
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(7431001);
                 CREATE TABLE IF NOT EXISTS strata_schema (version BIGINT NOT NULL);",
            )
            .map_err(e)?;
            let now: i64 = tx
                .query_opt("SELECT version FROM strata_schema", &[])
                .map_err(e)?
                .map_or(0, |r| r.get(0));
            let Some(sql) = MIGRATIONS.get(now as usize) else {
                tx.commit().map_err(e)?;
                break;
            };
            tx.batch_execute(sql).map_err(e)?;
            if now == 0 {
                tx.execute(
                    "INSERT INTO repo (key, value) VALUES ('id', $1)",
                    &[&uuid::Uuid::new_v4().to_string()],
                )
                .map_err(e)?;
                tx.execute("INSERT INTO strata_schema (version) VALUES (1)", &[])
                    .map_err(e)?;
            } else {
                tx.execute("UPDATE strata_schema SET version = $1", &[&(now + 1)])
                    .map_err(e)?;
            }
            tx.commit().map_err(e)?;
        }
        conn.batch_execute(GRANTS).map_err(e)?;
        drop(conn);
        Ok(cat)
    }

    fn pool(url: &str, max_connections: u32) -> Result<Self> {
        let mut p = parse(url)?;
        if let Some(pw) = password(&p)? {
            p.config.password(pw);
        }
        p.config.connect_timeout(Duration::from_secs(10));
        let refusal = Refusal::default();
        let tls = connector(&p, &refusal)?;
        // Connect once directly, so a wrong CA, host or password is
        // reported now, with its cause (the pool would only time out).
        p.config.connect(tls.clone()).map_err(|e| {
            let why = refusal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match (backend("connect", e), why) {
                (
                    CatalogError::Backend {
                        op,
                        transient,
                        source,
                    },
                    Some(why),
                ) => CatalogError::Backend {
                    op,
                    transient,
                    source: format!("{source} ({why})").into(),
                },
                (e, _) => e,
            }
        })?;
        let manager = Manager(PostgresConnectionManager::new(p.config.clone(), tls));
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(15))
            .build_unchecked(manager);
        let cat = SqlCatalog {
            db: Postgres {
                pool,
                shown: p.shown,
            },
        };
        Ok(cat)
    }

    fn schema_version(&self) -> Result<i64> {
        let mut conn = self.db.pool.get().map_err(|e| pool_error("schema", e))?;
        let e = |e| backend("schema", e);
        let exists: bool = conn
            .query_one("SELECT to_regclass('strata_schema') IS NOT NULL", &[])
            .map_err(e)?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(conn
            .query_opt("SELECT version FROM strata_schema", &[])
            .map_err(e)?
            .map_or(0, |r| r.get(0)))
    }
}

/// A connection that could not be had from the pool: the last error of its
/// attempts (a refused certificate, a wrong password) or a timeout.
fn pool_error(op: &'static str, e: r2d2::Error) -> CatalogError {
    let text = e.to_string();
    let refusal = text.contains("certificate verify failed")
        || text.contains("does not support TLS")
        || text.contains("password authentication failed")
        || text.contains("no pg_hba.conf entry");
    CatalogError::Backend {
        op,
        transient: !refusal,
        source: Box::new(e),
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                _ => Err(format!("an integer for a parameter of type {ty}").into()),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A transaction on the PostgreSQL dialect.
pub struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    op: &'static str,
    prepared: &'a mut HashMap<&'static str, postgres::Statement>,
}

/// `?N` placeholders as PostgreSQL's `$N` (the protocol's statements have
/// no `?` anywhere else).
fn translate(sql: &str) -> String {
    sql.replace('?', "$")
}

impl PgTx<'_> {
    /// `sql` prepared on this connection (once: a prepared statement
    /// outlives the transaction that prepared it).
    fn sql(&mut self, sql: &'static str) -> Result<postgres::Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self
            .tx
            .prepare(&translate(sql))
            .map_err(|e| backend(self.op, e))?;
        self.prepared.insert(sql, st.clone());
        Ok(st)
    }

    fn params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
    }
}

fn row_of(r: &postgres::Row, op: &'static str) -> Result<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let e = |e| backend(op, e);
        out.push(match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(e)?.into(),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map_err(e)?
                .map(i64::from)
                .into(),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map_err(e)?
                .map(i64::from)
                .into(),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map_err(e)?
                .map(i64::from)
                .into(),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i).map_err(e)?.into()
            }
            Type::BYTEA => match r.try_get::<_, Option<Vec<u8>>>(i).map_err(e)? {
                Some(b) => Value::Blob(b),
                None => Value::Null,
            },
            ref t => {
                return Err(CatalogError::Invalid(format!(
                    "{op}: column {} has type {t}, which the protocol does not use",
                    c.name()
                )));
            }
        });
    }
    Ok(Row(out))
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &'static str, params: &[Value]) -> Result<u64> {
        let sql = self.sql(sql)?;
        let op = self.op;
        self.tx
            .execute(&sql, &Self::params(params))
            .map_err(|e| backend(op, e))
    }

    fn query(&mut self, sql: &'static str, params: &[Value]) -> Result<Vec<Row>> {
        let sql = self.sql(sql)?;
        let op = self.op;
        self.tx
            .query(&sql, &Self::params(params))
            .map_err(|e| backend(op, e))?
            .iter()
            .map(|r| row_of(r, op))
            .collect()
    }

    fn insert_unique(&mut self, sql: &'static str, params: &[Value]) -> Result<bool> {
        let sql = self.sql(sql)?;
        let op = self.op;
        // A failed statement aborts a PostgreSQL transaction: a savepoint
        // keeps the rest of it usable after a unique violation.
        let mut sp = self
            .tx
            .savepoint("strata_unique")
            .map_err(|e| backend(op, e))?;
        match sp.execute(&sql, &Self::params(params)) {
            Ok(_) => {
                sp.commit().map_err(|e| backend(op, e))?;
                Ok(true)
            }
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                sp.rollback().map_err(|e| backend(op, e))?;
                Ok(false)
            }
            Err(e) => Err(backend(op, e)),
        }
    }
}

impl Dialect for Postgres {
    type Tx<'a> = PgTx<'a>;

    fn transaction<T>(
        &self,
        mode: Mode,
        op: &'static str,
        f: impl FnOnce(&mut PgTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.pool.get().map_err(|e| pool_error(op, e))?;
        let e = |e| backend(op, e);
        let Conn { client, prepared } = &mut *conn;
        let tx = match mode {
            Mode::Read => client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
            Mode::Write | Mode::WriteRelaxed => client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::Serializable)
                .start(),
        }
        .map_err(e)?;
        let mut t = PgTx { tx, op, prepared };
        if mode == Mode::WriteRelaxed {
            t.tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(e)?;
        }
        let out = f(&mut t)?;
        t.tx.commit().map_err(e)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_tls_verified_and_secrets_out_of_messages() {
        let p = parse("postgres://host@127.0.0.1:5432/strata?sslrootcert=/ca.pem").unwrap();
        assert_eq!(p.verify, Verify::Full);
        assert_eq!(
            p.root_cert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        let p = parse("postgres://h@x/db?sslmode=verify-ca&password_file=/pw").unwrap();
        assert_eq!(p.verify, Verify::Ca);
        assert_eq!(
            p.password_file.as_deref(),
            Some(std::path::Path::new("/pw"))
        );
        for mode in ["disable", "allow", "prefer", "require"] {
            let e = parse(&format!("postgres://u:hunter2@x/db?sslmode={mode}")).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("refused") && text.contains(mode), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert_eq!(
            redact("postgres://u:hunter2@x:1/db"),
            "postgres://u:***@x:1/db"
        );
        assert_eq!(translate("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
    }
}
