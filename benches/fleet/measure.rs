//! The measurements of one fleet size, each on its own simulator (same seed, same flags but
//! the rate limits and the webhook): jobwarden's runs in each mode (polling; webhook), the
//! baseline's runs, and jobwarden's first action under GitLab.com's rate limits. While
//! jobwarden or the baseline runs, the bench fails jobs as `stuck_or_timeout_failure`
//! ([`crate::inject`]), the same way for every tool.

use crate::baseline::{self, Baseline};
use crate::config::{BenchConfig, FleetSize, Mode};
use crate::inject::{Injected, Injector, RetryLatency};
use crate::jobwarden::{Jobwarden, Scrape};
use crate::listings::Listings;
use crate::policies;
use crate::process::{cpu_seconds, peak_rss_mib};
use crate::sim::{self, Counters, HookStats, HookTarget, RateLimits, Simulator};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The secret token of the simulator's Job Hooks in webhook mode.
const HOOK_TOKEN: &str = "bench-webhook-secret";

/// jobwarden's request budget when the simulator has no rate limit: high enough never to wait.
const UNTHROTTLED_BUDGET: u32 = 1_000_000;

/// How often the latency watch polls the simulator's counters.
const LATENCY_POLL: Duration = Duration::from_millis(50);

/// The longest wait for a first action under GitLab.com's limits.
const FIRST_ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// What is read when a run ends: the tool's CPU time, then the simulator's counters.
struct Mark {
    at: Instant,
    /// The same moment in milliseconds since the epoch (the simulated clock at speed 1).
    wall_ms: i64,
    cpu: f64,
    counters: Counters,
}

impl Mark {
    /// The mark of a tool's start (no CPU used yet), with the counters read before it.
    fn start(at: Instant, counters: Counters) -> Mark {
        Mark {
            at,
            wall_ms: 0,
            cpu: 0.0,
            counters,
        }
    }

    fn take(pid: u32, sim: &Simulator) -> Result<Mark, String> {
        let at = Instant::now();
        let wall_ms = epoch_ms();
        let cpu = cpu_seconds(pid)?;
        let counters = sim.counters()?;
        Ok(Mark {
            at,
            wall_ms,
            cpu,
            counters,
        })
    }
}

/// Now, in milliseconds since the Unix epoch.
fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One run of a tool: wall time, CPU time, requests per endpoint.
#[derive(Debug, Clone)]
pub struct Run {
    pub seconds: f64,
    pub cpu: f64,
    pub requests: Counters,
}

/// The first run and the steady runs of one tool on one fleet.
#[derive(Debug, Clone)]
pub struct ToolRuns {
    pub first: Run,
    pub steady: Vec<Run>,
}

impl ToolRuns {
    /// Runs between consecutive marks; the first starts when the process was started, and the
    /// `warmup` runs after it are not measured.
    fn from_marks(start: &Mark, marks: &[Mark], warmup: usize) -> ToolRuns {
        let mut runs = Vec::with_capacity(marks.len());
        let mut previous = start;
        for mark in marks {
            runs.push(Run {
                seconds: mark.at.duration_since(previous.at).as_secs_f64(),
                cpu: mark.cpu - previous.cpu,
                requests: sim::difference(&mark.counters, &previous.counters),
            });
            previous = mark;
        }
        let first = runs.remove(0);
        runs.drain(..warmup.min(runs.len()));
        ToolRuns {
            first,
            steady: runs,
        }
    }

    /// Requests per project in the first run.
    pub fn first_requests(&self, projects: u32) -> f64 {
        sim::total(&self.first.requests) as f64 / f64::from(projects)
    }

    /// Median requests per project of the steady runs.
    pub fn steady_requests(&self, projects: u32) -> f64 {
        median(self.steady.iter().map(|r| sim::total(&r.requests) as f64)) / f64::from(projects)
    }

    /// Requests per project and hour over the steady runs (all of them over their wall time).
    pub fn steady_requests_per_hour(&self, projects: u32) -> f64 {
        let requests: u64 = self.steady.iter().map(|r| sim::total(&r.requests)).sum();
        let seconds: f64 = self.steady.iter().map(|r| r.seconds).sum();
        requests as f64 * 3600.0 / seconds / f64::from(projects)
    }

    /// Per endpoint template: requests per project and hour over the steady runs.
    pub fn per_endpoint_per_hour(&self, projects: u32) -> Vec<(String, f64)> {
        let seconds: f64 = self.steady.iter().map(|r| r.seconds).sum();
        let mut totals: std::collections::BTreeMap<&String, u64> = Default::default();
        for run in &self.steady {
            for (endpoint, n) in &run.requests {
                *totals.entry(endpoint).or_default() += n;
            }
        }
        totals
            .into_iter()
            .map(|(endpoint, n)| {
                (
                    endpoint.clone(),
                    n as f64 * 3600.0 / seconds / f64::from(projects),
                )
            })
            .collect()
    }

    /// Median CPU seconds of the steady runs.
    pub fn steady_cpu(&self) -> f64 {
        median(self.steady.iter().map(|r| r.cpu))
    }

    /// Per endpoint template: requests per project in the first run and the steady median.
    pub fn per_endpoint(&self, projects: u32) -> Vec<(String, f64, f64)> {
        let endpoints: BTreeSet<&String> = self
            .steady
            .iter()
            .chain([&self.first])
            .flat_map(|r| r.requests.keys())
            .collect();
        let per_project = |n: f64| n / f64::from(projects);
        endpoints
            .into_iter()
            .map(|endpoint| {
                let count = |r: &Run| r.requests.get(endpoint).copied().unwrap_or(0) as f64;
                let steady = median(self.steady.iter().map(count));
                (
                    endpoint.clone(),
                    per_project(count(&self.first)),
                    per_project(steady),
                )
            })
            .collect()
    }
}

/// Writes the bench's policies for `size` on `sim` into `policy_dir` (with a
/// `resyncInterval` in webhook mode); returns their names.
fn write_policies(
    config: &BenchConfig,
    size: &FleetSize,
    sim: &Simulator,
    policy_dir: &Path,
    mode: Mode,
) -> Result<Vec<String>, String> {
    policies::write(
        policy_dir,
        &sim.url(),
        size.projects,
        config.projects_per_policy,
        config.interval_secs,
        config.resync_secs(mode),
        config.retry_window_mins(),
    )
}

/// A loopback address with a port free right now (for jobwarden's webhook receiver, which
/// the simulator must know before jobwarden starts).
fn free_loopback_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("cannot find a free port: {err}"))?;
    listener
        .local_addr()
        .map_err(|err| format!("cannot find a free port: {err}"))
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// jobwarden on an unthrottled simulator, in one mode.
pub struct JobwardenFigures {
    pub mode: Mode,
    pub runs: ToolRuns,
    pub peak_rss_mib: f64,
    pub jobs_per_project: f64,
    /// The last scrape (actions by kind and outcome, webhook deliveries).
    pub scrape: Scrape,
    /// What one /metrics scrape costs: bytes, jobwarden's CPU seconds.
    pub scrape_cost: (usize, f64),
    /// The jobs the bench failed, and how fast those of the steady runs were retried.
    pub injected: Injected,
    pub retry_latency: RetryLatency,
    /// What the simulator's hook sent (webhook mode): up to the steady runs, and in all.
    pub hooks: Option<(HookStats, HookStats)>,
    /// The steady runs' listings by purpose (from the simulator's request log).
    pub listings: Listings,
}

/// Runs jobwarden for a first run, the warm-up runs (webhook mode) and the steady runs, on a
/// simulator without rate limits, while jobs are failed; then one more run, so that every
/// failure of the steady runs had its chance to be retried, and reads the request log for the
/// retries.
///
/// In webhook mode the simulator delivers Job Hooks for every project to jobwarden's
/// receiver (`--webhook-listen`, the secret in `JOBWARDEN_WEBHOOK_TOKEN`) and the policies
/// have a `resyncInterval`.
pub fn jobwarden(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
    mode: Mode,
) -> Result<JobwardenFigures, String> {
    let label = mode.label();
    let receiver = match mode {
        Mode::Polling => None,
        Mode::Webhook => Some(free_loopback_port()?),
    };
    let hook = receiver.map(|addr| HookTarget {
        url: format!("http://{addr}/webhook"),
        token: HOOK_TOKEN.to_owned(),
    });
    let mut sim = Simulator::start(
        &format!("sim-jobwarden-{label}"),
        size,
        config.seed,
        RateLimits::OFF,
        hook.as_ref(),
        dir,
    )?;
    let jobs_per_project = sim.jobs_per_project(size.projects)?;
    let policy_dir = dir.join(format!("policies-{label}"));
    let names = write_policies(config, size, &sim, &policy_dir, mode)?;
    let before = sim.counters()?;
    let mut jobwarden = Jobwarden::start(
        &format!("jobwarden-{label}"),
        &policy_dir,
        &names,
        Some(UNTHROTTLED_BUDGET),
        receiver.map(|addr| (addr, HOOK_TOKEN)),
        dir,
    )?;
    let injector = Injector::start(
        sim.addr(),
        size.projects,
        config.failures_per_project_hour,
        config.seed,
    );
    let start = Mark::start(jobwarden.started(), before);
    let mut marks = Vec::new();
    let mut scrape = Scrape::default();
    let mut hooks_before = HookStats::default();
    let warmup = config.warmup_runs_of(mode);
    let runs = (1 + warmup + config.steady_runs_of(mode)) as u64;
    for run in 1..=runs {
        jobwarden
            .wait_runs(run, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
        marks.push(Mark::take(jobwarden.pid(), &sim)?);
        if mode == Mode::Webhook && run == 1 + warmup as u64 {
            hooks_before = sim.hook_stats()?;
        }
        // After the CPU reading: the scrape's cost falls into the next run, as Prometheus'
        // would.
        scrape = jobwarden.confirm_runs(run)?;
        crate::progress(&format!("  jobwarden ({label}) run {run} done"));
    }
    let injected = injector.stop();
    jobwarden
        .wait_runs(runs + 1, config.run_timeout)
        .map_err(|err| sim.annotate(err))?;
    crate::progress(&format!(
        "  jobwarden ({label}) run {} done (the last failures' chance)",
        runs + 1
    ));
    let log = sim.requests()?;
    let listings = Listings::of(
        &log,
        marks[warmup].wall_ms,
        marks.last().map_or(i64::MAX, |m| m.wall_ms),
        size.projects,
    );
    let retry_latency = RetryLatency::of(
        &injected.failures,
        marks[warmup].at,
        &log,
        log.len() >= sim::LOG_CAPACITY,
    );
    let hooks = match mode {
        Mode::Polling => None,
        Mode::Webhook => Some((hooks_before, sim.hook_stats()?)),
    };
    let peak_rss_mib = peak_rss_mib(jobwarden.pid())?;
    let scrape_cost = scrape_cost(&jobwarden)?;
    let scrape = match mode {
        Mode::Polling => scrape,
        // The deliveries and their latency up to now.
        Mode::Webhook => jobwarden.scrape()?,
    };
    Ok(JobwardenFigures {
        mode,
        runs: ToolRuns::from_marks(&start, &marks, warmup),
        peak_rss_mib,
        jobs_per_project,
        scrape,
        scrape_cost,
        injected,
        retry_latency,
        hooks,
        listings,
    })
}

/// Scrapes /metrics a few times in a row: bytes served and jobwarden's CPU seconds per scrape.
fn scrape_cost(jobwarden: &Jobwarden) -> Result<(usize, f64), String> {
    const SCRAPES: usize = 5;
    let before = cpu_seconds(jobwarden.pid())?;
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        bytes = jobwarden.metrics_text()?.len();
    }
    let cpu = (cpu_seconds(jobwarden.pid())? - before) / SCRAPES as f64;
    Ok((bytes, cpu))
}

/// The baseline on an unthrottled simulator.
pub struct BaselineFigures {
    pub runs: ToolRuns,
    pub passes: Vec<baseline::Pass>,
    /// Jobs failed while it ran.
    pub injected: usize,
}

/// Runs the Python baseline for as many passes as jobwarden's runs.
pub fn baseline(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
) -> Result<BaselineFigures, String> {
    let mut sim = Simulator::start(
        "sim-baseline",
        size,
        config.seed,
        RateLimits::OFF,
        None,
        dir,
    )?;
    let before = sim.counters()?;
    let started = Instant::now();
    let mut baseline = Baseline::start(
        &config.python,
        &sim.url(),
        size.projects,
        config.interval_secs,
        config.retry_window_mins(),
        dir,
    )?;
    let injector = Injector::start(
        sim.addr(),
        size.projects,
        config.failures_per_project_hour,
        config.seed,
    );
    let start = Mark::start(started, before);
    let mut marks = Vec::new();
    for pass in 1..=1 + config.steady_runs {
        baseline
            .wait_passes(pass, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
        marks.push(Mark::take(baseline.pid(), &sim)?);
        crate::progress(&format!("  baseline pass {pass} done"));
    }
    let injected = injector.stop();
    Ok(BaselineFigures {
        injected: injected.failures.len(),
        runs: ToolRuns::from_marks(&start, &marks, 0),
        passes: baseline.passes().to_vec(),
    })
}

/// jobwarden's start under GitLab.com's limits.
#[derive(Debug)]
pub struct Latency {
    /// Seconds from process start to the first action request the simulator counted.
    pub first_action: f64,
    /// The same for the first retry, if one came within the watch.
    pub first_retry: Option<f64>,
    /// How long the watch lasted, and whether the first run completed in it.
    pub watched: f64,
    pub first_run_done: bool,
    pub requests: usize,
    pub throttled: usize,
}

/// Starts jobwarden (default request budget) against a simulator with GitLab.com's limits and
/// watches it until its first run completes or the latency window has passed, and at least
/// until its first action.
pub fn latency(config: &BenchConfig, size: &FleetSize, dir: &Path) -> Result<Latency, String> {
    let mut sim = Simulator::start(
        "sim-latency",
        size,
        config.seed,
        RateLimits::GITLAB_COM,
        None,
        dir,
    )?;
    let policy_dir = dir.join("policies-latency");
    let names = write_policies(config, size, &sim, &policy_dir, Mode::Polling)?;
    let mut jobwarden =
        Jobwarden::start("jobwarden-latency", &policy_dir, &names, None, None, dir)?;
    let started = jobwarden.started();
    let (mut first_action, mut first_retry) = (None, None);
    loop {
        std::thread::sleep(LATENCY_POLL);
        let elapsed = started.elapsed();
        let counters = sim.counters()?;
        if first_action.is_none() && counters.keys().any(|k| k.starts_with("POST ")) {
            first_action = Some(elapsed.as_secs_f64());
        }
        if first_retry.is_none() && counters.keys().any(|k| k.ends_with("/retry")) {
            first_retry = Some(elapsed.as_secs_f64());
        }
        jobwarden.poll().map_err(|err| sim.annotate(err))?;
        let first_run_done = jobwarden.runs_completed() >= 1;
        if first_action.is_some() && (first_run_done || elapsed >= config.latency_window) {
            let log = sim.requests()?;
            return Ok(Latency {
                first_action: first_action.unwrap_or(f64::NAN),
                first_retry,
                watched: elapsed.as_secs_f64(),
                first_run_done,
                requests: log.len(),
                throttled: log.iter().filter(|r| r.status == 429).count(),
            });
        }
        if first_action.is_none() && elapsed >= FIRST_ACTION_TIMEOUT {
            return Err(format!(
                "jobwarden took no action within {} s under GitLab.com's limits",
                FIRST_ACTION_TIMEOUT.as_secs()
            ));
        }
    }
}
