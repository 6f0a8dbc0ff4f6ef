//! Client-side rate limiting for one GitLab instance.
//!
//! A [`RateLimiter`] combines two things:
//! - its own budget: a token bucket of `requests_per_minute`, refilled continuously, with a small
//!   burst that is part of the budget, so that no minute ever holds more than the budget
//!   (implemented as GCRA, the "virtual scheduling" form of a token bucket);
//! - what GitLab says: `RateLimit-Remaining: 0` pauses every request until `RateLimit-Reset`;
//!   a 429 pauses until `Retry-After` (seconds or an HTTP-date). The `jobs_index` 429 on
//!   `GET /projects/:id/jobs` carries no headers at all (`docs/gitlab-behaviour.md` §8.1); it
//!   pauses only that endpoint, for a conservative fixed time (by default a full minute, GitLab's
//!   window).
//!
//! It also bounds the requests in flight at once ([`RateLimiterSettings::max_in_flight`]): a
//! fleet's first run has hundreds of projects acting at once, and every request in flight
//! holds a connection with its buffers and, for a listing, a page of up to 100 jobs (about
//! 200 KB) until it is decoded, while GitLab answers no faster for being asked more at once.
//! On the 5,000 × 201-job fleet, 240 in flight cost about 10 MB more than 16, and 16 cost
//! 4 MB more than 8 at the peak. Eight keep a budget of 600 a minute busy even when GitLab
//! takes 800 ms a page.
//!
//! Share one limiter among all clients of an instance (`ClientConfig::rate_limiter`).

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight at once per instance, by default (`--max-requests-in-flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// The shortest pause after a 429, so that `Retry-After: 0` does not turn into a hammering loop.
const MIN_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// Which requests a pause applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// Every request to the instance (Rack::Attack throttles, `RateLimit-*` headers).
    Instance,
    /// `GET /projects/:id/jobs` only, which has its own application limit (`jobs_index`).
    ProjectJobsList,
}

/// The knobs of a [`RateLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiterSettings {
    /// The steady budget.
    pub requests_per_minute: u32,
    /// How many requests may go back to back before the budget's spacing applies.
    pub burst: u32,
    /// How long to pause after a 429 that says nothing about when to come back (the `jobs_index`
    /// limit): GitLab's window is one minute, started by an earlier request we cannot know.
    pub unannounced_throttle_pause: Duration,
    /// The longest pause any header can impose (guards against skewed clocks and odd values).
    pub max_pause: Duration,
    /// The most requests in flight at once (from being sent until their body is read).
    pub max_in_flight: usize,
}

impl RateLimiterSettings {
    /// A budget of `requests_per_minute` (at least 1) with a burst of 3 seconds' worth, a
    /// 60-second pause for unannounced 429s and pauses capped at one hour.
    pub fn new(requests_per_minute: u32) -> RateLimiterSettings {
        let requests_per_minute = requests_per_minute.max(1);
        RateLimiterSettings {
            requests_per_minute,
            burst: (requests_per_minute / 20).max(1),
            unannounced_throttle_pause: Duration::from_secs(60),
            max_pause: Duration::from_secs(3600),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// What a response told the limiter, for the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateLimitSignal {
    /// `RateLimit-Remaining`, when GitLab sent it.
    pub(crate) remaining: Option<u64>,
    /// `Retry-After` as a wait from now (capped), when GitLab sent it.
    pub(crate) retry_after: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    /// GCRA's theoretical arrival time of the next request.
    next_arrival: Option<Instant>,
    instance_paused_until: Option<Instant>,
    list_paused_until: Option<Instant>,
}

/// A token bucket shared by every caller of one GitLab instance that also obeys GitLab's
/// rate-limit headers. See the module documentation.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimiterSettings,
    state: Mutex<State>,
    in_flight: Arc<Semaphore>,
}

/// A request's place among those in flight: released when dropped.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl RateLimiter {
    /// A limiter with [`RateLimiterSettings::new`].
    pub fn new(requests_per_minute: u32) -> RateLimiter {
        RateLimiter::with_settings(RateLimiterSettings::new(requests_per_minute))
    }

    /// A limiter with explicit settings (zeros are raised to 1; the burst is capped at the
    /// budget).
    pub fn with_settings(mut settings: RateLimiterSettings) -> RateLimiter {
        settings.requests_per_minute = settings.requests_per_minute.max(1);
        settings.burst = settings.burst.clamp(1, settings.requests_per_minute);
        settings.max_in_flight = settings.max_in_flight.max(1);
        RateLimiter {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &RateLimiterSettings {
        &self.settings
    }

    /// Waits until a request of `scope` may be sent: for a place among the requests in flight,
    /// until every pause that applies has ended, then for a slot of the budget. The request
    /// holds the returned place until its body is read.
    pub async fn acquire(&self, scope: LimitScope) -> InFlight {
        // (The semaphore is never closed: a place is always given.)
        let place = InFlight(self.in_flight.clone().acquire_owned().await.ok());
        self.wait_out_pauses(scope).await;
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            // A 429 seen by another caller meanwhile still applies to this request.
            self.wait_out_pauses(scope).await;
        }
        place
    }

    /// Pauses every request of `scope` for `duration` from now (pauses only ever extend).
    pub fn pause(&self, scope: LimitScope, duration: Duration) {
        self.pause_at(scope, duration, Instant::now());
    }

    /// How long requests of `scope` are still paused, if they are.
    pub fn paused_for(&self, scope: LimitScope) -> Option<Duration> {
        self.pause_remaining(scope, Instant::now())
    }

    async fn wait_out_pauses(&self, scope: LimitScope) {
        while let Some(wait) = self.pause_remaining(scope, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The spacing between requests once the burst is spent. The burst is part of the budget,
    /// not extra: a minute may start with `burst` requests back to back, and then
    /// `requests_per_minute - burst` more fit in it, so that no 60-second window (GitLab counts
    /// in fixed one-minute windows starting at any moment) holds more than the budget. Rounded
    /// up, so that rounding never makes room for one request too many.
    fn interval(&self) -> Duration {
        let steady = u64::from(self.settings.requests_per_minute - self.settings.burst + 1);
        Duration::from_nanos(60_000_000_000u64.div_ceil(steady))
    }

    /// Books the next slot of the budget and returns how long to wait for it (GCRA: a request is
    /// allowed once the theoretical arrival time is at most `burst - 1` intervals ahead of now).
    fn reserve(&self, now: Instant) -> Duration {
        let interval = self.interval();
        let tolerance = interval.saturating_mul(self.settings.burst - 1);
        let mut state = self.lock();
        let arrival = state.next_arrival.map_or(now, |t| t.max(now));
        let wait = arrival
            .saturating_duration_since(now)
            .saturating_sub(tolerance);
        state.next_arrival = Some(arrival + interval);
        wait
    }

    fn pause_remaining(&self, scope: LimitScope, now: Instant) -> Option<Duration> {
        let state = self.lock();
        let until = match scope {
            LimitScope::Instance => state.instance_paused_until,
            LimitScope::ProjectJobsList => state.instance_paused_until.max(state.list_paused_until),
        };
        until.filter(|u| *u > now).map(|u| u - now)
    }

    fn pause_at(&self, scope: LimitScope, duration: Duration, now: Instant) {
        let until = now + duration.min(self.settings.max_pause);
        let mut state = self.lock();
        let slot = match scope {
            LimitScope::Instance => &mut state.instance_paused_until,
            LimitScope::ProjectJobsList => &mut state.list_paused_until,
        };
        *slot = (*slot).max(Some(until));
    }

    /// Learns from a response to a request of `scope`: pauses as GitLab asks and returns what the
    /// caller needs (remaining budget for metrics, `Retry-After` for retries).
    pub(crate) fn observe_response(
        &self,
        scope: LimitScope,
        status: StatusCode,
        headers: &HeaderMap,
        now: Instant,
        wall_now: jiff::Timestamp,
    ) -> RateLimitSignal {
        let max = self.settings.max_pause;
        let remaining = header_str(headers, "ratelimit-remaining").and_then(|v| v.parse().ok());
        let reset_in = header_str(headers, "ratelimit-reset")
            .and_then(|v| parse_reset(v, wall_now))
            .map(|d| d.min(max));
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, wall_now))
            .map(|d| d.min(max));

        if status == StatusCode::TOO_MANY_REQUESTS {
            let (pause_scope, pause) = match (retry_after, remaining, reset_in) {
                (Some(wait), _, _) => (LimitScope::Instance, wait.max(MIN_THROTTLE_PAUSE)),
                (None, Some(0), Some(reset)) => {
                    (LimitScope::Instance, reset.max(MIN_THROTTLE_PAUSE))
                }
                _ => (scope, self.settings.unannounced_throttle_pause),
            };
            tracing::warn!(
                ?pause_scope,
                pause_seconds = pause.as_secs_f64(),
                "GitLab rate limit hit (429); pausing requests"
            );
            self.pause_at(pause_scope, pause, now);
        } else if remaining == Some(0)
            && let Some(reset) = reset_in
        {
            tracing::info!(
                pause_seconds = reset.as_secs_f64(),
                "GitLab reports no requests left in this window; pausing until it resets"
            );
            self.pause_at(LimitScope::Instance, reset, now);
        }
        RateLimitSignal {
            remaining,
            retry_after,
        }
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (`Tue, 05 Jan 2021 11:00:00 GMT`). A date
/// in the past means "now".
pub(crate) fn parse_retry_after(value: &str, wall_now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    Some(Duration::try_from(at.duration_since(wall_now)).unwrap_or(Duration::ZERO))
}

/// Parses `RateLimit-Reset` (Unix seconds) into a wait from now; a past reset means "now".
pub(crate) fn parse_reset(value: &str, wall_now: jiff::Timestamp) -> Option<Duration> {
    let at = jiff::Timestamp::from_second(value.trim().parse::<i64>().ok()?).ok()?;
    Some(Duration::try_from(at.duration_since(wall_now)).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn wall(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now: jiff::Timestamp = "2021-01-05T10:59:30Z".parse().unwrap();
        assert_eq!(parse_retry_after("60", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Tue, 05 Jan 2021 11:00:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 05 Jan 2021 10:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn reset_is_unix_seconds() {
        assert_eq!(
            parse_reset("1609844460", wall(1_609_844_400)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_reset("1", wall(100)), Some(Duration::ZERO));
        assert_eq!(parse_reset("x", wall(100)), None);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_spaces_requests() {
        // 600/min with a burst of 30: 30 at once, then the other 570 of the minute spaced
        // 60 s / 571 apart (the 571st lands on the next minute).
        let limiter = RateLimiter::new(600);
        assert_eq!(limiter.settings().burst, 30);
        let interval = limiter.interval();
        assert_eq!(interval, Duration::from_nanos(105_078_810));
        let t0 = Instant::now();
        for _ in 0..30 {
            assert_eq!(limiter.reserve(t0), Duration::ZERO);
        }
        assert_eq!(limiter.reserve(t0), interval);
        assert_eq!(limiter.reserve(t0), interval * 2);
        // Time refills the bucket: by t0 + 10 intervals the budget was 30 + 10 requests, 32 are
        // booked, so 8 more go at once and the next ones are spaced again.
        let t1 = t0 + interval * 10;
        let waits: Vec<Duration> = (0..10).map(|_| limiter.reserve(t1)).collect();
        assert!(waits[..8].iter().all(|w| w.is_zero()), "{waits:?}");
        assert_eq!(waits[8], interval);
        assert_eq!(waits[9], interval * 2);
    }

    #[test]
    fn the_budget_holds_over_a_minute() {
        let limiter = RateLimiter::with_settings(RateLimiterSettings {
            burst: 1,
            ..RateLimiterSettings::new(60)
        });
        let t0 = Instant::now();
        // 61 requests asked for at once: the last one waits a full minute.
        let last = (0..61).map(|_| limiter.reserve(t0)).last().unwrap();
        assert_eq!(last, Duration::from_secs(60));
    }

    /// The grant times of requests asked for at `arrivals` (in order), each sent the moment its
    /// wait is over; `sequential` callers ask for the next slot only once the previous one was
    /// granted.
    fn grants(limiter: &RateLimiter, arrivals: &[Instant], sequential: bool) -> Vec<Instant> {
        let mut granted: Vec<Instant> = Vec::with_capacity(arrivals.len());
        for arrival in arrivals {
            let asked = match granted.last() {
                Some(previous) if sequential => (*previous).max(*arrival),
                _ => *arrival,
            };
            granted.push(asked + limiter.reserve(asked));
        }
        granted
    }

    /// The most grants inside any half-open window `[t, t + 60 s)`.
    fn busiest_minute(grants: &[Instant]) -> usize {
        let mut sorted = grants.to_vec();
        sorted.sort();
        let mut end = 0;
        let mut busiest = 0;
        for (start, first) in sorted.iter().enumerate() {
            while end < sorted.len() && sorted[end] < *first + Duration::from_secs(60) {
                end += 1;
            }
            busiest = busiest.max(end - start);
        }
        busiest
    }

    #[test]
    fn no_minute_ever_holds_more_than_the_budget() {
        // GitLab counts the `jobs_index` limit in fixed one-minute windows that may start at any
        // moment of the client's life, so the budget must hold for every 60-second window,
        // bursts included.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for (rpm, burst) in [(600, 30), (60, 3), (2000, 100), (600, 1), (7, 7), (5, 9)] {
            let limiter = || {
                RateLimiter::with_settings(RateLimiterSettings {
                    burst,
                    ..RateLimiterSettings::new(rpm)
                })
            };
            let budget = rpm as usize;
            // One caller asking as fast as it is allowed, for three minutes and more.
            let greedy = grants(&limiter(), &vec![t0; budget * 3 + 5], true);
            assert_eq!(busiest_minute(&greedy), budget, "{rpm}/min, burst {burst}");
            // Many callers at once, then a pause long enough to refill the burst, then more.
            let waves: Vec<Instant> = [0, 45_000, 52_000, 130_000]
                .into_iter()
                .flat_map(|at| std::iter::repeat_n(t0 + ms(at), budget))
                .collect();
            let concurrent = grants(&limiter(), &waves, false);
            assert!(
                busiest_minute(&concurrent) <= budget,
                "{rpm}/min, burst {burst}"
            );
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rack_attack_429_pauses_the_whole_instance() {
        let limiter = RateLimiter::new(600);
        let now = Instant::now();
        let h = headers(&[
            ("ratelimit-name", "throttle_authenticated_api"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "1609844460"),
            ("retry-after", "42"),
        ]);
        let signal = limiter.observe_response(
            LimitScope::Instance,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            now,
            wall(1_609_844_418),
        );
        assert_eq!(signal.remaining, Some(0));
        assert_eq!(signal.retry_after, Some(Duration::from_secs(42)));
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            limiter.pause_remaining(LimitScope::ProjectJobsList, now),
            Some(Duration::from_secs(42))
        );
    }

    #[test]
    fn jobs_index_429_without_headers_pauses_only_the_jobs_list() {
        let limiter = RateLimiter::new(600);
        let now = Instant::now();
        let signal = limiter.observe_response(
            LimitScope::ProjectJobsList,
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            now,
            wall(0),
        );
        assert_eq!(signal, RateLimitSignal::default());
        assert_eq!(
            limiter.pause_remaining(LimitScope::ProjectJobsList, now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(limiter.pause_remaining(LimitScope::Instance, now), None);
    }

    #[test]
    fn zero_remaining_on_success_pauses_until_reset() {
        let limiter = RateLimiter::new(600);
        let now = Instant::now();
        let h = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1010")]);
        limiter.observe_response(LimitScope::Instance, StatusCode::OK, &h, now, wall(1000));
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now),
            Some(Duration::from_secs(10))
        );
        // Some remaining: no pause.
        let other = RateLimiter::new(600);
        let h = headers(&[("ratelimit-remaining", "5"), ("ratelimit-reset", "1010")]);
        let signal =
            other.observe_response(LimitScope::Instance, StatusCode::OK, &h, now, wall(1000));
        assert_eq!(signal.remaining, Some(5));
        assert_eq!(other.pause_remaining(LimitScope::Instance, now), None);
    }

    #[test]
    fn pauses_are_capped_and_only_extend() {
        let limiter = RateLimiter::new(600);
        let now = Instant::now();
        let h = headers(&[("retry-after", "999999")]);
        limiter.observe_response(
            LimitScope::Instance,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            now,
            wall(0),
        );
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now),
            Some(Duration::from_secs(3600))
        );
        limiter.pause_at(LimitScope::Instance, Duration::from_secs(5), now);
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now + Duration::from_secs(3600)),
            None
        );
    }

    #[test]
    fn retry_after_zero_still_pauses_a_moment() {
        let limiter = RateLimiter::new(600);
        let now = Instant::now();
        let h = headers(&[("retry-after", "0")]);
        limiter.observe_response(
            LimitScope::Instance,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            now,
            wall(0),
        );
        assert_eq!(
            limiter.pause_remaining(LimitScope::Instance, now),
            Some(MIN_THROTTLE_PAUSE)
        );
    }

    #[tokio::test]
    async fn a_request_waits_for_a_place_while_the_most_are_in_flight() {
        let limiter = RateLimiter::with_settings(RateLimiterSettings {
            max_in_flight: 2,
            ..RateLimiterSettings::new(60_000)
        });
        let first = limiter.acquire(LimitScope::Instance).await;
        let _second = limiter.acquire(LimitScope::Instance).await;
        let third = limiter.acquire(LimitScope::Instance);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third request went while two were in flight"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third request goes once the first is done");
    }
}
