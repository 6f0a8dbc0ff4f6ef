//! What a policy's `/status` says after a reconcile, computed without any I/O.
//!
//! Every function here takes the previous status (or none), what happened and the clock, and
//! returns the whole new status. The controller patches it as it is; the tests check it as it
//! is. Conventions kept:
//! - one condition, `Ready`; its `lastTransitionTime` moves only when its `status` changes
//!   (True ↔ False), not when only its reason or message does;
//! - `counters` accumulate over the policy's life: previous counters plus this run's succeeded
//!   actions per kind and its decisions skipped over budget;
//! - `recentActions` lists real outcomes only (succeeded, failed, skipped over budget, dry-run;
//!   never a retry deferred by backoff), newest first, at most [`MAX_RECENT_ACTIONS`];
//! - `lastSyncTime` is the last run that reached GitLab; a failed run keeps the previous one.

use crate::crd::{
    ActionCounters, ActionKind, ActionOutcome, ActionRecord as StatusAction, JobPolicyStatus,
    MAX_RECENT_ACTIONS, kube_time,
};
use crate::engine::{
    ActionRecord, FailedTarget, Outcome, OutcomeKind, ReconcileError, RunReport, Tally,
};
use crate::policy::SpecErrors;
use crate::source::kube::secrets::AccessError;
use crate::source::secret::{CaBundleRefError, SecretError};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

/// The type of the one condition jobwarden sets.
pub const READY: &str = "Ready";

/// Why a policy is or is not `Ready`: the `reason` of its `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyReason {
    /// The last run reached GitLab (True).
    Reconciled,
    /// `spec.suspend` is true (True: nothing is wrong, the policy is paused).
    Suspended,
    /// The spec has problems the schema could not catch (False).
    InvalidSpec,
    /// The Secret named by `spec.gitlab.tokenSecretRef` (or `caBundleSecretRef`) does not exist
    /// in the policy's namespace (False).
    SecretNotFound,
    /// The Secret exists but has no (non-empty) value under the key (False).
    SecretKeyNotFound,
    /// The Secret could not be read (forbidden, apiserver error) (False).
    SecretUnreadable,
    /// The key named by `spec.gitlab.caBundleSecretRef` holds no usable CA certificate: not
    /// PEM, no certificate, or one that is not a valid X.509 certificate (False).
    InvalidCABundle,
    /// No project could be observed: GitLab refused or failed every request (False).
    GitLabError,
    /// No GitLab client could be built for `spec.gitlab.url` (False).
    GitLabClientError,
    /// The policy covers more projects than one policy may (its groups are too big) (False).
    TooManyProjects,
    /// `spec.gitlab.url` may not receive a token: plain http without `--allow-insecure-http`,
    /// or a host outside `--allowed-gitlab-hosts` (False).
    GitLabUrlNotAllowed,
    /// With project sharding: some shard has not reported on the current generation yet
    /// (False; the merged status of shard 0 only).
    ShardsPending,
}

impl ReadyReason {
    /// The reason as written in the condition and in Events.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyReason::Reconciled => "Reconciled",
            ReadyReason::Suspended => "Suspended",
            ReadyReason::InvalidSpec => "InvalidSpec",
            ReadyReason::SecretNotFound => "SecretNotFound",
            ReadyReason::SecretKeyNotFound => "SecretKeyNotFound",
            ReadyReason::SecretUnreadable => "SecretUnreadable",
            ReadyReason::InvalidCABundle => "InvalidCABundle",
            ReadyReason::GitLabError => "GitLabError",
            ReadyReason::GitLabClientError => "GitLabClientError",
            ReadyReason::GitLabUrlNotAllowed => "GitLabUrlNotAllowed",
            ReadyReason::TooManyProjects => "TooManyProjects",
            ReadyReason::ShardsPending => "ShardsPending",
        }
    }

    /// Whether the policy counts as ready with this reason.
    pub fn is_ready(self) -> bool {
        matches!(self, ReadyReason::Reconciled | ReadyReason::Suspended)
    }

    /// Why a policy whose token Secret cannot be read is not ready.
    pub fn of_secret_error(err: &SecretError) -> ReadyReason {
        match err {
            SecretError::NotFound { .. } | SecretError::NotAmongManifests { .. } => {
                ReadyReason::SecretNotFound
            }
            SecretError::KeyNotFound { .. }
            | SecretError::EmptyValue { .. }
            | SecretError::NotText { .. } => ReadyReason::SecretKeyNotFound,
            SecretError::Unreadable { .. } => ReadyReason::SecretUnreadable,
        }
    }

    /// Why a policy whose token or CA bundle cannot be read (or used) is not ready.
    pub fn of_access_error(err: &AccessError) -> ReadyReason {
        match err {
            AccessError::Token(err) | AccessError::CaBundle(CaBundleRefError::Secret(err)) => {
                ReadyReason::of_secret_error(err)
            }
            AccessError::CaBundle(CaBundleRefError::Certificates { .. }) => {
                ReadyReason::InvalidCABundle
            }
        }
    }

    /// Why a policy whose run failed as a whole is not ready.
    pub fn of_run_error(err: &ReconcileError) -> ReadyReason {
        match err {
            ReconcileError::Client { .. } => ReadyReason::GitLabClientError,
            ReconcileError::AllProjectsFailed { .. } => ReadyReason::GitLabError,
            ReconcileError::TooManyProjects { .. } => ReadyReason::TooManyProjects,
            ReconcileError::DestinationRefused(_) => ReadyReason::GitLabUrlNotAllowed,
        }
    }
}

impl std::fmt::Display for ReadyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest condition message written (the apiserver allows 32 KiB; a status is read by
/// people).
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// The status after a run that reached GitLab: `Ready=True` (`Reconciled`), counters and
/// recent actions updated, `lastSyncTime` = the run's start.
pub fn reconciled(
    previous: Option<&JobPolicyStatus>,
    report: &RunReport,
    generation: Option<i64>,
    now: Timestamp,
) -> JobPolicyStatus {
    let previous = previous.cloned().unwrap_or_default();
    JobPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready_condition(
            &previous,
            ReadyReason::Reconciled,
            run_summary(report),
            generation,
            now,
        )],
        last_sync_time: Some(kube_time(report.time)),
        projects: Some(u64::try_from(report.projects).unwrap_or(u64::MAX)),
        counters: accumulate(&previous.counters, &report.tally()),
        recent_actions: merge_recent(&report.actions, &previous.recent_actions),
        shards: Default::default(),
    }
}

/// The status after acting on Job Hook deliveries between two runs: the actions are counted and
/// listed; the condition, `lastSyncTime` and the observed generation stay those of the last run.
pub fn with_actions(previous: Option<&JobPolicyStatus>, report: &RunReport) -> JobPolicyStatus {
    let previous = previous.cloned().unwrap_or_default();
    JobPolicyStatus {
        counters: accumulate(&previous.counters, &report.tally()),
        recent_actions: merge_recent(&report.actions, &previous.recent_actions),
        ..previous
    }
}

/// The status when the policy cannot run for `reason` (never [`ReadyReason::Reconciled`]):
/// the condition says why; counters, recent actions and `lastSyncTime` are kept.
pub fn not_reconciled(
    previous: Option<&JobPolicyStatus>,
    reason: ReadyReason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> JobPolicyStatus {
    let previous = previous.cloned().unwrap_or_default();
    JobPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready_condition(
            &previous,
            reason,
            message.into(),
            generation,
            now,
        )],
        ..previous
    }
}

/// The status of a spec that does not compile: `Ready=False`, reason `InvalidSpec`, and a
/// message naming every field that is wrong.
pub fn invalid_spec(
    previous: Option<&JobPolicyStatus>,
    errors: &SpecErrors,
    generation: Option<i64>,
    now: Timestamp,
) -> JobPolicyStatus {
    not_reconciled(
        previous,
        ReadyReason::InvalidSpec,
        errors.to_string(),
        generation,
        now,
    )
}

/// The status of a suspended policy: `Ready=True`, reason `Suspended`; everything else kept.
pub fn suspended(
    previous: Option<&JobPolicyStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> JobPolicyStatus {
    not_reconciled(
        previous,
        ReadyReason::Suspended,
        "spec.suspend is true: jobwarden does not act on this policy's jobs",
        generation,
        now,
    )
}

/// The `Ready` condition of a status, if it has one.
pub fn ready_of(status: &JobPolicyStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == READY)
}

/// How long until the policy is due again, or `None` when it is due now. A policy is not due
/// while its last run, for the current generation, reconciled less than `interval` ago: a
/// restart of jobwarden (or a new leader) then resumes the schedule instead of running every
/// policy at once. Less than a second left counts as due.
pub fn not_due_for(
    previous: Option<&JobPolicyStatus>,
    generation: Option<i64>,
    interval: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let previous = previous?;
    if previous.observed_generation != generation {
        return None;
    }
    let ready = ready_of(previous)?;
    if ready.status != "True" || ready.reason != ReadyReason::Reconciled.as_str() {
        return None;
    }
    let last = from_kube_time(previous.last_sync_time.as_ref()?);
    let since = now.duration_since(last);
    if since.is_negative() {
        // A clock that went back: trust the interval, not the difference.
        return Some(interval);
    }
    let since = Duration::try_from(since).ok()?;
    let left = interval.checked_sub(since)?;
    (left >= Duration::from_secs(1)).then_some(left)
}

/// Counters after a run: `previous` plus this run's succeeded actions per kind and decisions
/// skipped over budget. Saturates instead of overflowing.
pub fn accumulate(previous: &ActionCounters, tally: &Tally) -> ActionCounters {
    let mut counters = previous.clone();
    let new = |action, outcome| tally.get(action, outcome, false);
    for action in ActionKind::ALL {
        let counter = match action {
            ActionKind::Retry => &mut counters.retried,
            ActionKind::Cancel => &mut counters.canceled,
            ActionKind::Play => &mut counters.played,
            ActionKind::KeepArtifacts => &mut counters.artifacts_kept,
        };
        *counter = counter.saturating_add(new(action, OutcomeKind::Succeeded));
        counters.skipped_over_budget = counters
            .skipped_over_budget
            .saturating_add(new(action, OutcomeKind::SkippedOverBudget));
    }
    counters
}

/// This run's records with a real outcome, newest first, then the previous entries, cut to
/// [`MAX_RECENT_ACTIONS`].
pub fn merge_recent(actions: &[ActionRecord], previous: &[StatusAction]) -> Vec<StatusAction> {
    // Within a run, later records come later in `actions`.
    let mut merged: Vec<StatusAction> = actions.iter().rev().filter_map(status_action).collect();
    merged.extend(previous.iter().cloned());
    merged.truncate(MAX_RECENT_ACTIONS);
    merged
}

/// Several newest-first lists of recent actions (the shards') as one, newest first, cut to
/// [`MAX_RECENT_ACTIONS`]; actions of the same time keep the order of the lists.
pub fn merge_recent_records<'a>(
    lists: impl IntoIterator<Item = &'a [StatusAction]>,
) -> Vec<StatusAction> {
    let mut merged: Vec<StatusAction> = lists.into_iter().flatten().cloned().collect();
    merged.sort_by_key(|a| std::cmp::Reverse(a.time.0));
    merged.truncate(MAX_RECENT_ACTIONS);
    merged
}

/// The status entry for one engine record; `None` for outcomes that are not events yet (a
/// retry deferred by backoff) or an action the status does not know.
pub fn status_action(record: &ActionRecord) -> Option<StatusAction> {
    if record.repeat {
        // Reported by an earlier run.
        return None;
    }
    let (outcome, new_job_id, message) = match &record.outcome {
        Outcome::Succeeded { new_job_id } => (ActionOutcome::Succeeded, *new_job_id, None),
        Outcome::Noop { status } => (
            ActionOutcome::Noop,
            None,
            Some(format!("no change: the job is already {status}")),
        ),
        Outcome::Failed { message } => (ActionOutcome::Failed, None, Some(message.clone())),
        Outcome::InDoubt { .. } => (
            ActionOutcome::InDoubt,
            None,
            Some(record.outcome.to_string()),
        ),
        Outcome::DryRun => (ActionOutcome::DryRun, None, None),
        Outcome::SkippedOverBudget => (ActionOutcome::SkippedOverBudget, None, None),
        Outcome::Deferred { .. } => return None,
    };
    Some(StatusAction {
        time: kube_time(record.time),
        project: record.project.to_string(),
        job_id: record.job_id,
        job_name: record.job_name.clone(),
        rule: record.rule.clone(),
        action: record.action,
        outcome,
        new_job_id,
        message: Some(truncate(
            &match message {
                Some(error) => format!("{error} ({})", record.reason),
                None => record.reason.clone(),
            },
            MAX_ACTION_MESSAGE_CHARS,
        ))
        .filter(|m| !m.is_empty()),
    })
}

/// The longest `message` of a recent action.
const MAX_ACTION_MESSAGE_CHARS: usize = 512;

/// "3 projects, 412 jobs tracked", plus the dry-run mode and the projects that failed.
pub fn run_summary(report: &RunReport) -> String {
    let mut message = format!(
        "{} {}, {} {} tracked",
        report.projects,
        plural(report.projects, "project", "projects"),
        report.jobs_seen,
        plural(report.jobs_seen, "job", "jobs"),
    );
    if report.dry_run {
        message.push_str("; dry-run: nothing is sent to GitLab");
    }
    if let Some(first) = report.failures.first() {
        let failed = |group: bool| {
            let mut names: Vec<String> = report
                .failures
                .iter()
                .filter_map(|f| match (&f.target, group) {
                    (FailedTarget::Project(project), false) => Some(project.to_string()),
                    (FailedTarget::Group(group), true) => Some(group.to_string()),
                    _ => None,
                })
                .collect();
            names.sort();
            names.dedup();
            names
        };
        let lists: Vec<String> = [
            (failed(false), "project", "projects"),
            (failed(true), "group", "groups"),
        ]
        .into_iter()
        .filter(|(names, _, _)| !names.is_empty())
        .map(|(names, one, many)| {
            format!(
                "{} {} ({})",
                names.len(),
                plural(names.len(), one, many),
                names.join(", ")
            )
        })
        .collect();
        message.push_str(&format!(
            "; errors on {}, first: {}: {}",
            lists.join(" and "),
            first.target,
            first.message
        ));
    }
    truncate(&message, MAX_MESSAGE_CHARS)
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// The `Ready` condition with `reason`, keeping the previous transition time when the
/// condition's status does not change.
fn ready_condition(
    previous: &JobPolicyStatus,
    reason: ReadyReason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    ready_condition_named(
        previous,
        reason.is_ready(),
        reason.as_str(),
        message,
        generation,
        now,
    )
}

/// The `Ready` condition, True when `ready`, with a reason given by name (a shard's, when
/// merging shards' reports); the previous transition time is kept when the condition's status
/// does not change.
pub fn ready_condition_named(
    previous: &JobPolicyStatus,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = match ready_of(previous) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => kube_time(now),
    };
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(&message, MAX_MESSAGE_CHARS),
        observed_generation: generation,
        last_transition_time,
    }
}

/// A Kubernetes `Time` as a timestamp of the crate's clock.
pub fn from_kube_time(time: &Time) -> Timestamp {
    Timestamp::from_nanosecond(time.0.as_nanosecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
