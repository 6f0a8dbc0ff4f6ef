//! How the demo shows runs to people: a header over one line per action, and a summary that
//! ends with what was done.

use crate::crd::ActionKind;
use crate::engine::{ActionRecord, Outcome, OutcomeKind, RunReport, Tally};
use crate::policy::PolicyKey;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How policies are named on screen: by name alone when they all share one namespace.
#[derive(Debug, Clone, Default)]
pub struct PolicyNames {
    /// The namespace every policy shares, if they do.
    shared: Option<String>,
}

impl PolicyNames {
    /// Names for these policies.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a PolicyKey>) -> PolicyNames {
        let namespaces: BTreeSet<&str> = keys.into_iter().map(|k| k.namespace.as_str()).collect();
        PolicyNames {
            shared: (namespaces.len() == 1)
                .then(|| namespaces.first().map(|n| (*n).to_owned()))
                .flatten(),
        }
    }

    /// The namespace every policy shares, if they do (their names are then shown alone).
    pub fn shared_namespace(&self) -> Option<&str> {
        self.shared.as_deref()
    }

    /// `name`, or `namespace/name` for a policy outside the shared namespace.
    pub fn show(&self, key: &PolicyKey) -> String {
        if self.shared.as_deref() == Some(key.namespace.as_str()) {
            key.name.clone()
        } else {
            key.to_string()
        }
    }
}

/// The action lines: one per action, under a header, in fixed columns. Times are the
/// simulated clock's, counted from the start of the demo.
#[derive(Debug, Clone)]
pub struct ActionLines {
    names: PolicyNames,
    policy_width: usize,
    start: Timestamp,
}

impl ActionLines {
    /// Lines for the policies `keys` (the policy column fits their names), timed from `start`.
    pub fn new(names: PolicyNames, keys: &[PolicyKey], start: Timestamp) -> ActionLines {
        let policy_width = column_width("policy", keys.iter().map(|k| names.show(k)));
        ActionLines {
            names,
            policy_width,
            start,
        }
    }

    /// The header over the lines.
    pub fn header(&self) -> String {
        self.row([
            "sim time", "policy", "project", "job", "name", "action", "outcome", "why",
        ])
    }

    /// One line per action: when (simulated time since the start), policy, project, job, what
    /// was decided, what came of it, and why.
    pub fn line(&self, report: &RunReport, record: &ActionRecord) -> String {
        self.row([
            &elapsed(self.start, record.time),
            &self.names.show(&report.policy),
            &record.project.to_string(),
            &record.job_id.to_string(),
            &truncate(&record.job_name, 16),
            record.action.as_str(),
            &record.outcome.to_string(),
            &record.reason,
        ])
    }

    fn row(&self, [time, policy, project, job, name, action, outcome, why]: [&str; 8]) -> String {
        let line = format!(
            "{time:<8}  {policy:<width$}  {project:<15}  {job:<5}  {name:<16}  {action:<14}  {outcome:<23}  {why}",
            width = self.policy_width,
        );
        line.trim_end().to_owned()
    }
}

/// The width of a column: its widest cell or its header, in characters.
pub fn column_width<S: AsRef<str>>(header: &str, cells: impl IntoIterator<Item = S>) -> usize {
    cells
        .into_iter()
        .map(|cell| cell.as_ref().chars().count())
        .fold(header.chars().count(), usize::max)
}

/// `+h:mm:ss` from `start` to `t`.
fn elapsed(start: Timestamp, t: Timestamp) -> String {
    let secs = t.duration_since(start).as_secs().max(0);
    format!("+{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
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

/// A decision about a job, for [`Summary::jobs_shared`]: the policy, the action and the job
/// (the attempt it was about).
type Decision = (PolicyKey, ActionKind, u64);

/// Counts of outcomes per policy, accumulated over runs: every decision that is not a repeat of
/// the previous run's (deferred ones are not shown); and which policies decided about which
/// job, a retry's new attempt counting as the job it retried.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    counts: BTreeMap<PolicyKey, Tally>,
    /// A new attempt (from a retry) → the first attempt of its job.
    first_attempt: HashMap<u64, u64>,
    /// The decisions about each job (by its first attempt), in the order they came.
    decisions: BTreeMap<u64, Vec<Decision>>,
}

impl Summary {
    pub fn add(&mut self, report: &RunReport) {
        self.counts
            .entry(report.policy.clone())
            .or_default()
            .merge(&report.tally());
        for record in report.actions.iter().filter(|r| !r.repeat) {
            let first = self
                .first_attempt
                .get(&record.job_id)
                .copied()
                .unwrap_or(record.job_id);
            if let Outcome::Succeeded {
                new_job_id: Some(new),
            } = record.outcome
            {
                self.first_attempt.insert(new, first);
            }
            self.decisions.entry(first).or_default().push((
                report.policy.clone(),
                record.action,
                record.job_id,
            ));
        }
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

    /// The jobs that more than one policy decided about (a retry's new attempt counting as the
    /// job it retried), each with the decisions in order: `job 22: retry-transient retry,
    /// cancel-stale cancel (job 259)`.
    pub fn jobs_shared(&self, names: &PolicyNames) -> Vec<String> {
        let mut shared = Vec::new();
        for (first, decisions) in &self.decisions {
            let policies: BTreeSet<&PolicyKey> = decisions.iter().map(|(p, _, _)| p).collect();
            if policies.len() < 2 {
                continue;
            }
            let what: Vec<String> = decisions
                .iter()
                .map(|(policy, action, job)| {
                    let attempt = if job == first {
                        String::new()
                    } else {
                        format!(" (job {job})")
                    };
                    format!("{} {}{attempt}", names.show(policy), action.as_str())
                })
                .collect();
            shared.push(format!("job {first}: {}", what.join(", ")));
        }
        shared
    }

    /// The decisions with this outcome by action kind, `retry 4, cancel 7`, or `None` when
    /// there are none.
    pub fn totals(&self, outcome: OutcomeKind) -> Option<String> {
        let totals: Vec<String> = ActionKind::ALL
            .iter()
            .map(|k| (k, self.total(*k, outcome)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        (!totals.is_empty()).then(|| totals.join(", "))
    }

    /// The table printed at the end of a demo, policies named by `names`.
    pub fn table(&self, names: &PolicyNames) -> Table {
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
                let mut row = vec![names.show(policy), action.as_str().to_owned()];
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
    use crate::gitlab::models::ProjectRef;

    /// A decision about job `job_id` of project 1, at the epoch.
    fn record(job_id: u64, action: ActionKind, outcome: Outcome, repeat: bool) -> ActionRecord {
        ActionRecord {
            time: Timestamp::UNIX_EPOCH,
            project: ProjectRef::Id(1),
            job_id,
            job_name: "rspec".into(),
            rule: "retry-stuck".into(),
            action,
            reason: String::new(),
            outcome,
            repeat,
        }
    }

    /// A run of policy `ci/<policy>` with these decisions.
    fn run(policy: &str, actions: Vec<ActionRecord>) -> RunReport {
        RunReport {
            policy: PolicyKey::new("ci", policy),
            time: Timestamp::UNIX_EPOCH,
            dry_run: false,
            suspended: false,
            projects: 1,
            jobs_seen: 1,
            actions,
            unlisted: Tally::default(),
            failures: Vec::new(),
            deliveries_only: false,
        }
    }

    fn report(policy: &str, outcomes: &[(ActionKind, Outcome, bool)]) -> RunReport {
        let records = outcomes
            .iter()
            .map(|(action, outcome, repeat)| record(7, *action, outcome.clone(), *repeat));
        run(policy, records.collect())
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

    #[test]
    fn a_job_retried_by_one_policy_and_canceled_by_another_is_shared() {
        let retried = Outcome::Succeeded {
            new_job_id: Some(259),
        };
        let canceled = Outcome::Succeeded { new_job_id: None };
        let mut summary = Summary::default();
        summary.add(&run(
            "retry",
            vec![
                record(22, ActionKind::Retry, retried, false),
                record(30, ActionKind::Retry, Outcome::DryRun, false),
            ],
        ));
        summary.add(&run(
            "retry",
            vec![record(30, ActionKind::Retry, Outcome::DryRun, true)],
        ));
        let names = PolicyNames::new([&PolicyKey::new("ci", "retry")]);
        assert!(summary.jobs_shared(&names).is_empty(), "one policy each");

        summary.add(&run(
            "cancel",
            vec![record(259, ActionKind::Cancel, canceled, false)],
        ));
        assert_eq!(
            summary.jobs_shared(&names),
            ["job 22: retry retry, cancel cancel (job 259)"],
            "the new attempt counts as the job it retried"
        );
        assert_eq!(
            summary.totals(OutcomeKind::Succeeded).as_deref(),
            Some("retry 1, cancel 1")
        );
        assert_eq!(
            summary.totals(OutcomeKind::DryRun).as_deref(),
            Some("retry 1")
        );
        assert_eq!(summary.totals(OutcomeKind::Failed), None);
    }

    #[test]
    fn the_header_stands_over_the_columns_of_the_lines() {
        let keys = [PolicyKey::new("demo", "retry-transient")];
        let names = PolicyNames::new(&keys);
        let start: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let lines = ActionLines::new(names, &keys, start);
        let mut retried = record(
            22,
            ActionKind::Retry,
            Outcome::Succeeded {
                new_job_id: Some(259),
            },
            false,
        );
        retried.time = "2026-11-23T11:05:09Z".parse().unwrap();
        retried.reason = "failed with stuck_or_timeout_failure".into();
        let mut report = run("retry-transient", vec![retried.clone()]);
        report.policy = keys[0].clone();
        let header = lines.header();
        let line = lines.line(&report, &retried);
        assert!(line.starts_with("+1:05:09  retry-transient  1  "), "{line}");
        for (column, value) in [
            ("policy", "retry-transient"),
            ("project", "1 "),
            ("job", "22 "),
            ("name", "rspec"),
            ("action", "retry "),
            ("outcome", "succeeded (new job 259)"),
            ("why", "failed with"),
        ] {
            assert_eq!(
                header.find(column),
                line.find(value),
                "{column}:\n{header}\n{line}"
            );
        }
    }

    #[test]
    fn policies_are_named_alone_when_they_share_a_namespace() {
        let a = PolicyKey::new("demo", "a");
        let b = PolicyKey::new("other", "b");
        let shared = PolicyNames::new([&a]);
        assert_eq!(shared.shared_namespace(), Some("demo"));
        assert_eq!(shared.show(&a), "a");
        assert_eq!(shared.show(&b), "other/b");
        let mixed = PolicyNames::new([&a, &b]);
        assert_eq!(mixed.shared_namespace(), None);
        assert_eq!(mixed.show(&a), "demo/a");
    }
}
