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
use crate::server::Readiness;
use crate::source::selector::LabelSelector;
use crate::webhook::{Leadership, Role};
use events::EventPublisher;
use leader::{LeaseLock, LeaseSettings};
use std::sync::Arc;
use tokio::sync::watch;
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

/// What `/readyz` says in cluster mode, from this replica's `role` in the election and whether
/// the watch of the current term has `listed` every JobPolicy: a standby that follows a known
/// leader is ready (it serves metrics and forwards webhook deliveries); the leader is ready once
/// its watch has listed the policies; a replica that knows no leader yet is not.
pub fn readiness(role: &Role, listed: bool) -> Result<(), String> {
    match role {
        Role::Following { .. } => Ok(()),
        Role::Leading if listed => Ok(()),
        Role::Leading => Err("leading: listing the JobPolicies".to_owned()),
        Role::Unknown => Err("campaigning for the lease: no leader known yet".to_owned()),
    }
}

/// Keeps `ready` equal to [`readiness`] of the current role and listing; never returns.
async fn follow_readiness(
    ready: Readiness,
    mut role: watch::Receiver<Role>,
    mut listed: watch::Receiver<bool>,
) {
    loop {
        let status = readiness(&role.borrow_and_update(), *listed.borrow_and_update());
        if status.is_ok() && !ready.is_ready() {
            tracing::info!(role = ?*role.borrow(), "ready");
        }
        ready.set(status);
        let changed = tokio::select! {
            changed = role.changed() => changed.is_ok(),
            changed = listed.changed() => changed.is_ok(),
        };
        if !changed {
            // Nobody can change either any more: the state stays as it is.
            return std::future::pending().await;
        }
    }
}

/// Runs cluster mode until `shutdown` fires: campaigns for the Lease and, while leading,
/// reconciles every policy over the projects of this replica's shard (the engine's
/// [`crate::engine::EngineConfig::shard`], which must be `config.shard`). `ready` follows
/// [`readiness`].
pub async fn run(
    config: ClusterConfig,
    engine: Engine,
    client: kube::Client,
    leadership: Leadership,
    ready: Readiness,
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
    let listed = watch::Sender::new(false);
    let follow = follow_readiness(ready, leadership.subscribe(), listed.subscribe());
    let elected = leader::run_elected(lock, shutdown, &leadership, |term| {
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
            listed.clone(),
        )
    });
    tokio::select! {
        () = elected => {}
        () = follow => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::test_api::{
        answer_empty_policy_list, answer_lease_created, expect, mock_client, offline_engine,
        stop_and_join,
    };
    use serde_json::json;
    use std::time::Duration;

    const LEASE_PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases/jobwarden";
    const CAMPAIGNING: &str = "campaigning for the lease: no leader known yet";

    #[test]
    fn only_a_replica_that_knows_its_role_and_has_what_it_needs_is_ready() {
        let following = Role::Following {
            leader: "pod-b".to_owned(),
        };
        assert_eq!(readiness(&following, false), Ok(()));
        assert_eq!(readiness(&following, true), Ok(()));
        assert_eq!(readiness(&Role::Leading, true), Ok(()));
        assert_eq!(
            readiness(&Role::Leading, false),
            Err("leading: listing the JobPolicies".to_owned())
        );
        assert_eq!(
            readiness(&Role::Unknown, false),
            Err(CAMPAIGNING.to_owned())
        );
        assert_eq!(readiness(&Role::Unknown, true), Err(CAMPAIGNING.to_owned()));
    }

    /// Cluster mode in namespace `ci`, as `pod-a`, against the scripted apiserver; not ready
    /// until told otherwise.
    fn start(client: kube::Client) -> (Readiness, CancellationToken, tokio::task::JoinHandle<()>) {
        let config = ClusterConfig {
            namespace: Some("ci".to_owned()),
            lease: LeaseSettings::new(
                "jobwarden-system",
                "jobwarden",
                "pod-a",
                leader::DEFAULT_LEASE_DURATION,
                leader::DEFAULT_RENEW_EVERY,
            )
            .expect("valid lease settings"),
            shard: Shard::ALL,
            selector: None,
        };
        let ready = Readiness::not_ready("starting");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            config,
            offline_engine(),
            client,
            Leadership::new(Role::Unknown),
            ready.clone(),
            shutdown.clone(),
        ));
        (ready, shutdown, task)
    }

    async fn wait_for_readiness(ready: &Readiness, wanted: Result<(), &str>) {
        let wanted = wanted.map_err(str::to_owned);
        for _ in 0..500 {
            if ready.status() == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("readiness is {:?}, not {wanted:?}", ready.status());
    }

    #[tokio::test]
    async fn the_leader_is_ready_once_the_apiserver_answered_the_list_of_policies() {
        let (client, mut api) = mock_client();
        let (ready, shutdown, task) = start(client);
        wait_for_readiness(&ready, Err(CAMPAIGNING)).await;
        answer_lease_created(&mut api).await;

        let list = expect(
            &mut api,
            "GET /apis/jobwarden.dev/v1alpha1/namespaces/ci/jobpolicies",
        )
        .await;
        wait_for_readiness(&ready, Err("leading: listing the JobPolicies")).await;
        answer_empty_policy_list(list);
        wait_for_readiness(&ready, Ok(())).await;
        stop_and_join(&shutdown, api, task).await;
    }

    #[tokio::test]
    async fn a_standby_is_ready_once_it_knows_the_leader() {
        let (client, mut api) = mock_client();
        let (ready, shutdown, task) = start(client);
        let get = expect(&mut api, &format!("GET {LEASE_PATH}")).await;
        wait_for_readiness(&ready, Err(CAMPAIGNING)).await;
        get.ok(&json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "jobwarden", "namespace": "jobwarden-system", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": "pod-b",
                "leaseDurationSeconds": 15,
                "renewTime": jiff::Timestamp::now().to_string(),
            }
        }));
        wait_for_readiness(&ready, Ok(())).await;
        stop_and_join(&shutdown, api, task).await;
    }

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
