//! Once-per-job accounting of queue times and failures, with bounded memory.
//!
//! The engine sees the same job many times (every sync re-lists the jobs above the observer's
//! low-water mark; webhooks and resyncs repeat them). A histogram observation or a counter
//! increment per *snapshot* would count a job once per sync. [`JobAccounting`] turns the stream of
//! snapshots into at most one queue-time observation and at most one failure per job.
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
//! # Bounded memory
//! Per project, the ids of jobs already counted are remembered in a sorted map, together with the
//! ids of jobs seen alive (not completed), whose completion is still news. Two things bound it:
//! * [`JobAccounting::prune_below`]: the observer's low-water mark. Every job below it is
//!   completed and has been fed here, so its id is forgotten and any later snapshot of a
//!   completed job below the mark is ignored. Jobs seen alive below the mark (manual or scheduled
//!   jobs, which the observer follows apart so they do not hold the mark back) are kept, so a
//!   manual job played weeks later is still counted when it starts and when it fails.
//! * A hard cap of ids per project ([`JobAccounting::DEFAULT_MAX_IDS_PER_PROJECT`]): past it, the
//!   smallest ids are evicted and the mark is raised above them, so an evicted job is never
//!   counted twice — at worst, under that much pressure, the end of a very old job is not counted.

use crate::gitlab::models::JobStatus;
use crate::gitlab::records::JobRecord;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};

/// What to record for one job snapshot: at most one queue time and one failure per job over the
/// whole life of a [`JobAccounting`]. Hand it to
/// [`Metrics::record_job_events`](crate::metrics::Metrics::record_job_events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobEvents {
    /// Seconds the job waited for a runner, to observe in `job_queued_duration_seconds`.
    pub queued_seconds: Option<f64>,
    /// The job failed: its `failure_reason` (or `unknown`), to count in `job_failures_total`.
    pub failure_reason: Option<String>,
}

impl JobEvents {
    /// True when there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.queued_seconds.is_none() && self.failure_reason.is_none()
    }
}

/// What is remembered about one job id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    /// Last seen in a status that is not completed: its start or failure may still come.
    alive: bool,
    /// Its queue time has been observed.
    queued_counted: bool,
    /// Its failure has been counted.
    failure_counted: bool,
}

impl Seen {
    fn is_worth_keeping(&self) -> bool {
        self.alive || self.queued_counted || self.failure_counted
    }
}

/// The accounting of one project.
#[derive(Debug, Default)]
struct Ledger {
    /// Jobs with a smaller id are settled unless remembered as alive.
    floor: u64,
    seen: BTreeMap<u64, Seen>,
}

/// Decides, snapshot by snapshot, when a job's queue time and failure are recorded, so that each
/// is recorded once per job with memory bounded whatever the fleet size (see the module docs for
/// the exact rules). Pure: no clock, no I/O. One instance per engine; not shared between threads
/// (wrap it in a `Mutex` if it must be).
#[derive(Debug)]
pub struct JobAccounting {
    ledgers: HashMap<String, Ledger>,
    max_ids_per_project: usize,
}

impl Default for JobAccounting {
    fn default() -> Self {
        Self::new()
    }
}

impl JobAccounting {
    /// The default cap of remembered job ids per project.
    pub const DEFAULT_MAX_IDS_PER_PROJECT: usize = 100_000;

    /// An empty accounting with the default cap.
    pub fn new() -> Self {
        Self::with_max_ids_per_project(Self::DEFAULT_MAX_IDS_PER_PROJECT)
    }

    /// An empty accounting remembering at most `max_ids` job ids per project (at least 1).
    pub fn with_max_ids_per_project(max_ids: usize) -> Self {
        JobAccounting {
            ledgers: HashMap::new(),
            max_ids_per_project: max_ids.max(1),
        }
    }

    /// Feeds one snapshot of a job of `project` and returns what to record for it now.
    /// `process_start` is when this process began observing (see the module docs); pass the same
    /// value for the life of the process.
    pub fn observe(
        &mut self,
        project: &str,
        job: &JobRecord,
        process_start: Timestamp,
    ) -> JobEvents {
        let max_ids = self.max_ids_per_project;
        if !self.ledgers.contains_key(project) {
            self.ledgers.insert(project.to_owned(), Ledger::default());
        }
        let Some(ledger) = self.ledgers.get_mut(project) else {
            return JobEvents::default();
        };
        let mut seen = ledger.seen.get(&job.id).copied().unwrap_or_default();
        if job.id < ledger.floor && !seen.alive {
            return JobEvents::default();
        }

        let mut events = JobEvents::default();
        if !seen.queued_counted
            && let Some(seconds) = queued_seconds_since(job, process_start)
        {
            seen.queued_counted = true;
            events.queued_seconds = Some(seconds);
        }
        if !seen.failure_counted && failed_since(job, process_start) {
            seen.failure_counted = true;
            events.failure_reason = Some(
                job.failure_reason()
                    .unwrap_or(crate::metrics::UNKNOWN_FAILURE_REASON)
                    .to_owned(),
            );
        }
        seen.alive = !job.status.is_completed();

        if seen.is_worth_keeping() {
            ledger.seen.insert(job.id, seen);
            ledger.enforce_cap(max_ids);
        } else {
            ledger.seen.remove(&job.id);
        }
        events
    }

    /// The observer's low-water mark for `project`: every job with a smaller id is completed and
    /// has been fed to [`observe`](Self::observe). Forgets those ids; later snapshots of completed
    /// jobs below the mark are ignored. Jobs last seen alive are kept. The mark never moves down.
    pub fn prune_below(&mut self, project: &str, min_job_id: u64) {
        let Some(ledger) = self.ledgers.get_mut(project) else {
            // Nothing counted yet: the mark still applies to what comes next.
            self.ledgers.insert(
                project.to_owned(),
                Ledger {
                    floor: min_job_id,
                    seen: BTreeMap::new(),
                },
            );
            return;
        };
        ledger.floor = ledger.floor.max(min_job_id);
        let floor = ledger.floor;
        // Split off everything at or above the floor, keep only the alive jobs below it.
        let above = ledger.seen.split_off(&floor);
        let below = std::mem::replace(&mut ledger.seen, above);
        ledger
            .seen
            .extend(below.into_iter().filter(|(_, seen)| seen.alive));
    }

    /// Forgets a project that is no longer observed.
    pub fn forget_project(&mut self, project: &str) {
        self.ledgers.remove(project);
    }

    /// How many job ids are remembered for `project`.
    pub fn tracked_ids(&self, project: &str) -> usize {
        self.ledgers
            .get(project)
            .map_or(0, |ledger| ledger.seen.len())
    }

    /// How many job ids are remembered over all projects.
    pub fn total_tracked_ids(&self) -> usize {
        self.ledgers.values().map(|ledger| ledger.seen.len()).sum()
    }
}

impl Ledger {
    /// Evicts the smallest ids past the cap and raises the floor above them, so an evicted job is
    /// settled rather than counted again.
    fn enforce_cap(&mut self, max_ids: usize) {
        while self.seen.len() > max_ids {
            match self.seen.pop_first() {
                Some((id, _)) => self.floor = self.floor.max(id.saturating_add(1)),
                None => break,
            }
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
