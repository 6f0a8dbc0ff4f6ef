//! What an observer remembers of the finished jobs it let go: the newest ids (so a listing that
//! reads them again knows they are not news), and when to read again the ones a rule may act on
//! later.

use super::observe::MAX_SETTLED;
use jiff::Timestamp;

/// The ids of finished jobs that were dropped, ascending, at most [`MAX_SETTLED`] (the
/// newest): a sorted vector of 4-byte offsets from the oldest. A project's newest ids lie far
/// less than 2^32 apart (an instance creates that many jobs in years; a farther one makes room
/// by forgetting the oldest), and 5,000 projects kept about 100 ids each.
#[derive(Debug, Default)]
pub(super) struct SettledIds {
    base: u64,
    offsets: Vec<u32>,
}

impl SettledIds {
    /// The offset of `id`, when it can be held.
    fn offset(&self, id: u64) -> Option<u32> {
        id.checked_sub(self.base)
            .and_then(|offset| u32::try_from(offset).ok())
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.offset(id)
            .is_some_and(|offset| self.offsets.binary_search(&offset).is_ok())
    }

    pub(super) fn insert(&mut self, id: u64) {
        if self.offsets.is_empty() {
            self.base = id;
        }
        if id < self.base {
            self.rebase(id);
        }
        // An id too far above the oldest ones makes room by forgetting them.
        while self.offset(id).is_none() && !self.offsets.is_empty() {
            self.offsets.remove(0);
            self.rebase_to_oldest();
        }
        if self.offsets.is_empty() {
            self.base = id;
        }
        let Some(offset) = self.offset(id) else {
            // Older than the held ids by more than 2^32: the oldest would be dropped anyway.
            return;
        };
        if let Err(at) = self.offsets.binary_search(&offset) {
            let len = self.offsets.len();
            if len == self.offsets.capacity() {
                // A quarter more, never past the one over the cap that is dropped at once.
                let room = (len + len / 4 + 4).min(MAX_SETTLED + 1);
                self.offsets.reserve_exact(room - len);
            }
            self.offsets.insert(at, offset);
            if self.offsets.len() > MAX_SETTLED {
                self.offsets.remove(0);
                self.rebase_to_oldest();
            }
        }
    }

    /// Makes `id` (older than the base) the base, when every held id stays within reach of it;
    /// otherwise leaves the ids as they are.
    fn rebase(&mut self, id: u64) {
        let shift = self.base - id;
        let fits = self
            .offsets
            .last()
            .is_none_or(|newest| u32::try_from(u64::from(*newest) + shift).is_ok());
        if fits {
            let shift = shift as u32;
            for offset in &mut self.offsets {
                *offset += shift;
            }
            self.base = id;
        }
    }

    /// Makes the oldest held id the base.
    fn rebase_to_oldest(&mut self) {
        if let Some(&oldest) = self.offsets.first() {
            for offset in &mut self.offsets {
                *offset -= oldest;
            }
            self.base += u64::from(oldest);
        }
    }

    pub(super) fn remove(&mut self, id: u64) {
        if let Some(offset) = self.offset(id)
            && let Ok(at) = self.offsets.binary_search(&offset)
        {
            self.offsets.remove(at);
        }
    }

    /// How many are at or above `mark`.
    pub(super) fn count_from(&self, mark: u64) -> usize {
        self.offsets.len() - self.below(mark)
    }

    /// How many are below `mark`.
    fn below(&self, mark: u64) -> usize {
        match mark.checked_sub(self.base) {
            None => 0,
            Some(offset) => match u32::try_from(offset) {
                Ok(offset) => self.offsets.partition_point(|o| *o < offset),
                Err(_) => self.offsets.len(),
            },
        }
    }
}

/// Jobs to re-read at a time: 16 bytes each (second, job id), sorted, instead of a record.
#[derive(Debug, Default)]
pub(super) struct Wakeups(Vec<(i64, u64)>);

impl Wakeups {
    pub(super) fn insert(&mut self, at: Timestamp, id: u64) {
        self.0.retain(|(_, known)| *known != id);
        let entry = (at.as_second(), id);
        let position = self.0.partition_point(|e| *e < entry);
        self.0.insert(position, entry);
    }

    /// Removes and returns up to `max` job ids due at `now`, earliest first.
    pub(super) fn take_due(&mut self, now: Timestamp, max: usize) -> Vec<u64> {
        let due = self
            .0
            .partition_point(|(at, _)| *at <= now.as_second())
            .min(max);
        self.0.drain(..due).map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settled ids behave as the newest `MAX_SETTLED` of a set, whatever order ids come in
    /// and however far apart they are.
    #[test]
    fn settled_ids_hold_the_newest_ones_as_a_set_would() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut settled = SettledIds::default();
        let mut model = std::collections::BTreeSet::new();
        let mut next = 10_000_000_000u64;
        for step in 0..20_000 {
            match rng.random_range(0..10) {
                0..=5 => {
                    // Mostly newer ids, some older, now and then one far above (a year later).
                    next += match step % 997 {
                        0 => 5_000_000_000,
                        _ => rng.random_range(1..5_000),
                    };
                    let id = if rng.random_bool(0.2) {
                        next - rng.random_range(0..20_000)
                    } else {
                        next
                    };
                    settled.insert(id);
                    model.insert(id);
                    // A far jump forgets every id more than 2^32 below it.
                    model.retain(|held| id - held.min(&id) <= u64::from(u32::MAX) || *held > id);
                    while model.len() > MAX_SETTLED {
                        model.pop_first();
                    }
                }
                6 => {
                    let id = next - rng.random_range(0..20_000);
                    settled.remove(id);
                    model.remove(&id);
                }
                _ => {
                    let mark = next - rng.random_range(0..100_000);
                    let expected = model.iter().filter(|id| **id >= mark).count();
                    assert_eq!(settled.count_from(mark), expected, "step {step}");
                }
            }
            let probe = next - rng.random_range(0..30_000);
            assert_eq!(
                settled.contains(probe),
                model.contains(&probe),
                "step {step}"
            );
            assert_eq!(settled.offsets.len(), model.len(), "step {step}");
        }
    }
}
