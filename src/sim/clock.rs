//! The simulator's clock. Every timestamp the simulator writes (job transitions, rate-limit
//! windows, artifact expiry) is read from one [`Clock`], so tests can drive time explicitly and
//! demos can run it faster than the wall clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// A point in simulated time: milliseconds since the Unix epoch (GitLab renders milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SimTime(pub i64);

impl SimTime {
    /// The time `d` later (saturating).
    pub fn plus(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(duration_millis(d)))
    }

    /// The time `d` earlier (saturating).
    pub fn minus(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time `ms` milliseconds later (or earlier when negative).
    pub fn plus_millis(self, ms: i64) -> SimTime {
        SimTime(self.0.saturating_add(ms))
    }

    /// Seconds from `earlier` to `self` as GitLab's float durations.
    pub fn seconds_since(self, earlier: SimTime) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }

    /// Converts to a `jiff::Timestamp` (clamped to jiff's supported range).
    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(if self.0 < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
    }

    /// Converts from a `jiff::Timestamp`, dropping sub-millisecond precision.
    pub fn from_timestamp(ts: jiff::Timestamp) -> SimTime {
        SimTime(ts.as_millisecond())
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

/// Milliseconds in `d`, saturating at `i64::MAX`.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The simulator's clock: either manual (moves only when told) or real (follows the wall clock,
/// optionally faster). Both can be moved forward with [`Clock::advance`]. Cloning shares the clock.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

struct ClockInner {
    source: Source,
    origin_millis: i64,
    offset_millis: AtomicI64,
}

enum Source {
    Manual,
    Real { started: Instant, speed: f64 },
}

impl Clock {
    /// A clock frozen at `start` that moves only through [`Clock::advance`].
    pub fn manual(start: jiff::Timestamp) -> Clock {
        Clock::with_source(Source::Manual, start)
    }

    /// A clock that starts at the current wall-clock time and runs `speed` times as fast as it
    /// (1.0 = real time). A speed that is not a positive finite number is treated as 1.0.
    pub fn real(speed: f64) -> Clock {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Clock::with_source(
            Source::Real {
                started: Instant::now(),
                speed,
            },
            jiff::Timestamp::now(),
        )
    }

    fn with_source(source: Source, start: jiff::Timestamp) -> Clock {
        Clock {
            inner: Arc::new(ClockInner {
                source,
                origin_millis: SimTime::from_timestamp(start).0,
                offset_millis: AtomicI64::new(0),
            }),
        }
    }

    /// The current simulated time, truncated to milliseconds.
    pub fn now(&self) -> jiff::Timestamp {
        self.sim_now().to_timestamp()
    }

    /// Moves the clock forward by `d` (on a real clock this adds to the elapsed time).
    pub fn advance(&self, d: Duration) {
        let step = duration_millis(d);
        // Saturate instead of wrapping around on absurd jumps.
        let _ =
            self.inner
                .offset_millis
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                    Some(offset.saturating_add(step))
                });
    }

    /// Whether this clock moves only when advanced.
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.source, Source::Manual)
    }

    pub(crate) fn sim_now(&self) -> SimTime {
        let elapsed = match &self.inner.source {
            Source::Manual => 0,
            Source::Real { started, speed } => {
                let real = started.elapsed().as_secs_f64() * 1000.0 * speed;
                if real.is_finite() && real < i64::MAX as f64 {
                    real as i64
                } else {
                    i64::MAX / 4
                }
            }
        };
        SimTime(
            self.inner
                .origin_millis
                .saturating_add(elapsed)
                .saturating_add(self.inner.offset_millis.load(Ordering::SeqCst)),
        )
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.source {
            Source::Manual => f
                .debug_struct("Clock::Manual")
                .field("now", &self.now())
                .finish(),
            Source::Real { speed, .. } => f
                .debug_struct("Clock::Real")
                .field("speed", speed)
                .field("now", &self.now())
                .finish(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real(1.0)
    }
}

/// The civil UTC fields of a time, computed without a time-zone database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CivilUtc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millisecond: u32,
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u32,
}

impl CivilUtc {
    pub fn of(t: SimTime) -> CivilUtc {
        let days = t.0.div_euclid(86_400_000);
        let ms_of_day = t.0.rem_euclid(86_400_000);
        // Days-to-civil conversion (proleptic Gregorian), after Howard Hinnant's algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilUtc {
            year,
            month,
            day,
            hour: (ms_of_day / 3_600_000) as u32,
            minute: (ms_of_day / 60_000 % 60) as u32,
            second: (ms_of_day / 1000 % 60) as u32,
            millisecond: (ms_of_day % 1000) as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

/// `2026-11-23T10:00:00.000Z`: the REST API's timestamp format (UTC, milliseconds).
pub(crate) fn iso8601(t: SimTime) -> String {
    let c = CivilUtc::of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millisecond
    )
}

/// `2026-11-23 10:00:00 UTC`: the webhook payloads' timestamp format (whole seconds).
pub(crate) fn webhook_time(t: SimTime) -> String {
    let c = CivilUtc::of(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `2026-11-23T11:00:00.000+01:00`: a time shown in a fixed offset (Git commit dates keep theirs).
pub(crate) fn iso8601_with_offset(t: SimTime, offset_minutes: i32) -> String {
    let local = CivilUtc::of(t.plus_millis(i64::from(offset_minutes) * 60_000));
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let abs = offset_minutes.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{}{:02}:{:02}",
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        local.millisecond,
        sign,
        abs / 60,
        abs % 60
    )
}

/// `Tue, 05 Jan 2021 11:00:00 GMT`: an HTTP date (RFC 7231 IMF-fixdate).
pub(crate) fn http_date(t: SimTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = CivilUtc::of(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday as usize % 7],
        c.day,
        MONTHS[(c.month as usize + 11) % 12],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("valid test timestamp")
    }

    #[test]
    fn formats_match_jiff() {
        for s in [
            "2026-11-23T10:00:00.000Z",
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2024-12-31T12:34:56.789Z",
            "1969-12-31T23:59:59.001Z",
        ] {
            let t = SimTime::from_timestamp(ts(s));
            assert_eq!(iso8601(t), s);
            assert_eq!(t.to_timestamp(), ts(s));
        }
    }

    #[test]
    fn offset_and_http_dates() {
        let t = SimTime::from_timestamp(ts("2021-01-05T11:00:00Z"));
        assert_eq!(http_date(t), "Tue, 05 Jan 2021 11:00:00 GMT");
        assert_eq!(webhook_time(t.plus_millis(999)), "2021-01-05 11:00:00 UTC");
        assert_eq!(iso8601_with_offset(t, 60), "2021-01-05T12:00:00.000+01:00");
        assert_eq!(
            iso8601_with_offset(t, -330),
            "2021-01-05T05:30:00.000-05:30"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(ts("2026-11-23T10:00:00Z"));
        assert_eq!(clock.now(), ts("2026-11-23T10:00:00Z"));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), ts("2026-11-23T10:00:01.5Z"));
        let shared = clock.clone();
        shared.advance(Duration::from_secs(60));
        assert_eq!(clock.now(), ts("2026-11-23T10:01:01.5Z"));
    }

    #[test]
    fn real_clock_never_goes_backwards_and_honours_advance() {
        let clock = Clock::real(0.0);
        assert!(!clock.is_manual());
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(
            clock.now()
                >= before
                    .checked_add(jiff::SignedDuration::from_hours(1))
                    .expect("in range")
        );
    }
}
