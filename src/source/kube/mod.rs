//! Cluster mode: JobPolicies come from the Kubernetes API, and results go back to it.
//!
//! `jobwarden run` without `--policies` watches `JobPolicy` objects (in every namespace, or one
//! with `--namespace`) and reconciles them with the same engine as file mode. Per policy:
//! compile the spec (an invalid one is reported and left until it changes), read the GitLab
//! token from the Secret the policy names *in its own namespace*, run the engine, and report
//! through `/status` (a `Ready` condition, counters, recent actions) and Events.
//!
//! Only one replica acts: the one holding the Lease ([`leader`]). With `--shard-count N`, each
//! shard `I` holds its own Lease (`<lease-name>-shard-I-of-N`) and reconciles every policy, but
//! only over the projects that hash to it ([`crate::engine::shard`]); each shard reports in its
//! own entry of the policy's status ([`status`]).
//!
//! | Module | Concern |
//! |---|---|
//! | [`controller`] | the `kube::runtime::Controller`, reconcile and error policy |
//! | [`status`] | the status a reconcile writes (pure) |
//! | [`shard_status`] | with project sharding: each shard's entry and the merged status (pure) |
//! | [`events`] | Kubernetes Events for actions and problems |
//! | [`secrets`] | the GitLab token, from the policy's own namespace only |
//! | [`leader`] | leader election with a `coordination.k8s.io/v1` Lease |
//! | [`shard_leaders`] | with project sharding: the other shards' leaders, for routing webhook deliveries |

pub mod controller;
pub mod events;
pub mod leader;
pub mod secrets;
pub mod shard_leaders;
pub mod shard_status;
pub mod status;

#[cfg(test)]
mod test_api;

use crate::crd::JobPolicy;
use crate::engine::Engine;
use crate::engine::Shard;
use crate::source::selector::LabelSelector;
use events::EventPublisher;
use leader::{LeaseLock, LeaseSettings};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What cluster mode watches and how it elects its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The one namespace to watch; `None` watches all.
    pub namespace: Option<String>,
    /// The Lease of this replica's shard and its timings.
    pub lease: LeaseSettings,
    /// The projects this replica owns (of every policy).
    pub shard: Shard,
    /// Only the JobPolicies with these labels (`--selector`); all when `None`.
    pub selector: Option<LabelSelector>,
}

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot reach a Kubernetes cluster (set KUBECONFIG, run in a Pod, or use --policies DIR for file mode): {0}"
    )]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Shard(#[from] crate::engine::ShardError),
    #[error(transparent)]
    Lease(#[from] leader::LeaseSettingsError),
}

/// The Lease name of a shard: `base` itself when there is one shard, else
/// `<base>-shard-<index>-of-<count>`, so that every shard elects its own leader.
pub fn lease_name(base: &str, shard: Shard) -> String {
    if shard.is_everything() {
        base.to_owned()
    } else {
        format!("{base}-shard-{}-of-{}", shard.index(), shard.count())
    }
}

/// An identity for the Lease when none is given (`--identity`, `$POD_NAME`): the host name with
/// a random suffix, since two processes on one host must not share an identity (both would
/// believe they lead).
pub fn generated_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jobwarden".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Runs cluster mode until `shutdown` fires: campaigns for the Lease and, while leading,
/// reconciles every policy over the projects of this replica's shard (the engine's
/// [`crate::engine::EngineConfig::shard`], which must be `config.shard`).
pub async fn run(
    config: ClusterConfig,
    engine: Engine,
    client: kube::Client,
    leadership: crate::webhook::Leadership,
    shutdown: CancellationToken,
) {
    let events = Arc::new(EventPublisher::new(client.clone(), &config.lease.identity));
    let policies: kube::Api<JobPolicy> = match &config.namespace {
        Some(namespace) => kube::Api::namespaced(client.clone(), namespace),
        None => kube::Api::all(client.clone()),
    };
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        selector = %config.selector.as_ref().map_or_else(|| "(none)".to_owned(), ToString::to_string),
        shard = %config.shard,
        lease = %format!("{}/{}", config.lease.namespace, config.lease.name),
        identity = %config.lease.identity,
        "cluster mode: campaigning for the lease"
    );
    let lock = LeaseLock::new(client.clone(), config.lease.clone());
    leader::run_elected(lock, shutdown, &leadership, |term| {
        let ctx = Arc::new(controller::Context::new(
            engine.clone(),
            client.clone(),
            events.clone(),
            config.shard,
            term,
        ));
        controller::run(
            ctx,
            policies.clone(),
            controller::watcher_config(config.selector.as_ref()),
        )
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_has_its_own_lease() {
        assert_eq!(lease_name("jobwarden", Shard::ALL), "jobwarden");
        let names: Vec<String> = (0..3)
            .map(|i| lease_name("jobwarden", Shard::new(i, 3).expect("valid shard")))
            .collect();
        assert_eq!(
            names,
            [
                "jobwarden-shard-0-of-3",
                "jobwarden-shard-1-of-3",
                "jobwarden-shard-2-of-3"
            ]
        );
    }

    #[test]
    fn generated_identities_differ_between_processes_on_one_host() {
        let (a, b) = (generated_identity(), generated_identity());
        assert_ne!(a, b);
        let host = a.rsplit_once('-').map(|(host, _)| host);
        assert_eq!(host, b.rsplit_once('-').map(|(host, _)| host));
    }
}
