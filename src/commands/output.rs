//! How runs are shown to people: one line per action, and summary tables.

use crate::crd::ActionKind;
use crate::engine::{ActionRecord, OutcomeKind, RunReport, Tally};
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

/// Counts of outcomes per policy, accumulated over runs: every decision that is not a repeat of
/// the previous run's (deferred ones are not shown).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    counts: BTreeMap<String, Tally>,
}

impl Summary {
    pub fn add(&mut self, report: &RunReport) {
        self.counts
            .entry(report.policy.to_string())
            .or_default()
            .merge(&report.tally());
    }

    /// Decisions of one action kind with one outcome, across policies, repeats left out.
    pub fn total(&self, action: ActionKind, outcome: OutcomeKind) -> u64 {
        self.counts
            .values()
            .map(|tally| tally.get(action, outcome, false))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The table printed at the end of a demo or a run.
    pub fn table(&self) -> Table {
        const OUTCOMES: [OutcomeKind; 4] = [
            OutcomeKind::Succeeded,
            OutcomeKind::Failed,
            OutcomeKind::SkippedOverBudget,
            OutcomeKind::DryRun,
        ];
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec!["policy", "action"];
        header.extend(OUTCOMES.map(OutcomeKind::as_str));
        table.set_header(header);
        for (policy, tally) in &self.counts {
            for action in ActionKind::ALL {
                let decided = OutcomeKind::ALL
                    .iter()
                    .filter(|o| **o != OutcomeKind::Deferred)
                    .any(|o| tally.get(action, *o, false) > 0);
                if !decided {
                    continue;
                }
                let mut row = vec![policy.clone(), action.as_str().to_owned()];
                row.extend(OUTCOMES.map(|outcome| tally.get(action, outcome, false).to_string()));
                table.add_row(row);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Outcome, Tally};
    use crate::gitlab::models::ProjectRef;
    use crate::policy::PolicyKey;

    fn report(policy: &str, outcomes: &[(ActionKind, Outcome, bool)]) -> RunReport {
        let record = |(action, outcome, repeat): &(ActionKind, Outcome, bool)| ActionRecord {
            time: jiff::Timestamp::UNIX_EPOCH,
            project: ProjectRef::Id(1),
            job_id: 7,
            job_name: "rspec".into(),
            rule: "retry-stuck".into(),
            action: *action,
            reason: String::new(),
            outcome: outcome.clone(),
            repeat: *repeat,
        };
        RunReport {
            policy: PolicyKey::new("ci", policy),
            time: jiff::Timestamp::UNIX_EPOCH,
            dry_run: false,
            suspended: false,
            projects: 1,
            jobs_seen: 1,
            actions: outcomes.iter().map(record).collect(),
            unlisted: Tally::default(),
            failures: Vec::new(),
            deliveries_only: false,
        }
    }

    #[test]
    fn the_summary_adds_runs_and_policies_and_leaves_repeats_out() {
        let retried = (
            ActionKind::Retry,
            Outcome::Succeeded { new_job_id: None },
            false,
        );
        let over_budget = (ActionKind::Cancel, Outcome::SkippedOverBudget, false);
        let repeated = (ActionKind::Cancel, Outcome::SkippedOverBudget, true);
        let mut summary = Summary::default();
        summary.add(&report("a", &[retried.clone(), over_budget.clone()]));
        summary.add(&report("a", &[retried.clone(), repeated]));
        summary.add(&report("b", &[retried]));
        assert_eq!(summary.total(ActionKind::Retry, OutcomeKind::Succeeded), 3);
        assert_eq!(
            summary.total(ActionKind::Cancel, OutcomeKind::SkippedOverBudget),
            1
        );
        assert_eq!(summary.total(ActionKind::Play, OutcomeKind::Succeeded), 0);
    }
}
