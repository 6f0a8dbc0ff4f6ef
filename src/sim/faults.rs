//! Fault injection for `/api/v4` (never the admin endpoint): server errors, latency, requests
//! held past any sane client timeout, Rack::Attack 429 bursts, truncated JSON bodies,
//! connections closed without an answer, and mutations applied after their client was left
//! without an answer. All draws come from one seeded generator.
//!
//! The `hook_*` faults act on Job Hook deliveries instead (dropped, duplicated, held back so
//! that later ones overtake them); the hooks draw them from a seeded generator of their own
//! (`crate::sim::hooks`), so turning them on does not change the API's draws.
//!
//! A request that reaches the endpoint runs to completion whatever its client does: a held
//! `POST …/play` whose client gave up still plays the job, as in GitLab (Rails finishes a
//! request whose client has gone).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which faults to inject, and how often. The default injects none.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Share of requests answered 500, 502 or 503 (GitLab-style bodies).
    pub error_5xx_ratio: f64,
    /// Added to every request before it is answered.
    pub latency: Duration,
    /// Share of requests held for [`FaultConfig::timeout_hold`] before being served normally
    /// (the client should have given up by then; a mutation still takes effect, and is logged
    /// with the status it was answered).
    pub timeout_ratio: f64,
    /// How long a "timed out" request is held (default 30 s).
    pub timeout_hold: Duration,
    /// Every Nth request is refused by a Rack::Attack-style throttle (plain-text 429 with
    /// `RateLimit-*` and `Retry-After` headers).
    pub rate_limit_burst_every: Option<u32>,
    /// Share of JSON answers cut off half-way.
    pub malformed_json_ratio: f64,
    /// Share of requests whose connection is closed without any answer (and that are not
    /// carried out).
    pub drop_connection_ratio: f64,
    /// Share of state-changing requests (`POST`, `DELETE`, …) answered by closing the connection
    /// at once, as a proxy that gave up would, and carried out [`FaultConfig::apply_late_after`]
    /// later all the same: the ambiguous mutation. GETs are never applied late.
    pub apply_late_ratio: f64,
    /// How long after its client was left without an answer a late mutation takes effect
    /// (default 10 s; at most five minutes).
    pub apply_late_after: Duration,
    /// Share of Job Hook deliveries never sent (as if the delivery worker lost them).
    pub hook_drop_ratio: f64,
    /// Share of Job Hook deliveries sent twice, with the same `Idempotency-Key` and
    /// `X-Gitlab-Event-UUID` (a new `X-Gitlab-Webhook-UUID` each time).
    pub hook_duplicate_ratio: f64,
    /// Share of Job Hook deliveries held back for [`FaultConfig::hook_reorder_delay`], so that
    /// the deliveries after them (e.g. a job's final status) arrive first.
    pub hook_reorder_ratio: f64,
    /// How long a held-back delivery waits (default 1 s; at most five minutes).
    pub hook_reorder_delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_5xx_ratio: 0.0,
            latency: Duration::ZERO,
            timeout_ratio: 0.0,
            timeout_hold: Duration::from_secs(30),
            rate_limit_burst_every: None,
            malformed_json_ratio: 0.0,
            drop_connection_ratio: 0.0,
            apply_late_ratio: 0.0,
            apply_late_after: Duration::from_secs(10),
            hook_drop_ratio: 0.0,
            hook_duplicate_ratio: 0.0,
            hook_reorder_ratio: 0.0,
            hook_reorder_delay: Duration::from_secs(1),
        }
    }
}

/// The longest a request is ever held.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(300);

/// [`FaultConfig`] as the admin endpoint reads and writes it (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FaultConfigWire {
    pub error_5xx_ratio: f64,
    pub latency_ms: u64,
    pub timeout_ratio: f64,
    pub timeout_hold_ms: u64,
    pub rate_limit_burst_every: Option<u32>,
    pub malformed_json_ratio: f64,
    pub drop_connection_ratio: f64,
    pub apply_late_ratio: f64,
    pub apply_late_after_ms: u64,
    pub hook_drop_ratio: f64,
    pub hook_duplicate_ratio: f64,
    pub hook_reorder_ratio: f64,
    pub hook_reorder_delay_ms: u64,
}

impl Default for FaultConfigWire {
    fn default() -> Self {
        FaultConfigWire::from(&FaultConfig::default())
    }
}

impl From<&FaultConfig> for FaultConfigWire {
    fn from(c: &FaultConfig) -> Self {
        FaultConfigWire {
            error_5xx_ratio: c.error_5xx_ratio,
            latency_ms: u64::try_from(c.latency.as_millis()).unwrap_or(u64::MAX),
            timeout_ratio: c.timeout_ratio,
            timeout_hold_ms: u64::try_from(c.timeout_hold.as_millis()).unwrap_or(u64::MAX),
            rate_limit_burst_every: c.rate_limit_burst_every,
            malformed_json_ratio: c.malformed_json_ratio,
            drop_connection_ratio: c.drop_connection_ratio,
            apply_late_ratio: c.apply_late_ratio,
            apply_late_after_ms: u64::try_from(c.apply_late_after.as_millis()).unwrap_or(u64::MAX),
            hook_drop_ratio: c.hook_drop_ratio,
            hook_duplicate_ratio: c.hook_duplicate_ratio,
            hook_reorder_ratio: c.hook_reorder_ratio,
            hook_reorder_delay_ms: u64::try_from(c.hook_reorder_delay.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

impl FaultConfigWire {
    /// Checks the ratios (0..=1) and the burst interval (≥ 1).
    pub fn into_config(self) -> Result<FaultConfig, String> {
        for (name, value) in [
            ("error_5xx_ratio", self.error_5xx_ratio),
            ("timeout_ratio", self.timeout_ratio),
            ("malformed_json_ratio", self.malformed_json_ratio),
            ("drop_connection_ratio", self.drop_connection_ratio),
            ("apply_late_ratio", self.apply_late_ratio),
            ("hook_drop_ratio", self.hook_drop_ratio),
            ("hook_duplicate_ratio", self.hook_duplicate_ratio),
            ("hook_reorder_ratio", self.hook_reorder_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.rate_limit_burst_every == Some(0) {
            return Err("rate_limit_burst_every must be at least 1".to_owned());
        }
        Ok(FaultConfig {
            error_5xx_ratio: self.error_5xx_ratio,
            latency: Duration::from_millis(self.latency_ms),
            timeout_ratio: self.timeout_ratio,
            timeout_hold: Duration::from_millis(self.timeout_hold_ms),
            rate_limit_burst_every: self.rate_limit_burst_every,
            malformed_json_ratio: self.malformed_json_ratio,
            drop_connection_ratio: self.drop_connection_ratio,
            apply_late_ratio: self.apply_late_ratio,
            apply_late_after: Duration::from_millis(self.apply_late_after_ms),
            hook_drop_ratio: self.hook_drop_ratio,
            hook_duplicate_ratio: self.hook_duplicate_ratio,
            hook_reorder_ratio: self.hook_reorder_ratio,
            hook_reorder_delay: Duration::from_millis(self.hook_reorder_delay_ms),
        })
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultPlan {
    pub latency: Duration,
    pub drop_connection: bool,
    pub hold: Option<Duration>,
    pub server_error: Option<u16>,
    pub throttle: bool,
    pub malformed_json: bool,
    /// Leave the client without an answer and carry the request out after this long.
    pub apply_late: Option<Duration>,
}

/// Draws a [`FaultPlan`] per request.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: ChaCha8Rng,
    requests: u64,
}

fn ratio(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl FaultInjector {
    pub fn new(config: FaultConfig, seed: u64) -> FaultInjector {
        FaultInjector {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xfa01_7500),
            requests: 0,
        }
    }

    /// Replaces the configuration and restarts the request count.
    pub fn set(&mut self, config: FaultConfig) {
        self.config = config;
        self.requests = 0;
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Decides the faults of the next request (`mutation`: it changes GitLab's state).
    pub fn plan(&mut self, mutation: bool) -> FaultPlan {
        self.requests += 1;
        let c = &self.config;
        let mut plan = FaultPlan {
            latency: c.latency.min(MAX_HOLD),
            ..FaultPlan::default()
        };
        if self.rng.random_bool(ratio(c.drop_connection_ratio)) {
            plan.drop_connection = true;
            return plan;
        }
        if mutation && self.rng.random_bool(ratio(c.apply_late_ratio)) {
            plan.apply_late = Some(c.apply_late_after.min(MAX_HOLD));
            return plan;
        }
        if self.rng.random_bool(ratio(c.timeout_ratio)) {
            plan.hold = Some(c.timeout_hold.min(MAX_HOLD));
        }
        if self.rng.random_bool(ratio(c.error_5xx_ratio)) {
            plan.server_error = Some([500, 502, 503][self.rng.random_range(0..3)]);
            return plan;
        }
        if let Some(every) = c.rate_limit_burst_every.filter(|n| *n > 0)
            && self.requests.is_multiple_of(u64::from(every))
        {
            plan.throttle = true;
            return plan;
        }
        plan.malformed_json = self.rng.random_bool(ratio(c.malformed_json_ratio));
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_by_default() {
        let mut injector = FaultInjector::new(FaultConfig::default(), 1);
        for _ in 0..1000 {
            assert_eq!(injector.plan(false), FaultPlan::default());
        }
    }

    #[test]
    fn every_nth_request_is_throttled() {
        let mut injector = FaultInjector::new(
            FaultConfig {
                rate_limit_burst_every: Some(3),
                ..FaultConfig::default()
            },
            1,
        );
        let throttled: Vec<bool> = (0..6).map(|_| injector.plan(false).throttle).collect();
        assert_eq!(throttled, [false, false, true, false, false, true]);
    }

    #[test]
    fn ratios_are_roughly_honoured() {
        let mut injector = FaultInjector::new(
            FaultConfig {
                error_5xx_ratio: 0.25,
                ..FaultConfig::default()
            },
            7,
        );
        let errors = (0..4000)
            .filter(|_| injector.plan(false).server_error.is_some())
            .count();
        assert!((800..1200).contains(&errors), "{errors}");
    }

    #[test]
    fn only_mutations_are_applied_late() {
        let mut injector = FaultInjector::new(
            FaultConfig {
                apply_late_ratio: 1.0,
                apply_late_after: Duration::from_millis(1500),
                ..FaultConfig::default()
            },
            3,
        );
        assert_eq!(injector.plan(false).apply_late, None);
        assert_eq!(
            injector.plan(true).apply_late,
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn wire_validation() {
        let bad = FaultConfigWire {
            error_5xx_ratio: 1.5,
            ..FaultConfigWire::default()
        };
        assert!(bad.into_config().is_err());
        let wire: FaultConfigWire =
            serde_json::from_str(r#"{"latency_ms": 250, "rate_limit_burst_every": 4}"#)
                .expect("valid");
        let config = wire.into_config().expect("valid");
        assert_eq!(config.latency, Duration::from_millis(250));
        assert_eq!(config.timeout_hold, Duration::from_secs(30));
        assert_eq!(config.hook_reorder_delay, Duration::from_secs(1));
        let hooks: FaultConfigWire = serde_json::from_str(
            r#"{"hook_drop_ratio": 0.5, "hook_duplicate_ratio": 1, "hook_reorder_delay_ms": 40}"#,
        )
        .expect("valid");
        let hooks = hooks.into_config().expect("valid");
        assert_eq!(hooks.hook_drop_ratio, 0.5);
        assert_eq!(hooks.hook_duplicate_ratio, 1.0);
        assert_eq!(hooks.hook_reorder_delay, Duration::from_millis(40));
        let bad = FaultConfigWire {
            hook_reorder_ratio: -0.1,
            ..FaultConfigWire::default()
        };
        assert!(bad.into_config().is_err());
        assert!(serde_json::from_str::<FaultConfigWire>(r#"{"nope": 1}"#).is_err());
    }
}
