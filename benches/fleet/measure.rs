//! The three measurements of one fleet size, each on its own simulator (same seed, same flags
//! but the rate limits): jobwarden's runs, the baseline's runs, and jobwarden's first action
//! under GitLab.com's rate limits.

use crate::baseline::{self, Baseline};
use crate::config::{BenchConfig, FleetSize};
use crate::jobwarden::{Jobwarden, Scrape};
use crate::policies;
use crate::process::{cpu_seconds, peak_rss_mib};
use crate::sim::{self, Counters, RateLimits, Simulator};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// jobwarden's request budget when the simulator has no rate limit: high enough never to wait.
const UNTHROTTLED_BUDGET: u32 = 1_000_000;

/// How often the latency watch polls the simulator's counters.
const LATENCY_POLL: Duration = Duration::from_millis(50);

/// The longest wait for a first action under GitLab.com's limits.
const FIRST_ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// What is read when a run ends: the tool's CPU time, then the simulator's counters.
struct Mark {
    at: Instant,
    cpu: f64,
    counters: Counters,
}

impl Mark {
    fn take(pid: u32, sim: &Simulator) -> Result<Mark, String> {
        let at = Instant::now();
        let cpu = cpu_seconds(pid)?;
        let counters = sim.counters()?;
        Ok(Mark { at, cpu, counters })
    }
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
    /// Runs between consecutive marks; the first starts when the process was started.
    fn from_marks(start: &Mark, marks: &[Mark]) -> ToolRuns {
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

/// The median (the mean of the middle two for an even count); NaN for none.
/// Writes the bench's policies for `size` on `sim` into `policy_dir`; returns their names.
fn write_policies(
    config: &BenchConfig,
    size: &FleetSize,
    sim: &Simulator,
    policy_dir: &Path,
) -> Result<Vec<String>, String> {
    policies::write(
        policy_dir,
        &sim.url(),
        size.projects,
        config.projects_per_policy,
        config.interval_secs,
    )
}

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

/// jobwarden on an unthrottled simulator.
pub struct JobwardenFigures {
    pub runs: ToolRuns,
    pub peak_rss_mib: f64,
    pub jobs_per_project: f64,
    /// The last scrape (actions by kind and outcome).
    pub scrape: Scrape,
    /// What one /metrics scrape costs: bytes, jobwarden's CPU seconds.
    pub scrape_cost: (usize, f64),
}

/// Runs jobwarden for a first run and the steady runs, on a simulator without rate limits.
pub fn jobwarden(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
) -> Result<JobwardenFigures, String> {
    let mut sim = Simulator::start("sim-jobwarden", size, config.seed, RateLimits::OFF, dir)?;
    let jobs_per_project = sim.jobs_per_project(size.projects)?;
    let policy_dir = dir.join("policies");
    let names = write_policies(config, size, &sim, &policy_dir)?;
    let before = sim.counters()?;
    let mut jobwarden = Jobwarden::start(
        "jobwarden",
        &policy_dir,
        &names,
        Some(UNTHROTTLED_BUDGET),
        dir,
    )?;
    let start = Mark {
        at: jobwarden.started(),
        cpu: 0.0,
        counters: before,
    };
    let mut marks = Vec::new();
    let mut scrape = Scrape::default();
    for run in 1..=1 + config.steady_runs as u64 {
        jobwarden
            .wait_runs(run, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
        marks.push(Mark::take(jobwarden.pid(), &sim)?);
        // After the CPU reading: the scrape's cost falls into the next run, as Prometheus'
        // would.
        scrape = jobwarden.confirm_runs(run)?;
        crate::progress(&format!("  jobwarden run {run} done"));
    }
    let peak_rss_mib = peak_rss_mib(jobwarden.pid())?;
    let scrape_cost = scrape_cost(&jobwarden)?;
    Ok(JobwardenFigures {
        runs: ToolRuns::from_marks(&start, &marks),
        peak_rss_mib,
        jobs_per_project,
        scrape,
        scrape_cost,
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
}

/// Runs the Python baseline for as many passes as jobwarden's runs.
pub fn baseline(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
) -> Result<BaselineFigures, String> {
    let mut sim = Simulator::start("sim-baseline", size, config.seed, RateLimits::OFF, dir)?;
    let before = sim.counters()?;
    let started = Instant::now();
    let mut baseline = Baseline::start(
        &config.python,
        &sim.url(),
        size.projects,
        config.interval_secs,
        dir,
    )?;
    let start = Mark {
        at: started,
        cpu: 0.0,
        counters: before,
    };
    let mut marks = Vec::new();
    for pass in 1..=1 + config.steady_runs {
        baseline
            .wait_passes(pass, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
        marks.push(Mark::take(baseline.pid(), &sim)?);
        crate::progress(&format!("  baseline pass {pass} done"));
    }
    Ok(BaselineFigures {
        runs: ToolRuns::from_marks(&start, &marks),
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
        dir,
    )?;
    let policy_dir = dir.join("policies-latency");
    let names = write_policies(config, size, &sim, &policy_dir)?;
    let mut jobwarden = Jobwarden::start("jobwarden-latency", &policy_dir, &names, None, dir)?;
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
