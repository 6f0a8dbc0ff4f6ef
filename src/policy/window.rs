//! Weekly time windows (`match.window`).
//!
//! Edges: `from` is inclusive and `to` exclusive, at minute resolution (09:00–17:00 contains
//! 16:59:59 and not 17:00:00). `to` earlier than `from` wraps past midnight: the part after
//! midnight belongs to the day the window opened on (a Fri 22:00–06:00 window contains
//! Saturday 05:00 and not Friday 05:00). `24:00` as `to` is the end of the day. Times are wall
//! clock times in the window's time zone, so on a daylight-saving day a window can be shorter
//! or longer than usual, and a window lying wholly in the skipped hour does not open that day.

use jiff::Timestamp;
use jiff::civil::Weekday as CivilWeekday;
use jiff::tz::TimeZone;
use std::fmt;

/// Minutes in a day; `24:00`.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// A wall-clock time as minutes since midnight (0..=1440).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(pub u16);

impl ClockTime {
    /// Parses `HH:MM`; `allow_end_of_day` also accepts `24:00`.
    pub fn parse(s: &str, allow_end_of_day: bool) -> Result<ClockTime, String> {
        let invalid = || {
            if allow_end_of_day {
                format!("invalid time {s:?}: expected HH:MM between 00:00 and 24:00")
            } else {
                format!("invalid time {s:?}: expected HH:MM between 00:00 and 23:59")
            }
        };
        let (h, m) = s.split_once(':').ok_or_else(invalid)?;
        let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return Err(invalid());
        }
        let h: u16 = h.parse().map_err(|_| invalid())?;
        let m: u16 = m.parse().map_err(|_| invalid())?;
        if m > 59 {
            return Err(invalid());
        }
        let minutes = h * 60 + m;
        let max = if allow_end_of_day {
            MINUTES_PER_DAY
        } else {
            MINUTES_PER_DAY - 1
        };
        if h > 24 || minutes > max {
            return Err(invalid());
        }
        Ok(ClockTime(minutes))
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A compiled weekly window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Indexed by `Weekday::to_monday_zero_offset`.
    days: [bool; 7],
    from: ClockTime,
    to: ClockTime,
    time_zone: TimeZone,
    time_zone_name: String,
}

impl Window {
    /// A window opening on `days` (all days when empty). `from` and `to` must differ.
    pub fn new(
        days: &[CivilWeekday],
        from: ClockTime,
        to: ClockTime,
        time_zone: TimeZone,
        time_zone_name: String,
    ) -> Window {
        let mut open = [days.is_empty(); 7];
        for d in days {
            open[day_index(*d)] = true;
        }
        Window {
            days: open,
            from,
            to,
            time_zone,
            time_zone_name,
        }
    }

    /// True when `now` lies inside the window.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned_datetime(self.time_zone.clone());
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        let today = local.weekday();
        if self.from < self.to {
            self.opens_on(today) && self.from.0 <= minute && minute < self.to.0
        } else {
            (self.opens_on(today) && minute >= self.from.0)
                || (self.opens_on(today.previous()) && minute < self.to.0)
        }
    }

    fn opens_on(&self, day: CivilWeekday) -> bool {
        self.days[day_index(day)]
    }
}

fn day_index(day: CivilWeekday) -> usize {
    day.to_monday_zero_offset() as usize
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        if self.days.iter().all(|d| *d) {
            f.write_str("daily")?;
        } else {
            let days: Vec<&str> = NAMES
                .iter()
                .zip(self.days)
                .filter(|(_, open)| *open)
                .map(|(n, _)| *n)
                .collect();
            f.write_str(&days.join(","))?;
        }
        write!(f, " {}–{} {}", self.from, self.to, self.time_zone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::Weekday::*;

    fn window(days: &[CivilWeekday], from: &str, to: &str, tz: &str) -> Window {
        Window::new(
            days,
            ClockTime::parse(from, false).unwrap(),
            ClockTime::parse(to, true).unwrap(),
            TimeZone::get(tz).unwrap(),
            tz.to_owned(),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_clock_times() {
        assert_eq!(ClockTime::parse("00:00", false), Ok(ClockTime(0)));
        assert_eq!(ClockTime::parse("09:30", false), Ok(ClockTime(570)));
        assert_eq!(ClockTime::parse("23:59", false), Ok(ClockTime(1439)));
        assert_eq!(ClockTime::parse("24:00", true), Ok(ClockTime(1440)));
        for bad in [
            "24:00", "9:00", "09:60", "25:00", "0900", "+9:00", "ab:cd", "09:00:00",
        ] {
            assert!(ClockTime::parse(bad, false).is_err(), "{bad}");
        }
        assert!(ClockTime::parse("24:01", true).is_err());
        assert_eq!(ClockTime(570).to_string(), "09:30");
    }

    #[test]
    fn from_is_inclusive_and_to_exclusive() {
        let w = window(&[Monday], "09:00", "17:00", "UTC");
        // 2026-11-23 is a Monday.
        assert!(!w.contains(at("2026-11-23T08:59:59Z")));
        assert!(w.contains(at("2026-11-23T09:00:00Z")));
        assert!(w.contains(at("2026-11-23T16:59:59Z")));
        assert!(!w.contains(at("2026-11-23T17:00:00Z")));
        // Tuesday is not listed.
        assert!(!w.contains(at("2026-11-24T10:00:00Z")));
    }

    #[test]
    fn end_of_day_and_day_boundaries() {
        let w = window(&[Sunday], "00:00", "24:00", "UTC");
        // 2026-11-22 is a Sunday.
        assert!(!w.contains(at("2026-11-21T23:59:59Z")));
        assert!(w.contains(at("2026-11-22T00:00:00Z")));
        assert!(w.contains(at("2026-11-22T23:59:59Z")));
        assert!(!w.contains(at("2026-11-23T00:00:00Z")));
        let all = window(&[], "00:00", "24:00", "UTC");
        assert!(all.contains(at("2026-11-25T12:00:00Z")));
        assert_eq!(all.to_string(), "daily 00:00–24:00 UTC");
    }

    #[test]
    fn wrapping_window_belongs_to_the_opening_day() {
        let w = window(&[Friday], "22:00", "06:00", "UTC");
        // 2026-11-27 is a Friday.
        assert!(!w.contains(at("2026-11-27T05:00:00Z")), "Friday morning");
        assert!(!w.contains(at("2026-11-27T21:59:59Z")));
        assert!(w.contains(at("2026-11-27T22:00:00Z")));
        assert!(w.contains(at("2026-11-27T23:59:59Z")));
        assert!(
            w.contains(at("2026-11-28T00:00:00Z")),
            "Saturday after midnight"
        );
        assert!(w.contains(at("2026-11-28T05:59:59Z")));
        assert!(!w.contains(at("2026-11-28T06:00:00Z")));
        assert!(!w.contains(at("2026-11-28T22:30:00Z")), "Saturday night");
        assert_eq!(w.to_string(), "Fri 22:00–06:00 UTC");
    }

    #[test]
    fn wall_clock_in_the_time_zone() {
        let w = window(&[Monday], "09:00", "17:00", "Europe/Berlin");
        // Winter: Berlin is UTC+1.
        assert!(!w.contains(at("2026-11-23T07:59:00Z")));
        assert!(w.contains(at("2026-11-23T08:00:00Z")));
        assert!(!w.contains(at("2026-11-23T16:00:00Z")));
        // Summer: UTC+2.
        assert!(w.contains(at("2026-06-22T07:00:00Z")));
        assert!(!w.contains(at("2026-06-22T15:00:00Z")));
        // Monday 00:30 in Berlin is still Sunday in UTC.
        let monday_early = window(&[Monday], "00:00", "01:00", "Europe/Berlin");
        assert!(monday_early.contains(at("2026-11-22T23:30:00Z")));
    }

    #[test]
    fn daylight_saving_days_in_berlin() {
        // 2026-03-29 (Sunday): clocks jump from 02:00 to 03:00 local (01:00Z).
        let skipped = window(&[Sunday], "02:00", "03:00", "Europe/Berlin");
        for utc in [
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ] {
            assert!(!skipped.contains(at(utc)), "{utc}: the hour does not exist");
        }
        let spanning = window(&[Sunday], "01:00", "04:00", "Europe/Berlin");
        assert!(spanning.contains(at("2026-03-29T00:00:00Z")), "01:00 CET");
        assert!(spanning.contains(at("2026-03-29T01:59:59Z")), "03:59 CEST");
        assert!(!spanning.contains(at("2026-03-29T02:00:00Z")), "04:00 CEST");
        // 2026-10-25 (Sunday): clocks fall back from 03:00 to 02:00 local; 02:xx happens twice.
        let repeated = window(&[Sunday], "02:00", "03:00", "Europe/Berlin");
        assert!(repeated.contains(at("2026-10-25T00:30:00Z")), "02:30 CEST");
        assert!(repeated.contains(at("2026-10-25T01:30:00Z")), "02:30 CET");
        assert!(!repeated.contains(at("2026-10-25T02:00:00Z")), "03:00 CET");
    }
}
