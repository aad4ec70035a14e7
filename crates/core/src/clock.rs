//! The clock, injected so that ids and protocols can be tested with a fixed or
//! stepping time (the habit slatedb follows by banning `SystemTime::now`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock for tests: starts at a given time and advances by a fixed step on
/// every reading, so successive ids are distinct and ordered.
#[derive(Debug)]
pub struct SteppingClock {
    now: AtomicI64,
    step: i64,
}

impl SteppingClock {
    /// A clock that first reads `start_ms` and then `step_ms` more on each call.
    pub fn new(start_ms: i64, step_ms: i64) -> Self {
        Self {
            now: AtomicI64::new(start_ms),
            step: step_ms,
        }
    }
}

impl Clock for SteppingClock {
    fn now_ms(&self) -> i64 {
        self.now.fetch_add(self.step, Ordering::Relaxed)
    }
}
