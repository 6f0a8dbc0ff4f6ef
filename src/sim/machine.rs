//! GitLab's job state machine (`docs/gitlab-behaviour.md` §2): the events, the statuses each one
//! may leave, the timestamps each status sets, and the predicates the API checks (retryable,
//! playable, erasable).

use crate::sim::clock::SimTime;
use crate::sim::state::{Job, JobKind};
use crate::sim::status::{Status, When};

/// The reason recorded when a job fails without one.
pub(crate) const UNKNOWN_FAILURE: &str = "unknown_failure";

/// Puts a job into `status` at time `t`, applying GitLab's timestamp rules without checking
/// that an event leads there:
/// * `pending` sets `queued_at`;
/// * `running` sets `started_at` (and `queued_at` if the job was never queued);
/// * `success`, `failed`, `canceled` set `finished_at`;
/// * `failed` records the failure reason (`unknown_failure` when none is given);
/// * going back to a status before completion clears the later timestamps.
pub(crate) fn enter(job: &mut Job, status: Status, t: SimTime, failure_reason: Option<&str>) {
    match status {
        Status::Created => {
            job.queued_at = None;
            job.started_at = None;
            job.finished_at = None;
        }
        Status::Pending => {
            job.queued_at = Some(t);
            job.started_at = None;
            job.finished_at = None;
        }
        Status::Running => {
            job.queued_at.get_or_insert(t);
            job.started_at = Some(t);
            job.finished_at = None;
        }
        Status::Success | Status::Failed | Status::Canceled => {
            job.finished_at = Some(t);
        }
        Status::WaitingForResource
        | Status::Preparing
        | Status::WaitingForCallback
        | Status::Manual
        | Status::Scheduled => {
            job.finished_at = None;
        }
        Status::Canceling | Status::Skipped => {}
    }
    job.failure_reason =
        (status == Status::Failed).then(|| failure_reason.unwrap_or(UNKNOWN_FAILURE).to_owned());
    job.status = status;
    job.updated_at = t;
    job.epoch += 1;
}

/// Whether GitLab fires a Job Hook for a build that moved from `from` to `to` (`None`: the build
/// was just created, `after_create`, whatever its status). `Ci::Build` executes its job hooks after
/// create, on `any => pending`, on `pending => running` and on the completion statuses `success`,
/// `failed` and `canceled` (`docs/gitlab-behaviour.md` §10.1). The simulator also fires on a forced
/// move into `running` from elsewhere (a test jumping over `pending`); a "move" to the status the
/// job already has fires nothing.
pub(crate) fn fires_hook(from: Option<Status>, to: Status) -> bool {
    match from {
        None => true,
        Some(from) if from == to => false,
        Some(_) => matches!(
            to,
            Status::Pending | Status::Running | Status::Success | Status::Failed | Status::Canceled
        ),
    }
}

/// `enqueue`: created, skipped, manual, scheduled → pending.
pub(crate) fn enqueue(job: &mut Job, t: SimTime) -> bool {
    fire(
        job,
        &[
            Status::Created,
            Status::Skipped,
            Status::Manual,
            Status::Scheduled,
        ],
        Status::Pending,
        t,
        None,
    )
}

/// `run`: pending → running.
pub(crate) fn run(job: &mut Job, t: SimTime) -> bool {
    fire(job, &[Status::Pending], Status::Running, t, None)
}

/// `success`: canceling → canceled; created, waiting, preparing, pending, running → success.
pub(crate) fn succeed(job: &mut Job, t: SimTime) -> bool {
    if job.status == Status::Canceling {
        enter(job, Status::Canceled, t, None);
        return true;
    }
    fire(job, BEFORE_COMPLETION, Status::Success, t, None)
}

/// `drop`: canceling → canceled; anything alive or blocked → failed with `reason`.
pub(crate) fn drop_job(job: &mut Job, t: SimTime, reason: &str) -> bool {
    if job.status == Status::Canceling {
        enter(job, Status::Canceled, t, None);
        return true;
    }
    let droppable = [
        Status::Created,
        Status::WaitingForResource,
        Status::Preparing,
        Status::WaitingForCallback,
        Status::Pending,
        Status::Running,
        Status::Manual,
        Status::Scheduled,
    ];
    fire(job, &droppable, Status::Failed, t, Some(reason))
}

/// `cancel`: every cancelable status (and `manual`) → canceled. The simulated runners do not
/// support graceful cancellation, so a running job is canceled at once (no `canceling`).
/// Finished jobs are left unchanged (the REST endpoint still answers 201).
pub(crate) fn cancel(job: &mut Job, t: SimTime) -> bool {
    if job.status.is_cancelable() {
        enter(job, Status::Canceled, t, None);
        true
    } else {
        false
    }
}

/// `skip`: created, waiting_for_resource, preparing, pending → skipped.
pub(crate) fn skip(job: &mut Job, t: SimTime) -> bool {
    fire(
        job,
        &[
            Status::Created,
            Status::WaitingForResource,
            Status::Preparing,
            Status::Pending,
        ],
        Status::Skipped,
        t,
        None,
    )
}

/// `actionize`: created → manual.
pub(crate) fn actionize(job: &mut Job, t: SimTime) -> bool {
    fire(job, &[Status::Created], Status::Manual, t, None)
}

const BEFORE_COMPLETION: &[Status] = &[
    Status::Created,
    Status::WaitingForResource,
    Status::Preparing,
    Status::WaitingForCallback,
    Status::Pending,
    Status::Running,
];

fn fire(job: &mut Job, from: &[Status], to: Status, t: SimTime, reason: Option<&str>) -> bool {
    if from.contains(&job.status) {
        enter(job, to, t, reason);
        true
    } else {
        false
    }
}

/// `Ci::Processable#retryable?`: finished (or canceling), not retried, not archived; bridges that
/// failed on a pipeline loop or depth limit never are.
pub(crate) fn retryable(job: &Job, archived: bool) -> bool {
    if job.retried || archived {
        return false;
    }
    if job.kind == JobKind::Bridge
        && job.status == Status::Failed
        && matches!(
            job.failure_reason.as_deref(),
            Some("pipeline_loop_detected" | "reached_max_descendant_pipelines_depth")
        )
    {
        return false;
    }
    matches!(
        job.status,
        Status::Success | Status::Failed | Status::Canceled | Status::Canceling
    )
}

/// `playable?`: a `when: manual` job that is manual or scheduled, or finished and retryable
/// (playing it then retries it). Bridges are playable only while manual.
pub(crate) fn playable(job: &Job, archived: bool) -> bool {
    if job.when != When::Manual || archived {
        return false;
    }
    match job.kind {
        JobKind::Bridge => job.status == Status::Manual,
        JobKind::Build => {
            matches!(job.status, Status::Manual | Status::Scheduled) || retryable(job, archived)
        }
    }
}

/// `erasable?`: a completed build with artifacts or a log.
pub(crate) fn erasable(job: &Job) -> bool {
    job.kind == JobKind::Build
        && job.status.is_completed()
        && (job.artifacts.is_some() || job.trace.is_some())
}

/// Queued duration (seconds): from queued to started (or now); `None` if never queued.
pub(crate) fn queued_duration(job: &Job, now: SimTime) -> Option<f64> {
    let queued = job.queued_at?;
    Some(job.started_at.unwrap_or(now).seconds_since(queued))
}

/// Duration (seconds): from started to finished (or now); `None` if never started.
pub(crate) fn duration(job: &Job, now: SimTime) -> Option<f64> {
    let started = job.started_at?;
    Some(job.finished_at.unwrap_or(now).seconds_since(started))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sim::state::Trace;

    pub(crate) fn job(status: Status) -> Job {
        Job {
            id: 1,
            project_id: 1,
            pipeline_id: 1,
            kind: JobKind::Build,
            name: "rspec".into(),
            stage: "test".into(),
            stage_idx: 1,
            status,
            failure_reason: None,
            when: When::OnSuccess,
            allow_failure: false,
            retried: false,
            user_id: 1,
            created_at: SimTime(0),
            queued_at: None,
            started_at: None,
            finished_at: None,
            erased_at: None,
            updated_at: SimTime(0),
            coverage: None,
            runner_id: None,
            tag_list: std::sync::Arc::from(Vec::new()),
            artifacts: None,
            artifacts_expire_in: None,
            trace: None,
            variables: Vec::new(),
            epoch: 0,
            planned_epoch: 0,
        }
    }

    #[test]
    fn a_job_lifecycle_sets_timestamps_and_durations() {
        let mut j = job(Status::Created);
        assert!(enqueue(&mut j, SimTime(1_000)));
        assert_eq!(j.queued_at, Some(SimTime(1_000)));
        assert_eq!(queued_duration(&j, SimTime(3_500)), Some(2.5));
        assert_eq!(duration(&j, SimTime(3_500)), None);
        assert!(run(&mut j, SimTime(4_000)));
        assert_eq!(j.started_at, Some(SimTime(4_000)));
        assert_eq!(queued_duration(&j, SimTime(99_000)), Some(3.0));
        assert_eq!(duration(&j, SimTime(10_250)), Some(6.25));
        assert!(drop_job(&mut j, SimTime(14_000), "script_failure"));
        assert_eq!(j.status, Status::Failed);
        assert_eq!(j.failure_reason.as_deref(), Some("script_failure"));
        assert_eq!(j.finished_at, Some(SimTime(14_000)));
        assert_eq!(duration(&j, SimTime(99_000)), Some(10.0));
    }

    #[test]
    fn events_only_leave_their_source_statuses() {
        let mut j = job(Status::Success);
        assert!(!run(&mut j, SimTime(1)));
        assert!(!cancel(&mut j, SimTime(1)));
        assert!(!skip(&mut j, SimTime(1)));
        assert_eq!(j.status, Status::Success);
        assert_eq!(j.epoch, 0);

        let mut canceling = job(Status::Canceling);
        assert!(succeed(&mut canceling, SimTime(5)));
        assert_eq!(canceling.status, Status::Canceled);

        let mut manual = job(Status::Manual);
        assert!(drop_job(&mut manual, SimTime(5), UNKNOWN_FAILURE));
        assert_eq!(manual.failure_reason.as_deref(), Some(UNKNOWN_FAILURE));

        let mut running = job(Status::Running);
        assert!(cancel(&mut running, SimTime(7)));
        assert_eq!(running.status, Status::Canceled);
        assert_eq!(running.finished_at, Some(SimTime(7)));
    }

    #[test]
    fn failure_reason_is_cleared_when_leaving_failed() {
        let mut j = job(Status::Pending);
        enter(&mut j, Status::Failed, SimTime(1), None);
        assert_eq!(j.failure_reason.as_deref(), Some(UNKNOWN_FAILURE));
        enter(&mut j, Status::Pending, SimTime(2), None);
        assert_eq!(j.failure_reason, None);
        assert_eq!(j.finished_at, None);
    }

    #[test]
    fn predicates() {
        for (status, expected) in [
            (Status::Success, true),
            (Status::Failed, true),
            (Status::Canceled, true),
            (Status::Canceling, true),
            (Status::Created, false),
            (Status::Pending, false),
            (Status::Running, false),
            (Status::Manual, false),
            (Status::Skipped, false),
        ] {
            assert_eq!(retryable(&job(status), false), expected, "{status}");
        }
        let mut retried = job(Status::Failed);
        retried.retried = true;
        assert!(!retryable(&retried, false));
        assert!(!retryable(&job(Status::Failed), true));

        let mut manual = job(Status::Manual);
        manual.when = When::Manual;
        assert!(playable(&manual, false));
        assert!(!playable(&manual, true));
        manual.status = Status::Success;
        assert!(playable(&manual, false));
        assert!(!playable(&job(Status::Manual), false));

        let mut done = job(Status::Success);
        assert!(!erasable(&done));
        done.trace = Some(Trace::Generated);
        assert!(erasable(&done));
        done.status = Status::Running;
        assert!(!erasable(&done));
    }
}
