//! The GitLab simulator in its own process (`jobwarden simulate`), and its admin endpoint.

use crate::config::FleetSize;
use crate::http;
use crate::process::{Child, Stream};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// The newest requests the simulator's log keeps.
pub const LOG_CAPACITY: usize = 100_000;

/// The token the simulated GitLab accepts.
pub const TOKEN: &str = "bench-token";

/// How long generating the fleet and binding may take.
const START_TIMEOUT: Duration = Duration::from_secs(600);

const LISTENING: &str = "jobwarden simulator listening on http://";

/// Requests answered, per `METHOD /endpoint/template`.
pub type Counters = BTreeMap<String, u64>;

/// GitLab's rate limits as the simulator enforces them (0 = off).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// `GET /projects/:id/jobs` per minute (`--jobs-rate-limit`).
    pub jobs_list_per_minute: u32,
    /// Every API request per minute (`--api-rate-limit`).
    pub api_per_minute: u32,
}

impl RateLimits {
    /// No limit: the tools' own costs, unthrottled.
    pub const OFF: RateLimits = RateLimits {
        jobs_list_per_minute: 0,
        api_per_minute: 0,
    };
    /// GitLab.com's: 600 job listings and 2,000 API requests per minute and user.
    pub const GITLAB_COM: RateLimits = RateLimits {
        jobs_list_per_minute: 600,
        api_per_minute: 2000,
    };
}

/// One entry of the simulator's request log (the fields the bench reads).
#[derive(Debug, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    /// The route template, e.g. `/projects/:id/jobs/:job_id/retry`.
    pub endpoint: String,
    /// The raw path, e.g. `/api/v4/projects/7/jobs/512/retry`.
    pub path: String,
    /// The raw query string.
    #[serde(default)]
    pub query: String,
    /// The status answered (0: the connection was dropped).
    pub status: u16,
    /// When it was received: milliseconds since the epoch on the simulated clock.
    pub at: i64,
}

impl LoggedRequest {
    /// The job a `POST …/jobs/:job_id/retry` retried.
    pub fn retried_job(&self) -> Option<u64> {
        if self.method != "POST" || self.endpoint != "/projects/:id/jobs/:job_id/retry" {
            return None;
        }
        let rest = self.path.strip_suffix("/retry")?;
        rest.rsplit('/').next()?.parse().ok()
    }
}

/// Where the simulator delivers Job Hooks (`--webhook-url`, `--webhook-token`).
#[derive(Debug, Clone)]
pub struct HookTarget {
    pub url: String,
    pub token: String,
}

/// A job as the simulator's admin endpoint shows it (the fields the bench reads).
#[derive(Debug, Clone, Deserialize)]
pub struct SimJob {
    pub id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub status: String,
    pub retried: bool,
    pub bridge: bool,
    pub finished_at: Option<jiff::Timestamp>,
}

/// A hook's delivery counters (`GET /-/sim/hooks`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HookStats {
    pub triggered: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub queue_full: u64,
    pub by_status: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct Hook {
    stats: HookStats,
}

/// A running simulator process: a live fleet on the real clock (`--speed 1`).
pub struct Simulator {
    child: Child,
    addr: SocketAddr,
}

impl Simulator {
    /// Starts `jobwarden simulate` for `size` and waits until it listens.
    pub fn start(
        name: &str,
        size: &FleetSize,
        seed: u64,
        limits: RateLimits,
        hook: Option<&HookTarget>,
        log_dir: &Path,
    ) -> Result<Simulator, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobwarden"));
        command
            .args(["simulate", "--token", TOKEN, "--listen", "127.0.0.1:0"])
            .args(["--projects", &size.projects.to_string()])
            .args(["--seed", &seed.to_string()])
            .args(["--speed", "1"])
            .args(["--pipelines-per-project", &size.pipelines.to_string()])
            .args([
                "--max-pipelines-per-project",
                &size.max_pipelines.to_string(),
            ])
            .args([
                "--jobs-rate-limit",
                &limits.jobs_list_per_minute.to_string(),
            ])
            .args(["--api-rate-limit", &limits.api_per_minute.to_string()]);
        if let Some(hook) = hook {
            command
                .args(["--webhook-url", &hook.url])
                .env("JOBWARDEN_SIM_WEBHOOK_TOKEN", &hook.token);
        }
        let child = Child::spawn(name, command, log_dir)?;
        let addr = wait_listening(&child)?;
        Ok(Simulator { child, addr })
    }

    /// The instance URL for policies and the baseline.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The delivery counters of every hook, added up.
    pub fn hook_stats(&self) -> Result<HookStats, String> {
        let hooks: Vec<Hook> = http::get_json(self.addr, "/-/sim/hooks")?;
        let mut total = HookStats::default();
        for hook in hooks {
            let s = hook.stats;
            total.triggered += s.triggered;
            total.sent += s.sent;
            total.delivered += s.delivered;
            total.failed += s.failed;
            total.queue_full += s.queue_full;
            for (status, n) in s.by_status {
                *total.by_status.entry(status).or_default() += n;
            }
        }
        Ok(total)
    }

    /// Requests answered so far, per endpoint template.
    pub fn counters(&self) -> Result<Counters, String> {
        http::get_json(self.addr, "/-/sim/counters").map_err(|err| self.child.failure(&err))
    }

    /// The request log (the newest [`LOG_CAPACITY`] requests), oldest first.
    pub fn requests(&self) -> Result<Vec<LoggedRequest>, String> {
        http::get_json(self.addr, "/-/sim/requests").map_err(|err| self.child.failure(&err))
    }

    /// `err`, with whether the simulator is still running (and its log if not): when a tool
    /// fails, this tells whose fault it was.
    pub fn annotate(&mut self, err: String) -> String {
        match self.child.exited() {
            Some(status) => format!(
                "{err}\n{}",
                self.child.failure(&format!("exited: {status}"))
            ),
            None => format!("{err}\n(the simulator is still running)"),
        }
    }

    /// The mean number of jobs (every attempt) of up to 20 projects spread over the fleet.
    pub fn jobs_per_project(&self, projects: u32) -> Result<f64, String> {
        let samples = projects.min(20);
        let mut total = 0usize;
        for i in 0..samples {
            let id = 1 + u64::from(i) * u64::from(projects) / u64::from(samples);
            let jobs: Vec<serde_json::Value> =
                http::get_json(self.addr, &format!("/-/sim/projects/{id}/jobs"))?;
            total += jobs.len();
        }
        Ok(total as f64 / f64::from(samples))
    }
}

/// Reads the simulator's stdout until it says where it listens.
fn wait_listening(child: &Child) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.lines().recv_timeout(left) {
            Ok(line) if line.stream == Stream::Stdout => {
                if let Some(addr) = line.text.strip_prefix(LISTENING) {
                    return addr
                        .trim()
                        .parse()
                        .map_err(|err| child.failure(&format!("bad address {addr:?}: {err}")));
                }
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                return Err(child.failure("did not start listening in time"));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(child.failure("exited before listening"));
            }
        }
    }
}

/// What was counted between two snapshots.
pub fn difference(after: &Counters, before: &Counters) -> Counters {
    after
        .iter()
        .map(|(endpoint, n)| {
            let earlier = before.get(endpoint).copied().unwrap_or(0);
            (endpoint.clone(), n.saturating_sub(earlier))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Every request counted.
pub fn total(counters: &Counters) -> u64 {
    counters.values().sum()
}

/// Every job of a project, as the admin endpoint shows it.
pub fn project_jobs(addr: SocketAddr, project: u32) -> Result<Vec<SimJob>, String> {
    http::get_json(addr, &format!("/-/sim/projects/{project}/jobs"))
}

/// Fails a job now with `reason` (`POST /-/sim/projects/:id/jobs/:job_id/status`); the job
/// as it is then.
pub fn fail_job(addr: SocketAddr, project: u32, job: u64, reason: &str) -> Result<SimJob, String> {
    http::post_json(
        addr,
        &format!("/-/sim/projects/{project}/jobs/{job}/status"),
        &serde_json::json!({"status": "failed", "failure_reason": reason}),
    )
}
