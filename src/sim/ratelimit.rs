//! Fixed-window request counters on the simulated clock, as GitLab's
//! `ApplicationRateLimiter` (the `jobs_index` limit) and Rack::Attack throttles count: the
//! window is `floor(now / period)`, every request counts, and a request is refused once the
//! count exceeds the limit.

use crate::sim::clock::SimTime;
use std::collections::HashMap;

/// Where a key stands in the current window after one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowState {
    pub limit: u32,
    pub observed: u32,
    /// When the current window ends.
    pub reset_at: SimTime,
}

impl WindowState {
    pub fn exceeded(&self) -> bool {
        self.observed > self.limit
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.observed)
    }
}

/// Per-key counters over fixed windows.
#[derive(Debug)]
pub(crate) struct FixedWindow {
    limit: u32,
    period_ms: i64,
    windows: HashMap<String, (i64, u32)>,
}

/// Beyond this many keys, counters of past windows are forgotten.
const MAX_KEYS: usize = 10_000;

impl FixedWindow {
    /// `limit` requests per `period_ms`; a limit of 0 disables the counter.
    pub fn new(limit: u32, period_ms: i64) -> FixedWindow {
        FixedWindow {
            limit,
            period_ms: period_ms.max(1),
            windows: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// The limit, or `default` when the counter is disabled.
    pub fn limit_or(&self, default: u32) -> u32 {
        if self.enabled() { self.limit } else { default }
    }

    /// Counts one request of `key` at `now`.
    pub fn hit(&mut self, key: &str, now: SimTime) -> WindowState {
        let window = now.0.div_euclid(self.period_ms);
        if self.windows.len() >= MAX_KEYS && !self.windows.contains_key(key) {
            self.windows.retain(|_, (w, _)| *w == window);
        }
        let entry = self.windows.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        WindowState {
            limit: self.limit,
            observed: entry.1,
            reset_at: SimTime((window + 1).saturating_mul(self.period_ms)),
        }
    }

    /// Forgets every count.
    pub fn reset(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_resets_with_the_window() {
        let mut limiter = FixedWindow::new(2, 60_000);
        let t = SimTime(120_000);
        assert!(!limiter.hit("a", t).exceeded());
        assert!(!limiter.hit("a", t.plus_millis(10)).exceeded());
        let third = limiter.hit("a", t.plus_millis(20));
        assert!(third.exceeded());
        assert_eq!(third.remaining(), 0);
        assert_eq!(third.reset_at, SimTime(180_000));
        assert!(!limiter.hit("b", t).exceeded());
        assert_eq!(limiter.hit("a", SimTime(180_000)).observed, 1);
    }
}
