//! The test cluster's settings, as `scripts/cluster env` exports them
//! (`scripts/test` evaluates it before the tests run).

/// The setting `name`, or `None` with a SKIPPED line when no cluster runs;
/// under CI a missing cluster is a failure, never a skip.
pub fn setting(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} is not set: scripts/test starts the cluster (scripts/cluster up)")
        }
        _ => {
            eprintln!(
                "SKIPPED: no test cluster (run scripts/test, or eval \"$(scripts/cluster env)\")"
            );
            None
        }
    }
}

/// The value of query parameter `key` in `url`.
///
/// # Panics
/// When `url` has no such parameter.
pub fn url_param<'a>(url: &'a str, key: &str) -> &'a str {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from the URL"))
}
