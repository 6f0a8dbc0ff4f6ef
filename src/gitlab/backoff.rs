//! Exponential backoff with full jitter, for retried GETs.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with "full jitter": before retry `n` (0-based) the client waits a uniformly
/// random time in `[0, min(max, base · 2ⁿ)]`, which spreads the retries of many callers instead
/// of having them hit a recovering GitLab in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling before the first retry.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    /// 500 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The longest wait before retry `retry` (0-based): `min(max, base · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `retry`, uniform in `[0, ceiling(retry)]`.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ceilings_double_then_cap() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (0..8).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(b.ceiling(200), b.max, "huge exponents saturate");
    }

    #[test]
    fn delays_stay_under_the_ceiling_and_are_spread() {
        let b = Backoff::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for retry in 0..6 {
            let delays: Vec<Duration> = (0..200).map(|_| b.delay(retry, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= b.ceiling(retry)));
            let below_half = delays.iter().filter(|d| **d < b.ceiling(retry) / 2).count();
            assert!(
                (50..150).contains(&below_half),
                "full jitter should be uniform, got {below_half}/200 below half"
            );
        }
    }

    #[test]
    fn zero_base_means_no_wait() {
        let b = Backoff {
            base: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(b.delay(3, &mut rng), Duration::ZERO);
    }
}
