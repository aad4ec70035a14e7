//! Retrying transient failures: exponential backoff with full jitter,
//! bounded in attempts and in total time. Used by the chunk store and
//! catalog decorators; `docs/retries.md` says why full jitter and why not
//! the backon crate.

use std::time::{Duration, Instant};

/// An error that can say whether trying again may succeed.
pub trait Transient {
    /// True for timeouts, resets, busy databases, "slow down".
    fn is_transient(&self) -> bool;
}

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling of any delay.
    pub cap: Duration,
    /// Most attempts in all (the first included).
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 50 ms doubling to 5 s, at most 10 attempts within 2 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
            max_attempts: 10,
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails permanently, or the policy gives up
    /// (then the last error is returned).
    ///
    /// # Errors
    /// The first permanent error, or the last transient one.
    pub fn run<T, E: Transient + std::fmt::Display>(
        &self,
        what: &str,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let mut attempt = 1u32;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_transient()
                        && attempt < self.max_attempts
                        && start.elapsed() < self.max_elapsed =>
                {
                    let ceiling = self
                        .base
                        .saturating_mul(1 << (attempt - 1).min(20))
                        .min(self.cap);
                    let delay = Duration::from_nanos(fastrand::u64(0..=ceiling.as_nanos() as u64));
                    tracing::debug!(what, attempt, ?delay, error = %e, "transient failure; retrying");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
