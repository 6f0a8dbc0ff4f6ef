//! The hourly action budget: when a policy acted, over the last hour.
//!
//! This is the one piece of engine state that a restart loses; after a restart the hour starts
//! empty, which can only let a policy act *more* within that hour, never repeat an action (the
//! per-job rules are derived from GitLab's record).

use jiff::{SignedDuration, Timestamp};
use std::collections::VecDeque;

const HOUR: SignedDuration = SignedDuration::from_hours(1);

/// Times at which a policy sent an action to GitLab, pruned to the last hour.
#[derive(Debug, Default, Clone)]
pub struct ActionHistory {
    times: VecDeque<Timestamp>,
}

impl ActionHistory {
    /// Actions sent in the hour before `now`.
    pub fn in_last_hour(&mut self, now: Timestamp) -> u32 {
        while self.times.front().is_some_and(|t| now - *t >= HOUR) {
            self.times.pop_front();
        }
        u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    pub fn record(&mut self, at: Timestamp) {
        self.times.push_back(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_leave_the_window_after_an_hour() {
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut h = ActionHistory::default();
        h.record(t0);
        h.record(t0 + SignedDuration::from_mins(30));
        assert_eq!(h.in_last_hour(t0 + SignedDuration::from_mins(59)), 2);
        assert_eq!(h.in_last_hour(t0 + SignedDuration::from_mins(60)), 1);
        assert_eq!(h.in_last_hour(t0 + SignedDuration::from_mins(91)), 0);
    }
}
