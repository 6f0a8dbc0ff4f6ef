//! Fleet benchmark: what running jobwarden costs, as a user would see it, next to the
//! python-gitlab script a user would write instead (`benches/baseline_cron.py`).
//!
//!     cargo bench --bench fleet                                  # every fleet (about an hour)
//!     BENCH_SIZES=100 BENCH_STEADY_RUNS=2 cargo bench --bench fleet   # smoke check (CI)
//!
//! For each fleet size, three separate processes of `jobwarden simulate` (same seed, same
//! fleet flags, live fleet on the real clock) serve three measurements in turn:
//!
//! 1. **jobwarden** (`jobwarden run --policies DIR`, its own process) runs the generated
//!    policies (see `fleet/policies.rs`: retry stuck jobs, cancel stale ones, keep release
//!    artifacts) every `BENCH_INTERVAL_SECS` (30). The simulator enforces no rate limit and
//!    jobwarden's request budget is raised out of the way, so the figures are the tool's own
//!    costs. A run ends when every policy has reconciled once more (log line, confirmed by the
//!    reconcile count of `/metrics`). At each run's end the bench reads jobwarden's CPU time
//!    (utime + stime of `/proc/PID/stat`) and the simulator's request counters
//!    (`/-/sim/counters`); at the end, its peak RSS (`VmHWM`).
//! 2. **baseline**: the Python script in a loop with the same interval, measured the same way
//!    (a run is one pass).
//! 3. **first action** under GitLab.com's limits: a simulator with `--jobs-rate-limit 600
//!    --api-rate-limit 2000`, jobwarden with its default budget (600 requests a minute); the
//!    seconds from starting jobwarden to the first action request (POST) the simulator counts,
//!    and the 429 answers in its request log until the first run completes (at most
//!    `BENCH_LATENCY_WINDOW_SECS`, 120).
//!
//! Stdout gets one markdown table (one row per fleet) and the line of the in-process `decide`
//! micro-bench; progress and per-endpoint details go to stderr. The bench asserts no timing:
//! it fails (exit code 1) only when something is broken (a process does not start or dies, a
//! run does not complete within `BENCH_RUN_TIMEOUT_SECS`, the table is not well formed).
//! Every child process is killed when the bench ends, fails or is killed.
//!
//! Environment: `BENCH_SIZES` (`100,1000,5000,5000x200`; `NxJ` = about J jobs per project),
//! `BENCH_STEADY_RUNS` (5), `BENCH_INTERVAL_SECS` (30), `BENCH_PROJECTS_PER_POLICY` (500),
//! `BENCH_SEED` (7), `BENCH_LATENCY_WINDOW_SECS` (120), `BENCH_RUN_TIMEOUT_SECS` (1800),
//! `BENCH_PYTHON` (`python3`), `BENCH_DECIDE_PROJECTS` (500), `BENCH_KEEP_LOGS` (set to keep
//! the processes' logs and the generated policies).

// The driver's parts live in benches/fleet/ (this file is the bench's crate root).
#[path = "fleet/baseline.rs"]
mod baseline;
#[path = "fleet/config.rs"]
mod config;
#[path = "fleet/decide.rs"]
mod decide;
#[path = "fleet/http.rs"]
mod http;
#[path = "fleet/jobwarden.rs"]
mod jobwarden;
#[path = "fleet/measure.rs"]
mod measure;
#[path = "fleet/policies.rs"]
mod policies;
#[path = "fleet/process.rs"]
mod process;
#[path = "fleet/report.rs"]
mod report;
#[path = "fleet/sim.rs"]
mod sim;

use config::{BenchConfig, FleetSize};
use measure::{BaselineFigures, JobwardenFigures, Latency, ToolRuns};
use report::Row;
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
        "fleets {:?}, {} steady runs, interval {} s, {} projects per policy, seed {}",
        config.sizes.iter().map(|s| &s.label).collect::<Vec<_>>(),
        config.steady_runs,
        config.interval_secs,
        config.projects_per_policy,
        config.seed
    ));
    let mut rows = Vec::new();
    for size in &config.sizes {
        rows.push(measure_fleet(&config, size)?);
    }
    progress("decide micro-bench");
    let decide = decide::run(config.decide_projects, config.seed)?;
    let table = report::table(&rows);
    report::check(&rows, config.sizes.len(), &table)?;
    println!("{table}");
    println!();
    println!("{}", decide.line());
    Ok(())
}

/// The three measurements of one fleet, in a temporary directory for logs and policies.
fn measure_fleet(config: &BenchConfig, size: &FleetSize) -> Result<Row, String> {
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
    let (jobwarden, baseline, latency) = measured.map_err(|err| {
        format!(
            "{err}\n(the logs and policies are kept in {})",
            dir.path().display()
        )
    })?;
    details(size, &jobwarden, &baseline, &latency);
    progress(&format!(
        "fleet {} measured in {:.0} s",
        size.label,
        started.elapsed().as_secs_f64()
    ));
    Ok(Row {
        size: size.clone(),
        jobs_per_project: jobwarden.jobs_per_project,
        jobwarden_requests: requests(&jobwarden.runs, size.projects),
        baseline_requests: requests(&baseline.runs, size.projects),
        jobwarden_cpu: jobwarden.runs.steady_cpu(),
        baseline_cpu: baseline.runs.steady_cpu(),
        jobwarden_rss_mib: jobwarden.peak_rss_mib,
        first_action: latency.first_action,
        throttled: latency.throttled,
    })
}

/// jobwarden's runs, the baseline's runs, jobwarden's start under GitLab.com's limits.
fn measure_all(
    config: &BenchConfig,
    size: &FleetSize,
    dir: &Path,
) -> Result<(JobwardenFigures, BaselineFigures, Latency), String> {
    progress(&format!("fleet {}: jobwarden", size.label));
    let jobwarden = measure::jobwarden(config, size, dir)?;
    progress(&format!("fleet {}: baseline", size.label));
    let baseline = measure::baseline(config, size, dir)?;
    progress(&format!(
        "fleet {}: first action under GitLab.com's limits",
        size.label
    ));
    let latency = measure::latency(config, size, dir)?;
    Ok((jobwarden, baseline, latency))
}

fn requests(runs: &ToolRuns, projects: u32) -> (f64, f64) {
    (
        runs.first_requests(projects),
        runs.steady_requests(projects),
    )
}

/// What the table leaves out, on stderr: run times, CPU of the first run, requests per
/// endpoint, actions taken, the rate-limited start.
fn details(
    size: &FleetSize,
    jobwarden: &JobwardenFigures,
    baseline: &BaselineFigures,
    latency: &Latency,
) {
    let label = &size.label;
    for (tool, runs) in [("jobwarden", &jobwarden.runs), ("baseline", &baseline.runs)] {
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
        for (endpoint, first, steady) in runs.per_endpoint(size.projects) {
            eprintln!("    {endpoint:<55} {first:>8.3} first {steady:>8.3} steady (per project)");
        }
    }
    let actions: Vec<String> = jobwarden
        .scrape
        .actions
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    eprintln!("  {label} jobwarden actions: {}", actions.join(", "));
    let (bytes, cpu) = jobwarden.scrape_cost;
    eprintln!(
        "  {label} jobwarden /metrics: {:.0} KiB, {cpu:.3} s CPU per scrape (one scrape per run \
         is in the steady runs' CPU)",
        bytes as f64 / 1024.0
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
