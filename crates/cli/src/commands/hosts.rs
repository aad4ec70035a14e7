//! `strata hosts list|add|disable|enable|drain|remove`: the fleet's compute
//! hosts (`docs/fleet.md`).

use serde_json::json;
use strata_catalog::{HostInfo, HostRecord, HostState};
use strata_repo::Repository;

use crate::output::{Output, human};

/// Arguments of `hosts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// What `hosts` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List hosts: state, whether their agent is up, what they hold.
    List,
    /// Register a host (enabled unless --disabled).
    Add(AddArgs),
    /// Choose this host for no project from now on (it keeps what it has).
    Disable {
        /// The host's id.
        id: String,
    },
    /// Let placement choose this host again.
    Enable {
        /// The host's id.
        id: String,
    },
    /// Move every project off this host, then disable it.
    Drain {
        /// The host's id.
        id: String,
    },
    /// Forget a host that holds no project.
    Remove {
        /// The host's id.
        id: String,
    },
}

/// Arguments of `hosts add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The host's id: what its agent and saves call it (`STRATA_HOST_ID`).
    pub id: String,
    /// Its failure zone.
    #[arg(long)]
    pub zone: String,
    /// Where operators reach it (shown in listings only).
    #[arg(long, default_value = "")]
    pub address: String,
    /// Most projects open on it at once.
    #[arg(long, default_value_t = 100)]
    pub max_projects: u64,
    /// Most bytes of open projects (newest full stream each), as a number
    /// with an optional K, M, G or T (powers of 1024); 0: no limit.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Register it disabled.
    #[arg(long)]
    pub disabled: bool,
}

/// `10G` and the like (powers of 1024), or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: the unit must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("{s:?} is not a size (a number, optionally followed by K, M, G or T)")
    })?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn run(repo: &Repository, a: &Args, out: &Output) -> anyhow::Result<()> {
    let now = repo.clock.now_ms();
    let lease = repo.config.fleet.lease_ms();
    match &a.action {
        Action::List => list(repo, out),
        Action::Add(a) => {
            repo.catalog.add_host(&HostRecord {
                address: a.address.clone(),
                state: if a.disabled {
                    HostState::Disabled
                } else {
                    HostState::Enabled
                },
                max_bytes: a.max_bytes,
                ..HostRecord::new(&a.id, &a.zone, a.max_projects, now)
            })?;
            out.line(&format!("host {} added in zone {}", a.id, a.zone));
            Ok(())
        }
        Action::Disable { id } | Action::Enable { id } => {
            let state = if matches!(a.action, Action::Disable { .. }) {
                HostState::Disabled
            } else {
                HostState::Enabled
            };
            repo.catalog.set_host_state(id, state, now, lease)?;
            out.line(&format!("host {id} {state}"));
            Ok(())
        }
        Action::Drain { id } => {
            let changed = repo
                .catalog
                .set_host_state(id, HostState::Draining, now, lease)?;
            let names = crate::commands::placement::names(repo)?;
            let mut stuck = 0;
            for p in &changed {
                let name = names.get(&p.project).map_or("?", String::as_str);
                match (p.host.as_deref(), p.move_to.as_deref()) {
                    (Some(h), _) if h != id => {
                        out.line(&format!(
                            "{name}: granted to {h} (its lease here had run out)"
                        ));
                    }
                    (_, Some(to)) => out.line(&format!("{name}: moving to {to}")),
                    _ => {
                        stuck += 1;
                        out.line(&format!(
                            "{name}: no host has room; drain again when one has"
                        ));
                    }
                }
            }
            let state = repo
                .catalog
                .hosts()?
                .into_iter()
                .find(|h| h.host.id == *id)
                .map_or(HostState::Draining, |h| h.host.state);
            out.line(&format!(
                "host {id} {state}{}",
                if state == HostState::Draining {
                    format!(
                        ": {} project(s) to move{}; it is disabled when the last is gone",
                        changed
                            .iter()
                            .filter(|p| p.host.as_deref() == Some(id))
                            .count(),
                        if stuck > 0 {
                            format!(", {stuck} without a target")
                        } else {
                            String::new()
                        }
                    )
                } else {
                    String::new()
                }
            ));
            Ok(())
        }
        Action::Remove { id } => {
            repo.catalog.remove_host(id)?;
            out.line(&format!("host {id} removed"));
            Ok(())
        }
    }
}

/// Whether the agent is up, by heartbeat age against the lease.
fn liveness(h: &HostRecord, now: i64, lease: i64) -> (String, Option<i64>) {
    match h.heartbeat_ms {
        None => ("never".into(), None),
        Some(t) => {
            let age = (now - t).max(0);
            let word = if age <= lease { "up" } else { "down" };
            (format!("{word} {}s", age / 1000), Some(age))
        }
    }
}

fn list(repo: &Repository, out: &Output) -> anyhow::Result<()> {
    let now = repo.clock.now_ms();
    let lease = repo.config.fleet.lease_ms();
    let hosts: Vec<HostInfo> = repo.catalog.hosts()?;
    if out.json {
        for i in &hosts {
            let h = &i.host;
            let (agent, age) = liveness(h, now, lease);
            out.json(json!({
                "id": h.id, "address": h.address, "zone": h.zone, "state": h.state.as_str(),
                "agent": agent.split(' ').next(), "heartbeat_age_ms": age,
                "agent_version": h.agent_version, "open": i.open, "max_projects": h.max_projects,
                "open_bytes": i.open_bytes, "max_bytes": h.max_bytes, "copies": i.copies,
                "cache_bytes": h.cache_bytes, "cache_budget": h.cache_budget,
                "last_error": h.last_error,
            }));
        }
        return Ok(());
    }
    out.line(&format!(
        "{:<16} {:<10} {:<9} {:<10} {:>9} {:>21} {:>6} {:>21} {:<14} ADDRESS",
        "ID", "ZONE", "STATE", "AGENT", "OPEN", "BYTES", "COPIES", "CACHE", "VERSION"
    ));
    for i in &hosts {
        let h = &i.host;
        let max_bytes = if h.max_bytes == 0 {
            "-".to_string()
        } else {
            human(h.max_bytes)
        };
        out.line(&format!(
            "{:<16} {:<10} {:<9} {:<10} {:>9} {:>21} {:>6} {:>21} {:<14} {}",
            h.id,
            h.zone,
            h.state,
            liveness(h, now, lease).0,
            format!("{}/{}", i.open, h.max_projects),
            format!("{}/{}", human(i.open_bytes), max_bytes),
            i.copies,
            if h.cache_budget == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", human(h.cache_bytes), human(h.cache_budget))
            },
            h.agent_version.as_deref().unwrap_or("-"),
            h.address,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1536"), Ok(1536));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2 t"), Ok(2 << 40));
        assert!(parse_size("5X").unwrap_err().contains("K, M, G or T"));
        assert!(parse_size("lots").unwrap_err().contains("\"lots\""));
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }
}
