//! Acting on decisions: one GitLab call per decision, never repeated blindly.
//!
//! A state-changing call that fails ambiguously (timeout, dropped connection, 5xx) may or may not
//! have taken effect. The client never re-sends it; here the job is re-read to learn which. When
//! the re-read shows no change yet the call may still land later: the outcome is
//! [`Outcome::InDoubt`], and the engine's ledger keeps every rule off the job until the window
//! has passed and a re-read settles it (see `engine::ledger`).
//!
//! A refusal that only says the job moved on (`403 Job is not retryable`, `400 Unplayable Job`:
//! the decision was made on a view of the job that a late call, or a person, overtook) is
//! recognised by a re-read and reported as [`Outcome::Noop`], not as a failure.

use crate::gitlab::models::{Job, JobStatus, ProjectRef};
use crate::gitlab::{GitLabClient, GitLabError, JobVariable, PipelineJobsQuery};
use crate::policy::{Action, Decision};
use futures::TryStreamExt;
use jiff::Timestamp;
use std::fmt;

/// What became of one decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// GitLab did it. `new_job_id` is the new attempt created by a retry (or a replay).
    Succeeded { new_job_id: Option<u64> },
    /// GitLab accepted the call but the job did not change (a cancel of a job that had already
    /// finished or was skipped: GitLab answers 201 with the job as it was).
    Noop { status: JobStatus },
    /// GitLab refused or the call failed; `message` carries GitLab's status and message.
    Failed { message: String },
    /// GitLab gave no clear answer and the job shows no change yet: the call may still land,
    /// so nothing is sent to the job again before `until` (and a re-read after it).
    InDoubt { until: Timestamp, message: String },
    /// Over the policy's budget: decided again next run.
    SkippedOverBudget,
    /// The policy is in dry-run mode (or this is a plan): nothing was sent.
    DryRun,
    /// Backoff not elapsed yet: retried no earlier than this.
    Deferred { not_before: Timestamp },
}

/// What kind of outcome an [`Outcome`] is, without its details: what counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    Succeeded,
    Noop,
    Failed,
    InDoubt,
    SkippedOverBudget,
    DryRun,
    Deferred,
}

impl OutcomeKind {
    /// Every kind, in declaration order.
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Succeeded,
        OutcomeKind::Noop,
        OutcomeKind::Failed,
        OutcomeKind::InDoubt,
        OutcomeKind::SkippedOverBudget,
        OutcomeKind::DryRun,
        OutcomeKind::Deferred,
    ];

    /// The stable label used in metrics and machine output.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::Noop => "noop",
            OutcomeKind::Failed => "failed",
            OutcomeKind::InDoubt => "in_doubt",
            OutcomeKind::SkippedOverBudget => "skipped_over_budget",
            OutcomeKind::DryRun => "dry_run",
            OutcomeKind::Deferred => "deferred",
        }
    }

    /// A decision that did not act: waiting for a backoff or for the budget.
    pub fn is_held_back(self) -> bool {
        matches!(self, OutcomeKind::Deferred | OutcomeKind::SkippedOverBudget)
    }
}

impl Outcome {
    /// The kind of this outcome.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Succeeded { .. } => OutcomeKind::Succeeded,
            Outcome::Noop { .. } => OutcomeKind::Noop,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::InDoubt { .. } => OutcomeKind::InDoubt,
            Outcome::SkippedOverBudget => OutcomeKind::SkippedOverBudget,
            Outcome::DryRun => OutcomeKind::DryRun,
            Outcome::Deferred { .. } => OutcomeKind::Deferred,
        }
    }

    /// The stable label used in metrics and machine output.
    pub fn label(&self) -> &'static str {
        self.kind().as_str()
    }

    /// True when a GitLab call was made (it counts against budgets).
    pub fn was_attempted(&self) -> bool {
        matches!(
            self,
            Outcome::Succeeded { .. }
                | Outcome::Noop { .. }
                | Outcome::Failed { .. }
                | Outcome::InDoubt { .. }
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded {
                new_job_id: Some(id),
            } => write!(f, "succeeded (new job {id})"),
            Outcome::Succeeded { new_job_id: None } => f.write_str("succeeded"),
            Outcome::Noop { status } => write!(f, "no change: the job is already {status}"),
            Outcome::Failed { message } => write!(f, "failed: {message}"),
            Outcome::InDoubt { until, message } => write!(
                f,
                "in doubt until {}: {message}",
                until.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
            Outcome::SkippedOverBudget => f.write_str("skipped: over budget"),
            Outcome::DryRun => f.write_str("dry-run: not sent"),
            Outcome::Deferred { not_before } => {
                write!(
                    f,
                    "deferred until {}",
                    not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
                )
            }
        }
    }
}

/// Sends the GitLab call for one decision whose verdict is to act, and reports the outcome.
/// Also returns the job's fresh snapshot when GitLab gave one, for the cache. `in_doubt_until`
/// gives the end of the in-doubt window, counted from when it is called.
pub async fn execute(
    client: &GitLabClient,
    decision: &Decision,
    in_doubt_until: &(dyn Fn() -> Timestamp + Send + Sync),
) -> (Outcome, Option<Job>) {
    let project = &decision.project;
    let id = decision.job_id;
    let sent = match &decision.action {
        Action::Retry => client.retry_job(project, id).await,
        Action::Cancel => client.cancel_job(project, id, false).await,
        Action::Play { variables } => {
            let variables: Vec<JobVariable> = variables
                .iter()
                .map(|(key, value)| JobVariable {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            client.play_job(project, id, &variables).await
        }
        Action::KeepArtifacts => client.keep_artifacts(project, id).await,
    };
    match sent {
        Ok(job) if matches!(decision.action, Action::Cancel) && !is_canceled(&job.status) => {
            (Outcome::Noop { status: job.status }, Some(job))
        }
        Ok(job) => {
            let new_job_id = (job.id != id).then_some(job.id);
            (Outcome::Succeeded { new_job_id }, Some(job))
        }
        Err(err) if err.is_ambiguous() => {
            confirm_after_ambiguous(client, decision, &err, in_doubt_until).await
        }
        Err(err) if is_overtaken_refusal(&decision.action, &err) => {
            recognise_overtaken(client, decision, err).await
        }
        Err(err) => (
            Outcome::Failed {
                message: err.to_string(),
            },
            None,
        ),
    }
}

/// True for the statuses a cancel leads to.
fn is_canceled(status: &JobStatus) -> bool {
    matches!(status, JobStatus::Canceled | JobStatus::Canceling)
}

/// After an ambiguous failure, re-reads GitLab to learn whether the action took effect.
async fn confirm_after_ambiguous(
    client: &GitLabClient,
    decision: &Decision,
    err: &GitLabError,
    in_doubt_until: &(dyn Fn() -> Timestamp + Send + Sync),
) -> (Outcome, Option<Job>) {
    let unconfirmed = |detail: String| Outcome::InDoubt {
        until: in_doubt_until(),
        message: format!("{err}; {detail}"),
    };
    let project = &decision.project;
    match &decision.action {
        Action::Retry => match newer_attempt(client, project, decision).await {
            Ok(Some(new_id)) => (
                Outcome::Succeeded {
                    new_job_id: Some(new_id),
                },
                None,
            ),
            Ok(None) => (unconfirmed("GitLab shows no new attempt".into()), None),
            Err(reread) => (unconfirmed(format!("re-read failed: {reread}")), None),
        },
        action => match client.get_job(project, decision.job_id).await {
            Ok(job) => {
                let took_effect = match action {
                    Action::Cancel => is_canceled(&job.status),
                    Action::Play { .. } => !job.status.is_blocked(),
                    Action::KeepArtifacts => job.artifacts_expire_at.is_none(),
                    Action::Retry => false,
                };
                if took_effect {
                    (Outcome::Succeeded { new_job_id: None }, Some(job))
                } else {
                    let detail = format!("the job is still {}", job.status);
                    (unconfirmed(detail), Some(job))
                }
            }
            Err(reread) => (unconfirmed(format!("re-read failed: {reread}")), None),
        },
    }
}

/// True for GitLab's refusals that mean the job is no longer what the decision saw.
fn is_overtaken_refusal(action: &Action, err: &GitLabError) -> bool {
    match action {
        Action::Retry => err.status() == Some(403),
        Action::Play { .. } => err.status() == Some(400),
        Action::Cancel | Action::KeepArtifacts => false,
    }
}

/// After a refusal that may mean the job moved on, re-reads it: when it did (a newer attempt
/// exists, or the job is no longer waiting to be played) the outcome is [`Outcome::Noop`];
/// otherwise the refusal stands.
async fn recognise_overtaken(
    client: &GitLabClient,
    decision: &Decision,
    err: GitLabError,
) -> (Outcome, Option<Job>) {
    let refused = |err: GitLabError| Outcome::Failed {
        message: err.to_string(),
    };
    let project = &decision.project;
    let Ok(job) = client.get_job(project, decision.job_id).await else {
        return (refused(err), None);
    };
    let moved_on = match decision.action {
        Action::Retry => matches!(newer_attempt(client, project, decision).await, Ok(Some(_))),
        _ => !job.status.is_blocked(),
    };
    if moved_on {
        (Outcome::Noop { status: job.status }, Some(job))
    } else {
        (refused(err), Some(job))
    }
}

/// The id of an attempt of the same job newer than the decided one, if GitLab has one.
async fn newer_attempt(
    client: &GitLabClient,
    project: &ProjectRef,
    decision: &Decision,
) -> Result<Option<u64>, GitLabError> {
    let attempts: Vec<Job> = client
        .list_pipeline_jobs(
            project,
            decision.pipeline_id,
            &PipelineJobsQuery::every_attempt(),
        )
        .try_collect()
        .await?;
    Ok(attempts
        .iter()
        .filter(|j| j.name == decision.job_name && j.id > decision.job_id)
        .map(|j| j.id)
        .max())
}
