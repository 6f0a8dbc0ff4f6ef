//! Project sharding: `--shard-index I --shard-count N` makes a replica own a stable share of
//! the (GitLab instance, project id) pairs, whatever policy names them. Every replica sees every
//! policy; each reconciles only its own projects of each one.
//!
//! Ownership is rendezvous (highest-random-weight) hashing: every shard scores the project, the
//! highest score owns it. Going from N to N+1 shards moves exactly the projects the new shard
//! now outscores, about 1/(N+1) of them; no other project changes owner.
//!
//! The scores are fixed by this code, not by the Rust version or the process: the key is
//! FNV-1a (64 bit) over the instance and the project id, and each shard's score is the
//! SplitMix64 finalizer of that key mixed with the shard index. Every replica of every build
//! agrees on who owns what.

use std::fmt;

/// Which share of the projects this replica owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard-count must be at least 1")]
    NoShards,
    #[error("--shard-index {index} is out of range: it must be below --shard-count {count}")]
    IndexOutOfRange { index: u32, count: u32 },
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Shard {
    /// The single shard that owns every project.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// This shard's index.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// True when this is the only shard.
    pub fn is_everything(self) -> bool {
        self.count == 1
    }

    /// Whether project `project_id` of the GitLab instance `instance` (as
    /// [`crate::gitlab::instance_name`] spells it) belongs to this shard.
    pub fn owns_project(self, instance: &str, project_id: u64) -> bool {
        self.is_everything()
            || owner_of(project_key(instance, project_id), self.count) == self.index
    }

    /// Whether a project known only by its path, one that could not be resolved to an id,
    /// belongs to this shard: the one shard that reports it as a failure.
    pub fn owns_unresolved(self, instance: &str, path: &str) -> bool {
        self.is_everything() || owner_of(path_key(instance, path), self.count) == self.index
    }

    /// This shard's part of a per-minute request budget that all shards share: the budget
    /// divided by the shard count, rounded down (at least 1), so that the shards together
    /// never exceed it.
    pub fn share_of_budget(self, requests_per_minute: u32) -> u32 {
        (requests_per_minute / self.count.max(1)).max(1)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

/// The shard (`0..count`) that owns project `project_id` of `instance`; `count` 0 is treated
/// as 1.
pub fn owner_of_project(instance: &str, project_id: u64, count: u32) -> u32 {
    owner_of(project_key(instance, project_id), count)
}

/// The shard with the highest score for `key`; ties (astronomically rare) go to the lowest
/// index.
fn owner_of(key: u64, count: u32) -> u32 {
    let mut best = (0u32, score(key, 0));
    for index in 1..count.max(1) {
        let candidate = score(key, index);
        if candidate > best.1 {
            best = (index, candidate);
        }
    }
    best.0
}

/// Shard `index`'s weight for `key`.
fn score(key: u64, index: u32) -> u64 {
    const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    splitmix64(key ^ splitmix64(u64::from(index).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// The key of a project id: `instance`, a byte that never occurs in UTF-8 text, `i`, the id's
/// eight bytes (little-endian). An instance's trailing slash does not count.
fn project_key(instance: &str, project_id: u64) -> u64 {
    fnv1a(
        crate::gitlab::instance_key(instance)
            .bytes()
            .chain([0xff, b'i'])
            .chain(project_id.to_le_bytes()),
    )
}

/// The key of an unresolved project path: like [`project_key`] with `p` and the path in
/// lowercase (GitLab finds projects case-insensitively).
fn path_key(instance: &str, path: &str) -> u64 {
    fnv1a(
        crate::gitlab::instance_key(instance)
            .bytes()
            .chain([0xff, b'p'])
            .chain(path.bytes().map(|b| b.to_ascii_lowercase())),
    )
}

/// SplitMix64's finalizer: every input bit flips about half the output bits, which FNV-1a
/// alone does not do for keys that differ in their last bytes.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITLAB: &str = "https://gitlab.example.com";

    fn shards(count: u32) -> Vec<Shard> {
        (0..count)
            .map(|i| Shard::new(i, count).expect("valid shard"))
            .collect()
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "", "a", "foobar".
        assert_eq!(fnv1a("".bytes()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a".bytes()), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar".bytes()), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0 (Vigna's reference): state += gamma, then the finalizer.
        let gamma = 0x9e37_79b9_7f4a_7c15u64;
        assert_eq!(splitmix64(gamma), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(gamma.wrapping_mul(2)), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn owners_are_pinned_so_that_every_build_and_process_agrees() {
        // Fixed values: a change here means replicas of two builds would disagree on owners.
        let owners: Vec<u32> = (1..=12).map(|id| owner_of_project(GITLAB, id, 4)).collect();
        assert_eq!(owners, PINNED_OWNERS_OF_1_TO_12_OVER_4);
        // And the same answer on every call.
        for id in 1..=12 {
            assert_eq!(
                owner_of_project(GITLAB, id, 4),
                owner_of_project(GITLAB, id, 4)
            );
        }
    }

    const PINNED_OWNERS_OF_1_TO_12_OVER_4: [u32; 12] = [3, 2, 0, 0, 3, 1, 0, 2, 0, 2, 1, 3];

    #[test]
    fn every_project_belongs_to_exactly_one_shard() {
        let all = shards(3);
        for id in 0..500 {
            let owners = all.iter().filter(|s| s.owns_project(GITLAB, id)).count();
            assert_eq!(owners, 1, "project {id}");
            let owners = all
                .iter()
                .filter(|s| s.owns_unresolved(GITLAB, &format!("group/p{id}")))
                .count();
            assert_eq!(owners, 1, "path group/p{id}");
        }
    }

    #[test]
    fn ten_thousand_projects_spread_over_four_shards_within_ten_percent() {
        let mut per_shard = [0u32; 4];
        for id in 1..=10_000 {
            per_shard[owner_of_project(GITLAB, id, 4) as usize] += 1;
        }
        for n in per_shard {
            assert!(
                (2250..=2750).contains(&n),
                "2,500 ± 10 % each: {per_shard:?}"
            );
        }
    }

    #[test]
    fn from_four_to_five_shards_about_a_fifth_moves_and_only_to_the_new_shard() {
        let mut moved = 0u32;
        for id in 1..=10_000 {
            let before = owner_of_project(GITLAB, id, 4);
            let after = owner_of_project(GITLAB, id, 5);
            if before != after {
                assert_eq!(after, 4, "project {id} moved between old shards");
                moved += 1;
            }
        }
        // 1/5 of 10,000 = 2,000.
        assert!((1800..=2200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn the_instance_is_part_of_the_key_and_its_trailing_slash_is_not() {
        let differ = (1..=200)
            .filter(|id| {
                owner_of_project(GITLAB, *id, 4)
                    != owner_of_project("https://gitlab.other.org", *id, 4)
            })
            .count();
        assert!(differ > 100, "{differ} of 200 differ");
        for id in 1..=200 {
            assert_eq!(
                owner_of_project(GITLAB, id, 4),
                owner_of_project(&format!("{GITLAB}/"), id, 4)
            );
        }
    }

    #[test]
    fn the_single_shard_owns_everything_and_keeps_the_whole_budget() {
        assert!(Shard::ALL.owns_project(GITLAB, 7));
        assert!(Shard::ALL.owns_unresolved(GITLAB, "any/thing"));
        assert!(Shard::ALL.is_everything());
        assert_eq!(Shard::new(0, 1), Ok(Shard::ALL));
        assert_eq!(Shard::ALL.share_of_budget(600), 600);
    }

    #[test]
    fn shards_divide_the_budget_and_together_never_exceed_it() {
        for (count, total, each) in [(2, 600, 300), (3, 600, 200), (7, 600, 85), (4, 2000, 500)] {
            let shares: Vec<u32> = shards(count)
                .iter()
                .map(|s| s.share_of_budget(total))
                .collect();
            assert!(shares.iter().all(|s| *s == each), "{count}: {shares:?}");
            assert!(shares.iter().sum::<u32>() <= total);
        }
        // A budget smaller than the shard count still lets each shard send something.
        assert_eq!(Shard::new(0, 4).expect("valid").share_of_budget(2), 1);
    }

    #[test]
    fn impossible_shards_are_refused() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(
            Shard::new(3, 3),
            Err(ShardError::IndexOutOfRange { index: 3, count: 3 })
        );
    }
}
