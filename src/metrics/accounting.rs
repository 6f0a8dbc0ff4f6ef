//! Once-per-job accounting of queue times and failures.
//!
//! The engine sees the same job many times (every sync re-lists the jobs above the observer's
//! low-water mark; webhooks and resyncs repeat them). A histogram observation or a counter
//! increment per *snapshot* would count a job once per sync. The observer of a project holds
//! the last snapshot of every job that can still change, so a job's queue time and failure are
//! counted from the *change* between the snapshot held and the one just read
//! ([`JobEvents::of_change`]): a job is counted when it is first seen started (or failed), and
//! never again, since the held snapshot then shows it started (or failed). A job neither held
//! nor new (finished, seen before and dropped) counts nothing: whatever it could count was
//! counted when it was held, or before this process observed.
//!
//! # What is counted
//! * **Queue time**: once per job whose `started_at` is at or after `process_start` and whose
//!   queued time is known (GitLab's `queued_duration`, 13.x and later).
//! * **Failure**: once per job with status `failed` whose `finished_at` is at or after
//!   `process_start`.
//!
//! `process_start` is the instant this process began observing GitLab (for a standby replica:
//! when it took the Lease). The rule makes restarts and fail-overs safe: a job that started or
//! failed while an earlier process was observing was counted by that process, and is never
//! counted again by this one. The trade-off: jobs that started or failed while no jobwarden was
//! observing (during a restart, for example) are not counted at all. Counting them would need
//! state that survives the process, and a counter that sometimes counts twice is worse than one
//! that misses a few jobs around a restart.
//!
//! A job never loses its start, and never leaves `success`, `failed` or `canceled` (a retry
//! creates a new job): a snapshot that says otherwise is older than the one held (a lagging
//! replica) and is ignored ([`JobRecord::goes_back_from`]), so no replay counts a job twice.

use crate::gitlab::models::JobStatus;
use crate::gitlab::records::JobRecord;
use jiff::Timestamp;

/// What to record for one job snapshot: at most one queue time and one failure per job. Hand
/// it to [`Metrics::record_job_events`](crate::metrics::Metrics::record_job_events).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobEvents {
    /// Seconds the job waited for a runner, to observe in `job_queued_duration_seconds`.
    pub queued_seconds: Option<f64>,
    /// The job failed: its `failure_reason` (or `unknown`), to count in `job_failures_total`.
    pub failure_reason: Option<&'static str>,
}

impl JobEvents {
    /// True when there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.queued_seconds.is_none() && self.failure_reason.is_none()
    }

    /// What `job` counts, given the snapshot `held` of it, or, when none is held, whether the
    /// job was never seen before (`first_sight`). `process_start`: see the module docs.
    pub fn of_change(
        held: Option<&JobRecord>,
        first_sight: bool,
        job: &JobRecord,
        process_start: Timestamp,
    ) -> JobEvents {
        if held.is_none() && !first_sight {
            return JobEvents::default();
        }
        let started_before = held.is_some_and(|h| h.started_at().is_some());
        let failed_before = held.is_some_and(|h| h.status == JobStatus::Failed);
        JobEvents {
            queued_seconds: if started_before {
                None
            } else {
                queued_seconds_since(job, process_start)
            },
            failure_reason: (!failed_before && failed_since(job, process_start)).then(|| {
                job.failure_reason()
                    .unwrap_or(crate::metrics::UNKNOWN_FAILURE_REASON)
            }),
        }
    }
}

/// The job's queue time, if it started at or after `process_start` and GitLab reports a sane
/// `queued_duration`.
fn queued_seconds_since(job: &JobRecord, process_start: Timestamp) -> Option<f64> {
    let started_at = job.started_at()?.get();
    if started_at < process_start {
        return None;
    }
    job.queued_seconds(started_at)
}

/// True if the job failed at or after `process_start`.
fn failed_since(job: &JobRecord, process_start: Timestamp) -> bool {
    job.status == JobStatus::Failed
        && job
            .finished_at()
            .is_some_and(|finished_at| finished_at.get() >= process_start)
}

#[cfg(test)]
mod tests;
