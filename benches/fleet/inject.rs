//! Jobs failed as `stuck_or_timeout_failure` while a tool runs, and how long the tool took to
//! retry them.
//!
//! The live fleet fails few jobs that way in the first hour of a run (its stuck jobs are dropped
//! an hour after they start running, or a day after they were queued), so the bench fails
//! them itself, at a steady rate spread over the fleet: every `3600 / (rate × projects)`
//! seconds it picks a project at random, and in it a running or pending build that is the
//! first attempt of its name in its pipeline (so the retry policy's limit allows a retry),
//! and moves it to `failed` through the simulator's admin endpoint
//! (`POST /-/sim/projects/:id/jobs/:job_id/status`). The move is a transition like any other:
//! the simulator fires its Job Hook at once, and the answer carries the job's `finished_at`.
//!
//! The latency of a failure is then read from the simulator alone: from the job's
//! `finished_at` to the `at` of the first `POST …/jobs/:job_id/retry` in the request log, both
//! on the simulated clock.

use crate::sim::{self, LoggedRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The reason the bench fails jobs with.
pub const REASON: &str = "stuck_or_timeout_failure";

/// Projects tried for one failure before the slot is given up.
const TRIES: usize = 50;

/// One job the bench failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub project: u32,
    /// The job's id (unique in the simulator, whatever the project).
    pub job: u64,
    /// Its status before (`running` or `pending`).
    pub was: String,
    /// When the bench got the simulator's answer.
    pub seen: Instant,
    /// The job's `finished_at`, in milliseconds since the epoch on the simulated clock.
    pub failed_at: i64,
}

/// What the injector did.
#[derive(Debug, Default, Clone)]
pub struct Injected {
    pub failures: Vec<Failure>,
    /// Slots in which no project of the sample had a job to fail.
    pub missed_slots: usize,
    /// Errors talking to the simulator (the first one kept).
    pub errors: usize,
    pub first_error: Option<String>,
}

/// The injector's thread; stopped and joined by [`Injector::stop`] (or on drop).
pub struct Injector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Injected>>,
}

impl Injector {
    /// Starts failing jobs of projects `1..=projects` of the simulator at `addr`,
    /// `per_project_hour` per project and hour (0: never).
    pub fn start(addr: SocketAddr, projects: u32, per_project_hour: f64, seed: u64) -> Injector {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let per_second = per_project_hour * f64::from(projects) / 3600.0;
        let thread = std::thread::spawn(move || {
            let mut out = Injected::default();
            if per_second <= 0.0 || projects == 0 {
                return out;
            }
            let period = Duration::from_secs_f64(1.0 / per_second);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1a7e_c7ed);
            let started = Instant::now();
            let mut slot: u32 = 1;
            loop {
                let due = started + period * slot;
                // Sleep in short steps so that stopping is prompt.
                while !flag.load(Ordering::SeqCst) && Instant::now() < due {
                    let left = due.saturating_duration_since(Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
                if flag.load(Ordering::SeqCst) {
                    return out;
                }
                slot = slot.saturating_add(1);
                match fail_one(addr, projects, &mut rng) {
                    Ok(Some(failure)) => out.failures.push(failure),
                    Ok(None) => out.missed_slots += 1,
                    Err(err) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(err);
                    }
                }
            }
        });
        Injector {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops injecting; what was injected.
    pub fn stop(mut self) -> Injected {
        self.finish()
    }

    fn finish(&mut self) -> Injected {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Fails one first-attempt running or pending build of a random project.
fn fail_one(
    addr: SocketAddr,
    projects: u32,
    rng: &mut ChaCha8Rng,
) -> Result<Option<Failure>, String> {
    for _ in 0..TRIES {
        let project = rng.random_range(1..=projects);
        let jobs = sim::project_jobs(addr, project)?;
        let mut attempts: HashMap<(u64, &str), usize> = HashMap::new();
        for job in &jobs {
            *attempts
                .entry((job.pipeline_id, job.name.as_str()))
                .or_default() += 1;
        }
        let candidates: Vec<&sim::SimJob> = jobs
            .iter()
            .filter(|j| {
                matches!(j.status.as_str(), "running" | "pending")
                    && !j.bridge
                    && !j.retried
                    && attempts[&(j.pipeline_id, j.name.as_str())] == 1
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let job = candidates[rng.random_range(0..candidates.len())];
        let failed = sim::fail_job(addr, project, job.id, REASON)?;
        let seen = Instant::now();
        let Some(finished) = failed.finished_at.filter(|_| failed.status == "failed") else {
            return Err(format!(
                "job {} of project {project} is {} after being failed",
                job.id, failed.status
            ));
        };
        return Ok(Some(Failure {
            project,
            job: job.id,
            was: job.status.clone(),
            seen,
            failed_at: finished.as_millisecond(),
        }));
    }
    Ok(None)
}

/// How fast the failures a tool saw were retried.
#[derive(Debug, Clone, Default)]
pub struct RetryLatency {
    /// Failures counted (those failed in the measured window and still in the request log).
    pub failures: usize,
    /// Milliseconds from failure to retry request, ascending, one per failure retried.
    pub millis: Vec<i64>,
    /// The failures counted that were not retried.
    pub unretried: Vec<Failure>,
    /// For each of those, the requests on its project from a minute before its failure on,
    /// one line each (what the tool did about it).
    pub unretried_timelines: Vec<String>,
}

impl RetryLatency {
    /// Matches the failures injected at or after `from` with the first retry request of their
    /// job in `log`. A failure older than the oldest entry of a full log is left out (its
    /// retry may have been pushed out of the log).
    pub fn of(failures: &[Failure], from: Instant, log: &[LoggedRequest], full: bool) -> Self {
        let mut retried: HashMap<u64, i64> = HashMap::new();
        for entry in log {
            if let Some(job) = entry.retried_job() {
                retried.entry(job).or_insert(entry.at);
            }
        }
        let oldest = if full {
            log.first().map_or(i64::MIN, |e| e.at)
        } else {
            i64::MIN
        };
        let counted: Vec<&Failure> = failures
            .iter()
            .filter(|f| f.seen >= from && f.failed_at >= oldest)
            .collect();
        let mut millis: Vec<i64> = counted
            .iter()
            .filter_map(|f| retried.get(&f.job).map(|at| at - f.failed_at))
            .collect();
        millis.sort_unstable();
        let unretried: Vec<Failure> = counted
            .iter()
            .filter(|f| !retried.contains_key(&f.job))
            .map(|f| (*f).clone())
            .collect();
        let unretried_timelines = unretried.iter().map(|f| timeline(f, log)).collect();
        RetryLatency {
            failures: counted.len(),
            millis,
            unretried,
            unretried_timelines,
        }
    }

    /// The `q` quantile (nearest rank) in milliseconds; `None` without retries.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        if self.millis.is_empty() {
            return None;
        }
        let rank = (q * self.millis.len() as f64).ceil() as usize;
        Some(self.millis[rank.clamp(1, self.millis.len()) - 1])
    }
}

/// The requests on a failure's project from a minute before it failed on, as
/// `+<ms after the failure> <method> <path>?<query> → <status>`.
fn timeline(failure: &Failure, log: &[LoggedRequest]) -> String {
    let prefix = format!("/api/v4/projects/{}/", failure.project);
    let lines: Vec<String> = log
        .iter()
        .filter(|r| r.path.starts_with(&prefix) && r.at >= failure.failed_at - 60_000)
        .map(|r| {
            format!(
                "{:+} ms {} {}?{} → {}",
                r.at - failure.failed_at,
                r.method,
                r.path,
                r.query,
                r.status
            )
        })
        .collect();
    format!(
        "job {} of project {}: {}",
        failure.job,
        failure.project,
        lines.join("; ")
    )
}
