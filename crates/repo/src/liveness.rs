//! Proof of life: heartbeats that renew a save's intents or a scrub's
//! lease while the work runs, and whether a process on this host is still
//! the one that started a save.

use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

/// How long a save's intents live unless renewed; renewed every third of it.
pub const SAVE_TTL: Duration = Duration::from_secs(600);

/// How long the scrub lease lives unless renewed; renewed every third of it.
pub const SCRUB_LEASE_TTL: Duration = Duration::from_secs(600);

/// Runs `work` while another thread calls `beat` every `every`; the beats
/// stop when `work` returns.
pub fn with_heartbeat<T>(
    every: Duration,
    beat: impl Fn() + Send + Sync,
    work: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|s| {
        let beat = &beat;
        s.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                beat();
            }
        });
        let out = work();
        drop(stop);
        out
    })
}

/// When process `pid` started (clock ticks since boot, field 22 of
/// `/proc/PID/stat`), `None` when there is no such process or it is a
/// zombie (dead, not yet reaped).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// True when the process that recorded (`pid`, `start`) on this host is
/// still running: the pid exists, is not a zombie, and (when `start` is
/// known) started at `start`, so a reused pid does not count.
pub fn is_alive(pid: u32, start: u64) -> bool {
    match process_start(pid) {
        None => false,
        Some(s) => start == 0 || s == start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("this process has a start time");
        assert!(is_alive(me, start));
        assert!(
            !is_alive(me, start + 1),
            "another start time is another process"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_alive(pid, 0));
    }

    #[test]
    fn heartbeats_run_while_the_work_runs_and_stop_after() {
        let beats = std::sync::atomic::AtomicU32::new(0);
        with_heartbeat(
            Duration::from_millis(5),
            || {
                beats.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
            || std::thread::sleep(Duration::from_millis(60)),
        );
        let n = beats.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= 3, "{n} beats");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(beats.load(std::sync::atomic::Ordering::SeqCst), n);
    }
}
