//! [`RetryPolicy`]: how long a failed handler waits before its next attempt.

use std::time::Duration;

/// Exponential backoff with jitter between attempts of a failing handler.
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::RetryPolicy;
///
/// let policy = RetryPolicy { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
/// let third = policy.delay(3); // 400 ms before jitter: somewhere in 200..=400 ms
/// assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
/// assert!(policy.delay(30) <= Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): `initial * 2^(attempt-1)`,
    /// capped at `max`, then a random point in its upper half.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.initial.saturating_mul(1 << exp).min(self.max);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}
