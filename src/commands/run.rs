//! `jobwarden run --policies DIR`: the controller without a cluster.

use super::{GitLabArgs, termination_signal};
use crate::engine::{Engine, system_clock};
use crate::metrics::Metrics;
use crate::runner::{RunnerConfig, run_policies};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directories or files of JobPolicy (and Secret) manifests; reloaded when they change.
    #[arg(long = "policies", env = "JOBWARDEN_POLICIES", required = true, num_args = 1..)]
    pub policies: Vec<PathBuf>,
    /// Environment variable holding the GitLab token when a policy's Secret is not in the
    /// directory.
    #[arg(long, env = "JOBWARDEN_TOKEN_ENV", default_value = "GITLAB_TOKEN")]
    pub token_env: String,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "JOBWARDEN_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// How often the policy files are checked for changes, in seconds.
    #[arg(long, env = "JOBWARDEN_RELOAD_SECONDS", default_value_t = 2)]
    pub reload_seconds: u64,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
}

pub async fn run(args: RunArgs) -> crate::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(args.gitlab.engine_config(), system_clock(), metrics.clone());
    let shutdown = CancellationToken::new();
    let server =
        crate::server::spawn(args.metrics_listen, metrics.clone(), shutdown.clone()).await?;
    server.ready.set_ready();

    let config = RunnerConfig {
        paths: args.policies,
        token_env: args.token_env,
        token_override: None,
        override_policy: None,
        reload_every: Duration::from_secs(args.reload_seconds.max(1)),
    };
    let sink = Arc::new(|report: &crate::engine::RunReport| {
        for record in &report.actions {
            tracing::info!(
                target: "jobwarden::action",
                policy = %report.policy,
                project = %record.project,
                job_id = record.job_id,
                job_name = %record.job_name,
                rule = %record.rule,
                action = record.action,
                outcome = record.outcome.label(),
                reason = %record.reason,
                "{}",
                record.outcome
            );
        }
        tracing::info!(
            policy = %report.policy,
            projects = report.projects,
            jobs = report.jobs_seen,
            actions = report.actions.len(),
            failures = report.failures.len(),
            "reconciled"
        );
    });
    let runner = tokio::spawn(run_policies(engine, config, sink, shutdown.clone()));
    termination_signal().await;
    tracing::info!("stopping: finishing in-flight actions");
    shutdown.cancel();
    let _ = runner.await;
    server.join().await;
    Ok(ExitCode::SUCCESS)
}
