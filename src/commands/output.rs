//! How runs are shown to people: one line per action, and summary tables.

use crate::engine::{ActionRecord, Outcome, RunReport};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::collections::BTreeMap;

/// One line per action, as it happens: time, policy, project, job, rule, action, outcome.
pub fn action_line(report: &RunReport, record: &ActionRecord) -> String {
    format!(
        "{time}  {policy:<38} {project:<16} job {job:<6} {name:<16} {rule:<24} {action:<14} {outcome}",
        time = record.time.strftime("%H:%M:%S"),
        policy = report.policy.to_string(),
        project = record.project.to_string(),
        job = record.job_id,
        name = truncate(&record.job_name, 16),
        rule = truncate(&record.rule, 24),
        action = record.action.as_str(),
        outcome = record.outcome,
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Counts of outcomes per (policy, action), accumulated over runs.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    counts: BTreeMap<(String, &'static str), BTreeMap<&'static str, u64>>,
}

impl Summary {
    pub fn add(&mut self, report: &RunReport) {
        for record in &report.actions {
            if record.repeat || matches!(record.outcome, Outcome::Deferred { .. }) {
                continue;
            }
            *self
                .counts
                .entry((report.policy.to_string(), record.action.as_str()))
                .or_default()
                .entry(record.outcome.label())
                .or_default() += 1;
        }
    }

    /// Total of one outcome for one action kind, across policies.
    pub fn total(&self, action: &str, outcome: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((_, a), _)| *a == action)
            .filter_map(|(_, o)| o.get(outcome))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The table printed at the end of a demo or a run.
    pub fn table(&self) -> Table {
        const OUTCOMES: [&str; 4] = ["succeeded", "failed", "skipped_over_budget", "dry_run"];
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec!["policy", "action"];
        header.extend(OUTCOMES);
        table.set_header(header);
        for ((policy, action), outcomes) in &self.counts {
            let mut row = vec![policy.clone(), (*action).to_owned()];
            row.extend(
                OUTCOMES
                    .iter()
                    .map(|o| outcomes.get(o).copied().unwrap_or(0).to_string()),
            );
            table.add_row(row);
        }
        table
    }
}
