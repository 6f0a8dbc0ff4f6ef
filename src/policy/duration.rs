//! Go/Kubernetes durations (`90s`, `5m`, `1h30m`, `1.5h`, `300ms`).
//!
//! jiff's "friendly" parser accepts a different language (it rejects `1.5h30m` and units out of
//! order, which Go accepts, and accepts `1 hour` or `2 days`, which Go and the CRD pattern
//! reject), so this is a small parser of exactly the syntax of the CRD pattern
//! `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`, with Go's meaning.

use jiff::SignedDuration;
use std::fmt;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration (write e.g. 90s, 5m or 1h30m)")]
    Empty,
    #[error(
        "invalid duration {0:?}: expected numbers with units ns, us, µs, ms, s, m or h, e.g. 90s, 5m, 1h30m"
    )]
    Syntax(String),
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Nanoseconds in one unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Go limits a duration to an i64 of nanoseconds (about 292 years); so do we.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration such as `1h30m`. Negative durations and a bare `0` are rejected, as
/// the CRD pattern does.
pub fn parse_go_duration(input: &str) -> Result<SignedDuration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax(input.to_owned());
    let mut rest = input;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            return Err(syntax());
        }
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                if frac_len == 0 {
                    return Err(syntax());
                }
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        let unit_len = after_number
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit = unit_nanos(unit).ok_or_else(syntax)?;

        let too_large = || DurationError::TooLarge(input.to_owned());
        let whole: u128 = int_digits.parse().map_err(|_| too_large())?;
        let mut component = whole.checked_mul(unit).ok_or_else(too_large)?;
        if !frac_digits.is_empty() {
            // Digits beyond nanosecond precision cannot matter; keep at most 20 so the
            // arithmetic below stays far from overflow.
            let kept = &frac_digits[..frac_digits.len().min(20)];
            let numerator: u128 = kept.parse().map_err(|_| syntax())?;
            let scale = 10u128.pow(kept.len() as u32);
            // The whole part may already sit just below u128::MAX.
            component = component
                .checked_add(numerator * unit / scale)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(component).ok_or_else(too_large)?;
        if total > MAX_NANOS {
            return Err(too_large());
        }
        rest = after_unit;
    }
    // `total` ≤ i64::MAX, checked above.
    Ok(SignedDuration::from_nanos_i128(total as i128))
}

/// A duration written compactly for people: `1h30m`, `45s`, `1m30.5s`, `300ms`, `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub SignedDuration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos < 0 {
            f.write_str("-")?;
        }
        let nanos = nanos.unsigned_abs();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            return write!(f, "{}µs", nanos / 1_000);
        }
        if nanos < 1_000_000_000 {
            return write!(f, "{}ms", nanos / 1_000_000);
        }
        let secs = nanos / 1_000_000_000;
        let millis = (nanos % 1_000_000_000) / 1_000_000;
        let (hours, minutes, seconds) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 || millis > 0 {
            if millis > 0 {
                let frac = format!("{millis:03}");
                write!(f, "{seconds}.{}s", frac.trim_end_matches('0'))?;
            } else {
                write!(f, "{seconds}s")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_go_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_go_duration("2h"), Ok(secs(7200)));
        assert_eq!(parse_go_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(secs(5400)));
        assert_eq!(parse_go_duration("1.5h30m"), Ok(secs(7200)));
        assert_eq!(parse_go_duration("30m1h"), Ok(secs(5400)));
        assert_eq!(
            parse_go_duration("300ms"),
            Ok(SignedDuration::from_millis(300))
        );
        assert_eq!(parse_go_duration("1us"), Ok(SignedDuration::from_micros(1)));
        assert_eq!(parse_go_duration("1µs"), Ok(SignedDuration::from_micros(1)));
        assert_eq!(parse_go_duration("7ns"), Ok(SignedDuration::from_nanos(7)));
        assert_eq!(parse_go_duration("0s"), Ok(SignedDuration::ZERO));
        assert_eq!(
            parse_go_duration("0.000000001s"),
            Ok(SignedDuration::from_nanos(1))
        );
    }

    #[test]
    fn rejects_what_the_crd_pattern_rejects() {
        for bad in [
            "", "1", "0", "-1s", "+1s", "1d", "1 h", "h", "1.h", ".5h", "1hour", "1h ", "1H",
            "1m-", "P1D",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let pattern = regex::Regex::new(crate::crd::DURATION_PATTERN).unwrap();
        for s in ["90s", "1.5h30m", "300ms", "1µs", "1h1h"] {
            assert!(pattern.is_match(s) && parse_go_duration(s).is_ok(), "{s}");
        }
        for s in ["1 h", "1d", "-1s", ".5h"] {
            assert!(!pattern.is_match(s) && parse_go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn rejects_overflow_like_go() {
        assert!(matches!(
            parse_go_duration("2562048h"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(parse_go_duration("2562047h").is_ok());
        assert!(matches!(
            parse_go_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
        // Found by tests/fuzz.rs: a whole part just below u128::MAX nanoseconds plus a
        // fraction overflowed (a panic in debug builds; in release the sum wrapped around to a
        // few seconds, and the duration was accepted).
        for huge in [
            "5671372782015641057722910123.9m",
            "340282366920938463463374607431.9999s",
            "94522879700260684295381835.9999h",
        ] {
            assert!(
                matches!(parse_go_duration(huge), Err(DurationError::TooLarge(_))),
                "{huge}"
            );
        }
    }

    #[test]
    fn formats_compactly() {
        let show = |d: SignedDuration| HumanDuration(d).to_string();
        assert_eq!(show(secs(5400)), "1h30m");
        assert_eq!(show(secs(45)), "45s");
        assert_eq!(show(secs(3600)), "1h");
        assert_eq!(show(SignedDuration::from_millis(90_500)), "1m30.5s");
        assert_eq!(show(SignedDuration::from_millis(300)), "300ms");
        assert_eq!(show(SignedDuration::ZERO), "0s");
        assert_eq!(show(-secs(60)), "-1m");
    }
}
