//! The chunk-store conformance suite on the real Garage cluster, through
//! nginx's TLS endpoint, as `scripts/cluster up` starts it (`scripts/test`
//! does, once per run, and exports `STRATA_TEST_S3_URL`). Each case gets a
//! fresh key prefix. Also: a certificate from another CA is refused at
//! once (not retried), and no error shows the secret key.

use std::sync::atomic::{AtomicU32, Ordering};

use strata_core::{ChunkId, ChunkKey, Transient};
use strata_store::{ChunkStore, RetryPolicy, RetryingStore, S3Store, conformance};
use strata_testing::cluster::url_param;

fn s3_url() -> Option<String> {
    strata_testing::cluster::setting("STRATA_TEST_S3_URL")
}

fn with_prefix(url: &str, prefix: &str) -> String {
    format!("{url}&prefix={prefix}/")
}

#[test]
fn s3_on_garage_passes_the_store_conformance_suite() {
    let Some(url) = s3_url() else { return };
    let n = AtomicU32::new(0);
    conformance::run_all(&|| {
        let prefix = format!(
            "conformance-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            n.fetch_add(1, Ordering::SeqCst)
        );
        RetryingStore::new(
            S3Store::open(&with_prefix(&url, &prefix)).unwrap(),
            RetryPolicy::default(),
        )
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_once_without_secrets() {
    let Some(url) = s3_url() else { return };
    let other = std::env::var("STRATA_TEST_PG_OTHER_CA").unwrap();
    let ca = url_param(&url, "ca");
    let bad = url.replace(&format!("ca={ca}"), &format!("ca={other}"));
    let text = refused(&bad);
    assert!(text.contains("certificate"), "{text}");
    let creds = url_param(&url, "credentials");
    let secret = std::fs::read_to_string(creds).unwrap();
    let secret = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret_access_key = "))
        .unwrap()
        .trim_matches('"');
    assert!(!text.contains(secret));
}

/// The error a store at `url` gives for a read: permanent, at once, and
/// its text.
fn refused(url: &str) -> String {
    let store = S3Store::open(url).unwrap();
    let started = std::time::Instant::now();
    let err = RetryingStore::new(store, RetryPolicy::default())
        .get(&ChunkKey::from(ChunkId::of(b"x")))
        .unwrap_err();
    let text = err.to_string();
    assert!(!err.is_transient(), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a refused certificate was retried: {text}"
    );
    text
}

/// nginx serves a certificate that expired in 2020 on a second port, and
/// the good certificate names the endpoint's addresses only (reached
/// through a plain TCP relay on 127.0.0.1 it is misnamed): both are
/// refused, and the error says which.
#[test]
fn an_expired_certificate_or_a_wrong_host_name_is_refused_and_named() {
    let Some(url) = s3_url() else { return };
    let endpoint = url_param(&url, "endpoint").to_string();
    let port = std::env::var("STRATA_TEST_S3_EXPIRED_PORT").unwrap();
    let (host, _) = endpoint.rsplit_once(':').unwrap();
    let expired = refused(&url.replace(&endpoint, &format!("{host}:{port}")));
    assert!(expired.contains("expired"), "{expired}");
    let relay = strata_testing::proxy::Proxy::start(
        "127.0.0.1".parse().unwrap(),
        endpoint.strip_prefix("https://").unwrap().parse().unwrap(),
        strata_testing::proxy::Faults::none(),
    )
    .unwrap();
    let misnamed = refused(&url.replace(&endpoint, &format!("https://{}", relay.addr())));
    assert!(misnamed.contains("not valid for name"), "{misnamed}");
}
