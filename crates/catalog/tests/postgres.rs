//! The catalog conformance suite on a real PostgreSQL server over verified
//! TLS, as `scripts/cluster up` starts it (`scripts/test` does, once per
//! run, and exports `STRATA_TEST_PG_ADMIN_URL`). Each case gets a fresh
//! database. Also: the concurrent claims-versus-dooms case on two pools
//! (SERIALIZABLE, with serialisation failures retried), and refusals of a
//! wrong CA, a wrong host name and a password file others can read, none
//! of which ever shows a secret.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod};
use postgres_openssl::MakeTlsConnector;
use strata_catalog::conformance;
use strata_catalog::{Catalog, PostgresCatalog, RetryingCatalog};
use strata_core::RetryPolicy;
use strata_testing::cluster::url_param as param;

/// The superuser URL of the test cluster, or `None` (then the test says it
/// is skipped; under CI a missing cluster is a failure).
fn admin_url() -> Option<String> {
    strata_testing::cluster::setting("STRATA_TEST_PG_ADMIN_URL")
}

/// Creates a fresh database and returns the admin URL pointing at it.
fn fresh_database(admin: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "strata_case_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(param(admin, "sslrootcert")).unwrap();
    let hostport = admin.split('@').nth(1).unwrap().split('/').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let password = std::fs::read_to_string(param(admin, "password_file")).unwrap();
    let mut client = postgres::Config::new()
        .host(host)
        .port(port.parse().unwrap())
        .user("strata_admin")
        .password(password.trim())
        .dbname("postgres")
        .ssl_mode(postgres::config::SslMode::Require)
        .connect(MakeTlsConnector::new(b.build()))
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    admin.replacen("/postgres?", &format!("/{name}?"), 1)
}

fn retrying(c: PostgresCatalog) -> RetryingCatalog<PostgresCatalog> {
    RetryingCatalog::new(
        c,
        RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(50),
            max_attempts: 50,
            max_elapsed: Duration::from_secs(30),
        },
    )
}

#[test]
fn postgres_passes_the_catalog_conformance_suite() {
    let Some(admin) = admin_url() else { return };
    conformance::run_all(
        &|| retrying(PostgresCatalog::migrate(&fresh_database(&admin)).unwrap()),
        true,
    );
}

#[test]
fn postgres_claims_race_scrub_dooms_on_two_pools() {
    let Some(admin) = admin_url() else { return };
    let url = fresh_database(&admin);
    PostgresCatalog::migrate(&url).unwrap();
    let a = retrying(PostgresCatalog::connect(&url, 4).unwrap());
    let b = retrying(PostgresCatalog::connect(&url, 4).unwrap());
    conformance::claims_race_scrub_dooms(&a, &b, 200);
}

#[test]
fn a_schema_is_made_by_migrate_only_and_survives_reconnects() {
    let Some(admin) = admin_url() else { return };
    let url = fresh_database(&admin);
    let err = PostgresCatalog::connect(&url, 2).unwrap_err().to_string();
    assert!(err.contains("strata init"), "{err}");
    let id = PostgresCatalog::migrate(&url).unwrap().repo_id().unwrap();
    // Again: a no-op, same repository.
    assert_eq!(
        PostgresCatalog::migrate(&url).unwrap().repo_id().unwrap(),
        id
    );
    let cat = PostgresCatalog::connect(&url, 2).unwrap();
    assert_eq!(cat.repo_id().unwrap(), id);
    cat.create_project("p", 1).unwrap();
    assert_eq!(cat.projects().unwrap().len(), 1);
}

#[test]
fn wrong_ca_expired_certificate_wrong_host_and_loose_password_files_are_refused_and_named_without_secrets()
 {
    let Some(admin) = admin_url() else { return };
    let password = std::fs::read_to_string(param(&admin, "password_file")).unwrap();
    let secret = password.trim();

    // A certificate from another CA.
    let other_ca = std::env::var("STRATA_TEST_PG_OTHER_CA").unwrap();
    let url = admin.replace(param(&admin, "sslrootcert"), &other_ca);
    let err = PostgresCatalog::connect(&url, 1).unwrap_err().to_string();
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(
        err.contains("unable to get local issuer certificate"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");

    // A certificate that expired in 2020 (the cluster's second server).
    let port = std::env::var("STRATA_TEST_PG_EXPIRED_PORT").unwrap();
    let hostport = admin.split('@').nth(1).unwrap().split('/').next().unwrap();
    let host = hostport.rsplit_once(':').unwrap().0;
    let expired = admin.replace(hostport, &format!("{host}:{port}"));
    let err = PostgresCatalog::connect(&expired, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate has expired"), "{err}");

    // The right CA, the wrong name: the certificate is for 127.0.0.1.
    let by_name = admin.replace("@127.0.0.1:", "@localhost:");
    let err = PostgresCatalog::connect(&by_name, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hostname mismatch"), "{err}");
    // verify-ca checks the CA only: the same name is accepted.
    let ca_only = by_name.replace("sslmode=verify-full", "sslmode=verify-ca");
    // It connected: the error is about the schema of `postgres`, not TLS.
    let err = PostgresCatalog::connect(&ca_only, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("strata init"), "{err}");

    // Plaintext is never attempted.
    let plain = admin.replace("sslmode=verify-full", "sslmode=disable");
    let err = PostgresCatalog::connect(&plain, 1).unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");

    // A password file others can read is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("pw");
    std::fs::write(&loose, secret).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = admin.replace(param(&admin, "password_file"), loose.to_str().unwrap());
    let err = PostgresCatalog::connect(&url, 1).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(secret), "{err}");

    // A wrong password: refused, named, and not echoed.
    std::fs::write(&loose, "not-the-password").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = PostgresCatalog::connect(&url, 1).unwrap_err().to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("not-the-password") && !err.contains(secret),
        "{err}"
    );
}

/// The fleet under least privilege: the compute host's role heartbeats,
/// records its copies, commits under its lease, hands a project over and
/// has a late commit refused and recorded; it cannot add hosts, change a
/// host's capacity, or open projects (the maintenance role does).
#[test]
fn the_host_role_runs_the_agent_side_of_the_fleet_only() {
    use strata_catalog::{CatalogError, Fence, HostRecord, HostReport, Request};
    use strata_core::SnapshotId;
    let Some(admin) = admin_url() else { return };
    let url = fresh_database(&admin);
    PostgresCatalog::migrate(&url).unwrap();
    let as_role = |role: &str| {
        url.replacen("strata_admin@", &format!("{role}@"), 1)
            .replace("secrets/strata_admin", &format!("secrets/{role}"))
    };
    let host = PostgresCatalog::connect(&as_role("strata_host"), 2).unwrap();
    let maint = PostgresCatalog::connect(&as_role("strata_maint"), 2).unwrap();
    let record = |id: &str| HostRecord::new(id, "z", 5, 1);
    let denied = |r: Result<(), CatalogError>, what: &str| {
        let err = r.expect_err(what);
        assert!(
            matches!(err, CatalogError::PermissionDenied { .. }),
            "{what}: {err}"
        );
    };
    denied(host.add_host(&record("h1")), "a host adds a host");
    maint.add_host(&record("h1")).unwrap();
    maint.add_host(&record("h2")).unwrap();
    let p = host.create_project("p", 1).unwrap().id;
    denied(
        host.request(
            p,
            &Request::Open {
                on: Some("h1".into()),
            },
            10,
            60_000,
        )
        .map(|_| ()),
        "a host opens a project",
    );
    assert!(host.placement(p).unwrap().is_none());
    let lease = maint
        .request(
            p,
            &Request::Open {
                on: Some("h1".into()),
            },
            10,
            60_000,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        host.heartbeat("h1", &HostReport::version("v1"), 20, 60_000)
            .unwrap()
            .len(),
        1
    );
    host.set_copy("h1", p, Some(&SnapshotId::new(5, 1)), 20)
        .unwrap();
    let fence = Fence {
        host: "h1".into(),
        token: lease.token,
    };
    let commit = |fence: &Fence, end: SnapshotId, start: Option<SnapshotId>, now: i64| {
        conformance::commit_fenced(&host, p, Some(fence.clone()), start, end, now)
    };
    commit(&fence, SnapshotId::new(30, 1), None, 30).unwrap();
    // The move's cut-over, by the holding host's role.
    maint
        .request(p, &Request::Move { to: "h2".into() }, 40, 60_000)
        .unwrap();
    let moved = host.hand_over(p, &fence, Some("h2"), 50, 60_000).unwrap();
    assert_eq!((moved.host.as_deref(), moved.token), (Some("h2"), 2));
    let err = commit(
        &fence,
        SnapshotId::new(60, 1),
        Some(SnapshotId::new(30, 1)),
        60,
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::Fenced { .. }), "{err}");
    let refused = maint.rejections(5).unwrap();
    assert_eq!(refused.len(), 1, "recorded by the host's role");
    assert_eq!((refused[0].host.as_str(), refused[0].token), ("h1", 1));
    assert_eq!(host.streams(p).unwrap().len(), 1);
    denied(host.remove_host("h1"), "a host removes a host");
}
