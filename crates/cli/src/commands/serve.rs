//! `strata serve --listen ADDR`: the monitor as a web page (`/`) and as
//! Prometheus metrics (`/metrics`), behind an access token
//! (`docs/fleet.md`).
//!
//! The token comes from the file `STRATA_SERVE_TOKEN_FILE` (mode 0600 or
//! stricter) or from `STRATA_SERVE_TOKEN`, never from the command line,
//! and is never logged: requests are logged by path without their query.
//! It is accepted as `Authorization: Bearer TOKEN` (Prometheus's
//! `authorization` setting), or once as `/?token=TOKEN`, which sets an
//! HttpOnly, SameSite=Strict cookie and redirects to `/` so the token
//! leaves the address bar. Anything else gets 401.
//!
//! One thread refreshes the status every `--interval` seconds; requests
//! are answered from the latest status, one at a time, so a slow or down
//! catalog never holds a request.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_repo::Repository;
use strata_repo::monitor::Status;

use crate::commands::monitor::{age, monitor, render, when};
use crate::output::{Output, human};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on, such as 127.0.0.1:9400.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Seconds between refreshes of the status.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub interval: u64,
}

const COOKIE: &str = "strata_token";

/// The access token, from its file or the environment.
fn token() -> anyhow::Result<String> {
    let t = if let Some(path) = std::env::var_os("STRATA_SERVE_TOKEN_FILE") {
        let md = std::fs::metadata(&path).map_err(|e| {
            anyhow::anyhow!("STRATA_SERVE_TOKEN_FILE {}: {e}", path.to_string_lossy())
        })?;
        if md.permissions().mode() & 0o077 != 0 {
            anyhow::bail!(
                "STRATA_SERVE_TOKEN_FILE {} can be read by others (mode {:o}); chmod 600 it",
                path.to_string_lossy(),
                md.permissions().mode() & 0o777
            );
        }
        std::fs::read_to_string(&path)?
    } else if let Ok(t) = std::env::var("STRATA_SERVE_TOKEN") {
        t
    } else {
        anyhow::bail!(
            "strata serve needs an access token: put it in a file named by STRATA_SERVE_TOKEN_FILE (mode 0600), or in STRATA_SERVE_TOKEN"
        );
    };
    let t = t.trim().to_string();
    if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("the access token must be at least 16 characters, without spaces");
    }
    Ok(t)
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a request presents as a token: a bearer header, the cookie, or the
/// `token` query parameter.
fn presented(req: &tiny_http::Request) -> (Option<String>, Option<String>) {
    let mut header = None;
    for h in req.headers() {
        if h.field.equiv("Authorization") {
            header = h.value.as_str().strip_prefix("Bearer ").map(str::to_string);
        } else if h.field.equiv("Cookie") {
            for c in h.value.as_str().split(';') {
                if let Some(v) = c.trim().strip_prefix(&format!("{COOKIE}=")) {
                    header = header.or_else(|| Some(v.to_string()));
                }
            }
        }
    }
    let query = req.url().split_once('?').and_then(|(_, q)| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|v| v.to_string())
    });
    (header, query)
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The status as Prometheus text.
pub fn metrics(s: &Status) -> String {
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    gauge(
        "strata_part_up",
        "1 when the part answered at the last refresh (catalog, usage, store).",
        [
            ("catalog", s.catalog.stale()),
            ("usage", s.usage.stale()),
            ("store", s.store.stale()),
        ]
        .into_iter()
        .map(|(p, stale)| (format!("{{part=\"{p}\"}}"), if stale { 0.0 } else { 1.0 }))
        .collect(),
    );
    gauge(
        "strata_probe_up",
        "1 when the probed endpoint accepted a connection.",
        s.probes
            .iter()
            .map(|p| {
                (
                    format!("{{probe=\"{}\"}}", label(&p.name)),
                    f64::from(u8::from(p.up)),
                )
            })
            .collect(),
    );
    if let Some(c) = &s.catalog.value {
        let host =
            |id: &str, zone: &str| format!("{{host=\"{}\",zone=\"{}\"}}", label(id), label(zone));
        gauge(
            "strata_host_up",
            "1 when the host's agent heartbeated within a lease.",
            c.hosts
                .iter()
                .map(|h| (host(&h.id, &h.zone), f64::from(u8::from(h.agent == "up"))))
                .collect(),
        );
        gauge(
            "strata_host_enabled",
            "1 when placement may choose the host.",
            c.hosts
                .iter()
                .map(|h| {
                    (
                        host(&h.id, &h.zone),
                        f64::from(u8::from(h.state == "enabled")),
                    )
                })
                .collect(),
        );
        gauge(
            "strata_host_open_projects",
            "Projects the host holds.",
            c.hosts
                .iter()
                .map(|h| (host(&h.id, &h.zone), h.open as f64))
                .collect(),
        );
        gauge(
            "strata_host_cache_bytes",
            "Bytes in the host's chunk cache.",
            c.hosts
                .iter()
                .map(|h| (host(&h.id, &h.zone), h.cache_bytes as f64))
                .collect(),
        );
        let project = |n: &str| format!("{{project=\"{}\"}}", label(n));
        gauge(
            "strata_project_stale",
            "1 when the project is open and its newest snapshot is older than the recovery point.",
            c.projects
                .iter()
                .map(|p| (project(&p.name), f64::from(u8::from(p.stale))))
                .collect(),
        );
        gauge(
            "strata_project_last_save_age_seconds",
            "Seconds since the project's newest snapshot.",
            c.projects
                .iter()
                .filter_map(|p| {
                    p.last_save_ms
                        .map(|t| (project(&p.name), (s.at_ms - t) as f64 / 1000.0))
                })
                .collect(),
        );
        let st = &c.stats;
        for (name, help, v) in [
            (
                "strata_repo_chunks",
                "Chunk rows in the catalog.",
                st.chunks,
            ),
            (
                "strata_repo_stored_bytes",
                "Stored bytes of the catalog's chunks.",
                st.stored_bytes,
            ),
            (
                "strata_repo_garbage_bytes",
                "Stored bytes awaiting scrub (in grace, or doomed).",
                st.waiting_bytes + st.doomed_bytes,
            ),
            (
                "strata_fence_refusals",
                "Refused commits and hand-overs among the newest 20.",
                c.refusals.len() as u64,
            ),
        ] {
            gauge(name, help, vec![(String::new(), v as f64)]);
        }
    }
    if let Some(u) = &s.usage.value {
        use strata_repo::monitor::UsageView;
        let rows = |f: fn(&UsageView) -> u64| {
            u.iter()
                .map(|p| {
                    (
                        format!("{{project=\"{}\"}}", label(&p.project)),
                        f(p) as f64,
                    )
                })
                .collect()
        };
        gauge(
            "strata_project_unique_bytes",
            "Stored bytes only the project names.",
            rows(|p| p.unique_bytes),
        );
        gauge(
            "strata_project_shared_bytes",
            "Stored bytes the project shares with others.",
            rows(|p| p.shared_bytes),
        );
    }
    o
}

/// The status as a web page (refreshing itself).
pub fn page(s: &Status, interval: u64) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{interval}\">\
         <title>strata fleet</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}.bad{{color:#b00;font-weight:bold}}\
         .stale{{background:#fee}}</style></head><body><h1>strata fleet</h1><p>at {}</p>",
        esc(&when(s.at_ms))
    );
    for d in s.down() {
        let _ = write!(o, "<p class=\"bad\" id=\"down\">DOWN {}</p>", esc(&d));
    }
    let _ = write!(
        o,
        "<h2>Hosts{}</h2><table id=\"hosts\"><tr><th>host</th><th>zone</th><th>state</th><th>agent</th><th>open</th><th>cache</th><th>version</th></tr>",
        if s.catalog.stale() { " (stale)" } else { "" }
    );
    if let Some(c) = &s.catalog.value {
        for h in &c.hosts {
            let _ = write!(
                o,
                "<tr class=\"host\"><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.id),
                esc(&h.zone),
                esc(&h.state),
                if h.agent == "down" { "bad" } else { "" },
                esc(&match h.heartbeat_age_ms {
                    Some(a) => format!("{} {}", h.agent, age(a)),
                    None => h.agent.clone(),
                }),
                h.open,
                h.max_projects,
                esc(&format!(
                    "{}/{}",
                    human(h.cache_bytes),
                    human(h.cache_budget)
                )),
                esc(h.agent_version.as_deref().unwrap_or("-")),
            );
        }
        let _ = write!(
            o,
            "</table><h2>Projects past their recovery point ({})</h2><table id=\"stale\"><tr><th>project</th><th>host</th><th>last saved</th></tr>",
            esc(&age(s.recovery_point_ms))
        );
        for p in c.projects.iter().filter(|p| p.stale) {
            let _ = write!(
                o,
                "<tr class=\"stale\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(p.host.as_deref().unwrap_or("-")),
                esc(&p
                    .last_save_ms
                    .map_or("never".into(), |t| format!("{} ago", age(s.at_ms - t))))
            );
        }
        let _ = write!(
            o,
            "</table><h2>Agents' last errors</h2><table id=\"errors\">"
        );
        for h in &c.hosts {
            if let Some(e) = &h.last_error {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&when(e.at_ms)),
                    esc(&h.id),
                    esc(&e.summary)
                );
            }
        }
        let _ = write!(o, "</table><h2>Recent refusals</h2><table id=\"refusals\">");
        for r in &c.refusals {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&when(r.at_ms)),
                esc(&r.project),
                esc(&r.host),
                esc(&r.why)
            );
        }
        let _ = write!(o, "</table>");
    } else {
        let _ = write!(o, "</table>");
    }
    // The rest, as the text monitor has it.
    let _ = write!(
        o,
        "<h2>Everything</h2><pre id=\"text\">{}</pre></body></html>",
        esc(&render(s))
    );
    o
}

fn respond(
    req: tiny_http::Request,
    code: u16,
    ctype: &str,
    body: String,
    extra: &[(&str, String)],
) {
    let mut r = tiny_http::Response::from_string(body).with_status_code(code);
    let mut headers = vec![
        ("Content-Type", ctype.to_string()),
        ("Cache-Control", "no-store".into()),
    ];
    headers.extend(extra.iter().cloned());
    for (k, v) in headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            r.add_header(h);
        }
    }
    let _ = req.respond(r);
}

pub fn run(repo: Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let token = token()?;
    let server = tiny_http::Server::http(&a.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    out.line(&format!(
        "serving the fleet's status on http://{}/ and /metrics",
        a.listen
    ));
    let latest: Arc<Mutex<Option<Status>>> = Arc::default();
    {
        let latest = Arc::clone(&latest);
        let interval = Duration::from_secs(a.interval.max(1));
        let mut m = monitor(repo);
        std::thread::spawn(move || {
            loop {
                let s = m.refresh();
                *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
                std::thread::sleep(interval);
            }
        });
    }
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("/").to_string();
        let (presented_token, query) = presented(&req);
        let ok = presented_token.as_deref().is_some_and(|t| same(t, &token));
        let by_query = query.as_deref().is_some_and(|t| same(t, &token));
        let code = if by_query && path == "/" {
            respond(
                req,
                303,
                "text/plain",
                "signed in\n".into(),
                &[
                    ("Location", "/".into()),
                    (
                        "Set-Cookie",
                        format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
                    ),
                ],
            );
            303
        } else if !ok {
            respond(
                req,
                401,
                "text/plain",
                "401 unauthorized: send the access token (Authorization: Bearer …, or open /?token=… once)\n".into(),
                &[("WWW-Authenticate", "Bearer realm=\"strata\"".into())],
            );
            401
        } else {
            let s = latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match (path.as_str(), s) {
                (_, None) => {
                    respond(
                        req,
                        503,
                        "text/plain",
                        "the first refresh has not finished yet\n".into(),
                        &[],
                    );
                    503
                }
                ("/", Some(s)) => {
                    respond(
                        req,
                        200,
                        "text/html; charset=utf-8",
                        page(&s, a.interval.max(1)),
                        &[],
                    );
                    200
                }
                ("/metrics", Some(s)) => {
                    respond(req, 200, "text/plain; version=0.0.4", metrics(&s), &[]);
                    200
                }
                ("/status.json", Some(s)) => {
                    respond(
                        req,
                        200,
                        "application/json",
                        serde_json::to_string(&s).unwrap_or_default(),
                        &[],
                    );
                    200
                }
                _ => {
                    respond(req, 404, "text/plain", "404 not found\n".into(), &[]);
                    404
                }
            }
        };
        eprintln!("strata serve: {path} {code}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{esc, label, same};

    #[test]
    fn names_are_escaped_and_tokens_compared_whole() {
        assert_eq!(
            esc("<script>\"a\"&'b'"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(same("0123456789abcdef", "0123456789abcdef"));
        assert!(!same("0123456789abcdef", "0123456789abcdeF"));
        assert!(!same("0123456789abcdef", "0123456789abcde"));
    }
}
