//! What the bench runs, from `BENCH_*` environment variables.

use std::time::Duration;

/// Jobs in one generated pipeline, on average (build, test and deploy jobs; see
/// `src/sim/fleet.rs`): the default five pipelines make about 35 jobs per project.
pub const JOBS_PER_PIPELINE: u32 = 7;

/// One fleet to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSize {
    /// As given in `BENCH_SIZES` (`5000` or `5000x200`).
    pub label: String,
    pub projects: u32,
    /// `--pipelines-per-project` of the simulator.
    pub pipelines: u32,
    /// `--max-pipelines-per-project` of the simulator.
    pub max_pipelines: u32,
}

impl FleetSize {
    /// `N` is the default fleet (5 pipelines, at most 10, about 35 jobs per project); `NxJ`
    /// has about `J` jobs per project (`J / 7` pipelines).
    pub fn parse(raw: &str) -> Result<FleetSize, String> {
        let raw = raw.trim();
        let number = |s: &str| {
            s.trim()
                .replace('_', "")
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("BENCH_SIZES: {raw:?} is not N or NxJOBS"))
        };
        let (projects, pipelines) = match raw.split_once('x') {
            Some((projects, jobs)) => {
                (number(projects)?, number(jobs)?.div_ceil(JOBS_PER_PIPELINE))
            }
            None => (number(raw)?, 5),
        };
        Ok(FleetSize {
            label: raw.to_owned(),
            projects,
            pipelines,
            max_pipelines: (pipelines + 1).max(10),
        })
    }
}

/// Everything the bench reads from its environment.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `BENCH_SIZES`: comma-separated fleets (default `100,1000,5000,5000x200`).
    pub sizes: Vec<FleetSize>,
    /// `BENCH_STEADY_RUNS`: runs measured after the first one (default 5).
    pub steady_runs: usize,
    /// `BENCH_INTERVAL_SECS`: policy interval and baseline sleep (default 30, at least 10).
    pub interval_secs: u64,
    /// `BENCH_PROJECTS_PER_POLICY`: projects per generated policy (default 500).
    pub projects_per_policy: u32,
    /// `BENCH_SEED`: the simulator's seed (default 7).
    pub seed: u64,
    /// `BENCH_LATENCY_WINDOW_SECS`: longest watch of the rate-limited first run (default 120).
    pub latency_window: Duration,
    /// `BENCH_RUN_TIMEOUT_SECS`: longest wait for one run to complete (default 1800).
    pub run_timeout: Duration,
    /// `BENCH_PYTHON`: the interpreter of the baseline (default `python3`).
    pub python: String,
    /// `BENCH_DECIDE_PROJECTS`: projects of the decide micro-bench (default 500).
    pub decide_projects: u32,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("{name}={raw:?} is not a number")),
    }
}

impl BenchConfig {
    pub fn from_env() -> Result<BenchConfig, String> {
        let sizes = var("BENCH_SIZES")
            .unwrap_or_else(|| "100,1000,5000,5000x200".to_owned())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(FleetSize::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if sizes.is_empty() {
            return Err("BENCH_SIZES names no fleet".to_owned());
        }
        let config = BenchConfig {
            sizes,
            steady_runs: number("BENCH_STEADY_RUNS", 5)?,
            interval_secs: number("BENCH_INTERVAL_SECS", 30)?,
            projects_per_policy: number("BENCH_PROJECTS_PER_POLICY", 500)?,
            seed: number("BENCH_SEED", 7)?,
            latency_window: Duration::from_secs(number("BENCH_LATENCY_WINDOW_SECS", 120)?),
            run_timeout: Duration::from_secs(number("BENCH_RUN_TIMEOUT_SECS", 1800)?),
            python: var("BENCH_PYTHON").unwrap_or_else(|| "python3".to_owned()),
            decide_projects: number("BENCH_DECIDE_PROJECTS", 500)?,
        };
        config.check()
    }

    fn check(self) -> Result<BenchConfig, String> {
        if self.steady_runs == 0 {
            return Err("BENCH_STEADY_RUNS must be at least 1".to_owned());
        }
        if self.interval_secs < 10 {
            return Err(
                "BENCH_INTERVAL_SECS must be at least 10 (a policy's shortest interval)".to_owned(),
            );
        }
        if self.projects_per_policy == 0 || self.decide_projects == 0 {
            return Err(
                "BENCH_PROJECTS_PER_POLICY and BENCH_DECIDE_PROJECTS must be positive".to_owned(),
            );
        }
        Ok(self)
    }
}
