//! The result tables (markdown), and their checks: the fleet table (one row per fleet, every
//! cell a number) and the modes table (one row per fleet and mode: retry latency, requests per
//! hour, CPU and memory, with the goals of issue 9 next to the figures).

use crate::config::{FleetSize, Mode};
use crate::process::cpu_tick;
use crate::shards::ShardRow;

/// The figures of one fleet.
#[derive(Debug, Clone)]
pub struct Row {
    pub size: FleetSize,
    pub jobs_per_project: f64,
    /// Requests per project per run: first run, median steady run.
    pub jobwarden_requests: (f64, f64),
    pub baseline_requests: (f64, f64),
    /// CPU seconds per steady run (median).
    pub jobwarden_cpu: f64,
    pub baseline_cpu: f64,
    pub jobwarden_rss_mib: f64,
    /// Seconds to jobwarden's first action under GitLab.com's limits, and the 429s meanwhile.
    pub first_action: f64,
    pub throttled: usize,
}

const HEADER: [&str; 10] = [
    "projects",
    "jobs/project",
    "req/project/run jobwarden (first / steady)",
    "req/project/run baseline (first / steady)",
    "CPU s/steady run jobwarden",
    "CPU s/steady run baseline",
    "CPU baseline ÷ jobwarden",
    "jobwarden peak RSS MiB",
    "first action s (GitLab.com limits)",
    "429s",
];

impl Row {
    fn numbers(&self) -> [f64; 10] {
        [
            self.jobs_per_project,
            self.jobwarden_requests.0,
            self.jobwarden_requests.1,
            self.baseline_requests.0,
            self.baseline_requests.1,
            self.jobwarden_cpu,
            self.baseline_cpu,
            self.jobwarden_rss_mib,
            self.first_action,
            self.throttled as f64,
        ]
    }

    /// CPU seconds below one clock tick read as zero: they are shown as "< 1 tick", and the
    /// ratio as a lower bound.
    fn below_tick(&self) -> bool {
        self.jobwarden_cpu < cpu_tick() / 2.0
    }

    fn jobwarden_cpu_cell(&self) -> String {
        if self.below_tick() {
            format!("< {:.3}", cpu_tick())
        } else {
            format!("{:.3}", self.jobwarden_cpu)
        }
    }

    fn cpu_ratio_cell(&self) -> String {
        if self.below_tick() {
            format!("> {:.0}×", self.baseline_cpu / cpu_tick())
        } else {
            format!("{:.0}×", self.baseline_cpu / self.jobwarden_cpu)
        }
    }

    fn cells(&self) -> [String; 10] {
        [
            thousands(self.size.projects),
            format!("{:.0}", self.jobs_per_project),
            format!(
                "{:.2} / {:.2}",
                self.jobwarden_requests.0, self.jobwarden_requests.1
            ),
            format!(
                "{:.2} / {:.2}",
                self.baseline_requests.0, self.baseline_requests.1
            ),
            self.jobwarden_cpu_cell(),
            format!("{:.3}", self.baseline_cpu),
            self.cpu_ratio_cell(),
            format!("{:.1}", self.jobwarden_rss_mib),
            format!("{:.1}", self.first_action),
            self.throttled.to_string(),
        ]
    }

    /// Every figure is a finite, non-negative number.
    fn check(&self) -> Result<(), String> {
        match self.numbers().iter().find(|n| !n.is_finite() || **n < 0.0) {
            Some(bad) => Err(format!("fleet {}: a figure is {bad}", self.size.label)),
            None => Ok(()),
        }
    }
}

fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown table of `rows`, columns padded to line up.
pub fn table(rows: &[Row]) -> String {
    render(&HEADER, rows.iter().map(|r| r.cells().to_vec()))
}

/// A markdown table, columns padded to line up.
fn render(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let lines: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:>w$}", w = *w))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let rule: Vec<String> = widths
        .iter()
        .map(|w| format!("{}:", "-".repeat(w.saturating_sub(1).max(2))))
        .collect();
    let mut out = vec![
        render(&lines[0]),
        format!(
            "|{}|",
            rule.iter()
                .map(|r| format!(" {r} "))
                .collect::<Vec<_>>()
                .join("|")
        ),
    ];
    out.extend(lines[1..].iter().map(|l| render(l)));
    out.join("\n")
}

/// Checks the figures and the rendered table: a header, a rule, one row per fleet, the same
/// number of cells everywhere, no NaN or infinity.
pub fn check(rows: &[Row], fleets: usize, table: &str) -> Result<(), String> {
    if rows.len() != fleets {
        return Err(format!("{} rows for {fleets} fleets", rows.len()));
    }
    rows.iter().try_for_each(Row::check)?;
    check_lines(table, fleets, HEADER.len())
}

/// A header, a rule and `rows` rows of `columns` cells, no NaN or infinity.
fn check_lines(table: &str, rows: usize, columns: usize) -> Result<(), String> {
    let lines: Vec<&str> = table.lines().collect();
    if lines.len() != rows + 2 {
        return Err(format!(
            "the table has {} lines, not {}",
            lines.len(),
            rows + 2
        ));
    }
    for line in &lines {
        let cells = line.matches('|').count();
        if !line.starts_with('|') || cells != columns + 1 {
            return Err(format!("malformed table line: {line}"));
        }
        let lower = line.to_lowercase();
        if lower.contains("nan") || lower.contains("inf") {
            return Err(format!("not a number in: {line}"));
        }
    }
    Ok(())
}

/// The goals of issue 9, printed next to the figures (never asserted).
pub const WEBHOOK_P99_GOAL_MS: i64 = 250;
/// Polling: p99 below the interval plus this.
pub const POLLING_P99_SLACK_MS: i64 = 1_000;
/// Webhook mode with its resync: at least this many times fewer requests than the baseline.
pub const REQUESTS_GOAL_RATIO: f64 = 10.0;

/// The goals in one line, under the modes table.
pub fn goals_line(resync_factor: u64) -> String {
    format!(
        "Goals (issue 9): webhook p99 < {WEBHOOK_P99_GOAL_MS} ms at 1,000 projects; polling p99 < \
         interval + {} s; webhook mode with resyncInterval = {resync_factor} × interval: ≥ \
         {REQUESTS_GOAL_RATIO:.0}× fewer GitLab requests than the baseline. Latency: from a job's \
         failure to the simulator receiving its retry, both on the simulator's clock, over the \
         failures of the steady runs.",
        POLLING_P99_SLACK_MS / 1000
    )
}

/// The figures of one fleet in one mode.
#[derive(Debug, Clone)]
pub struct ModeRow {
    pub size: FleetSize,
    pub mode: Mode,
    pub interval_secs: u64,
    /// Failures of the steady runs, and those retried.
    pub failures: usize,
    pub retried: usize,
    /// Milliseconds from failure to retry request.
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    /// GitLab requests per project and hour over the steady runs.
    pub requests_per_hour: f64,
    pub baseline_requests_per_hour: f64,
    /// CPU seconds per steady run (median), peak RSS.
    pub cpu: f64,
    pub rss_mib: f64,
}

const MODE_HEADER: [&str; 12] = [
    "projects",
    "mode",
    "failures retried / failed",
    "retry latency p50 ms",
    "retry latency p99 ms",
    "p99 goal",
    "req/project/hour jobwarden",
    "req/project/hour baseline",
    "baseline ÷ jobwarden",
    "requests goal",
    "CPU s/steady run jobwarden",
    "jobwarden peak RSS MiB",
];

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

impl ModeRow {
    fn ratio(&self) -> f64 {
        self.baseline_requests_per_hour / self.requests_per_hour
    }

    fn p99_goal_ms(&self) -> i64 {
        match self.mode {
            Mode::Polling => {
                i64::try_from(self.interval_secs).unwrap_or(i64::MAX / 2) * 1000
                    + POLLING_P99_SLACK_MS
            }
            Mode::Webhook => WEBHOOK_P99_GOAL_MS,
        }
    }

    fn cells(&self) -> Vec<String> {
        let ms = |v: Option<i64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
        let goal = self.p99_goal_ms();
        let goal_text = if goal % 1000 == 0 {
            format!("< {} s", goal / 1000)
        } else if goal > 1000 {
            format!("< {:.1} s", goal as f64 / 1000.0)
        } else {
            format!("< {goal} ms")
        };
        let missing = self.failures - self.retried;
        let p99_goal = match self.p99_ms {
            None => format!("{goal_text}: no retry seen"),
            Some(_) if missing > 0 => {
                format!("{goal_text}: missed ({missing} not retried)")
            }
            Some(p99) => format!("{goal_text}: {}", met(p99 < goal)),
        };
        let requests_goal = match self.mode {
            Mode::Polling => "–".to_owned(),
            Mode::Webhook => format!(
                "≥ {REQUESTS_GOAL_RATIO:.0}×: {}",
                met(self.ratio() >= REQUESTS_GOAL_RATIO)
            ),
        };
        let cpu = if self.cpu < cpu_tick() / 2.0 {
            format!("< {:.3}", cpu_tick())
        } else {
            format!("{:.3}", self.cpu)
        };
        vec![
            thousands(self.size.projects),
            self.mode.label().to_owned(),
            format!("{} / {}", self.retried, self.failures),
            ms(self.p50_ms),
            ms(self.p99_ms),
            p99_goal,
            format!("{:.1}", self.requests_per_hour),
            format!("{:.1}", self.baseline_requests_per_hour),
            format!("{:.1}×", self.ratio()),
            requests_goal,
            cpu,
            format!("{:.1}", self.rss_mib),
        ]
    }

    fn check(&self) -> Result<(), String> {
        let numbers = [
            self.requests_per_hour,
            self.baseline_requests_per_hour,
            self.ratio(),
            self.cpu,
            self.rss_mib,
        ];
        if let Some(bad) = numbers.iter().find(|n| !n.is_finite() || **n < 0.0) {
            return Err(format!(
                "fleet {} ({}): a figure is {bad}",
                self.size.label,
                self.mode.label()
            ));
        }
        if self.retried > self.failures || self.p50_ms.is_some() != (self.retried > 0) {
            return Err(format!(
                "fleet {} ({}): {} retried of {} failures",
                self.size.label,
                self.mode.label(),
                self.retried,
                self.failures
            ));
        }
        Ok(())
    }
}

/// The markdown table of the modes.
pub fn mode_table(rows: &[ModeRow]) -> String {
    render(&MODE_HEADER, rows.iter().map(ModeRow::cells))
}

/// Checks the modes table: one row per fleet and mode, every figure a number (the latencies
/// may be missing when nothing was retried).
pub fn check_modes(rows: &[ModeRow], expected: usize, table: &str) -> Result<(), String> {
    if rows.len() != expected {
        return Err(format!("{} mode rows, not {expected}", rows.len()));
    }
    rows.iter().try_for_each(ModeRow::check)?;
    check_lines(table, expected, MODE_HEADER.len())
}

const SHARD_HEADER: [&str; 10] = [
    "projects",
    "replicas",
    "first pass s (no limit)",
    "peak RSS MiB per replica (max)",
    "peak RSS MiB (all replicas)",
    "CPU s per replica, two runs (max)",
    "req/project, two runs",
    "first action s (GitLab.com limits)",
    "req/min, one token (GitLab.com limits)",
    "429s",
];

impl ShardRow {
    fn numbers(&self) -> Vec<f64> {
        let mut numbers = vec![
            self.first_pass_secs,
            self.requests_per_project,
            self.first_action_secs,
            self.requests_per_minute,
        ];
        numbers.extend(&self.rss_mib);
        numbers.extend(&self.cpu_secs);
        numbers
    }

    fn cells(&self) -> Vec<String> {
        let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
        vec![
            thousands(self.size.projects),
            self.replicas.to_string(),
            format!("{:.1}", self.first_pass_secs),
            format!("{:.1}", max(&self.rss_mib)),
            format!("{:.1}", self.rss_mib.iter().sum::<f64>()),
            format!("{:.2}", max(&self.cpu_secs)),
            format!("{:.2}", self.requests_per_project),
            format!("{:.1}", self.first_action_secs),
            format!("{:.0}", self.requests_per_minute),
            self.throttled.to_string(),
        ]
    }

    /// One figure per replica, every figure a finite, non-negative number.
    fn check(&self) -> Result<(), String> {
        let replicas = self.replicas as usize;
        if self.rss_mib.len() != replicas || self.cpu_secs.len() != replicas {
            return Err(format!(
                "fleet {} with {} replicas: figures of {} processes",
                self.size.label,
                self.replicas,
                self.rss_mib.len()
            ));
        }
        match self.numbers().iter().find(|n| !n.is_finite() || **n < 0.0) {
            Some(bad) => Err(format!(
                "fleet {} with {} replicas: a figure is {bad}",
                self.size.label, self.replicas
            )),
            None => Ok(()),
        }
    }
}

/// The sharding table: one row per fleet and replica count.
pub fn shard_table(rows: &[ShardRow]) -> String {
    render(&SHARD_HEADER, rows.iter().map(ShardRow::cells))
}

/// Checks the sharding figures and their table (`expected` rows).
pub fn check_shards(rows: &[ShardRow], expected: usize, table: &str) -> Result<(), String> {
    if rows.len() != expected {
        return Err(format!("{} sharding rows, not {expected}", rows.len()));
    }
    rows.iter().try_for_each(ShardRow::check)?;
    check_lines(table, expected, SHARD_HEADER.len())
}
