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

/// How jobwarden hears of failed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every run lists every project (what the bench measured first).
    Polling,
    /// The simulator delivers Job Hooks to jobwarden's receiver; the policies get a
    /// `resyncInterval` of `BENCH_RESYNC_FACTOR` intervals.
    Webhook,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Polling => "polling",
            Mode::Webhook => "webhook",
        }
    }

    fn parse(raw: &str) -> Result<Mode, String> {
        match raw.trim() {
            "polling" => Ok(Mode::Polling),
            "webhook" | "webhooks" => Ok(Mode::Webhook),
            other => Err(format!("BENCH_MODES: {other:?} is not polling or webhook")),
        }
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
    /// `BENCH_MODES`: how jobwarden is measured on each fleet (default `polling,webhook`).
    pub modes: Vec<Mode>,
    /// `BENCH_RESYNC_FACTOR`: the policies' `resyncInterval` in webhook mode, in intervals
    /// (default 10).
    pub resync_factor: u64,
    /// `BENCH_WEBHOOK_STEADY_RUNS`: steady runs in webhook mode (default: `BENCH_STEADY_RUNS`,
    /// at least `BENCH_RESYNC_FACTOR`, so that the steady runs span a whole resync period
    /// and the requests per hour include the resync listings).
    pub webhook_steady_runs: usize,
    /// `BENCH_WEBHOOK_WARMUP_RUNS`: runs after the first that webhook mode does not measure
    /// (default `BENCH_RESYNC_FACTOR`, a whole resync period): the first run retries and
    /// cancels the fleet's backlog (hundreds of jobs per 100 projects), and each of those
    /// moves fires deliveries, each read once; and for a resync period after its last
    /// delivery a project counts as one whose hooks work (listed only at the resync), so the
    /// echo of the backlog would keep projects that are quiet since off the listings.
    pub webhook_warmup_runs: usize,
    /// `BENCH_FAILURES_PER_PROJECT_HOUR`: jobs the bench fails as `stuck_or_timeout_failure`
    /// while a tool runs, per project and hour (default 4, about the fleet's own steady rate;
    /// 0 = none).
    pub failures_per_project_hour: f64,
    /// `BENCH_RETRY_FINISHED_WITHIN_MINS`: both tools retry only the failures that finished at
    /// most this many minutes ago: the retry policy's `finishedWithin`, the baseline's
    /// `--finished-within-minutes` (default 60; 0 = every failure of the history, so that the
    /// first run retries the fleet's three days of stuck jobs).
    pub retry_finished_within_mins: u64,
    /// `BENCH_SHARDS`: measure each fleet with one process and with this many shard processes
    /// (and nothing else). Unset: the polling, webhook and baseline measurements.
    pub shards: Option<u32>,
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
        let mut modes = Vec::new();
        for raw in var("BENCH_MODES")
            .unwrap_or_else(|| "polling,webhook".to_owned())
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            let mode = Mode::parse(raw)?;
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        if modes.is_empty() {
            return Err("BENCH_MODES names no mode".to_owned());
        }
        let steady_runs = number("BENCH_STEADY_RUNS", 5)?;
        let resync_factor = number("BENCH_RESYNC_FACTOR", 10)?;
        let webhook_steady_runs = number(
            "BENCH_WEBHOOK_STEADY_RUNS",
            steady_runs.max(usize::try_from(resync_factor).unwrap_or(usize::MAX)),
        )?;
        let config = BenchConfig {
            sizes,
            steady_runs,
            interval_secs: number("BENCH_INTERVAL_SECS", 30)?,
            projects_per_policy: number("BENCH_PROJECTS_PER_POLICY", 500)?,
            seed: number("BENCH_SEED", 7)?,
            latency_window: Duration::from_secs(number("BENCH_LATENCY_WINDOW_SECS", 120)?),
            run_timeout: Duration::from_secs(number("BENCH_RUN_TIMEOUT_SECS", 1800)?),
            python: var("BENCH_PYTHON").unwrap_or_else(|| "python3".to_owned()),
            decide_projects: number("BENCH_DECIDE_PROJECTS", 500)?,
            modes,
            resync_factor,
            webhook_steady_runs,
            webhook_warmup_runs: number(
                "BENCH_WEBHOOK_WARMUP_RUNS",
                usize::try_from(resync_factor).unwrap_or(usize::MAX),
            )?,
            failures_per_project_hour: number("BENCH_FAILURES_PER_PROJECT_HOUR", 4.0)?,
            retry_finished_within_mins: number("BENCH_RETRY_FINISHED_WITHIN_MINS", 60)?,
            shards: match var("BENCH_SHARDS") {
                None => None,
                Some(_) => Some(number("BENCH_SHARDS", 4)?),
            },
        };
        config.check()
    }

    /// Steady runs measured in `mode`.
    pub fn steady_runs_of(&self, mode: Mode) -> usize {
        match mode {
            Mode::Polling => self.steady_runs,
            Mode::Webhook => self.webhook_steady_runs,
        }
    }

    /// Runs after the first that are not measured in `mode`.
    pub fn warmup_runs_of(&self, mode: Mode) -> usize {
        match mode {
            Mode::Polling => 0,
            Mode::Webhook => self.webhook_warmup_runs,
        }
    }

    /// The retry window of both tools, in minutes (`None`: every failure of the history).
    pub fn retry_window_mins(&self) -> Option<u64> {
        (self.retry_finished_within_mins > 0).then_some(self.retry_finished_within_mins)
    }

    /// The policies' `resyncInterval` in `mode`, in seconds.
    pub fn resync_secs(&self, mode: Mode) -> Option<u64> {
        (mode == Mode::Webhook).then(|| self.interval_secs.saturating_mul(self.resync_factor))
    }

    fn check(self) -> Result<BenchConfig, String> {
        if self.steady_runs == 0 || self.webhook_steady_runs == 0 {
            return Err(
                "BENCH_STEADY_RUNS and BENCH_WEBHOOK_STEADY_RUNS must be at least 1".to_owned(),
            );
        }
        if self.shards.is_some_and(|n| n < 2) {
            return Err(
                "BENCH_SHARDS must be at least 2 (it is compared with one process)".to_owned(),
            );
        }
        if self.resync_factor == 0 {
            return Err("BENCH_RESYNC_FACTOR must be at least 1".to_owned());
        }
        if !(self.failures_per_project_hour.is_finite() && self.failures_per_project_hour >= 0.0) {
            return Err("BENCH_FAILURES_PER_PROJECT_HOUR must be a number, at least 0".to_owned());
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
