//! `jobwarden run` in its own process, and when its runs complete.
//!
//! A run is complete when every policy has reconciled once more. The bench learns it from the
//! `reconciled` log line each policy run ends with (JSON logs, read as they are written: this
//! costs jobwarden nothing), then confirms it with the reconcile count of the metrics endpoint
//! (`jobwarden_reconcile_duration_seconds_count`). It scrapes /metrics once per run only, about
//! as often as Prometheus would: a scrape of a 5,000-project instance costs jobwarden CPU too.

use crate::http;
use crate::process::{Child, Stream};
use crate::sim::TOKEN;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// The namespace of the generated policies.
const NAMESPACE: &str = "bench";

/// How long jobwarden may take to serve its metrics.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What one scrape of /metrics says.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Completed reconciles per policy name.
    pub reconciles: HashMap<String, u64>,
    /// `jobwarden_actions_total` summed per `action outcome`.
    pub actions: BTreeMap<String, u64>,
    /// `jobwarden_webhook_deliveries_total` per outcome.
    pub deliveries: BTreeMap<String, u64>,
    /// `jobwarden_webhook_action_latency_seconds`: count and sum.
    pub delivery_to_action: (u64, f64),
}

/// A running `jobwarden run --policies DIR`.
pub struct Jobwarden {
    child: Child,
    metrics: SocketAddr,
    /// `namespace/name` of every policy, and its runs seen in the log.
    runs: HashMap<String, u64>,
}

impl Jobwarden {
    /// Starts jobwarden on the policies in `dir` (named `names`); `requests_per_minute` sets
    /// its request budget (`None`: the default, 600); `webhook`: where it receives Job Hooks,
    /// and their secret token.
    pub fn start(
        name: &str,
        dir: &Path,
        names: &[String],
        requests_per_minute: Option<u32>,
        webhook: Option<(SocketAddr, &str)>,
        log_dir: &Path,
    ) -> Result<Jobwarden, String> {
        Self::start_shard(
            name,
            dir,
            names,
            requests_per_minute,
            webhook,
            None,
            log_dir,
        )
    }

    /// [`Jobwarden::start`] as shard `index` of `count` (`--shard-index`, `--shard-count`: it
    /// observes the projects that hash to it, within its share of the request budget).
    pub fn start_shard(
        name: &str,
        dir: &Path,
        names: &[String],
        requests_per_minute: Option<u32>,
        webhook: Option<(SocketAddr, &str)>,
        shard: Option<(u32, u32)>,
        log_dir: &Path,
    ) -> Result<Jobwarden, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobwarden"));
        command
            .args(["--log-format", "json", "run", "--policies"])
            .arg(dir)
            .args(["--metrics-listen", "127.0.0.1:0"])
            // The simulator speaks plain http on loopback.
            .arg("--allow-insecure-http")
            .env("GITLAB_TOKEN", TOKEN)
            .env_remove("RUST_LOG");
        if let Some(budget) = requests_per_minute {
            command.args(["--requests-per-minute", &budget.to_string()]);
        }
        if let Some((index, count)) = shard {
            command
                .args(["--shard-index", &index.to_string()])
                .args(["--shard-count", &count.to_string()]);
        }
        if let Some((addr, token)) = webhook {
            command
                .args(["--webhook-listen", &addr.to_string()])
                .env("JOBWARDEN_WEBHOOK_TOKEN", token);
        }
        let child = Child::spawn(name, command, log_dir)?;
        let runs = names
            .iter()
            .map(|n| (format!("{NAMESPACE}/{n}"), 0))
            .collect();
        let mut jobwarden = Jobwarden {
            child,
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            runs,
        };
        jobwarden.metrics = jobwarden.wait_metrics_address()?;
        Ok(jobwarden)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn started(&self) -> Instant {
        self.child.started()
    }

    /// Runs completed by every policy, as the log says so far.
    pub fn runs_completed(&self) -> u64 {
        self.runs.values().copied().min().unwrap_or(0)
    }

    /// Reads the log lines written so far, without waiting.
    pub fn poll(&mut self) -> Result<(), String> {
        self.read_lines(Duration::ZERO)
    }

    /// Waits until every policy has completed `runs` runs.
    pub fn wait_runs(&mut self, runs: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.runs_completed() < runs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.child.failure(&format!(
                    "run {runs} did not complete within {} s",
                    timeout.as_secs()
                )));
            }
            self.read_lines(left.min(Duration::from_secs(1)))?;
        }
        Ok(())
    }

    /// Scrapes /metrics and checks that it counts at least `runs` reconciles of every policy.
    pub fn confirm_runs(&self, runs: u64) -> Result<Scrape, String> {
        let scrape = self.scrape()?;
        for policy in self.runs.keys() {
            let name = policy.rsplit('/').next().unwrap_or(policy);
            let counted = scrape.reconciles.get(name).copied().unwrap_or(0);
            if counted < runs {
                return Err(self.child.failure(&format!(
                    "the log says {policy} completed {runs} runs, /metrics counts {counted}"
                )));
            }
        }
        Ok(scrape)
    }

    /// One scrape of /metrics.
    pub fn scrape(&self) -> Result<Scrape, String> {
        Ok(parse_metrics(&self.metrics_text()?))
    }

    /// The text /metrics serves.
    pub fn metrics_text(&self) -> Result<String, String> {
        http::get(self.metrics, "/metrics").map_err(|err| self.child.failure(&err))
    }

    /// Reads log lines for up to `wait`, counting completed runs.
    fn read_lines(&mut self, wait: Duration) -> Result<(), String> {
        let mut wait = wait;
        loop {
            match self.child.lines().recv_timeout(wait) {
                Ok(line) if line.stream == Stream::Stderr => {
                    if let Some(policy) = completed_run(&line.text)
                        && let Some(count) = self.runs.get_mut(&policy)
                    {
                        *count += 1;
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.child.failure("exited"));
                }
            }
            // Drain what is already there, but wait only once.
            wait = Duration::ZERO;
        }
    }

    /// Reads the log until jobwarden says where it serves its metrics.
    fn wait_metrics_address(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.child.lines().recv_timeout(left) else {
                return Err(self.child.failure("no metrics address logged"));
            };
            let Some(fields) = log_fields(&line.text, "serving /metrics") else {
                continue;
            };
            let addr = fields.get("addr").and_then(|a| a.as_str()).unwrap_or("");
            return addr.parse().map_err(|err| {
                self.child
                    .failure(&format!("metrics address {addr:?}: {err}"))
            });
        }
    }
}

/// The `fields` of a JSON log line whose message starts with `message`.
fn log_fields(line: &str, message: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !line.contains(message) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?.as_object()?.clone();
    let text = fields.get("message")?.as_str()?;
    text.starts_with(message).then_some(fields)
}

/// The policy (`namespace/name`) whose run a log line reports as ended, successfully or not.
fn completed_run(line: &str) -> Option<String> {
    let fields = log_fields(line, "reconciled").or_else(|| log_fields(line, "reconcile failed"))?;
    Some(fields.get("policy")?.as_str()?.to_owned())
}

/// Reads reconcile counts and action counts from the Prometheus text format.
fn parse_metrics(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("jobwarden_reconcile_duration_seconds_count{") {
            if let (Some(policy), Some(value)) = (label(rest, "policy"), sample_value(rest)) {
                scrape.reconciles.insert(policy.to_owned(), value);
            }
        } else if let Some(rest) = line.strip_prefix("jobwarden_webhook_deliveries_total{") {
            if let (Some(outcome), Some(value)) = (label(rest, "outcome"), sample_value(rest)) {
                scrape.deliveries.insert(outcome.to_owned(), value);
            }
        } else if let Some(value) =
            line.strip_prefix("jobwarden_webhook_action_latency_seconds_count ")
        {
            scrape.delivery_to_action.0 = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        } else if let Some(value) =
            line.strip_prefix("jobwarden_webhook_action_latency_seconds_sum ")
        {
            scrape.delivery_to_action.1 = value.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("jobwarden_actions_total{")
            && let (Some(action), Some(outcome), Some(value)) = (
                label(rest, "action"),
                label(rest, "outcome"),
                sample_value(rest),
            )
        {
            *scrape
                .actions
                .entry(format!("{action} {outcome}"))
                .or_default() += value;
        }
    }
    scrape
}

/// The value of label `name` in `a="x",name="y"} 3` (label values hold no quotes here).
fn label<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let at = rest
        .match_indices(&key)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || rest[..at].ends_with(','))?;
    let value = &rest[at + key.len()..];
    Some(&value[..value.find('"')?])
}

/// The sample value after the labels, as a whole number.
fn sample_value(rest: &str) -> Option<u64> {
    let value: f64 = rest.rsplit_once("} ")?.1.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value as u64)
}
