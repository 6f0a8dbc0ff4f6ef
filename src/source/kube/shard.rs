//! Splitting policies across replicas: `--shard-index I --shard-count N` makes a replica own the
//! policies whose `namespace/name` hashes to `I` modulo `N`.
//!
//! The hash is FNV-1a (64 bit) over the bytes of `namespace/name`: fixed by this code, not by
//! the Rust version or the process, so every replica of every build agrees on who owns what.

use std::fmt;

/// Which share of the policies this replica owns.
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

impl Shard {
    /// The single shard that owns every policy.
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

    /// Whether the policy `namespace/name` belongs to this shard.
    pub fn owns(self, namespace: &str, name: &str) -> bool {
        shard_of(namespace, name, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

/// The shard (`0..count`) of the policy `namespace/name`; `count` 0 is treated as 1.
pub fn shard_of(namespace: &str, name: &str, count: u32) -> u32 {
    let hash = fnv1a(
        namespace
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(name.bytes()),
    );
    let shard = hash % u64::from(count.max(1));
    // The remainder is below `count`, a u32.
    u32::try_from(shard).unwrap_or(0)
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

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a", "foobar".
        assert_eq!(fnv1a("".bytes()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a".bytes()), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar".bytes()), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_policy_belongs_to_exactly_one_shard() {
        let count = 3;
        let shards: Vec<Shard> = (0..count)
            .map(|i| Shard::new(i, count).expect("valid shard"))
            .collect();
        let mut per_shard = vec![0usize; count as usize];
        for ns in ["ci", "team-a", "team-b", "platform"] {
            for i in 0..50 {
                let name = format!("policy-{i}");
                let owners: Vec<u32> = shards
                    .iter()
                    .filter(|s| s.owns(ns, &name))
                    .map(|s| s.index())
                    .collect();
                assert_eq!(owners.len(), 1, "{ns}/{name} owned by {owners:?}");
                per_shard[owners[0] as usize] += 1;
            }
        }
        assert!(
            per_shard.iter().all(|n| *n > 30),
            "200 policies spread over 3 shards: {per_shard:?}"
        );
    }

    #[test]
    fn the_single_shard_owns_everything() {
        assert!(Shard::ALL.owns("any", "thing"));
        assert!(Shard::ALL.is_everything());
        assert_eq!(Shard::new(0, 1), Ok(Shard::ALL));
    }

    #[test]
    fn namespace_and_name_are_not_confused() {
        // "a/bc" and "ab/c" are different policies; the separator keeps them apart in the hash.
        assert_ne!(
            fnv1a("a/bc".bytes()),
            fnv1a("ab/c".bytes()),
            "different keys"
        );
        assert_eq!(shard_of("ci", "x", 7), shard_of("ci", "x", 7), "stable");
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
