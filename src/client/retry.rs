//! When and how long the client waits before trying a request again.
//!
//! Exponential backoff with full jitter: attempt `n` (from 1) waits a uniformly
//! random time in `[0, min(max, base * 2^(n-1))]`, so clients that failed together
//! do not retry together. A server's `Retry-After` raises the wait to at least what
//! it asked (still bounded by `backoff_max_ms`).

use rand::Rng;
use std::time::Duration;

/// How often and how patiently requests are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one request in all, the first included (1 = never retry).
    pub attempts_max: u32,
    /// The first backoff's upper bound.
    pub backoff_base_ms: u64,
    /// No backoff is longer.
    pub backoff_max_ms: u64,
}

/// Most tries any policy may ask for.
pub const ATTEMPTS_MAX: u32 = 32;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 8,
            backoff_base_ms: 20,
            backoff_max_ms: 2_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry), given the
    /// server's `Retry-After` if it sent one.
    pub fn backoff(&self, retry: u32, retry_after_ms: Option<u64>, rng: &mut impl Rng) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .backoff_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.backoff_max_ms);
        let jittered = if ceiling == 0 {
            0
        } else {
            rng.gen_range(0..=ceiling)
        };
        let floor = retry_after_ms.unwrap_or(0).min(self.backoff_max_ms);
        Duration::from_millis(jittered.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Proves backoffs stay within the exponential ceiling and the maximum, spread
    /// out (jitter), and honour Retry-After up to the maximum.
    #[test]
    fn backoff_is_bounded_jittered_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts_max: 8,
            backoff_base_ms: 10,
            backoff_max_ms: 300,
        };
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..=10u32 {
            let ceiling = (10u64 << (retry - 1)).min(300);
            let waits: Vec<u64> = (0..200)
                .map(|_| policy.backoff(retry, None, &mut rng).as_millis() as u64)
                .collect();
            assert!(waits.iter().all(|wait| *wait <= ceiling), "retry {retry}");
            let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
            assert!(
                distinct.len() > 5,
                "retry {retry} is not jittered: {distinct:?}"
            );
        }
        assert!(policy.backoff(1, Some(5_000), &mut rng) <= Duration::from_millis(300));
        assert!(policy.backoff(1, Some(250), &mut rng) >= Duration::from_millis(250));
    }
}
