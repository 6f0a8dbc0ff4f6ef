//! What `decide` reads about a project: its jobs as compact records, with the two lookups
//! over them that rules need, kept up to date as jobs come and go (no per-run rebuild, no copy).

use crate::gitlab::models::ProjectRef;
use crate::gitlab::records::{JobRecord, Name, Stamp};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};

/// What the engine knows about one project of the policy, borrowed for one decision.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub project: &'a ProjectRef,
    /// The project's jobs; may include retried attempts.
    pub jobs: &'a ProjectJobs,
    /// Job lists of pipelines by pipeline id, fetched with `include_retried=true`.
    pub pipeline_jobs: &'a HashMap<u64, Vec<JobRecord>>,
    /// The tail of job logs by job id.
    pub log_tails: &'a HashMap<u64, String>,
}

/// One project's jobs by id, with:
/// - the newest pipeline seen per `(tag, ref, job name)`, for `superseded`;
/// - per pipeline, when its newest retry was created: a retry creates a job, and re-opens the
///   jobs after it (`skipped` → `created`), whose own `created_at` does not move
///   ([`reopened_at`](ProjectJobs::reopened_at));
/// - per `(pipeline, job name)`: the newest attempt seen, so a retried job is known not to be
///   the latest attempt, and how many attempts were seen, so a retry rule can count attempts
///   without listing the pipeline's jobs ([`attempts_of`](ProjectJobs::attempts_of)).
///
/// The lookups remember jobs that are no longer kept: a finished job dropped because no rule can
/// act on it still tells that its pipeline superseded an older one, or that it is a newer
/// attempt. Their entries go when no kept job can ask for them ([`ProjectJobs::retain`]).
///
/// # When attempt counts are complete
/// The project job list includes retried attempts (notes §5), so an observer that has listed
/// every job created since some time `T` has seen every attempt of every pipeline created since
/// `T`: it says so with [`set_complete_since`](ProjectJobs::set_complete_since), and counts each
/// job once, when it is first seen ([`insert_new`](ProjectJobs::insert_new)). A pipeline's counts
/// stay complete while it has a kept job; once its entries are dropped the pipeline is
/// remembered as *forgotten* (an id and a time, until it falls behind `T`), and a later attempt
/// of it is counted from the pipeline's job list again.
#[derive(Debug, Default, Clone)]
pub struct ProjectJobs {
    /// Kept jobs by ascending id: a sorted vector, a third less memory than a tree for the
    /// few dozen jobs a project keeps.
    jobs: Vec<JobRecord>,
    newest_pipeline: HashMap<(bool, Name, Name), u64>,
    attempts: HashMap<(u64, Name), Attempts>,
    /// The creation of the newest retry seen in each pipeline with a kept job.
    retried_at: HashMap<u64, Stamp>,
    complete_since: Option<Timestamp>,
    /// Pipelines created since `complete_since` whose attempt entries were dropped, with the
    /// second each was created.
    forgotten: HashMap<u64, i64>,
}

/// The attempts of one job name in one pipeline (40 bytes: there is one per kept job).
#[derive(Debug, Clone, Copy)]
struct Attempts {
    newest: u64,
    /// The first attempt seen: when it is older than `newest`, the job was retried.
    oldest: u64,
    /// When the newest attempt was created.
    newest_created: Stamp,
    seen: u32,
    /// The second the pipeline was created, or [`UNKNOWN_SECOND`].
    pipeline_created: i64,
}

/// A pipeline creation time GitLab did not tell.
const UNKNOWN_SECOND: i64 = i64::MIN;

impl ProjectJobs {
    /// An empty set.
    pub fn new() -> ProjectJobs {
        ProjectJobs::default()
    }

    /// Counts `job` in the lookups without keeping it. `first_sight` counts it as one more
    /// attempt of its name in its pipeline: say it only the first time a job is seen.
    pub fn note(&mut self, job: &JobRecord, first_sight: bool) {
        let pipeline = self
            .newest_pipeline
            .entry((job.tag, job.git_ref.clone(), job.name.clone()))
            .or_insert(job.pipeline_id);
        *pipeline = (*pipeline).max(job.pipeline_id);
        let attempts = self
            .attempts
            .entry((job.pipeline_id, job.name.clone()))
            .or_insert(Attempts {
                newest: job.id,
                oldest: job.id,
                newest_created: job.created_at,
                seen: 0,
                pipeline_created: job
                    .pipeline_created_at
                    .map_or(UNKNOWN_SECOND, |t| t.get().as_second()),
            });
        if job.id > attempts.newest {
            attempts.newest = job.id;
            attempts.newest_created = job.created_at;
        }
        attempts.oldest = attempts.oldest.min(job.id);
        if attempts.oldest < attempts.newest {
            let retried = self
                .retried_at
                .entry(job.pipeline_id)
                .or_insert(attempts.newest_created);
            *retried = (*retried).max(attempts.newest_created);
        }
        if first_sight {
            attempts.seen = attempts.seen.saturating_add(1);
        }
    }

    /// Counts and keeps `job`, replacing an older record of it (a job seen before).
    pub fn insert(&mut self, job: JobRecord) {
        self.note(&job, false);
        self.put(job);
    }

    /// Counts and keeps `job`, seen for the first time.
    pub fn insert_new(&mut self, job: JobRecord) {
        self.note(&job, true);
        self.put(job);
    }

    fn put(&mut self, job: JobRecord) {
        match self.position(job.id) {
            Ok(at) => self.jobs[at] = job,
            Err(at) => self.jobs.insert(at, job),
        }
    }

    fn position(&self, id: u64) -> Result<usize, usize> {
        self.jobs.binary_search_by_key(&id, |j| j.id)
    }

    /// Forgets a job (it is gone from GitLab).
    pub fn remove(&mut self, id: u64) -> Option<JobRecord> {
        self.position(id).ok().map(|at| self.jobs.remove(at))
    }

    /// Keeps the jobs for which `keep` holds, then drops the lookup entries no kept job uses.
    /// A pipeline without a kept job loses its attempt counts and becomes forgotten.
    pub fn retain(&mut self, mut keep: impl FnMut(&JobRecord) -> bool) {
        self.jobs.retain(|job| keep(job));
        if self.jobs.capacity() > slack(self.jobs.len()) {
            self.jobs.shrink_to_fit();
        }
        let mut pipeline_keys = HashSet::new();
        let mut pipelines = HashSet::new();
        for job in &self.jobs {
            pipeline_keys.insert((job.tag, &*job.git_ref, &*job.name));
            pipelines.insert(job.pipeline_id);
        }
        self.newest_pipeline
            .retain(|(tag, git_ref, name), _| pipeline_keys.contains(&(*tag, &**git_ref, &**name)));
        self.retried_at
            .retain(|pipeline, _| pipelines.contains(pipeline));
        let complete_since = self.complete_since;
        let forgotten = &mut self.forgotten;
        self.attempts.retain(|(pipeline, _), attempts| {
            let keep = pipelines.contains(pipeline);
            if !keep
                && let Some(since) = complete_since
                && attempts.pipeline_created != UNKNOWN_SECOND
                && attempts.pipeline_created >= since.as_second()
            {
                forgotten.insert(*pipeline, attempts.pipeline_created);
            }
            keep
        });
        // A first sync notes every job of the history; what stays is a small part of it.
        shrink(&mut self.newest_pipeline);
        shrink(&mut self.attempts);
        shrink(&mut self.retried_at);
        shrink(&mut self.forgotten);
    }

    /// Says that every job created at or after `since` has been seen (and counted once), and
    /// forgets what is older than that. Only ever moves forward.
    pub fn set_complete_since(&mut self, since: Timestamp) {
        if self.complete_since.is_some_and(|t| t >= since) {
            return;
        }
        self.complete_since = Some(since);
        let floor = since.as_second();
        self.forgotten.retain(|_, created| *created >= floor);
    }

    /// Since when every job has been seen, if known.
    pub fn complete_since(&self) -> Option<Timestamp> {
        self.complete_since
    }

    /// How many attempts of `job` (same name, same pipeline, `job` included) exist, when every
    /// one of them has been seen; `None` when only the pipeline's job list can tell.
    pub fn attempts_of(&self, job: &JobRecord) -> Option<u32> {
        let since = self.complete_since?;
        let created = job.pipeline_created_at?;
        if created.get() < since || self.forgotten.contains_key(&job.pipeline_id) {
            return None;
        }
        self.attempts
            .get(&(job.pipeline_id, job.name.clone()))
            .filter(|a| a.seen > 0)
            .map(|a| a.seen)
    }

    pub fn get(&self, id: u64) -> Option<&JobRecord> {
        self.position(id).ok().map(|at| &self.jobs[at])
    }

    pub fn contains(&self, id: u64) -> bool {
        self.position(id).is_ok()
    }

    /// The kept jobs, newest (highest id) first.
    pub fn newest_first(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter().rev()
    }

    /// The kept jobs with an id of at least `id`, oldest first.
    pub fn from_id(&self, id: u64) -> impl Iterator<Item = &JobRecord> {
        let from = self.jobs.partition_point(|j| j.id < id);
        self.jobs[from..].iter()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The newest pipeline with a job of this name on this ref, when newer than the job's own.
    pub fn newer_pipeline(&self, job: &JobRecord) -> Option<u64> {
        self.newest_pipeline
            .get(&(job.tag, job.git_ref.clone(), job.name.clone()))
            .copied()
            .filter(|p| *p > job.pipeline_id)
    }

    /// When a job of `job`'s pipeline was last retried, if after `job` was created: the job may
    /// have been re-opened then (a retry of an earlier stage turns the `skipped` jobs after it
    /// back into `created`).
    pub fn reopened_at(&self, job: &JobRecord) -> Option<Timestamp> {
        self.retried_at
            .get(&job.pipeline_id)
            .filter(|t| **t > job.created_at)
            .map(|t| t.get())
    }

    /// True when a newer attempt of the job (same name, same pipeline) has been seen.
    pub fn newer_attempt_seen(&self, job: &JobRecord) -> bool {
        self.attempts
            .get(&(job.pipeline_id, job.name.clone()))
            .is_some_and(|a| a.newest > job.id)
    }
}

/// Gives back the memory of a map that is much larger than what it holds.
fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > slack(map.len()) {
        map.shrink_to_fit();
    }
}

/// The capacity past which a collection of `len` items is shrunk: a quarter more, and a few.
fn slack(len: usize) -> usize {
    len + len / 4 + 4
}

impl FromIterator<JobRecord> for ProjectJobs {
    fn from_iter<I: IntoIterator<Item = JobRecord>>(iter: I) -> ProjectJobs {
        let mut jobs = ProjectJobs::new();
        for job in iter {
            jobs.insert_new(job);
        }
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::models::JobStatus;
    use crate::policy::test_support::{failed, job, mins, now};

    fn complete_jobs() -> ProjectJobs {
        let mut jobs = ProjectJobs::new();
        jobs.set_complete_since(now() - mins(24 * 60));
        jobs
    }

    #[test]
    fn attempts_are_counted_once_each_when_every_job_was_seen() {
        let mut jobs = complete_jobs();
        let first = failed(10, 3, "rspec", "stuck_or_timeout_failure");
        let second = failed(12, 3, "rspec", "stuck_or_timeout_failure");
        jobs.note(&first, true);
        jobs.insert_new(second.clone());
        // Seen again by later listings: not new attempts.
        jobs.insert(second.clone());
        jobs.note(&first, false);
        assert_eq!(jobs.attempts_of(&second), Some(2));
        assert!(jobs.newer_attempt_seen(&first));
        assert!(!jobs.newer_attempt_seen(&second));
    }

    #[test]
    fn counts_are_unknown_without_complete_history_or_for_older_pipelines() {
        let recent = failed(12, 3, "rspec", "stuck_or_timeout_failure");
        let unknown: ProjectJobs = [recent.clone()].into_iter().collect();
        assert_eq!(
            unknown.attempts_of(&recent),
            None,
            "no completeness claimed"
        );

        let mut jobs = complete_jobs();
        let mut old = failed(5, 1, "lint", "stuck_or_timeout_failure");
        old.pipeline_created_at = Some((now() - mins(25 * 60)).into());
        jobs.insert_new(old.clone());
        assert_eq!(
            jobs.attempts_of(&old),
            None,
            "pipeline older than the history"
        );
        let mut undated = recent.clone();
        undated.pipeline_created_at = None;
        jobs.insert_new(undated.clone());
        assert_eq!(jobs.attempts_of(&undated), None, "pipeline time unknown");
    }

    #[test]
    fn a_pipeline_whose_counts_were_dropped_is_never_counted_again() {
        let mut jobs = complete_jobs();
        let passed = job(20, 7, "deploy", JobStatus::Success);
        jobs.insert_new(passed.clone());
        jobs.retain(|_| false);
        // Someone retries the job much later: this attempt is the second, not the first.
        let again = failed(30, 7, "deploy", "stuck_or_timeout_failure");
        jobs.insert_new(again.clone());
        assert_eq!(jobs.attempts_of(&again), None);
        // Other pipelines are unaffected.
        let other = failed(31, 8, "deploy", "stuck_or_timeout_failure");
        jobs.insert_new(other.clone());
        assert_eq!(jobs.attempts_of(&other), Some(1));
    }

    #[test]
    fn forgotten_pipelines_age_out_with_the_history() {
        let mut jobs = complete_jobs();
        jobs.insert_new(job(20, 7, "deploy", JobStatus::Success));
        jobs.retain(|_| false);
        assert_eq!(jobs.forgotten.len(), 1);
        jobs.set_complete_since(now());
        assert!(
            jobs.forgotten.is_empty(),
            "older than what is trusted anyway"
        );
    }
}
