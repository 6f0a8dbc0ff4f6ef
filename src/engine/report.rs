//! What one run of a policy saw and did: the [`RunReport`], its [`ActionRecord`]s (the first
//! [`MAX_LISTED_ACTIONS`] that acted and [`MAX_LISTED_HELD_BACK`] held back) and the [`Tally`]
//! of the decisions beyond those, and the projects or groups that failed ([`ProjectFailure`]).
//!
//! The run itself ([`Engine::reconcile`](super::Engine::reconcile)) fills the report; the
//! status, Events, metrics, logs and `jobwarden plan` read it.

use super::act::{Outcome, OutcomeKind};
use crate::crd::ActionKind;
use crate::gitlab::GitLabError;
use crate::gitlab::models::{GroupRef, ProjectRef};
use crate::policy::PolicyKey;
use jiff::Timestamp;

/// One decision and what became of it.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub time: Timestamp,
    pub project: ProjectRef,
    pub job_id: u64,
    pub job_name: String,
    pub rule: String,
    pub action: ActionKind,
    pub reason: String,
    pub outcome: Outcome,
    /// The policy's previous run reported the same outcome for this job: a decision that sends
    /// nothing (dry-run, over budget, deferred) comes back every run until it changes. Metrics,
    /// status counters and the demo count and show it once.
    pub repeat: bool,
}

impl ActionRecord {
    /// One structured line (target `jobwarden::action`). Decisions held back (deferred, over
    /// budget) and repeats come again every run: they are logged at debug level, and counted in
    /// the run's line.
    pub fn log(&self, policy: &PolicyKey) {
        if self.repeat
            || matches!(
                self.outcome,
                Outcome::Deferred { .. } | Outcome::SkippedOverBudget
            )
        {
            // The same event as below at debug level (a tracing event's level is a constant).
            tracing::debug!(
                target: "jobwarden::action",
                policy = %policy,
                project = %self.project,
                job_id = self.job_id,
                rule = %self.rule,
                action = self.action.as_str(),
                outcome = self.outcome.label(),
                reason = %self.reason,
                "{}",
                self.outcome
            );
            return;
        }
        tracing::info!(
            target: "jobwarden::action",
            policy = %policy,
            project = %self.project,
            job_id = self.job_id,
            job_name = %self.job_name,
            rule = %self.rule,
            action = self.action.as_str(),
            outcome = self.outcome.label(),
            reason = %self.reason,
            "{}",
            self.outcome
        );
    }
}

/// What a failure is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedTarget {
    /// A project, as the policy (or its group's listing) names it.
    Project(ProjectRef),
    /// A group of `spec.groups` whose projects could not be listed.
    Group(GroupRef),
}

impl std::fmt::Display for FailedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailedTarget::Project(project) => write!(f, "project {project}"),
            FailedTarget::Group(group) => write!(f, "group {group}"),
        }
    }
}

/// A project that could not be observed in this run, or a group whose projects could not be
/// listed; the others went on.
#[derive(Debug, Clone)]
pub struct ProjectFailure {
    pub target: FailedTarget,
    pub kind: &'static str,
    /// The error, with GitLab's status and message.
    pub message: String,
}

/// What one run of a policy saw and did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub policy: PolicyKey,
    pub time: Timestamp,
    pub dry_run: bool,
    pub suspended: bool,
    /// The projects the policy covers: `projects` and its groups' projects, less the excluded
    /// ones, each counted once.
    pub projects: usize,
    /// Jobs tracked over the projects observed: unfinished jobs and finished ones a rule may act on.
    pub jobs_seen: usize,
    /// What was done, and the decisions held back (deferred, over budget): the first
    /// [`MAX_LISTED_ACTIONS`] that acted and the first [`MAX_LISTED_HELD_BACK`] held back (all
    /// of them in a plan), so a run that retries a backlog of 90,000 jobs, or has as many
    /// waiting for its budget, does not hold 90,000 records. Each was logged as it happened.
    pub actions: Vec<ActionRecord>,
    /// The decisions beyond those listed in `actions`, counted.
    pub unlisted: Tally,
    pub failures: Vec<ProjectFailure>,
    /// A pass on Job Hook deliveries between two runs
    /// ([`Engine::reconcile_delivered`](super::Engine::reconcile_delivered)): only the projects
    /// with deliveries waiting were looked at. Not a reconcile: logged as such and not counted
    /// in the reconcile metrics.
    pub deliveries_only: bool,
}

/// Decisions counted by action, outcome and whether they repeat the previous run's (see
/// [`ActionRecord::repeat`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    counts: [[[u64; 2]; OutcomeKind::ALL.len()]; ActionKind::ALL.len()],
}

impl Tally {
    /// Counts one decision.
    pub fn add(&mut self, record: &ActionRecord) {
        let count = &mut self.counts[record.action as usize][record.outcome.kind() as usize]
            [usize::from(record.repeat)];
        *count = count.saturating_add(1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Tally) {
        let theirs = other.counts.iter().flatten().flatten();
        for (mine, theirs) in self.counts.iter_mut().flatten().flatten().zip(theirs) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The decisions of this action and outcome that repeat the previous run's (`repeat`), or
    /// not.
    pub fn get(&self, action: ActionKind, outcome: OutcomeKind, repeat: bool) -> u64 {
        self.counts[action as usize][outcome as usize][usize::from(repeat)]
    }

    /// The decisions of this action and outcome, repeats included.
    pub fn count(&self, action: ActionKind, outcome: OutcomeKind) -> u64 {
        self.get(action, outcome, false) + self.get(action, outcome, true)
    }

    /// The decisions with this outcome, over every action, repeats included.
    pub fn outcome_total(&self, outcome: OutcomeKind) -> u64 {
        ActionKind::ALL
            .iter()
            .map(|action| self.count(*action, outcome))
            .sum()
    }
}

/// How many decisions a run lists in its report; the others are counted ([`RunReport::unlisted`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Listing {
    acted: usize,
    held_back: usize,
    /// At most this many that acted ([`MAX_LISTED_ACTIONS`], or every one in a plan).
    acted_limit: usize,
}

impl Listing {
    /// An empty listing with room for `acted_limit` decisions that acted.
    pub(super) fn new(acted_limit: usize) -> Listing {
        Listing {
            acted: 0,
            held_back: 0,
            acted_limit,
        }
    }
}

/// At most this many held-back decisions are listed in a run report.
pub const MAX_LISTED_HELD_BACK: usize = 100;

/// At most this many decisions that acted (or, dry-run, would have) are listed in a run report
/// (a plan lists them all). Every action is logged as it happens and counted in the report's
/// tally; the listed ones become Kubernetes Events and the status's recent actions. A listed
/// record with its strings is about 300 bytes: 30 policies each listing 1,000 in a first run
/// over a backlog held about 9 MB at once.
pub const MAX_LISTED_ACTIONS: usize = 200;

impl RunReport {
    /// Every decision of the run, listed or not.
    pub fn tally(&self) -> Tally {
        let mut tally = self.unlisted;
        for record in &self.actions {
            tally.add(record);
        }
        tally
    }

    /// Every decision skipped over budget in this run, listed or not.
    pub fn over_budget_total(&self) -> u64 {
        self.tally().outcome_total(OutcomeKind::SkippedOverBudget)
    }

    /// Every decision deferred (retry backoff) in this run, listed or not.
    pub fn deferred_total(&self) -> u64 {
        self.tally().outcome_total(OutcomeKind::Deferred)
    }

    /// Adds one decision: listed while the listing has room for its kind, counted after.
    pub(super) fn add(&mut self, record: ActionRecord, listing: &mut Listing) {
        let (listed, limit) = if record.outcome.kind().is_held_back() {
            (&mut listing.held_back, MAX_LISTED_HELD_BACK)
        } else {
            (&mut listing.acted, listing.acted_limit)
        };
        if *listed < limit {
            *listed += 1;
            self.actions.push(record);
        } else {
            self.unlisted.add(&record);
        }
    }

    /// Logs the run in one line, `reconciled` (`acted on deliveries` for a pass on Job Hook
    /// deliveries). Each action was logged as it happened ([`ActionRecord::log`]), so a crash
    /// mid-run loses none.
    pub fn log(&self) {
        let what = if self.deliveries_only {
            "acted on deliveries"
        } else {
            "reconciled"
        };
        let tally = self.tally();
        let acted: u64 = OutcomeKind::ALL
            .iter()
            .filter(|kind| !kind.is_held_back())
            .map(|kind| tally.outcome_total(*kind))
            .sum();
        tracing::info!(
            policy = %self.policy,
            projects = self.projects,
            jobs = self.jobs_seen,
            actions = acted,
            deferred = tally.outcome_total(OutcomeKind::Deferred),
            over_budget = tally.outcome_total(OutcomeKind::SkippedOverBudget),
            failures = self.failures.len(),
            "{what}"
        );
    }
}

impl ProjectFailure {
    /// A failure on `target` (a project or a group).
    pub(super) fn new(target: FailedTarget, err: &GitLabError) -> ProjectFailure {
        ProjectFailure {
            target,
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: ActionKind, outcome: Outcome, repeat: bool) -> ActionRecord {
        ActionRecord {
            time: Timestamp::UNIX_EPOCH,
            project: ProjectRef::Id(1),
            job_id: 7,
            job_name: "build".into(),
            rule: "r".into(),
            action,
            reason: "because".into(),
            outcome,
            repeat,
        }
    }

    fn report() -> RunReport {
        RunReport {
            policy: PolicyKey::new("ci", "p"),
            time: Timestamp::UNIX_EPOCH,
            dry_run: false,
            suspended: false,
            projects: 1,
            jobs_seen: 0,
            actions: Vec::new(),
            unlisted: Tally::default(),
            failures: Vec::new(),
            deliveries_only: false,
        }
    }

    #[test]
    fn a_tally_counts_by_action_outcome_and_repeat() {
        let mut tally = Tally::default();
        tally.add(&record(ActionKind::Retry, Outcome::DryRun, false));
        tally.add(&record(ActionKind::Retry, Outcome::DryRun, true));
        tally.add(&record(
            ActionKind::Cancel,
            Outcome::SkippedOverBudget,
            false,
        ));
        assert_eq!(tally.get(ActionKind::Retry, OutcomeKind::DryRun, false), 1);
        assert_eq!(tally.get(ActionKind::Retry, OutcomeKind::DryRun, true), 1);
        assert_eq!(tally.count(ActionKind::Retry, OutcomeKind::DryRun), 2);
        assert_eq!(tally.count(ActionKind::Cancel, OutcomeKind::DryRun), 0);
        assert_eq!(tally.outcome_total(OutcomeKind::SkippedOverBudget), 1);

        let mut merged = tally;
        merged.merge(&tally);
        assert_eq!(merged.count(ActionKind::Retry, OutcomeKind::DryRun), 4);
        assert_eq!(merged.outcome_total(OutcomeKind::SkippedOverBudget), 2);
    }

    #[test]
    fn a_report_lists_up_to_its_limits_and_counts_the_rest() {
        let mut report = report();
        let mut listing = Listing::new(2);
        for _ in 0..5 {
            report.add(
                record(ActionKind::Retry, Outcome::DryRun, false),
                &mut listing,
            );
        }
        for _ in 0..MAX_LISTED_HELD_BACK + 3 {
            report.add(
                record(ActionKind::Play, Outcome::SkippedOverBudget, false),
                &mut listing,
            );
        }
        assert_eq!(report.actions.len(), 2 + MAX_LISTED_HELD_BACK);
        assert_eq!(
            report
                .unlisted
                .count(ActionKind::Retry, OutcomeKind::DryRun),
            3
        );
        assert_eq!(
            report.over_budget_total(),
            (MAX_LISTED_HELD_BACK + 3) as u64
        );
        assert_eq!(
            report.tally().count(ActionKind::Retry, OutcomeKind::DryRun),
            5
        );
        assert_eq!(report.deferred_total(), 0);
    }

    #[test]
    fn a_failure_names_its_target() {
        assert_eq!(
            FailedTarget::Project(ProjectRef::parse("g/p")).to_string(),
            "project g/p"
        );
        let failure = ProjectFailure::new(
            FailedTarget::Project(ProjectRef::Id(3)),
            &GitLabError::InvalidArgument("bad".into()),
        );
        assert_eq!(failure.target, FailedTarget::Project(ProjectRef::Id(3)));
        assert_eq!(failure.kind, "invalid_argument");
        assert_eq!(failure.message, "invalid argument: bad");
    }
}
