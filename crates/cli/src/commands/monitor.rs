//! `strata monitor [--watch] [--json]`: the fleet at a glance
//! (`docs/fleet.md`). Never stops on a failing part: what the catalog or
//! the store could not answer is shown from the last good fetch, marked
//! stale, with the failure named.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_repo::Repository;
use strata_repo::monitor::{Monitor, MonitorOptions, Part, Status};

use crate::output::{Output, human};

/// Arguments of `monitor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Refresh until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub interval: u64,
    /// Refreshes before stopping with --watch (default: none, until
    /// interrupted).
    #[arg(long, value_name = "N", hide = true)]
    pub count: Option<u64>,
}

/// The monitor of `repo` with its configured probes and timeout.
pub fn monitor(repo: Repository) -> Monitor {
    let opts = MonitorOptions {
        timeout: Duration::from_secs(repo.config.monitor.timeout_secs.max(1)),
        usage_every: Duration::from_secs(60),
        probes: repo.config.monitor.probes.clone(),
    };
    Monitor::new(Arc::new(repo), opts)
}

/// A time for people: UTC, to the second.
pub fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "12 s", "3 min", "2 h".
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn stale_note<T>(p: &Part<T>) -> String {
    match (&p.error, p.as_of_ms) {
        (Some(e), Some(t)) => format!("  [STALE: {e}; shown as of {}]", when(t)),
        (Some(e), None) => format!("  [DOWN: {e}; nothing fetched yet]"),
        _ => String::new(),
    }
}

/// The status as text.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "strata monitor at {}", when(s.at_ms));
    let down = s.down();
    if down.is_empty() {
        let _ = writeln!(o, "all parts answering");
    } else {
        for d in &down {
            let _ = writeln!(o, "DOWN {d}");
        }
    }
    let _ = writeln!(o, "\nHOSTS{}", stale_note(&s.catalog));
    let _ = writeln!(
        o,
        "{:<16} {:<10} {:<9} {:<12} {:>9} {:>21}  VERSION",
        "ID", "ZONE", "STATE", "AGENT", "OPEN", "CACHE"
    );
    if let Some(c) = &s.catalog.value {
        for h in &c.hosts {
            let _ = writeln!(
                o,
                "{:<16} {:<10} {:<9} {:<12} {:>9} {:>21}  {}",
                h.id,
                h.zone,
                h.state,
                match h.heartbeat_age_ms {
                    Some(a) => format!("{} {}", h.agent, age(a)),
                    None => h.agent.clone(),
                },
                format!("{}/{}", h.open, h.max_projects),
                if h.cache_budget == 0 {
                    "-".into()
                } else {
                    format!("{}/{}", human(h.cache_bytes), human(h.cache_budget))
                },
                h.agent_version.as_deref().unwrap_or("-"),
            );
        }
        let stale: Vec<_> = c.projects.iter().filter(|p| p.stale).collect();
        let _ = writeln!(
            o,
            "\nPROJECTS PAST THEIR RECOVERY POINT ({}): {}",
            age(s.recovery_point_ms),
            stale.len()
        );
        for p in stale {
            let _ = writeln!(
                o,
                "  {:<24} on {:<16} last saved {}",
                p.name,
                p.host.as_deref().unwrap_or("-"),
                p.last_save_ms
                    .map_or("never".into(), |t| format!("{} ago", age(s.at_ms - t)))
            );
        }
        let st = &c.stats;
        let _ = writeln!(
            o,
            "\nREPOSITORY\n  {} chunks, {} stored ({} before compression)\n  awaiting scrub: {} chunks ({}) in their grace period, {} doomed ({})",
            st.chunks,
            human(st.stored_bytes),
            human(st.bytes),
            st.waiting_chunks,
            human(st.waiting_bytes),
            st.doomed,
            human(st.doomed_bytes)
        );
        for (what, last) in [("scrub", &c.last_scrub), ("check", &c.last_check)] {
            let _ = writeln!(
                o,
                "  last {what}: {}",
                last.as_ref().map_or("never".into(), |l| format!(
                    "{} ({} ago): {}",
                    when(l.at_ms),
                    age(s.at_ms - l.at_ms),
                    l.summary
                ))
            );
        }
        let errors: Vec<_> = c
            .hosts
            .iter()
            .filter_map(|h| h.last_error.as_ref().map(|e| (h, e)))
            .collect();
        let _ = writeln!(o, "\nAGENTS' LAST ERRORS: {}", errors.len());
        for (h, e) in errors {
            let _ = writeln!(
                o,
                "  {} ({} ago) on {}: {}",
                when(e.at_ms),
                age(s.at_ms - e.at_ms),
                h.id,
                e.summary
            );
        }
        let _ = writeln!(o, "\nRECENT REFUSALS: {}", c.refusals.len());
        for r in c.refusals.iter().take(5) {
            let _ = writeln!(
                o,
                "  {} {} by {} (token {}): {}",
                when(r.at_ms),
                r.project,
                if r.host.is_empty() {
                    "a save without a lease"
                } else {
                    &r.host
                },
                r.token,
                r.why
            );
        }
    }
    let _ = writeln!(o, "\nCOST PER PROJECT (stored){}", stale_note(&s.usage));
    if let Some(u) = &s.usage.value {
        let _ = writeln!(o, "  {:<24} {:>11} {:>11}", "PROJECT", "UNIQUE", "SHARED");
        for p in u {
            let _ = writeln!(
                o,
                "  {:<24} {:>11} {:>11}",
                p.project,
                human(p.unique_bytes),
                human(p.shared_bytes)
            );
        }
    }
    let _ = writeln!(
        o,
        "\nSTORE{}  {}",
        stale_note(&s.store),
        s.store.value.as_ref().map_or(String::new(), |v| format!(
            "{} ({} ms)",
            v.store, v.latency_ms
        ))
    );
    if !s.probes.is_empty() {
        let _ = writeln!(o, "\nPROBES");
        for p in &s.probes {
            let _ = writeln!(
                o,
                "  {:<16} {:<22} {}",
                p.name,
                p.address,
                p.error.as_deref().unwrap_or("up")
            );
        }
    }
    o
}

pub fn run(repo: Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let mut m = monitor(repo);
    let mut n = 0u64;
    loop {
        let s = m.refresh();
        if out.json {
            out.json(serde_json::to_value(&s)?);
        } else {
            if a.watch && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                print!("\x1b[2J\x1b[H");
            }
            out.line(render(&s).trim_end());
            if a.watch {
                out.line("");
            }
        }
        n += 1;
        if !a.watch || a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        let next = SystemTime::now() + Duration::from_secs(a.interval.max(1));
        while SystemTime::now() < next {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
