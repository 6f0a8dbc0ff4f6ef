//! Fleet benchmark: what running jobwarden costs, as a user would see it, next to the
//! python-gitlab script a user would write instead (`benches/baseline_cron.py`), and how fast
//! it retries a failed job when it polls and when GitLab's Job Hooks tell it.
//!
//!     cargo bench --bench fleet                                  # every fleet (over an hour)
//!     BENCH_SIZES=100 BENCH_STEADY_RUNS=2 cargo bench --bench fleet   # smoke check (CI)
//!
//! For each fleet size, separate processes of `jobwarden simulate` (same seed, same fleet
//! flags, live fleet on the real clock) serve the measurements in turn:
//!
//! 1. **jobwarden**, once per mode of `BENCH_MODES` (`polling,webhook`): `jobwarden run --policies
//!    DIR` (its own process) runs the generated policies (see `fleet/policies.rs`: retry stuck
//!    jobs that failed within the last `BENCH_RETRY_FINISHED_WITHIN_MINS` (60), cancel stale
//!    ones, keep release artifacts) every `BENCH_INTERVAL_SECS` (30). In
//!    **webhook** mode the simulator delivers Job Hooks for every project to jobwarden (`simulate
//!    --webhook-url http://127.0.0.1:<port>/webhook`, its token in `JOBWARDEN_SIM_WEBHOOK_TOKEN`;
//!    `run --webhook-listen 127.0.0.1:<port>`, the same token in `JOBWARDEN_WEBHOOK_TOKEN`) and the
//!    policies get `resyncInterval` = `BENCH_RESYNC_FACTOR` (10) × the interval, and the
//!    `BENCH_WEBHOOK_WARMUP_RUNS` (10) runs after the first are not measured (the first run
//!    retries and cancels the fleet's backlog, and each of those moves fires deliveries, which
//!    also make quiet projects look like ones whose hooks work for a resync period). The simulator
//!    enforces no rate limit and jobwarden's request budget is raised out of the way, so the
//!    figures are the tool's own costs. A run ends when every policy has reconciled once more (log
//!    line, confirmed by the reconcile count of `/metrics`; a pass on deliveries between runs is no
//!    run). At each run's end the bench reads jobwarden's CPU time (utime + stime of
//!    `/proc/PID/stat`) and the simulator's request counters (`/-/sim/counters`); after the last
//!    steady run, one more run gives the last failures their chance, then the bench reads the
//!    simulator's request log and jobwarden's peak RSS (`VmHWM`).
//! 2. **baseline**: the Python script in a loop with the same interval and the same retry
//!    window (`--finished-within-minutes`), measured the same way (a run is one pass).
//! 3. **first action** under GitLab.com's limits: a simulator with `--jobs-rate-limit 600
//!    --api-rate-limit 2000`, jobwarden with its default budget (600 requests a minute); the
//!    seconds from starting jobwarden to the first action request (POST) the simulator counts,
//!    and the 429 answers in its request log until the first run completes (at most
//!    `BENCH_LATENCY_WINDOW_SECS`, 120).
//!
//! While jobwarden or the baseline runs, the bench fails first-attempt running or pending
//! builds as `stuck_or_timeout_failure` through the simulator's admin endpoint,
//! `BENCH_FAILURES_PER_PROJECT_HOUR` (4) per project and hour (`fleet/inject.rs`): the live
//! fleet's own stuck jobs fail an hour or a day after they started, so hardly any in a bench.
//! Retry latency is read from the simulator alone: from the job's `finished_at` to the `at` of
//! its first `POST …/retry` in the request log, both on the simulated clock, over the failures
//! of the steady runs.
//!
//! Stdout gets two markdown tables and the line of the in-process `decide` micro-bench: the
//! fleet table (one row per fleet: polling jobwarden next to the baseline; only with polling
//! mode) and the modes table (one row per fleet and mode: retry latency p50/p99, GitLab
//! requests per project and hour of jobwarden and of the baseline, CPU and peak RSS, each next
//! to the goals of issue 9, which are printed, never asserted). Progress and per-endpoint
//! details go to stderr. The bench asserts no timing: it fails (exit code 1) only when
//! something is broken (a process does not start or dies, a run does not complete within
//! `BENCH_RUN_TIMEOUT_SECS`, a table is not well formed). Every child process is killed when
//! the bench ends, fails or is killed.
//!
//! Environment: `BENCH_SIZES` (`100,1000,5000,5000x200`; `NxJ` = about J jobs per project),
//! `BENCH_MODES` (`polling,webhook`), `BENCH_STEADY_RUNS` (5), `BENCH_WEBHOOK_STEADY_RUNS`
//! (`BENCH_STEADY_RUNS`, at least `BENCH_RESYNC_FACTOR`: the steady runs then span a whole
//! resync period), `BENCH_WEBHOOK_WARMUP_RUNS` (`BENCH_RESYNC_FACTOR`: runs after the first
//! that webhook mode leaves out, while the deliveries of the first run's backlog actions are
//! read and count as signs that the projects' hooks work),
//! `BENCH_INTERVAL_SECS` (30), `BENCH_RESYNC_FACTOR` (10),
//! `BENCH_FAILURES_PER_PROJECT_HOUR` (4), `BENCH_RETRY_FINISHED_WITHIN_MINS` (60; 0 = both
//! tools retry every stuck failure of the fleet's three days, a backlog of about 18 per project
//! on `5000x200` whose aftermath the steady runs then measure), `BENCH_PROJECTS_PER_POLICY`
//! (500), `BENCH_SEED` (7),
//! `BENCH_LATENCY_WINDOW_SECS` (120), `BENCH_RUN_TIMEOUT_SECS` (1800), `BENCH_PYTHON`
//! (`python3`), `BENCH_DECIDE_PROJECTS` (500), `BENCH_KEEP_LOGS` (set to keep the processes'
//! logs and the generated policies), `BENCH_SHARDS` (unset; `N`: instead of all the above,
//! each fleet run by one process and by N shard processes, `fleet/shards.rs`).

// The driver's parts live in benches/fleet/ (this file is the bench's crate root).
#[path = "fleet/baseline.rs"]
mod baseline;
#[path = "fleet/config.rs"]
mod config;
#[path = "fleet/decide.rs"]
mod decide;
#[path = "fleet/http.rs"]
mod http;
#[path = "fleet/inject.rs"]
mod inject;
#[path = "fleet/jobwarden.rs"]
mod jobwarden;
#[path = "fleet/listings.rs"]
mod listings;
#[path = "fleet/measure.rs"]
mod measure;
#[path = "fleet/policies.rs"]
mod policies;
#[path = "fleet/process.rs"]
mod process;
#[path = "fleet/report.rs"]
mod report;
#[path = "fleet/shards.rs"]
mod shards;
#[path = "fleet/sim.rs"]
mod sim;

use config::{BenchConfig, FleetSize, Mode};
use measure::{BaselineFigures, JobwardenFigures, Latency, ToolRuns};
use report::{ModeRow, Row};
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleet bench failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line on stderr, stamped with the seconds since the bench started.
pub fn progress(message: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{elapsed:7.1} s] {message}");
}

fn run() -> Result<(), String> {
    let config = BenchConfig::from_env()?;
    baseline::check_python(&config.python)?;
    progress(&format!(
        "fleets {:?}, modes {:?}, {} steady runs ({} after {} warm-up runs in webhook mode), \
         interval {} s, \
         resync {}× interval, {} failures per project and hour, {} projects per policy, seed {}",
        config.sizes.iter().map(|s| &s.label).collect::<Vec<_>>(),
        config.modes.iter().map(|m| m.label()).collect::<Vec<_>>(),
        config.steady_runs,
        config.webhook_steady_runs,
        config.webhook_warmup_runs,
        config.interval_secs,
        config.resync_factor,
        config.failures_per_project_hour,
        config.projects_per_policy,
        config.seed
    ));
    if let Some(replicas) = config.shards {
        return run_shards(&config, replicas);
    }
    let mut rows = Vec::new();
    let mut mode_rows = Vec::new();
    for size in &config.sizes {
        let (row, modes) = measure_fleet(&config, size)?;
        rows.extend(row);
        mode_rows.extend(modes);
    }
    progress("decide micro-bench");
    let decide = decide::run(config.decide_projects, config.seed)?;
    // The fleet table compares polling jobwarden with the baseline, as it always has.
    if config.modes.contains(&Mode::Polling) {
        let table = report::table(&rows);
        report::check(&rows, config.sizes.len(), &table)?;
        println!("{table}");
        println!();
    }
    let modes = report::mode_table(&mode_rows);
    report::check_modes(&mode_rows, config.sizes.len() * config.modes.len(), &modes)?;
    println!("{modes}");
    println!();
    println!("{}", report::goals_line(config.resync_factor));
    println!();
    println!("{}", decide.line());
    Ok(())
}

/// `BENCH_SHARDS=N`: each fleet run by one process, then by N shard processes (and nothing
/// else); prints the sharding table.
fn run_shards(config: &BenchConfig, replicas: u32) -> Result<(), String> {
    let mut rows = Vec::new();
    for size in &config.sizes {
        let dir = tempfile::Builder::new()
            .prefix(&format!("jobwarden-bench-shards-{}-", size.label))
            .tempdir()
            .map_err(|err| format!("temporary directory: {err}"))?;
        for count in [1, replicas] {
            rows.push(shards::measure(config, size, dir.path(), count)?);
        }
    }
    let table = report::shard_table(&rows);
    report::check_shards(&rows, config.sizes.len() * 2, &table)?;
    println!("{table}");
    Ok(())
}

/// The measurements of one fleet, in a temporary directory for logs and policies: the fleet
/// table's row (with polling mode) and one row per mode.
fn measure_fleet(
    config: &BenchConfig,
    size: &FleetSize,
) -> Result<(Option<Row>, Vec<ModeRow>), String> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("jobwarden-bench-{}-", size.label))
        .tempdir()
        .map_err(|err| format!("temporary directory: {err}"))?;
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        dir.disable_cleanup(true);
        progress(&format!("logs and policies in {}", dir.path().display()));
    }
    let started = Instant::now();
    let measured = measure_all(config, size, dir.path());
    if measured.is_err() {
        dir.disable_cleanup(true);
    }
    let (jobwardens, baseline, latency) = measured.map_err(|err| {
        format!(
            "{err}\n(the logs and policies are kept in {})",
            dir.path().display()
        )
    })?;
    details(size, &jobwardens, &baseline, &latency);
    progress(&format!(
        "fleet {} measured in {:.0} s",
        size.label,
        started.elapsed().as_secs_f64()
    ));
    let row = jobwardens
        .iter()
        .find(|j| j.mode == Mode::Polling)
        .map(|jobwarden| Row {
            size: size.clone(),
            jobs_per_project: jobwarden.jobs_per_project,
            jobwarden_requests: requests(&jobwarden.runs, size.projects),
            baseline_requests: requests(&baseline.runs, size.projects),
            jobwarden_cpu: jobwarden.runs.steady_cpu(),
            baseline_cpu: baseline.runs.steady_cpu(),
            jobwarden_rss_mib: jobwarden.peak_rss_mib,
            first_action: latency.first_action,
            throttled: latency.throttled,
        });
    let modes = jobwardens
        .iter()
        .map(|jobwarden| ModeRow {
            size: size.clone(),
            mode: jobwarden.mode,
            interval_secs: config.interval_secs,
            failures: jobwarden.retry_latency.failures,
            retried: jobwarden.retry_latency.millis.len(),
            p50_ms: jobwarden.retry_latency.quantile(0.50),
            p99_ms: jobwarden.retry_latency.quantile(0.99),
            requests_per_hour: jobwarden.runs.steady_requests_per_hour(size.projects),
            baseline_requests_per_hour: baseline.runs.steady_requests_per_hour(size.projects),
            cpu: jobwarden.runs.steady_cpu(),
            rss_mib: jobwarden.peak_rss_mib,
        })
        .collect();
    Ok((row, modes))
}

/// jobwarden's runs in each mode, the baseline's runs, jobwarden's start under GitLab.com's
/// limits.
fn measure_all(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
) -> Result<(Vec<JobwardenFigures>, BaselineFigures, Latency), String> {
    let mut jobwardens = Vec::new();
    for &mode in &config.modes {
        progress(&format!(
            "fleet {}: jobwarden, {} mode",
            size.label,
            mode.label()
        ));
        jobwardens.push(measure::jobwarden(config, size, dir, mode)?);
    }
    progress(&format!("fleet {}: baseline", size.label));
    let baseline = measure::baseline(config, size, dir)?;
    progress(&format!(
        "fleet {}: first action under GitLab.com's limits",
        size.label
    ));
    let latency = measure::latency(config, size, dir)?;
    Ok((jobwardens, baseline, latency))
}

fn requests(runs: &ToolRuns, projects: u32) -> (f64, f64) {
    (
        runs.first_requests(projects),
        runs.steady_requests(projects),
    )
}

/// What the tables leave out, on stderr: run times, CPU of the first run, requests per
/// endpoint, actions taken, failures and deliveries, the rate-limited start.
fn details(
    size: &FleetSize,
    jobwardens: &[JobwardenFigures],
    baseline: &BaselineFigures,
    latency: &Latency,
) {
    let label = &size.label;
    let tools = jobwardens
        .iter()
        .map(|j| (format!("jobwarden ({})", j.mode.label()), &j.runs))
        .chain([("baseline".to_owned(), &baseline.runs)]);
    for (tool, runs) in tools {
        let steady_secs = measure::median(runs.steady.iter().map(|r| r.seconds));
        let steady_cpu: Vec<String> = runs
            .steady
            .iter()
            .map(|r| format!("{:.2}", r.cpu))
            .collect();
        eprintln!(
            "  {label} {tool}: first run {:.1} s wall, {:.2} s CPU; steady runs {:.1} s apart, CPU [{}] s",
            runs.first.seconds,
            runs.first.cpu,
            steady_secs,
            steady_cpu.join(", ")
        );
        let per_hour: std::collections::BTreeMap<String, f64> = runs
            .per_endpoint_per_hour(size.projects)
            .into_iter()
            .collect();
        for (endpoint, first, steady) in runs.per_endpoint(size.projects) {
            let hourly = per_hour.get(&endpoint).copied().unwrap_or(0.0);
            eprintln!(
                "    {endpoint:<55} {first:>8.3} first {steady:>8.3} steady (per project) \
                 {hourly:>8.2} per project-hour"
            );
        }
    }
    for jobwarden in jobwardens {
        jobwarden_details(label, size.projects, jobwarden);
    }
    eprintln!(
        "  {label} baseline: {} jobs failed while it ran",
        baseline.injected
    );
    let passes: Vec<String> = baseline
        .passes
        .iter()
        .map(|p| {
            format!(
                "{} retried of {} candidates ({} errors)",
                p.retried, p.candidates, p.errors
            )
        })
        .collect();
    eprintln!("  {label} baseline passes: {}", passes.join("; "));
    eprintln!(
        "  {label} GitLab.com limits: first action after {:.1} s, first retry after {}; \
         {} requests, {} answered 429, in {:.1} s watched (first run {})",
        latency.first_action,
        latency
            .first_retry
            .map_or_else(|| "none seen".to_owned(), |s| format!("{s:.1} s")),
        latency.requests,
        latency.throttled,
        latency.watched,
        if latency.first_run_done {
            "completed"
        } else {
            "still going"
        }
    );
}

/// One mode's actions, failures, deliveries and /metrics cost, on stderr.
fn jobwarden_details(label: &str, projects: u32, jobwarden: &JobwardenFigures) {
    let mode = jobwarden.mode.label();
    let actions: Vec<String> = jobwarden
        .scrape
        .actions
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    eprintln!(
        "  {label} jobwarden ({mode}) actions: {}",
        actions.join(", ")
    );
    let steady_seconds: f64 = jobwarden.runs.steady.iter().map(|r| r.seconds).sum();
    eprintln!(
        "  {label} jobwarden ({mode}) {}",
        jobwarden.listings.describe(projects, steady_seconds)
    );
    let (bytes, cpu) = jobwarden.scrape_cost;
    eprintln!(
        "  {label} jobwarden ({mode}) /metrics: {:.0} KiB, {cpu:.3} s CPU per scrape (one scrape \
         per run is in the steady runs' CPU)",
        bytes as f64 / 1024.0
    );
    let injected = &jobwarden.injected;
    let latency = &jobwarden.retry_latency;
    let quantile = |q: f64| {
        latency
            .quantile(q)
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms} ms"))
    };
    eprintln!(
        "  {label} jobwarden ({mode}) failures: {} injected ({} slots without a job to fail, {} \
         errors{}); of the {} in the steady runs {} retried, {} not: p50 {}, p90 {}, p99 {}, \
         max {}",
        injected.failures.len(),
        injected.missed_slots,
        injected.errors,
        injected
            .first_error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        latency.failures,
        latency.millis.len(),
        latency.unretried.len(),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(1.0),
    );
    let unretried: Vec<String> = latency
        .unretried
        .iter()
        .map(|f| format!("job {} of project {} (was {})", f.job, f.project, f.was))
        .collect();
    if !unretried.is_empty() {
        eprintln!(
            "  {label} jobwarden ({mode}) not retried: {}",
            unretried.join(", ")
        );
        for timeline in &latency.unretried_timelines {
            eprintln!("  {label} jobwarden ({mode}) requests around {timeline}");
        }
    }
    if let Some((steady, hooks)) = &jobwarden.hooks {
        let (count, sum) = jobwarden.scrape.delivery_to_action;
        eprintln!(
            "  {label} jobwarden ({mode}) hooks: {} triggered, {} sent, {} delivered, {} failed, \
             {} queue full (in the steady runs: {} triggered, {} queue full), by status {:?}; \
             jobwarden counted {:?}, delivery to action {} times, mean {:.1} ms",
            hooks.triggered,
            hooks.sent,
            hooks.delivered,
            hooks.failed,
            hooks.queue_full,
            hooks.triggered - steady.triggered,
            hooks.queue_full - steady.queue_full,
            hooks.by_status,
            jobwarden.scrape.deliveries,
            count,
            if count > 0 {
                sum * 1000.0 / count as f64
            } else {
                0.0
            },
        );
    }
}
