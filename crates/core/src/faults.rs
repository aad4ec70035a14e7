//! Which calls a fault-injecting decorator fails (a test utility shared by
//! the chunk store's and the catalog's). A share `rate` of calls fails with
//! a transient error: half before the inner call (nothing happened), half
//! after it (it happened, but the caller is told it failed, which is what
//! exercises idempotency). Deterministic for a given seed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The dice of a fault-injecting decorator.
#[derive(Debug)]
pub struct FaultDice {
    rate: f64,
    rng: Mutex<fastrand::Rng>,
    injected: AtomicU64,
}

impl FaultDice {
    /// Fails a share `rate` (0.0–1.0) of calls, drawing from `seed`.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected: AtomicU64::new(0),
        }
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// A uniform draw in `0..=max` (for latencies).
    pub fn uniform(&self, max: u64) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .u64(0..=max)
    }

    /// Runs `call`, or fails before or after it with `fault("before")` or
    /// `fault("after")`.
    ///
    /// # Errors
    /// The injected fault, or `call`'s own error.
    pub fn run<T, E>(
        &self,
        call: impl FnOnce() -> Result<T, E>,
        fault: impl Fn(&str) -> E,
    ) -> Result<T, E> {
        let draw = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        if draw < self.rate / 2.0 {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(fault("before"));
        }
        let r = call()?;
        if draw < self.rate {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(fault("after"));
        }
        Ok(r)
    }
}
