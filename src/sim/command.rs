//! `jobwarden simulate`: serve a simulated GitLab until SIGINT or SIGTERM.

use crate::sim::{
    Clock, DEFAULT_WEBHOOK_TIMEOUT, FaultConfig, FleetConfig, SimConfig, SimTls, Simulator,
    WebhookConfig,
};
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `jobwarden simulate` (each also read from a `JOBWARDEN_SIM_*` variable).
#[derive(Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "JOBWARDEN_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The personal access token the simulated API accepts.
    #[arg(long, env = "JOBWARDEN_SIM_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Fleet projects to generate, in the `fleet` group tree (fleet/project-1 … fleet/project-3,
    /// then fleet/<subgroup>/project-N, placed by the seed).
    #[arg(long, env = "JOBWARDEN_SIM_PROJECTS", default_value_t = 10)]
    pub projects: u32,

    /// Seed of the generated fleet (same seed, same fleet).
    #[arg(long, env = "JOBWARDEN_SIM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// GET /projects/:id/jobs requests per user per minute (0 = unlimited).
    #[arg(long, env = "JOBWARDEN_SIM_JOBS_RATE_LIMIT", default_value_t = 600)]
    pub jobs_rate_limit: u32,

    /// API requests per user per minute before Rack::Attack-style 429s (0 = off).
    #[arg(long, env = "JOBWARDEN_SIM_API_RATE_LIMIT", default_value_t = 2000)]
    pub api_rate_limit: u32,

    /// Simulated clock speed (2.0 = twice as fast as the wall clock). Job timings and the
    /// one-minute rate-limit windows follow the simulated clock.
    #[arg(long, env = "JOBWARDEN_SIM_SPEED", default_value_t = 1.0, value_parser = positive_float)]
    pub speed: f64,

    /// Pipelines each project starts with.
    #[arg(long, env = "JOBWARDEN_SIM_PIPELINES_PER_PROJECT", default_value_t = 5)]
    pub pipelines_per_project: u32,

    /// Most pipelines kept per project (the oldest are dropped).
    #[arg(long, env = "JOBWARDEN_SIM_MAX_PIPELINES_PER_PROJECT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pipelines_per_project: u32,

    /// Mean seconds between new pipelines in a project (0 = no new pipelines).
    #[arg(long, env = "JOBWARDEN_SIM_CHURN_SECS", default_value_t = 900)]
    pub churn_secs: u64,

    /// Freeze the fleet: no job moves on its own after start.
    #[arg(long, env = "JOBWARDEN_SIM_FROZEN")]
    pub frozen: bool,

    /// Instance URL used in web_url fields and pagination links (default: the listen URL).
    #[arg(long, env = "JOBWARDEN_SIM_LINKS_BASE_URL")]
    pub links_base_url: Option<String>,

    /// Share of API requests answered 500/502/503.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_5XX_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_5xx_ratio: f64,

    /// Milliseconds added to every API request.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_LATENCY_MS", default_value_t = 0)]
    pub fault_latency_ms: u64,

    /// Share of API requests held 30 s before being answered.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_TIMEOUT_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_timeout_ratio: f64,

    /// Answer every Nth API request with a Rack::Attack 429.
    #[arg(long = "fault-429-every", env = "JOBWARDEN_SIM_FAULT_429_EVERY", value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_429_every: Option<u32>,

    /// Share of JSON answers cut off half-way.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_MALFORMED_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_malformed_ratio: f64,

    /// Share of API requests whose connection is closed without an answer.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_DROP_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_drop_ratio: f64,

    /// Share of state-changing API requests left without an answer and carried out later
    /// (after --fault-apply-late-ms): the ambiguous mutation.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_APPLY_LATE_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_apply_late_ratio: f64,

    /// How long after the client was left without an answer a late mutation takes effect.
    #[arg(
        long,
        env = "JOBWARDEN_SIM_FAULT_APPLY_LATE_MS",
        default_value_t = 10_000
    )]
    pub fault_apply_late_ms: u64,

    /// Deliver Job Hooks for every project to this URL (more through POST /-/sim/hooks).
    #[arg(long, env = "JOBWARDEN_SIM_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Secret token sent as X-Gitlab-Token with every delivery to --webhook-url.
    #[arg(
        long,
        env = "JOBWARDEN_SIM_WEBHOOK_TOKEN",
        hide_env_values = true,
        requires = "webhook_url"
    )]
    pub webhook_token: Option<String>,

    /// Seconds one Job Hook delivery may take (GitLab's webhook_timeout).
    #[arg(long, env = "JOBWARDEN_SIM_WEBHOOK_TIMEOUT_SECS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT.as_secs_f64(), value_parser = positive_float)]
    pub webhook_timeout_secs: f64,

    /// Share of Job Hook deliveries never sent.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_HOOK_DROP_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_hook_drop_ratio: f64,

    /// Share of Job Hook deliveries sent twice (same Idempotency-Key and X-Gitlab-Event-UUID).
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_HOOK_DUPLICATE_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_hook_duplicate_ratio: f64,

    /// Share of Job Hook deliveries held back (--fault-hook-reorder-ms) so later ones overtake them.
    #[arg(long, env = "JOBWARDEN_SIM_FAULT_HOOK_REORDER_RATIO", default_value_t = 0.0, value_parser = ratio)]
    pub fault_hook_reorder_ratio: f64,

    /// How long a held-back Job Hook delivery waits.
    #[arg(
        long,
        env = "JOBWARDEN_SIM_FAULT_HOOK_REORDER_MS",
        default_value_t = 1_000
    )]
    pub fault_hook_reorder_ms: u64,

    /// Serve HTTPS with this PEM certificate (the server's first, then any intermediates)
    /// instead of plain HTTP. Needs --tls-key.
    #[arg(long, env = "JOBWARDEN_SIM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "JOBWARDEN_SIM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl fmt::Debug for SimulateArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulateArgs")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("projects", &self.projects)
            .field("seed", &self.seed)
            .field("speed", &self.speed)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_token",
                &self.webhook_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls_cert", &self.tls_cert)
            .finish_non_exhaustive()
    }
}

fn ratio(raw: &str) -> Result<f64, String> {
    let value: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

fn positive_float(raw: &str) -> Result<f64, String> {
    let value: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} must be a positive number"))
    }
}

impl SimulateArgs {
    /// The HTTPS certificate and key of `--tls-cert` and `--tls-key`, read and checked; `None`
    /// without them (plain HTTP).
    pub fn tls(&self) -> std::io::Result<Option<SimTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => SimTls::from_files(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// The simulator configuration these flags describe (without TLS: see [`Self::tls`]).
    pub fn config(&self) -> SimConfig {
        SimConfig {
            projects: self.projects,
            seed: self.seed,
            jobs_list_rate_limit_per_minute: self.jobs_rate_limit,
            authenticated_api_rate_limit_per_minute: self.api_rate_limit,
            faults: FaultConfig {
                error_5xx_ratio: self.fault_5xx_ratio,
                latency: Duration::from_millis(self.fault_latency_ms),
                timeout_ratio: self.fault_timeout_ratio,
                rate_limit_burst_every: self.fault_429_every,
                malformed_json_ratio: self.fault_malformed_ratio,
                drop_connection_ratio: self.fault_drop_ratio,
                apply_late_ratio: self.fault_apply_late_ratio,
                apply_late_after: Duration::from_millis(self.fault_apply_late_ms),
                hook_drop_ratio: self.fault_hook_drop_ratio,
                hook_duplicate_ratio: self.fault_hook_duplicate_ratio,
                hook_reorder_ratio: self.fault_hook_reorder_ratio,
                hook_reorder_delay: Duration::from_millis(self.fault_hook_reorder_ms),
                ..FaultConfig::default()
            },
            clock: Clock::real(self.speed),
            fleet: FleetConfig {
                pipelines_per_project: self.pipelines_per_project,
                max_pipelines_per_project: self.max_pipelines_per_project,
                new_pipeline_every: (self.churn_secs > 0)
                    .then(|| Duration::from_secs(self.churn_secs)),
                evolve: !self.frozen,
                ..FleetConfig::default()
            },
            base_url_for_links: self.links_base_url.clone(),
            webhooks: self
                .webhook_url
                .iter()
                .map(|url| WebhookConfig {
                    url: url.clone(),
                    token: self.webhook_token.clone(),
                    project_ids: None,
                })
                .collect(),
            webhook_timeout: Duration::from_secs_f64(self.webhook_timeout_secs),
            ..SimConfig::new(self.token.clone())
        }
    }
}

/// Runs the simulator until SIGINT or SIGTERM.
pub async fn run_simulate(args: SimulateArgs) -> crate::Result<ExitCode> {
    if args.token.is_empty() {
        return Err(crate::Error::InvalidArgument(
            "--token must not be empty".into(),
        ));
    }
    let config = SimConfig {
        tls: args.tls()?,
        ..args.config()
    };
    let handle = Simulator::start(config, args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "jobwarden simulator listening on {}://{}",
            handle.base_url().scheme(),
            handle.local_addr()
        )?;
        out.flush()?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting the simulator down");
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn flags_build_the_config() {
        let cli = Cli::try_parse_from([
            "simulate",
            "--token",
            "t0k",
            "--listen",
            "127.0.0.1:0",
            "--projects",
            "7",
            "--churn-secs",
            "0",
            "--fault-429-every",
            "5",
            "--fault-5xx-ratio",
            "0.5",
        ])
        .expect("valid flags");
        let config = cli.args.config();
        assert_eq!(config.projects, 7);
        assert_eq!(config.fleet.new_pipeline_every, None);
        assert_eq!(config.faults.rate_limit_burst_every, Some(5));
        assert_eq!(config.faults.error_5xx_ratio, 0.5);
        assert!(!format!("{:?} {:?}", cli.args, config).contains("t0k"));
        assert!(config.webhooks.is_empty());
        assert_eq!(config.webhook_timeout, Duration::from_secs(10));
    }

    #[test]
    fn webhook_flags_build_one_instance_hook() {
        let cli = Cli::try_parse_from([
            "simulate",
            "--token",
            "t",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-token",
            "hook-s3cret",
            "--webhook-timeout-secs",
            "0.5",
            "--fault-hook-duplicate-ratio",
            "0.25",
            "--fault-hook-reorder-ms",
            "40",
        ])
        .expect("valid flags");
        let config = cli.args.config();
        assert_eq!(config.webhooks.len(), 1);
        let hook = &config.webhooks[0];
        assert_eq!(hook.url, "http://127.0.0.1:9/hook");
        assert_eq!(hook.token.as_deref(), Some("hook-s3cret"));
        assert_eq!(hook.project_ids, None);
        assert_eq!(config.webhook_timeout, Duration::from_millis(500));
        assert_eq!(config.faults.hook_duplicate_ratio, 0.25);
        assert_eq!(config.faults.hook_reorder_delay, Duration::from_millis(40));
        assert!(!format!("{:?} {:?}", cli.args, config).contains("hook-s3cret"));
    }

    #[test]
    fn tls_flags_load_the_certificate_and_key_and_name_a_file_that_cannot_be_read() {
        let pki = crate::sim::TestPki::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &pki.cert_pem).expect("write");
        std::fs::write(&key, &pki.key_pem).expect("write");
        let parse = |cert: &std::path::Path, key: &std::path::Path| {
            let (cert, key) = (cert.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"));
            let args = [
                "simulate",
                "--token",
                "t",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ];
            Cli::try_parse_from(args).expect("valid flags").args
        };
        assert!(parse(&cert, &key).tls().expect("usable").is_some());
        let missing = dir.path().join("missing.pem");
        let err = parse(&cert, &missing).tls().expect_err("no key file");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let cli = Cli::try_parse_from(["simulate", "--token", "t"]).expect("valid flags");
        assert!(cli.args.tls().expect("nothing to read").is_none());
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            vec!["simulate", "--token", "t", "--fault-drop-ratio", "1.5"],
            vec!["simulate", "--token", "t", "--speed", "0"],
            vec!["simulate", "--token", "t", "--fault-429-every", "0"],
            vec!["simulate", "--token", "t", "--webhook-token", "x"],
            vec!["simulate", "--token", "t", "--fault-hook-drop-ratio", "2"],
            vec!["simulate", "--token", "t", "--tls-cert", "cert.pem"],
            vec!["simulate", "--token", "t", "--tls-key", "key.pem"],
            vec!["simulate"],
        ] {
            assert!(Cli::try_parse_from(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
