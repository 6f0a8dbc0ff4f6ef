//! Project sharding (issue 10): one fleet split over N `jobwarden run` processes, each
//! `--shard-index i --shard-count N` in file mode (the same split as the StatefulSet's replicas,
//! without a Kubernetes API), sharing one GitLab token, measured next to one process.
//!
//! Two measurements per replica count, each on a fresh simulator in its own process:
//! 1. **the first pass without rate limits** (jobwarden's budget raised out of the way): wall
//!    seconds until every replica has run every policy once, then each replica's peak RSS
//!    (`VmHWM`) and CPU seconds after one more run; requests per project over both runs;
//! 2. **GitLab.com's limits** (600 job listings and 2,000 requests a minute per user, enforced
//!    by the simulator for the one token every replica uses; jobwarden's default budget of 600 a
//!    minute, which each of N replicas divides by N): seconds to the first action (the first
//!    POST the simulator counts), requests a minute over `BENCH_LATENCY_WINDOW_SECS`, and the
//!    429 answers in that window.

use crate::config::{BenchConfig, FleetSize, Mode};
use crate::jobwarden::Jobwarden;
use crate::policies;
use crate::process::{cpu_seconds, peak_rss_mib};
use crate::sim::{Counters, RateLimits, Simulator};
use std::path::Path;
use std::time::{Duration, Instant};

/// jobwarden's request budget when the simulator has no rate limit.
const UNTHROTTLED_BUDGET: u32 = 1_000_000;

/// How often the limited watch polls the simulator's counters.
const POLL: Duration = Duration::from_millis(100);

/// The figures of one fleet run by `replicas` processes.
#[derive(Debug, Clone)]
pub struct ShardRow {
    pub size: FleetSize,
    pub replicas: u32,
    /// Seconds until every replica completed its first run of every policy (no rate limit).
    pub first_pass_secs: f64,
    /// Peak RSS of each replica, MiB.
    pub rss_mib: Vec<f64>,
    /// CPU seconds of each replica over the two runs.
    pub cpu_secs: Vec<f64>,
    /// Requests per project over the two runs, all replicas together.
    pub requests_per_project: f64,
    /// Under GitLab.com's limits: seconds to the first action.
    pub first_action_secs: f64,
    /// Under GitLab.com's limits: requests a minute, all replicas together (one token).
    pub requests_per_minute: f64,
    /// Under GitLab.com's limits: 429 answers.
    pub throttled: usize,
}

/// Both measurements of `size` with `replicas` processes.
pub fn measure(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
    replicas: u32,
) -> Result<ShardRow, String> {
    let (first_pass_secs, rss_mib, cpu_secs, requests_per_project) =
        first_pass(config, size, dir, replicas)?;
    let (first_action_secs, requests_per_minute, throttled) =
        under_limits(config, size, dir, replicas)?;
    Ok(ShardRow {
        size: size.clone(),
        replicas,
        first_pass_secs,
        rss_mib,
        cpu_secs,
        requests_per_project,
        first_action_secs,
        requests_per_minute,
        throttled,
    })
}

/// Starts the simulator and `replicas` jobwarden processes on the bench's polling policies.
fn start(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
    replicas: u32,
    limits: RateLimits,
    budget: Option<u32>,
    label: &str,
) -> Result<(Simulator, Vec<Jobwarden>), String> {
    let sim = Simulator::start(
        &format!("sim-{label}-{replicas}"),
        size,
        config.seed,
        limits,
        None,
        dir,
    )?;
    let policy_dir = dir.join(format!("policies-{label}-{replicas}"));
    let names = policies::write(
        &policy_dir,
        &sim.url(),
        size.projects,
        config.projects_per_policy,
        config.interval_secs,
        config.resync_secs(Mode::Polling),
        config.retry_window_mins(),
    )?;
    let shard = |index: u32| (replicas > 1).then_some((index, replicas));
    let jobwardens = (0..replicas)
        .map(|index| {
            Jobwarden::start_shard(
                &format!("jobwarden-{label}-{index}-of-{replicas}"),
                &policy_dir,
                &names,
                budget,
                None,
                shard(index),
                dir,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sim, jobwardens))
}

/// The first pass without rate limits: its wall seconds, then each replica's peak RSS and
/// CPU seconds after a second run, and the requests per project of both runs.
fn first_pass(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
    replicas: u32,
) -> Result<(f64, Vec<f64>, Vec<f64>, f64), String> {
    crate::progress(&format!(
        "fleet {}: {replicas} replica(s), first pass without rate limits",
        size.label
    ));
    let (mut sim, mut jobwardens) = start(
        config,
        size,
        dir,
        replicas,
        RateLimits::OFF,
        Some(UNTHROTTLED_BUDGET),
        "pass",
    )?;
    let started = earliest_start(&jobwardens);
    for jobwarden in &mut jobwardens {
        jobwarden
            .wait_runs(1, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
    }
    let first_pass = started.elapsed().as_secs_f64();
    for jobwarden in &mut jobwardens {
        jobwarden
            .wait_runs(2, config.run_timeout)
            .map_err(|err| sim.annotate(err))?;
    }
    let rss = jobwardens
        .iter()
        .map(|j| peak_rss_mib(j.pid()))
        .collect::<Result<Vec<_>, _>>()?;
    let cpu = jobwardens
        .iter()
        .map(|j| cpu_seconds(j.pid()))
        .collect::<Result<Vec<_>, _>>()?;
    let requests = total(&sim.counters()?) as f64 / f64::from(size.projects.max(1));
    crate::progress(&format!(
        "  {replicas} replica(s): first pass {first_pass:.1} s, peak RSS {rss:.1?} MiB, \
         CPU {cpu:.2?} s, {requests:.2} requests per project over two runs"
    ));
    Ok((first_pass, rss, cpu, requests))
}

/// Under GitLab.com's limits with the default budget: seconds to the first action, requests
/// a minute over the window, 429 answers.
fn under_limits(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
    replicas: u32,
) -> Result<(f64, f64, usize), String> {
    crate::progress(&format!(
        "fleet {}: {replicas} replica(s), GitLab.com's limits for {} s",
        size.label,
        config.latency_window.as_secs()
    ));
    let (mut sim, mut jobwardens) = start(
        config,
        size,
        dir,
        replicas,
        RateLimits::GITLAB_COM,
        None,
        "limited",
    )?;
    let started = earliest_start(&jobwardens);
    let mut first_action = None;
    while started.elapsed() < config.latency_window {
        std::thread::sleep(POLL);
        for jobwarden in &mut jobwardens {
            jobwarden.poll().map_err(|err| sim.annotate(err))?;
        }
        if first_action.is_none() && sim.counters()?.keys().any(|k| k.starts_with("POST ")) {
            first_action = Some(started.elapsed().as_secs_f64());
        }
    }
    let watched = started.elapsed().as_secs_f64();
    let requests = total(&sim.counters()?) as f64;
    let throttled = sim.requests()?.iter().filter(|r| r.status == 429).count();
    let per_minute = requests * 60.0 / watched;
    let first_action = first_action.unwrap_or(f64::NAN);
    crate::progress(&format!(
        "  {replicas} replica(s): first action {first_action:.1} s, {per_minute:.0} requests a \
         minute over {watched:.0} s, {throttled} answered 429"
    ));
    Ok((first_action, per_minute, throttled))
}

/// When the first of the replicas started.
fn earliest_start(jobwardens: &[Jobwarden]) -> Instant {
    jobwardens
        .iter()
        .map(Jobwarden::started)
        .min()
        .unwrap_or_else(Instant::now)
}

fn total(counters: &Counters) -> u64 {
    counters.values().sum()
}
