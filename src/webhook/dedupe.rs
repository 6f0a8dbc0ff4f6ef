//! Recently seen delivery ids, to act on a delivery once however often GitLab sends it.

use std::collections::{HashSet, VecDeque};

/// The last [`RecentDeliveries::CAPACITY`] delivery ids, forgetting the oldest first.
#[derive(Debug, Default)]
pub struct RecentDeliveries {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentDeliveries {
    /// How many ids are remembered: about an hour of deliveries of a busy instance.
    pub const CAPACITY: usize = 16_384;

    /// Remembers the ids of one delivery; false when any of them was seen before (a duplicate).
    pub fn first_time(&mut self, ids: &[&str]) -> bool {
        if ids.iter().any(|id| self.seen.contains(*id)) {
            return false;
        }
        for id in ids {
            if self.order.len() == Self::CAPACITY
                && let Some(oldest) = self.order.pop_front()
            {
                self.seen.remove(&oldest);
            }
            self.order.push_back((*id).to_owned());
            self.seen.insert((*id).to_owned());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_new_once_by_any_of_its_ids() {
        let mut recent = RecentDeliveries::default();
        assert!(recent.first_time(&["event-1", "key-1"]));
        assert!(!recent.first_time(&["event-1", "key-1"]), "re-sent");
        assert!(
            !recent.first_time(&["event-1", "key-2"]),
            "same event, another hook"
        );
        assert!(recent.first_time(&["event-2", "key-3"]));
        assert!(
            recent.first_time(&[]),
            "without ids nothing can be told apart"
        );
    }

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let mut recent = RecentDeliveries::default();
        for i in 0..=RecentDeliveries::CAPACITY {
            assert!(recent.first_time(&[&format!("event-{i}")]));
        }
        assert!(recent.first_time(&["event-0"]), "forgotten");
        assert!(!recent.first_time(&[&format!("event-{}", RecentDeliveries::CAPACITY)]));
    }
}
