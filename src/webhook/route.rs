//! Deliveries for another shard's project.
//!
//! With project sharding (`--shard-count N` above 1) every replica receives deliveries behind
//! one Service, so about (N−1)/N of them reach a replica of the wrong shard. That replica asks
//! its engine which shard owns the delivery's (instance, project) ([`Engine::owner_shard`],
//! the function that decides what each shard observes) and, when it is another one, passes the
//! delivery on to that shard's leader with the [`Forwarder`](super::Forwarder) of
//! `--webhook-forward-to`: the leader's identity comes from [`ShardLeaders`] (in cluster mode,
//! the holders of the shards' Leases, read on demand and cached for a couple of seconds; see
//! `crate::source::kube::shard_leaders`).
//!
//! A forwarded delivery (`X-Jobwarden-Forwarded`) is never forwarded again: the replica it
//! reaches acts on it when it leads the owning shard, and otherwise answers 421 Misdirected
//! Request (`misrouted`, nothing done); the forwarder then forgets the leader it knew for that
//! shard and answers GitLab 503, like when the owner cannot be reached. The job is still caught
//! by the owner's next run.
//!
//! [`Engine::owner_shard`]: crate::engine::Engine::owner_shard

use futures::future::BoxFuture;
use std::collections::BTreeMap;

/// Who leads each shard, as far as this replica can tell.
pub trait ShardLeaders: Send + Sync {
    /// The identity (as in the Lease: the Pod name) of the replica leading shard `index`, or
    /// `None` when no replica holds that shard's Lease or it cannot be read.
    fn leader_of(&self, index: u32) -> BoxFuture<'_, Option<String>>;

    /// The leader known for shard `index` could not take a delivery (unreachable, or no longer
    /// leading): the next delivery for that shard looks again.
    fn forget(&self, index: u32);
}

/// A fixed table of shard leaders (for tests, and for replicas addressed without a Lease).
#[derive(Debug, Clone, Default)]
pub struct FixedLeaders(BTreeMap<u32, String>);

impl FixedLeaders {
    /// Shard `index` is led by `identity`, for each pair.
    pub fn new(leaders: impl IntoIterator<Item = (u32, String)>) -> FixedLeaders {
        FixedLeaders(leaders.into_iter().collect())
    }
}

impl ShardLeaders for FixedLeaders {
    fn leader_of(&self, index: u32) -> BoxFuture<'_, Option<String>> {
        let leader = self.0.get(&index).cloned();
        Box::pin(async move { leader })
    }

    fn forget(&self, _index: u32) {}
}
