//! `jobwarden demo`: the newcomer's first command. Starts the GitLab simulator in-process with a
//! generated fleet, runs the example policies against it, prints which policy watches which
//! projects, then every action as it happens (a line each, under a header) and a summary at the
//! end, and serves metrics meanwhile. Log lines are left to warnings (`RUST_LOG` overrides):
//! the action lines already tell what happens.

mod banner;

use super::output::{ActionLines, PolicyNames, Summary};
use super::{GitLabArgs, termination_signal};
use crate::engine::{Engine, OutcomeKind, RunReport};
use crate::metrics::Metrics;
use crate::policy::PolicyKey;
use crate::sim::{Clock, SimConfig, SimHandle, Simulator, WebhookConfig};
use crate::source::files::runner::{ReportSink, RunnerConfig, TokenSource, run_policies};
use crate::webhook::{WebhookHandle, WebhookSecrets, WebhookState};
use banner::{Endpoints, Fleet, Setting};
use secrecy::SecretString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The example policies, embedded so that `jobwarden demo` runs from anywhere.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "cancel-stale.yaml",
        include_str!("../../deploy/examples/cancel-stale.yaml"),
    ),
    (
        "dry-run.yaml",
        include_str!("../../deploy/examples/dry-run.yaml"),
    ),
    (
        "keep-release-artifacts.yaml",
        include_str!("../../deploy/examples/keep-release-artifacts.yaml"),
    ),
    (
        "play-deploy.yaml",
        include_str!("../../deploy/examples/play-deploy.yaml"),
    ),
    (
        "retry-transient.yaml",
        include_str!("../../deploy/examples/retry-transient.yaml"),
    ),
    (
        "secret.yaml",
        include_str!("../../deploy/examples/secret.yaml"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. `30s`, `2m`); without it, run until Ctrl-C.
    #[arg(long = "for", env = "JOBWARDEN_DEMO_FOR", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    #[command(flatten)]
    pub server: crate::server::ServerArgs,
    /// Where the simulated GitLab listens (port 0 picks a free port).
    #[arg(long, env = "JOBWARDEN_DEMO_SIM_LISTEN", default_value = "127.0.0.1:0")]
    pub sim_listen: SocketAddr,
    /// Projects in the simulated fleet.
    #[arg(long, env = "JOBWARDEN_DEMO_PROJECTS", default_value_t = FLEET_PROJECTS)]
    pub projects: u32,
    /// Seed of the simulated fleet.
    #[arg(long, env = "JOBWARDEN_DEMO_SEED", default_value_t = FLEET_SEED)]
    pub seed: u64,
    /// How much faster than the wall clock the simulated fleet lives (new pipelines, jobs
    /// starting, failing, finishing); jobwarden follows the simulated clock.
    #[arg(long, env = "JOBWARDEN_DEMO_SPEED", default_value_t = 60.0)]
    pub speed: f64,
    /// Reconcile every policy this often, in (wall-clock) seconds, instead of its own interval.
    #[arg(long, env = "JOBWARDEN_DEMO_INTERVAL_SECONDS", default_value_t = 5)]
    pub interval_seconds: u64,
    /// Policy manifests to run instead of the embedded examples.
    #[arg(long = "policies", num_args = 1..)]
    pub policies: Vec<PathBuf>,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
}

/// The demo's fleet: 8 projects. The examples act on the first 6: projects 1–3 are retried,
/// deployed and released from (retry-transient, play-deploy-when-green, keep-release-artifacts),
/// 4 is previewed (audit-flaky-tests, a dry run), 5 and 6 are cleaned up (cancel-stale).
pub const FLEET_PROJECTS: u32 = 8;
/// The seed of the demo's fleet.
pub const FLEET_SEED: u64 = 42;

/// The simulated GitLab of the demo: a fleet of `projects` projects from `seed` on `clock`, that
/// accepts `token`.
pub fn sim_config(token: &str, projects: u32, seed: u64, clock: Clock) -> SimConfig {
    let mut config = SimConfig::new(token);
    config.projects = projects;
    config.seed = seed;
    config.clock = clock;
    config
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::policy::duration::parse_go_duration(s)
        .map_err(|e| e.to_string())
        .and_then(|d| Duration::try_from(d).map_err(|e| e.to_string()))
}

/// Writes the embedded examples to a private temporary directory.
fn materialise_examples() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("jobwarden-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, content) in EXAMPLES {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(dir)
}

pub async fn run(args: DemoArgs) -> crate::Result<ExitCode> {
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let sim = start_simulator(&args, &token).await?;
    let started = (std::time::Instant::now(), sim.control().now());
    let metrics = Arc::new(Metrics::new());
    let engine = demo_engine(&args, &sim, metrics.clone());
    let shutdown = CancellationToken::new();
    let server =
        crate::server::spawn(args.server.metrics_listen, metrics, shutdown.clone()).await?;
    let (receiver, hook_url) = deliver_job_hooks(&sim, &engine, &shutdown).await?;
    let (paths, temp_dir) = policy_paths(&args)?;
    let endpoints = Endpoints {
        gitlab: sim.base_url(),
        metrics: server.local_addr,
        hooks: hook_url,
    };
    let (names, lines) = print_banner(&args, &paths, temp_dir.is_some(), &endpoints, started.1);

    let mut config = runner_config(&args, paths, endpoints.gitlab, token);
    config.readiness = Some(server.ready.clone());
    let summary = Arc::new(Mutex::new(Summary::default()));
    let sink = print_reports(lines, summary.clone());
    let runner = tokio::spawn(run_policies(engine, config, sink, shutdown.clone()));
    wait_until_done(args.run_for).await;
    shutdown.cancel();
    let _ = runner.await;
    let simulated = sim.control().now().duration_since(started.1);
    server.join().await;
    receiver.join().await;
    sim.shutdown().await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }

    let summary = summary.lock().map(|s| s.clone()).unwrap_or_default();
    let simulated = Duration::try_from(simulated).unwrap_or_default();
    print_summary(&summary, &names, started.0.elapsed(), simulated);
    Ok(ExitCode::SUCCESS)
}

/// Starts the simulated GitLab: a fleet of `--projects` projects from `--seed`, living `--speed`
/// times faster than the wall clock, that accepts `token`.
async fn start_simulator(args: &DemoArgs, token: &str) -> std::io::Result<SimHandle> {
    let config = sim_config(token, args.projects, args.seed, Clock::real(args.speed));
    Simulator::start(config, args.sim_listen).await
}

/// The engine of the demo: it follows the simulated clock.
fn demo_engine(args: &DemoArgs, sim: &SimHandle, metrics: Arc<Metrics>) -> Engine {
    let control = sim.control();
    let sim_clock: crate::engine::Clock = Arc::new(move || control.now());
    let mut engine_config = args.gitlab.engine_config();
    // The built-in simulator speaks plain http on loopback, and every policy is pointed at it.
    engine_config.destinations.allow_insecure_http = true;
    Engine::new(engine_config, sim_clock, metrics)
}

/// Starts a Job Hook receiver and has the simulated GitLab deliver its Job Hooks to it, as a
/// real one would: failures are acted on as they happen, not only at each run. Returns the
/// receiver and its URL. When the simulator refuses the hook, the demo runs without webhooks.
async fn deliver_job_hooks(
    sim: &SimHandle,
    engine: &Engine,
    shutdown: &CancellationToken,
) -> crate::Result<(WebhookHandle, String)> {
    let hook_secret = format!("demo-hook-{:016x}", rand::random::<u64>());
    let receiver = crate::webhook::spawn(
        "127.0.0.1:0".parse().expect("a loopback address"),
        WebhookState::new(
            engine.clone(),
            WebhookSecrets::new(vec![SecretString::from(hook_secret.clone())], "demo")?,
        ),
        shutdown.clone(),
    )
    .await?;
    let hook_url = format!("http://{}/webhook", receiver.local_addr);
    if let Err(err) = sim
        .control()
        .add_webhook(WebhookConfig::new(&hook_url).with_token(&hook_secret))
    {
        tracing::warn!(error = %err, "the demo runs without webhooks");
    }
    Ok((receiver, hook_url))
}

/// The policy manifests to run: `--policies`, or else the embedded examples, written to a
/// temporary directory that is returned too (to be removed at the end).
fn policy_paths(args: &DemoArgs) -> std::io::Result<(Vec<PathBuf>, Option<PathBuf>)> {
    if args.policies.is_empty() {
        let dir = materialise_examples()?;
        Ok((vec![dir.clone()], Some(dir)))
    } else {
        Ok((args.policies.clone(), None))
    }
}

/// Prints the banner (where everything is, which policy watches which projects doing what,
/// how the demo runs and stops) and the header of the action lines. `embedded`: the policies at
/// `paths` are the embedded examples. Returns how policies are named and the action lines,
/// timed from `sim_start`.
fn print_banner(
    args: &DemoArgs,
    paths: &[PathBuf],
    embedded: bool,
    endpoints: &Endpoints,
    sim_start: jiff::Timestamp,
) -> (PolicyNames, ActionLines) {
    let fleet = Fleet {
        projects: args.projects,
        seed: args.seed,
    };
    let policies = banner::overviews(paths, fleet);
    let keys: Vec<PolicyKey> = policies.iter().map(|p| p.key.clone()).collect();
    let names = PolicyNames::new(&keys);
    let setting = Setting {
        fleet,
        speed: args.speed,
        interval: reconcile_interval(args),
        run_for: args.run_for,
        source: if embedded {
            "The embedded deploy/examples".to_owned()
        } else {
            let shown: Vec<String> = args
                .policies
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!("The policies of {}", shown.join(", "))
        },
    };
    banner::print(&setting, endpoints, &policies, &names);
    let lines = ActionLines::new(names.clone(), &keys, sim_start);
    println!("{}", lines.header());
    let _ = std::io::stdout().flush();
    (names, lines)
}

/// How often every policy is reconciled: `--interval-seconds`, at least 1.
fn reconcile_interval(args: &DemoArgs) -> Duration {
    Duration::from_secs(args.interval_seconds.max(1))
}

/// How the runner runs the policies at `paths`: against the simulated GitLab at `sim_url` with
/// `token`, every policy reconciling every `--interval-seconds` (at least 1).
fn runner_config(
    args: &DemoArgs,
    paths: Vec<PathBuf>,
    sim_url: url::Url,
    token: String,
) -> RunnerConfig {
    let interval = reconcile_interval(args);
    RunnerConfig {
        paths,
        token: TokenSource::Fixed(SecretString::from(token)),
        override_policy: Some(Arc::new(move |p: &mut crate::policy::CompiledPolicy| {
            p.gitlab_url = sim_url.clone();
            p.interval = interval;
        })),
        reload_every: Duration::from_secs(3600),
        selector: None,
        readiness: None,
    }
}

/// A sink that prints every run's new actions (as `lines`) and failures as they happen, and
/// adds the run to `summary`.
fn print_reports(lines: ActionLines, summary: Arc<Mutex<Summary>>) -> ReportSink {
    Arc::new(move |report: &RunReport| {
        // A dry-run or over-budget decision comes back every run until it changes: shown once.
        for record in report.actions.iter().filter(|r| !r.repeat) {
            println!("{}", lines.line(report, record));
        }
        for f in &report.failures {
            println!("  ! {}: {}: {}", report.policy, f.target, f.message);
        }
        let _ = std::io::stdout().flush();
        if let Ok(mut s) = summary.lock() {
            s.add(report);
        }
    })
}

/// Waits for `--for` to pass (if given) or for Ctrl-C / SIGTERM, whichever comes first.
async fn wait_until_done(run_for: Option<Duration>) {
    match run_for {
        Some(d) => tokio::select! {
            () = tokio::time::sleep(d) => {},
            () = termination_signal() => {},
        },
        None => termination_signal().await,
    }
}

/// Prints the summary: how long the demo ran (on the wall and the simulated clock), the table
/// of outcomes per policy and action, and what came of it all: the actions carried out, those
/// only previewed or held back, and whether any job was acted on by more than one policy.
fn print_summary(summary: &Summary, names: &PolicyNames, wall: Duration, simulated: Duration) {
    println!(
        "\nSummary: {}s of demo, {} on the simulated clock",
        wall.as_secs(),
        banner::spoken(simulated)
    );
    println!("{}", summary.table(names));
    let carried_out = summary.totals(OutcomeKind::Succeeded);
    println!(
        "Carried out: {}",
        carried_out
            .as_deref()
            .unwrap_or("nothing yet (give it longer, e.g. --for 1m)")
    );
    let others = [
        (OutcomeKind::Failed, "Failed"),
        (
            OutcomeKind::DryRun,
            "Previewed by dry-run policies, not sent",
        ),
        (OutcomeKind::SkippedOverBudget, "Held back by limits"),
    ];
    for (outcome, what) in others {
        if let Some(totals) = summary.totals(outcome) {
            println!("{what}: {totals}");
        }
    }
    let shared = summary.jobs_shared(names);
    if shared.is_empty() {
        println!("Every job was acted on by one policy at most: none undid another's work.");
    } else {
        println!("Jobs acted on by more than one policy:");
        for line in shared {
            println!("  {line}");
        }
    }
}
