//! The subcommands: `run`, `plan` and `demo` run policies; `check` and `crd` work offline.

pub mod check;
pub mod crd;
pub mod demo;
pub mod output;
pub mod plan;
pub mod run;

use crate::engine::EngineConfig;
use crate::gitlab::TokenDestinations;
use std::path::PathBuf;
use std::time::Duration;

/// Where file mode finds its policies and, failing a Secret manifest, its GitLab token; shared
/// by `run` (where `--policies` is optional: without it, cluster mode) and `plan` (where it is
/// required).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyFilesArgs {
    /// Directories or files of JobPolicy (and Secret) manifests.
    #[arg(long = "policies", env = "JOBWARDEN_POLICIES", num_args = 1..)]
    pub policies: Vec<PathBuf>,
    /// Environment variable holding the GitLab token when a policy's Secret is not among the
    /// manifests.
    #[arg(long, env = "JOBWARDEN_TOKEN_ENV", default_value = "GITLAB_TOKEN")]
    pub token_env: String,
}

/// How jobwarden talks to GitLab; shared by `run`, `plan` and `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct GitLabArgs {
    /// Request budget per GitLab instance, shared by every policy (token bucket, per minute).
    #[arg(long, env = "JOBWARDEN_REQUESTS_PER_MINUTE", default_value_t = 600)]
    pub requests_per_minute: u32,
    /// Timeout of one GitLab request, in seconds.
    #[arg(long, env = "JOBWARDEN_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Extra CA bundle (PEM) to trust for GitLab's TLS certificate.
    #[arg(long, env = "JOBWARDEN_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// How far back a project's jobs are read on the first sync, in hours.
    #[arg(long, env = "JOBWARDEN_HISTORY_HOURS", default_value_t = 72)]
    pub history_hours: u32,
    /// How long no rule acts on a job after GitLab gave no clear answer to a call on it (a
    /// timeout, a dropped connection, a 5xx), in seconds: the call may still land. Then the job
    /// is re-read. Raise it when a proxy in front of GitLab holds requests longer than 5 minutes.
    #[arg(long, env = "JOBWARDEN_IN_DOUBT_SECONDS", default_value_t = 300)]
    pub in_doubt_seconds: u32,
    /// Send tokens to plain `http://` GitLab URLs (in cleartext). Off by default: a policy
    /// with an http URL fails with a clear error. For simulators and tests.
    #[arg(long, env = "JOBWARDEN_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// The only GitLab hosts tokens may be sent to (comma-separated; `host` or `host:port`).
    /// A policy naming another host fails with a clear error. Default: any host.
    #[arg(long, env = "JOBWARDEN_ALLOWED_GITLAB_HOSTS", value_delimiter = ',')]
    pub allowed_gitlab_hosts: Vec<String>,
    /// How often the projects of a policy's `spec.groups` are listed again (Go duration, at
    /// least 10s): projects added to a group are picked up, and archived or removed ones let
    /// go, within this long. One listing serves every policy naming the group.
    #[arg(
        long,
        env = "JOBWARDEN_GROUP_REFRESH_INTERVAL",
        default_value = "5m",
        value_parser = parse_refresh_interval
    )]
    pub group_refresh_interval: Duration,
    /// Idle connections kept open per GitLab instance (each keeps a read buffer as large as the
    /// largest page it carried; more are opened while syncs and actions run in parallel).
    #[arg(long, env = "JOBWARDEN_IDLE_CONNECTIONS", default_value_t = 8)]
    pub idle_connections: usize,
    /// The most requests in flight at once per GitLab instance, over every policy (each holds a
    /// connection and, for a listing, a page of jobs until it is read). Raise it only when
    /// GitLab is slow to answer and `--requests-per-minute` is high.
    #[arg(
        long,
        env = "JOBWARDEN_MAX_REQUESTS_IN_FLIGHT",
        default_value_t = crate::gitlab::ratelimit::DEFAULT_MAX_IN_FLIGHT,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
    )]
    pub max_requests_in_flight: usize,
}

/// Shortest `--group-refresh-interval`.
const MIN_GROUP_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Parses `--group-refresh-interval`: a Go duration of at least 10s.
fn parse_refresh_interval(raw: &str) -> Result<Duration, String> {
    let parsed = crate::policy::duration::parse_go_duration(raw).map_err(|e| e.to_string())?;
    let interval = Duration::try_from(parsed).map_err(|e| e.to_string())?;
    if interval < MIN_GROUP_REFRESH_INTERVAL {
        return Err("must be at least 10s".to_owned());
    }
    Ok(interval)
}

impl GitLabArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            requests_per_minute: self.requests_per_minute,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            ca_bundle: self.ca_bundle.clone(),
            history: jiff::SignedDuration::from_hours(i64::from(self.history_hours)),
            in_doubt_for: jiff::SignedDuration::from_secs(i64::from(self.in_doubt_seconds)),
            destinations: TokenDestinations {
                allow_insecure_http: self.allow_insecure_http,
                allowed_hosts: self
                    .allowed_gitlab_hosts
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .collect(),
            },
            group_refresh_interval: self.group_refresh_interval,
            idle_connections: self.idle_connections,
            max_requests_in_flight: self.max_requests_in_flight,
            ..EngineConfig::default()
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, Parser};

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jobwarden").chain(argv.iter().copied()))
    }

    #[test]
    fn run_and_plan_share_the_policy_file_flags() {
        let argv = ["--policies", "a", "b", "--token-env", "MY_TOKEN"];
        let Ok(Cli {
            command: Command::Run(run),
            ..
        }) = parse(&[&["run"][..], &argv].concat())
        else {
            panic!("run parses");
        };
        let Ok(Cli {
            command: Command::Plan(plan),
            ..
        }) = parse(&[&["plan"][..], &argv].concat())
        else {
            panic!("plan parses");
        };
        assert_eq!(run.files.policies, plan.files.policies);
        assert_eq!(plan.files.policies.len(), 2);
        assert_eq!(run.files.token_env, "MY_TOKEN");
        assert_eq!(plan.files.token_env, "MY_TOKEN");
    }

    #[test]
    fn plan_requires_policies_and_run_does_not() {
        // (Unless JOBWARDEN_POLICIES is set, which a test run does not do.)
        if std::env::var_os("JOBWARDEN_POLICIES").is_some() {
            return;
        }
        let err = parse(&["plan"]).expect_err("--policies is required");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--policies"), "{err}");
        assert!(parse(&["run"]).is_ok(), "without --policies, cluster mode");
    }

    #[test]
    fn requests_in_flight_default_to_eight_and_zero_is_refused() {
        if std::env::var_os("JOBWARDEN_MAX_REQUESTS_IN_FLIGHT").is_some() {
            return;
        }
        let in_flight = |argv: &[&str]| match parse(argv) {
            Ok(Cli {
                command: Command::Run(run),
                ..
            }) => run.gitlab.engine_config().max_requests_in_flight,
            other => panic!("run parses: {other:?}"),
        };
        assert_eq!(in_flight(&["run"]), 8);
        assert_eq!(in_flight(&["run", "--max-requests-in-flight", "32"]), 32);
        let err = parse(&["run", "--max-requests-in-flight", "0"]).expect_err("0 is refused");
        assert!(
            err.to_string().contains("--max-requests-in-flight"),
            "{err}"
        );
    }

    #[test]
    fn run_says_what_no_policies_means() {
        let mut cli = Cli::command();
        let run = cli.find_subcommand_mut("run").expect("run");
        let help = run.render_help().to_string();
        assert!(help.contains("runs in cluster mode"), "{help}");
    }
}
