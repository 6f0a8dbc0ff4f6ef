//! The conditions of a rule that the job's own fields, the project job list and the clock
//! decide (the first, cheapest tier of [`decide`](super::decide)): whether they hold, checked for
//! every job and rule without allocating, and the notes saying why, written only for the jobs a
//! rule claims.

use super::compile::Conditions;
use super::duration::HumanDuration;
use super::observation::ProjectJobs;
use crate::gitlab::models::JobStatus;
use crate::gitlab::records::JobRecord;
use jiff::{SignedDuration, Timestamp};

/// True when every condition of `c` that the job's own fields, the project job list and the
/// clock decide holds. Allocates nothing: it runs for every job and rule.
pub(super) fn hold(c: &Conditions, job: &JobRecord, index: &ProjectJobs, now: Timestamp) -> bool {
    fields_hold(c, job)
        && c.older_than
            .is_none_or(|min_age| time_in_current_state(job, index, now).0 >= min_age)
        && c.finished_within
            .is_none_or(|within| finished_ago(within, job, now).is_some())
        && c.superseded
            .is_none_or(|want| index.newer_pipeline(job).is_some() == want)
        && c.window.as_ref().is_none_or(|window| window.contains(now))
        && c.artifacts_expire_within
            .is_none_or(|within| artifacts_left(within, job, now).is_some())
}

/// The conditions of `c` that the job's own fields decide, whatever the time: `statuses`,
/// `failureReasons`, the name/stage/ref globs, `tag` and `allowFailure`.
pub(super) fn fields_hold(c: &Conditions, job: &JobRecord) -> bool {
    (c.statuses.is_empty() || c.statuses.contains(&job.status))
        && c.failure_reasons.as_ref().is_none_or(|reasons| {
            job.status == JobStatus::Failed
                && job.failure_reason().is_some_and(|r| reasons.matches(r))
        })
        && c.globs.matches(job)
        && c.tag.is_none_or(|tag| job.tag == tag)
        && c.allow_failure.is_none_or(|a| job.allow_failure == a)
}

/// Why the conditions of `c` hold for a job ([`hold`] said they do): one note per condition
/// set, starting with the job's status.
pub(super) fn notes(
    c: &Conditions,
    job: &JobRecord,
    index: &ProjectJobs,
    now: Timestamp,
) -> Vec<String> {
    let mut why = vec![status_note(c, job)];
    if let Some(tag) = c.tag {
        why.push(flag_note(tag, "tag pipeline", "branch pipeline"));
    }
    if let Some(allow_failure) = c.allow_failure {
        why.push(flag_note(
            allow_failure,
            "allowed to fail",
            "not allowed to fail",
        ));
    }
    if let Some(min_age) = c.older_than {
        why.push(older_than_note(min_age, job, index, now));
    }
    if let Some(within) = c.finished_within {
        let ago = finished_ago(within, job, now).unwrap_or_default();
        why.push(format!(
            "finished {} ago (finishedWithin {})",
            HumanDuration(ago),
            HumanDuration(within)
        ));
    }
    if c.superseded.is_some() {
        why.push(superseded_note(job, index));
    }
    if let Some(window) = &c.window {
        why.push(format!("inside window {window}"));
    }
    if let Some(within) = c.artifacts_expire_within {
        let left = artifacts_left(within, job, now).unwrap_or_default();
        why.push(format!(
            "artifacts expire in {} (artifactsExpireWithin {})",
            HumanDuration(left),
            HumanDuration(within)
        ));
    }
    why
}

/// The note of the job's status, and of its failure reason when `failureReasons` is set.
fn status_note(c: &Conditions, job: &JobRecord) -> String {
    let mut note = job.status.to_string();
    if c.failure_reasons.is_some()
        && let Some(reason) = job.failure_reason()
    {
        note.push_str(" with ");
        note.push_str(reason);
        if let Some(alias_of) = c
            .failure_reasons
            .as_ref()
            .and_then(|reasons| reasons.matched_alias_of(reason))
        {
            note.push_str(&format!(" (alias of {alias_of})"));
        }
    }
    note
}

/// The note of a yes/no condition (`tag`, `allowFailure`) that holds: `if_true` or `if_false`
/// as the wanted value says.
fn flag_note(want: bool, if_true: &str, if_false: &str) -> String {
    if want { if_true } else { if_false }.to_owned()
}

/// The note of `olderThan`: how long the job has been in its current state.
fn older_than_note(
    min_age: SignedDuration,
    job: &JobRecord,
    index: &ProjectJobs,
    now: Timestamp,
) -> String {
    let (age, since) = time_in_current_state(job, index, now);
    format!(
        "{since} {} ago (olderThan {})",
        HumanDuration(age),
        HumanDuration(min_age)
    )
}

/// The note of `superseded`: the newer pipeline on the job's ref, if any.
fn superseded_note(job: &JobRecord, index: &ProjectJobs) -> String {
    match index.newer_pipeline(job) {
        Some(p) => format!("superseded by pipeline #{p} on {}", job.git_ref()),
        None => "not superseded".to_owned(),
    }
}

/// `artifactsExpireWithin`: how long the job's artifacts have left when they expire within
/// `within` and have not expired yet (expired artifacts are gone: GitLab answers a keep with
/// 404); `None` otherwise.
fn artifacts_left(
    within: SignedDuration,
    job: &JobRecord,
    now: Timestamp,
) -> Option<SignedDuration> {
    let left = job.artifacts_expire_at()?.get().duration_since(now);
    (left <= within && left.is_positive()).then_some(left)
}

/// `finishedWithin`: how long ago the job finished, when that is at most `within`; `None` for a
/// job that finished longer ago or has not finished.
pub(super) fn finished_ago(
    within: SignedDuration,
    job: &JobRecord,
    now: Timestamp,
) -> Option<SignedDuration> {
    let ago = now.duration_since(job.finished_at()?.get());
    (ago <= within).then_some(ago)
}

/// True when `c` has `finishedWithin` and the job finished longer ago than that: time only moves
/// on, so the rule can never act on it.
pub(super) fn finished_too_long_ago(c: &Conditions, job: &JobRecord, now: Timestamp) -> bool {
    c.finished_within.is_some_and(|within| {
        job.finished_at().is_some() && finished_ago(within, job, now).is_none()
    })
}

/// How long a job has been in its current state, as far as GitLab tells, and what that state
/// began with. A pending job counts from when it was queued (`queued_duration`), a running one
/// from when it started, anything else from its creation. So a manual job that was just played,
/// or a job that was just re-queued, is not "old" because its record is. Creation is the later of
/// the job's own and that of the newest job of its pipeline: a retry re-opens the jobs after the
/// retried one (`skipped` → `created`) without changing their `created_at`.
pub(super) fn time_in_current_state(
    job: &JobRecord,
    index: &ProjectJobs,
    now: Timestamp,
) -> (SignedDuration, &'static str) {
    let since_created = match index.reopened_at(job) {
        Some(retried) => (now.duration_since(retried), "pipeline retried"),
        None => (now.duration_since(job.created_at().get()), "created"),
    };
    match job.status {
        JobStatus::Pending => job
            .queued_at()
            .map_or(since_created, |t| (now.duration_since(t.get()), "queued")),
        JobStatus::Running => job
            .started_at()
            .map_or(since_created, |t| (now.duration_since(t.get()), "started")),
        _ => since_created,
    }
}
