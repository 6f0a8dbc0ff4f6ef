//! The result table (markdown), and its check: one row per fleet, every cell a number.

use crate::config::FleetSize;
use crate::process::cpu_tick;

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
    let lines: Vec<Vec<String>> = std::iter::once(HEADER.map(str::to_owned).to_vec())
        .chain(rows.iter().map(|r| r.cells().to_vec()))
        .collect();
    let widths: Vec<usize> = (0..HEADER.len())
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
    let lines: Vec<&str> = table.lines().collect();
    if lines.len() != fleets + 2 {
        return Err(format!(
            "the table has {} lines, not {}",
            lines.len(),
            fleets + 2
        ));
    }
    for line in &lines {
        let cells = line.matches('|').count();
        if !line.starts_with('|') || cells != HEADER.len() + 1 {
            return Err(format!("malformed table line: {line}"));
        }
        let lower = line.to_lowercase();
        if lower.contains("nan") || lower.contains("inf") {
            return Err(format!("not a number in: {line}"));
        }
    }
    Ok(())
}
