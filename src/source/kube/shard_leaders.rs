//! Who leads the other shards, for routing Job Hook deliveries ([`crate::webhook::route`]).
//!
//! The leader of shard `J` is the holder of its Lease (`<lease-name>-shard-J-of-N`). A replica
//! reads that Lease when a delivery for shard `J` arrives and keeps the answer for
//! [`CACHE_FOR`] (2 s, a standby's own polling period), never past the Lease's expiry: at most
//! one `GET` per shard every two seconds however many deliveries come, and none when none
//! come. Concurrent deliveries for one shard wait for a single read. A Lease that is free or
//! expired means no leader (the delivery is answered 503), and so does a Lease that cannot be
//! read; both are cached the same way. When the known leader cannot be reached or answers that
//! it no longer leads, the entry is dropped and the next delivery reads the Lease again.
//! Reading a Lease needs only the `get` the leader election already has.

use super::leader::{LeaseVerdict, judge};
use super::lease_name;
use crate::engine::Shard;
use crate::webhook::ShardLeaders;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a Lease's holder is trusted without reading the Lease again.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// The holders of the shards' Leases, read on demand and cached briefly.
pub struct LeaseLeaders {
    api: Api<Lease>,
    /// The Lease name of each shard, by index.
    names: Vec<String>,
    cache_for: Duration,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Entry {
    /// The last answer and until when it holds.
    known: Mutex<Option<(Option<String>, Instant)>>,
    /// Held while the Lease is read, so that concurrent deliveries share one read.
    reading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LeaseLeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLeaders")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl LeaseLeaders {
    /// The leaders of the `count` shards whose Leases are `<base>-shard-<i>-of-<count>` in
    /// `namespace`.
    pub fn new(client: Client, namespace: &str, base: &str, count: u32) -> LeaseLeaders {
        LeaseLeaders::cached_for(client, namespace, base, count, CACHE_FOR)
    }

    /// The same, keeping an answer for `cache_for`.
    pub fn cached_for(
        client: Client,
        namespace: &str,
        base: &str,
        count: u32,
        cache_for: Duration,
    ) -> LeaseLeaders {
        let names: Vec<String> = (0..count)
            .filter_map(|index| Shard::new(index, count).ok())
            .map(|shard| lease_name(base, shard))
            .collect();
        LeaseLeaders {
            api: Api::namespaced(client, namespace),
            entries: names.iter().map(|_| Entry::default()).collect(),
            names,
            cache_for,
        }
    }

    fn cached(entry: &Entry) -> Option<Option<String>> {
        let known = crate::sync::lock(&entry.known);
        match &*known {
            Some((leader, until)) if Instant::now() < *until => Some(leader.clone()),
            _ => None,
        }
    }

    async fn read(&self, index: usize) -> Option<String> {
        let entry = &self.entries[index];
        if let Some(leader) = Self::cached(entry) {
            return leader;
        }
        let _reading = entry.reading.lock().await;
        // Another delivery may have read it while this one waited.
        if let Some(leader) = Self::cached(entry) {
            return leader;
        }
        let name = &self.names[index];
        let (leader, valid_for) = match self.api.get_opt(name).await {
            Ok(lease) => {
                let spec = lease.and_then(|l| l.spec).unwrap_or_default();
                let now = Timestamp::now();
                match judge(&spec, "", now) {
                    LeaseVerdict::HeldBy { holder, until } => {
                        let left = until.duration_since(now).unsigned_abs();
                        (Some(holder), self.cache_for.min(left))
                    }
                    LeaseVerdict::Take | LeaseVerdict::Renew => (None, self.cache_for),
                }
            }
            Err(err) => {
                tracing::warn!(lease = %name, error = %err, "cannot read a shard's Lease to route a webhook delivery");
                (None, self.cache_for)
            }
        };
        *crate::sync::lock(&entry.known) = Some((leader.clone(), Instant::now() + valid_for));
        leader
    }
}

impl ShardLeaders for LeaseLeaders {
    fn leader_of(&self, index: u32) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            let index = usize::try_from(index).ok()?;
            if index >= self.entries.len() {
                return None;
            }
            self.read(index).await
        })
    }

    fn forget(&self, index: u32) {
        if let Some(entry) = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
        {
            *crate::sync::lock(&entry.known) = None;
        }
    }
}

#[cfg(test)]
#[path = "shard_leaders_tests.rs"]
mod tests;
