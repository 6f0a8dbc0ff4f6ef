//! `jobwarden run`: the controller. With `--policies DIR` it runs the policies of a directory
//! (file mode, no cluster); without, it watches JobPolicy objects in the cluster (cluster mode).

use super::{GitLabArgs, PolicyFilesArgs, termination_signal};
use crate::engine::Shard;
use crate::engine::{Engine, Ledger, system_clock};
use crate::metrics::Metrics;
use crate::server::Readiness;
use crate::source::files::runner::{RunnerConfig, TokenSource, run_policies};
use crate::source::kube::leader::LeaseSettings;
use crate::source::kube::shard_leaders::LeaseLeaders;
use crate::source::kube::{ClusterConfig, ClusterError, generated_identity, lease_name};
use crate::source::selector::LabelSelector;
use crate::webhook::{Forwarder, Leadership, Role, WebhookSecrets, WebhookState};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
#[command(mut_arg("policies", |arg| arg.help(
    "Directories or files of JobPolicy (and Secret) manifests; reloaded when they change. \
     Without it, jobwarden runs in cluster mode (JobPolicies from the Kubernetes API)"
)))]
pub struct RunArgs {
    // `--policies` and `--token-env`, as in `plan`.
    #[command(flatten)]
    pub files: PolicyFilesArgs,
    #[command(flatten)]
    pub server: crate::server::ServerArgs,
    /// File mode: how often the policy files are checked for changes, in seconds.
    #[arg(long, env = "JOBWARDEN_RELOAD_SECONDS", default_value_t = 2)]
    pub reload_seconds: u64,
    /// A directory for the state that must survive a restart: each policy's actions over the
    /// last hour (`maxActionsPerHour`) and the jobs a call may still land on
    /// (`<dir>/ledger.json`). Without it a restart forgets both.
    #[arg(long, env = "JOBWARDEN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Receive GitLab Job Hook deliveries (`POST /webhook`) on this address (for example
    /// 0.0.0.0:9443 behind an Ingress that terminates TLS): a delivered job is re-read and acted
    /// on at once instead of at the next interval. Off by default.
    #[arg(long, env = "JOBWARDEN_WEBHOOK_LISTEN", value_name = "ADDR")]
    pub webhook_listen: Option<SocketAddr>,
    /// The environment variable holding the webhook's secret token (what GitLab sends in
    /// `X-Gitlab-Token`); required with --webhook-listen.
    #[arg(
        long,
        env = "JOBWARDEN_WEBHOOK_TOKEN_ENV",
        default_value = "JOBWARDEN_WEBHOOK_TOKEN"
    )]
    pub webhook_token_env: String,
    /// Cluster mode: where a standby replica passes deliveries on to the leader, a URL in which
    /// `{identity}` stands for the leader's identity in the Lease (its Pod name), e.g.
    /// `http://{identity}.jobwarden-peers.jobwarden-system.svc:9443/webhook`. With
    /// --shard-count above 1, a delivery for another shard's project goes the same way to that
    /// shard's leader (the holder of its Lease). Without it a standby, or a replica of another
    /// shard, ignores deliveries (the owner's resync still catches their jobs).
    #[arg(
        long,
        env = "JOBWARDEN_WEBHOOK_FORWARD_TO",
        value_name = "URL_TEMPLATE"
    )]
    pub webhook_forward_to: Option<String>,
    /// Run only the JobPolicies whose labels match, `key=value[,key2=value2]` (every pair must
    /// match): in cluster mode the watch asks the apiserver for them, in file mode the
    /// manifests' `metadata.labels` are compared. Lets separate controller sets serve separate
    /// teams.
    #[arg(long, env = "JOBWARDEN_SELECTOR", value_name = "KEY=VALUE[,...]")]
    pub selector: Option<LabelSelector>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
}

/// Flags of cluster mode (ignored with `--policies`, except `--shard-index`/`--shard-count`,
/// which split the projects in file mode too: run exactly one process per index there, as
/// nothing elects a leader).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Cluster mode (without --policies)")]
pub struct ClusterArgs {
    /// Watch JobPolicies in this namespace only (default: all namespaces).
    #[arg(long, env = "JOBWARDEN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (jobwarden's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease; with several shards, each shard uses
    /// `<name>-shard-<index>-of-<count>`.
    #[arg(long, env = "JOBWARDEN_LEASE_NAME", default_value = "jobwarden")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the host name with a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// This replica's shard: it reconciles every policy, over the projects (GitLab instance and
    /// project id) that hash to it. A StatefulSet passes its Pod's ordinal (the label
    /// `apps.kubernetes.io/pod-index`) through `JOBWARDEN_SHARD_INDEX`.
    #[arg(long, env = "JOBWARDEN_SHARD_INDEX", default_value_t = 0)]
    pub shard_index: u32,
    /// How many shards split the projects (each shard elects its own leader and gets
    /// `--requests-per-minute` divided by this count).
    #[arg(long, env = "JOBWARDEN_SHARD_COUNT", default_value_t = 1)]
    pub shard_count: u32,
    /// How long the Lease stays valid without renewal, in seconds.
    #[arg(long, env = "JOBWARDEN_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// How often the leader renews the Lease, in seconds (less than two thirds of the
    /// duration).
    #[arg(long, env = "JOBWARDEN_LEASE_RENEW_SECONDS", default_value_t = 5)]
    pub lease_renew_seconds: u64,
}

impl ClusterArgs {
    /// The cluster configuration these flags describe.
    pub fn config(&self) -> Result<ClusterConfig, ClusterError> {
        let shard = Shard::new(self.shard_index, self.shard_count)?;
        let identity = self
            .identity
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map_or_else(generated_identity, str::to_owned);
        let lease = LeaseSettings::new(
            self.lease_namespace.clone(),
            lease_name(&self.lease_name, shard),
            identity,
            Duration::from_secs(self.lease_duration_seconds),
            Duration::from_secs(self.lease_renew_seconds),
        )?;
        Ok(ClusterConfig {
            namespace: self.namespace.clone().filter(|ns| !ns.is_empty()),
            lease,
            shard,
            selector: None,
        })
    }
}

/// Makes the engine act on the projects of `shard` only, within its share of the request
/// budget: N shards together never send more than `--requests-per-minute` to one instance.
fn shard_engine(engine_config: &mut crate::engine::EngineConfig, shard: Shard) {
    engine_config.shard = shard;
    engine_config.requests_per_minute = shard.share_of_budget(engine_config.requests_per_minute);
}

pub async fn run(args: RunArgs) -> crate::Result<ExitCode> {
    let cluster = connect_cluster(&args).await?;
    let metrics = Arc::new(Metrics::new());
    let engine = build_engine(
        &args,
        cluster.as_ref().map(|(config, _)| config),
        metrics.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let server = crate::server::spawn(
        args.server.metrics_listen,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    // `/readyz` says 503 until the policies are known: see the `server` module for when.
    // File mode always acts; in a cluster the leader election says who does.
    let leadership = if cluster.is_some() {
        Leadership::new(Role::Unknown)
    } else {
        Leadership::always_leading()
    };
    let webhook = match args.webhook_listen {
        Some(addr) => {
            let state = webhook_state(&args, cluster.as_ref(), &engine, &leadership)?;
            Some(crate::webhook::spawn(addr, state, shutdown.clone()).await?)
        }
        None => None,
    };

    let task = match cluster {
        Some((config, client)) => tokio::spawn(crate::source::kube::run(
            config,
            engine,
            client,
            leadership,
            server.ready.clone(),
            shutdown.clone(),
        )),
        None => spawn_file_runner(args, engine, server.ready.clone(), &shutdown),
    };
    termination_signal().await;
    tracing::info!("stopping: finishing in-flight actions");
    shutdown.cancel();
    let _ = task.await;
    server.join().await;
    if let Some(webhook) = webhook {
        webhook.join().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Cluster mode (no `--policies`): the cluster configuration the flags describe and a client
/// of the Kubernetes API. `None` in file mode.
async fn connect_cluster(args: &RunArgs) -> crate::Result<Option<(ClusterConfig, kube::Client)>> {
    if !args.files.policies.is_empty() {
        return Ok(None);
    }
    let mut config = args.cluster.config()?;
    config.selector = args.selector.clone();
    let client = kube::Client::try_default()
        .await
        .map_err(ClusterError::Client)?;
    Ok(Some((config, client)))
}

/// The engine of this process: its shard's projects and share of the request budget, and
/// the ledger (in `--state-dir`, else in memory).
fn build_engine(
    args: &RunArgs,
    cluster: Option<&ClusterConfig>,
    metrics: Arc<Metrics>,
) -> crate::Result<Engine> {
    let mut engine_config = args.gitlab.engine_config();
    // Both modes shard: in file mode without leader election (one process per shard index).
    let shard = match cluster {
        Some(config) => config.shard,
        None => Shard::new(args.cluster.shard_index, args.cluster.shard_count)
            .map_err(ClusterError::from)?,
    };
    shard_engine(&mut engine_config, shard);
    let ledger = match &args.state_dir {
        Some(dir) => Ledger::in_dir(dir, engine_config.in_doubt_for)?,
        None => Ledger::in_memory(engine_config.in_doubt_for),
    };
    Ok(Engine::with_ledger(
        engine_config,
        system_clock(),
        metrics,
        ledger,
    ))
}

/// What the Job Hook receiver needs: the secret token, the leadership (and where a standby
/// forwards deliveries), and with project sharding the shards' leaders.
fn webhook_state(
    args: &RunArgs,
    cluster: Option<&(ClusterConfig, kube::Client)>,
    engine: &Engine,
    leadership: &Leadership,
) -> crate::Result<WebhookState> {
    let secret = std::env::var(&args.webhook_token_env).unwrap_or_default();
    let secrets = WebhookSecrets::new(vec![SecretString::from(secret)], &args.webhook_token_env)?;
    let forwarder = args.webhook_forward_to.clone().map(Forwarder::new);
    let mut state =
        WebhookState::new(engine.clone(), secrets).elected(leadership.clone(), forwarder.clone());
    // With project sharding, deliveries for other shards' projects go to their leaders.
    if let (Some((config, client)), Some(_)) = (cluster, &forwarder)
        && !config.shard.is_everything()
    {
        state = state.routed(Arc::new(LeaseLeaders::new(
            client.clone(),
            &config.lease.namespace,
            &args.cluster.lease_name,
            config.shard.count(),
        )));
    }
    Ok(state)
}

/// File mode: runs the policies of `--policies`, reloading them when they change.
fn spawn_file_runner(
    args: RunArgs,
    engine: Engine,
    ready: Readiness,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let config = RunnerConfig {
        paths: args.files.policies,
        token: TokenSource::SecretOrEnv(args.files.token_env),
        override_policy: None,
        reload_every: Duration::from_secs(args.reload_seconds.max(1)),
        selector: args.selector,
        readiness: Some(ready),
    };
    let sink = Arc::new(|report: &crate::engine::RunReport| report.log());
    tokio::spawn(run_policies(engine, config, sink, shutdown.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        let mut argv = vec!["run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("valid flags").args
    }

    #[test]
    fn without_policies_the_flags_describe_cluster_mode() {
        let args = parse(&[
            "--namespace",
            "ci",
            "--lease-namespace",
            "jobwarden-system",
            "--identity",
            "pod-a",
            "--shard-index",
            "1",
            "--shard-count",
            "2",
        ]);
        assert!(args.files.policies.is_empty());
        let config = args.cluster.config().expect("a valid cluster config");
        assert_eq!(config.namespace.as_deref(), Some("ci"));
        assert_eq!(config.lease.namespace, "jobwarden-system");
        assert_eq!(config.lease.name, "jobwarden-shard-1-of-2");
        assert_eq!(config.lease.identity, "pod-a");
        assert_eq!(config.shard, Shard::new(1, 2).expect("valid shard"));
        assert_eq!(config.lease.duration, Duration::from_secs(15));
        assert_eq!(config.lease.renew_every, Duration::from_secs(5));
    }

    #[test]
    fn each_shard_acts_on_its_projects_within_its_share_of_the_budget() {
        let args = parse(&[
            "--requests-per-minute",
            "600",
            "--shard-index",
            "2",
            "--shard-count",
            "3",
        ]);
        let shard = args.cluster.config().expect("a valid config").shard;
        let mut engine_config = args.gitlab.engine_config();
        assert_eq!(engine_config.requests_per_minute, 600);
        shard_engine(&mut engine_config, shard);
        assert_eq!(engine_config.shard, Shard::new(2, 3).expect("valid shard"));
        assert_eq!(
            engine_config.requests_per_minute, 200,
            "3 shards together send at most the 600 a minute asked for"
        );

        let single = parse(&["--requests-per-minute", "600"]);
        let mut engine_config = single.gitlab.engine_config();
        shard_engine(
            &mut engine_config,
            single.cluster.config().expect("valid").shard,
        );
        assert_eq!(engine_config.requests_per_minute, 600);
        assert_eq!(engine_config.shard, Shard::ALL);
    }

    #[test]
    fn a_selector_is_parsed_and_a_bad_one_is_refused_naming_the_flag() {
        let args = parse(&["--selector", "team=platform,tier=prod"]);
        assert_eq!(
            args.selector.map(|s| s.to_string()).as_deref(),
            Some("team=platform,tier=prod")
        );
        assert!(parse(&[]).selector.is_none());
        let err = Cli::try_parse_from(["run", "--selector", "team"]).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("--selector"), "{message}");
        assert!(message.contains("is not key=value"), "{message}");
    }

    #[test]
    fn with_policies_it_is_file_mode() {
        let args = parse(&["--policies", "deploy/examples"]);
        assert_eq!(args.files.policies, [PathBuf::from("deploy/examples")]);
    }

    #[test]
    fn groups_are_listed_every_five_minutes_unless_told_otherwise() {
        let default = parse(&["--policies", "deploy/examples"]);
        assert_eq!(
            default.gitlab.engine_config().group_refresh_interval,
            Duration::from_secs(300)
        );
        let told = parse(&["--group-refresh-interval", "1m30s"]);
        assert_eq!(
            told.gitlab.engine_config().group_refresh_interval,
            Duration::from_secs(90)
        );
        for refused in ["5s", "5 minutes"] {
            let argv = ["run", "--group-refresh-interval", refused];
            assert!(Cli::try_parse_from(argv).is_err(), "{refused}");
        }
    }

    #[test]
    fn impossible_shards_and_lease_timings_are_refused() {
        let shard = parse(&["--shard-index", "2", "--shard-count", "2"]);
        assert!(matches!(
            shard.cluster.config(),
            Err(ClusterError::Shard(_))
        ));
        let lease = parse(&[
            "--lease-duration-seconds",
            "6",
            "--lease-renew-seconds",
            "5",
        ]);
        assert!(matches!(
            lease.cluster.config(),
            Err(ClusterError::Lease(_))
        ));
    }
}
