//! What `decide` reads about a project: its jobs as compact records, with the two lookups
//! over them that rules need, kept up to date as jobs come and go (no per-run rebuild, no copy).

use crate::gitlab::models::ProjectRef;
use crate::gitlab::records::{JobRecord, Name, Stamp};
use jiff::Timestamp;
use std::cmp::Ordering;
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
/// The project job list includes retried attempts (`docs/gitlab-behaviour.md` §6), so an observer
/// that has listed every job created since some time `T` has seen every attempt of every pipeline
/// created since `T`: it says so with [`set_complete_since`](ProjectJobs::set_complete_since), and
/// counts each job once, when it is first seen ([`insert_new`](ProjectJobs::insert_new)). A
/// pipeline's counts are kept only for the names of its kept jobs; the names whose entries are
/// dropped are remembered per pipeline as *forgotten* (a 64-bit set of name hashes and the
/// pipeline's creation, until it falls behind `T`), and a later attempt of one of them is counted
/// from the pipeline's job list again. A pipeline with no kept job left forgets every name, and
/// needs no entry for it: a pipeline seen before the last [`retain`](ProjectJobs::retain) (its
/// id at most the largest seen then) that has no attempt entry has forgotten every name. (A
/// pipeline whose jobs GitLab showed only after a newer pipeline's counts as forgotten too: a
/// false positive, one listing of its jobs, never a wrong count.) The entries of a project's
/// history are mostly of jobs nobody keeps: a first sync of 200 jobs notes 200 `(pipeline,
/// name)` pairs, of which the few dozen of kept jobs stay.
///
/// The lookups are vectors sorted by key ([`SortedMap`]), not hash maps: a project holds a few
/// dozen entries of each, and a hash map's spare buckets (it is at most seven-eighths full,
/// often half) made them the largest part of the memory kept per project.
#[derive(Debug, Default, Clone)]
pub struct ProjectJobs {
    /// Kept jobs by ascending id: a sorted vector, a third less memory than a tree for the
    /// few dozen jobs a project keeps.
    jobs: Vec<JobRecord>,
    /// By `(tag, ref, name)`.
    newest_pipeline: SortedMap<(bool, Name, Name), u64>,
    /// By `(pipeline, name)`, the newest pipeline first (a listing, newest first, appends).
    attempts: SortedMap<(u64, Name), Attempts>,
    /// The creation of the newest retry seen in each pipeline with a kept job, newest pipeline
    /// first.
    retried_at: SortedMap<u64, Stamp>,
    complete_since: Option<Timestamp>,
    /// Pipelines created since `complete_since` with a kept job and some of whose attempt
    /// entries were dropped, newest pipeline first.
    forgotten: SortedMap<u64, Forgotten>,
    /// The largest pipeline id noted before the last [`retain`](ProjectJobs::retain): a pipeline
    /// up to it without attempt entries has forgotten every name.
    pipelines_seen_up_to: u64,
}

/// How a `newest_pipeline` key compares to `(tag, ref, name)`.
fn ref_order(key: &(bool, Name, Name), tag: bool, git_ref: &str, name: &str) -> Ordering {
    key.0
        .cmp(&tag)
        .then_with(|| (*key.1).cmp(git_ref))
        .then_with(|| (*key.2).cmp(name))
}

/// How an `attempts` key compares to `(pipeline, name)`: newer pipelines first.
fn attempt_order(key: &(u64, Name), pipeline: u64, name: &str) -> Ordering {
    pipeline.cmp(&key.0).then_with(|| (*key.1).cmp(name))
}

/// How a pipeline key compares to `pipeline`: newer pipelines first.
fn pipeline_order(key: &u64, pipeline: u64) -> Ordering {
    pipeline.cmp(key)
}

/// The job names of one pipeline whose attempt entries were dropped.
#[derive(Debug, Clone, Copy)]
struct Forgotten {
    /// When the pipeline was created.
    created: PipelineSecond,
    /// One bit per dropped name (a bit chosen by the name's hash). A name whose bit is set has
    /// unknown attempt counts: a false positive costs one listing of the pipeline's jobs, never
    /// a wrong count.
    names: u64,
}

impl Forgotten {
    const EVERY_NAME: u64 = u64::MAX;

    fn contains(&self, name: &str) -> bool {
        self.names & name_bit(name) != 0
    }
}

/// The bit of a name in [`Forgotten::names`] (a hash that only has to agree with itself
/// within one process).
fn name_bit(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    1 << (hasher.finish() % 64)
}

/// The attempts of one job name in one pipeline (32 bytes: there is one per kept job).
#[derive(Debug, Clone, Copy)]
struct Attempts {
    newest: u64,
    /// When the newest attempt was created.
    newest_created: Stamp,
    seen: u32,
    pipeline_created: PipelineSecond,
    /// More than one attempt was seen: the job was retried.
    retried: bool,
    /// Attempts of this name were seen and dropped before this entry was made: `seen` is not
    /// every attempt.
    incomplete: bool,
}

/// The second a pipeline was created, in 4 bytes: seconds since 2020-01-01, or unknown (GitLab
/// did not tell, or before 2020: older than any history, so nothing is counted for it anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PipelineSecond(u32);

impl PipelineSecond {
    const UNKNOWN: PipelineSecond = PipelineSecond(0);
    /// 2020-01-01T00:00:00Z.
    const EPOCH: i64 = 1_577_836_800;

    fn of(created: Option<Stamp>) -> PipelineSecond {
        created
            .map(|t| t.get().as_second() - PipelineSecond::EPOCH)
            .filter(|seconds| *seconds > 0)
            .and_then(|seconds| u32::try_from(seconds).ok())
            .map_or(PipelineSecond::UNKNOWN, PipelineSecond)
    }

    /// True when known and at or after `since`.
    fn at_or_after(self, since: Timestamp) -> bool {
        self != PipelineSecond::UNKNOWN
            && i64::from(self.0) + PipelineSecond::EPOCH >= since.as_second()
    }
}

impl ProjectJobs {
    /// An empty set.
    pub fn new() -> ProjectJobs {
        ProjectJobs::default()
    }

    /// Counts `job` in the lookups without keeping it. `first_sight` counts it as one more
    /// attempt of its name in its pipeline: say it only the first time a job is seen.
    pub fn note(&mut self, job: &JobRecord, first_sight: bool) {
        let pipeline = self.newest_pipeline.entry(
            |k| ref_order(k, job.tag, job.git_ref(), job.name()),
            || {
                (
                    (job.tag, job.git_ref().clone(), job.name().clone()),
                    job.pipeline_id,
                )
            },
        );
        *pipeline = (*pipeline).max(job.pipeline_id);
        // A new attempt of a name whose entries were dropped: the job was retried, and its
        // earlier attempts are not counted here.
        let incomplete = self.is_forgotten(job.pipeline_id, job.name());
        if incomplete {
            // A pipeline forgotten without an entry has forgotten every name: say so with one
            // (none is made when it has one) before this name's new entry makes the pipeline
            // look new to its other names.
            let created = PipelineSecond::of(job.pipeline_created_at());
            self.forgotten.entry(
                |k| pipeline_order(k, job.pipeline_id),
                || {
                    (
                        job.pipeline_id,
                        Forgotten {
                            created,
                            names: Forgotten::EVERY_NAME,
                        },
                    )
                },
            );
        }
        let attempts = self.attempts.entry(
            |k| attempt_order(k, job.pipeline_id, job.name()),
            || {
                let attempts = Attempts {
                    newest: job.id,
                    newest_created: job.created_at(),
                    seen: 0,
                    retried: false,
                    incomplete,
                    pipeline_created: PipelineSecond::of(job.pipeline_created_at()),
                };
                ((job.pipeline_id, job.name().clone()), attempts)
            },
        );
        if job.id != attempts.newest {
            attempts.retried = true;
        }
        if job.id > attempts.newest {
            attempts.newest = job.id;
            attempts.newest_created = job.created_at();
        }
        if attempts.retried || attempts.incomplete {
            let newest_created = attempts.newest_created;
            let retried = self.retried_at.entry(
                |k| pipeline_order(k, job.pipeline_id),
                || (job.pipeline_id, newest_created),
            );
            *retried = (*retried).max(newest_created);
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
            Err(at) => {
                // Grow by an eighth, not by doubling: the jobs an action returns (a retry's new
                // attempt) arrive one by one, and the spare room of 120-byte records was the
                // largest part of the peak at 5,000 projects.
                grow(&mut self.jobs);
                self.jobs.insert(at, job);
            }
        }
    }

    /// Gives back the memory of the jobs let go since the list was last this small: a project
    /// whose backlog was just acted on holds its new size, not its largest.
    pub fn shrink(&mut self) {
        shrink(&mut self.jobs);
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
        self.shrink();
        let mut pipeline_keys = HashSet::new();
        let mut pipelines = HashSet::new();
        let mut attempt_keys = HashSet::new();
        for job in &self.jobs {
            pipeline_keys.insert((job.tag, &**job.git_ref(), &**job.name()));
            pipelines.insert(job.pipeline_id);
            attempt_keys.insert((job.pipeline_id, &**job.name()));
        }
        self.newest_pipeline
            .retain(|(tag, git_ref, name), _| pipeline_keys.contains(&(*tag, &**git_ref, &**name)));
        self.retried_at
            .retain(|pipeline, _| pipelines.contains(pipeline));
        // The attempt entries are sorted newest pipeline first.
        if let Some(((newest, _), _)) = self.attempts.0.first() {
            self.pipelines_seen_up_to = self.pipelines_seen_up_to.max(*newest);
        }
        let complete_since = self.complete_since;
        let forgotten = &mut self.forgotten;
        // A pipeline without a kept job forgets every name without an entry.
        forgotten.retain(|pipeline, _| pipelines.contains(pipeline));
        self.attempts.retain(|(pipeline, name), attempts| {
            let keep = attempt_keys.contains(&(*pipeline, &**name));
            if !keep
                && pipelines.contains(pipeline)
                && let Some(since) = complete_since
                && attempts.pipeline_created.at_or_after(since)
            {
                let names = name_bit(name);
                let created = attempts.pipeline_created;
                forgotten
                    .entry(
                        |k| pipeline_order(k, *pipeline),
                        || (*pipeline, Forgotten { created, names: 0 }),
                    )
                    .names |= names;
            }
            keep
        });
        // A first sync notes every job of the history; what stays is a small part of it.
        self.newest_pipeline.shrink();
        self.attempts.shrink();
        self.retried_at.shrink();
        self.forgotten.shrink();
    }

    /// Says that every job created at or after `since` has been seen (and counted once), and
    /// forgets what is older than that. Only ever moves forward.
    pub fn set_complete_since(&mut self, since: Timestamp) {
        if self.complete_since.is_some_and(|t| t >= since) {
            return;
        }
        self.complete_since = Some(since);
        self.forgotten.retain(|_, f| f.created.at_or_after(since));
    }

    /// True when the attempt entry of `name` in `pipeline` was dropped: explicitly, or with
    /// every entry of a pipeline seen before (see the type's docs).
    fn is_forgotten(&self, pipeline: u64, name: &str) -> bool {
        match self.forgotten.get(|k| pipeline_order(k, pipeline)) {
            Some(f) => f.contains(name),
            None => pipeline <= self.pipelines_seen_up_to && !self.has_attempts_in(pipeline),
        }
    }

    /// True when some name of `pipeline` has an attempt entry.
    fn has_attempts_in(&self, pipeline: u64) -> bool {
        let at = self.attempts.0.partition_point(|((p, _), _)| *p > pipeline);
        self.attempts
            .0
            .get(at)
            .is_some_and(|((p, _), _)| *p == pipeline)
    }

    /// Since when every job has been seen, if known.
    pub fn complete_since(&self) -> Option<Timestamp> {
        self.complete_since
    }

    /// How many attempts of `job` (same name, same pipeline, `job` included) exist, when every
    /// one of them has been seen; `None` when only the pipeline's job list can tell.
    pub fn attempts_of(&self, job: &JobRecord) -> Option<u32> {
        let since = self.complete_since?;
        let created = job.pipeline_created_at()?;
        if created.get() < since {
            return None;
        }
        self.attempts
            .get(|k| attempt_order(k, job.pipeline_id, job.name()))
            .filter(|a| a.seen > 0 && !a.incomplete)
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
        self.newest_pipeline_of(job.tag, job.git_ref(), job.name())
            .filter(|p| *p > job.pipeline_id)
    }

    /// The newest pipeline seen with a job named `name` on `git_ref` (a tag when `tag`).
    pub fn newest_pipeline_of(&self, tag: bool, git_ref: &str, name: &str) -> Option<u64> {
        self.newest_pipeline
            .get(|k| ref_order(k, tag, git_ref, name))
            .copied()
    }

    /// When a job of `job`'s pipeline was last retried, if after `job` was created: the job may
    /// have been re-opened then (a retry of an earlier stage turns the `skipped` jobs after it
    /// back into `created`).
    pub fn reopened_at(&self, job: &JobRecord) -> Option<Timestamp> {
        self.retried_at
            .get(|k| pipeline_order(k, job.pipeline_id))
            .filter(|t| **t > job.created_at())
            .map(|t| t.get())
    }

    /// True when a newer attempt of the job (same name, same pipeline) has been seen.
    pub fn newer_attempt_seen(&self, job: &JobRecord) -> bool {
        self.attempts
            .get(|k| attempt_order(k, job.pipeline_id, job.name()))
            .is_some_and(|a| a.newest > job.id)
    }
}

/// A map kept as a vector of entries sorted by key, each entry found by binary search with a
/// comparison of a key to the one looked for (so a lookup by borrowed parts builds no key).
/// It grows by a quarter and is shrunk back when much larger than what it holds.
#[derive(Debug, Clone)]
struct SortedMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<K, V> SortedMap<K, V> {
    /// The value of the key that `order` says is equal to the one looked for.
    fn get(&self, order: impl Fn(&K) -> Ordering) -> Option<&V> {
        let at = self.0.binary_search_by(|(k, _)| order(k)).ok()?;
        Some(&self.0[at].1)
    }

    /// The value of the key looked for, inserted from `make` when absent.
    fn entry(&mut self, order: impl Fn(&K) -> Ordering, make: impl FnOnce() -> (K, V)) -> &mut V {
        let at = match self.0.binary_search_by(|(k, _)| order(k)) {
            Ok(at) => at,
            Err(at) => {
                grow(&mut self.0);
                self.0.insert(at, make());
                at
            }
        };
        &mut self.0[at].1
    }

    /// Keeps the entries for which `keep` holds.
    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    /// Gives back the memory of a vector much larger than what it holds.
    fn shrink(&mut self) {
        shrink(&mut self.0);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The room a vector of `len` items is given when it grows or shrinks: an eighth more, and one.
fn roomy(len: usize) -> usize {
    len + len / 8 + 1
}

/// Makes room for one more item when `items` is full (to [`roomy`]).
fn grow<T>(items: &mut Vec<T>) {
    if items.len() == items.capacity() {
        items.reserve_exact(roomy(items.len()) - items.len());
    }
}

/// Gives back the room of a vector that holds much less than it could: past a quarter more
/// than its items, and a few, it is shrunk to [`roomy`] (not below, so the next item does not
/// make it grow at once).
fn shrink<T>(items: &mut Vec<T>) {
    let len = items.len();
    if items.capacity() > len + len / 4 + 4 {
        items.shrink_to(roomy(len));
    }
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
        assert!(std::mem::size_of::<Attempts>() <= 32);
    }

    #[test]
    fn a_pipeline_second_is_known_from_2020_on() {
        let at = |s: &str| Some(Stamp::new(s.parse().unwrap()));
        let created = PipelineSecond::of(at("2026-11-23T10:00:00Z"));
        assert!(created.at_or_after("2026-11-23T10:00:00Z".parse().unwrap()));
        assert!(!created.at_or_after("2026-11-23T10:00:01Z".parse().unwrap()));
        assert_eq!(
            PipelineSecond::of(at("2019-12-31T23:59:59Z")),
            PipelineSecond::UNKNOWN
        );
        assert_eq!(PipelineSecond::of(None), PipelineSecond::UNKNOWN);
        assert!(!PipelineSecond::UNKNOWN.at_or_after(Timestamp::MIN));
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
        old.set_pipeline_created_at(Some((now() - mins(25 * 60)).into()));
        jobs.insert_new(old.clone());
        assert_eq!(
            jobs.attempts_of(&old),
            None,
            "pipeline older than the history"
        );
        let mut undated = recent.clone();
        undated.set_pipeline_created_at(None);
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
    fn only_the_names_of_kept_jobs_keep_their_counts_and_a_dropped_name_is_never_miscounted() {
        let mut jobs = complete_jobs();
        let stuck = failed(21, 7, "deploy", "stuck_or_timeout_failure");
        jobs.insert_new(stuck.clone());
        for (id, name) in [(20, "build"), (22, "lint"), (23, "rspec")] {
            jobs.insert_new(job(id, 7, name, JobStatus::Success));
        }
        jobs.retain(|j| j.status == JobStatus::Failed);
        assert_eq!(jobs.attempts.len(), 1, "one entry: the kept job's");
        assert_eq!(jobs.attempts_of(&stuck), Some(1));
        assert_eq!(jobs.reopened_at(&stuck), None);
        // Someone retries `lint`, whose first attempt was dropped: its count is unknown (the
        // pipeline's job list tells), and the pipeline was retried.
        let mut again = failed(30, 7, "lint", "stuck_or_timeout_failure");
        again.set_created_at((now() - mins(1)).into());
        jobs.insert_new(again.clone());
        assert_eq!(jobs.attempts_of(&again), None);
        assert_eq!(jobs.reopened_at(&stuck), Some(now() - mins(1)));
        // The kept job's own count is untouched.
        assert_eq!(jobs.attempts_of(&stuck), Some(1));
    }

    #[test]
    fn lookups_find_every_entry_whatever_the_order_jobs_come_in() {
        let mut jobs = complete_jobs();
        // Pipelines 1..=40, two names each, on two refs, noted in a scrambled order.
        let mut all = Vec::new();
        for pipeline in 1..=40u64 {
            for (n, name) in ["build", "rspec"].into_iter().enumerate() {
                let mut j = job(pipeline * 10 + n as u64, pipeline, name, JobStatus::Running);
                j.set_git_ref(if pipeline % 2 == 0 { "main" } else { "dev" });
                all.push(j);
            }
        }
        for step in 0..all.len() {
            jobs.insert_new(all[(step * 37) % all.len()].clone());
        }
        for j in &all {
            assert_eq!(jobs.attempts_of(j), Some(1), "{}", j.id);
            let newest = if j.git_ref() == "main" { 40 } else { 39 };
            assert_eq!(
                jobs.newest_pipeline_of(false, j.git_ref(), j.name()),
                Some(newest)
            );
            assert_eq!(
                jobs.newer_pipeline(j),
                Some(newest).filter(|p| *p > j.pipeline_id)
            );
        }
        assert_eq!(jobs.attempts.len(), 80);
        assert_eq!(jobs.newest_pipeline_of(true, "main", "build"), None);
    }

    #[test]
    fn forgotten_pipelines_age_out_with_the_history() {
        let mut jobs = complete_jobs();
        jobs.insert_new(job(20, 7, "deploy", JobStatus::Success));
        jobs.insert_new(job(21, 7, "notify", JobStatus::Success));
        jobs.retain(|j| j.id == 21);
        assert_eq!(jobs.forgotten.len(), 1);
        jobs.set_complete_since(now());
        assert!(
            jobs.forgotten.is_empty(),
            "older than what is trusted anyway"
        );
    }

    #[test]
    fn a_pipeline_with_no_kept_job_forgets_every_name_without_an_entry() {
        let mut jobs = complete_jobs();
        jobs.insert_new(job(20, 7, "deploy", JobStatus::Success));
        jobs.insert_new(job(30, 8, "build", JobStatus::Success));
        jobs.retain(|_| false);
        assert!(jobs.forgotten.is_empty(), "no entry per pipeline");
        // A later attempt in a pipeline seen before: its earlier attempts are not known.
        let retried = failed(40, 7, "deploy", "stuck_or_timeout_failure");
        jobs.insert_new(retried.clone());
        assert_eq!(jobs.attempts_of(&retried), None);
        // Another name of the same pipeline, after that one: still forgotten.
        let other = failed(44, 7, "build", "stuck_or_timeout_failure");
        jobs.insert_new(other.clone());
        assert_eq!(
            jobs.attempts_of(&other),
            None,
            "not new because a sibling came first"
        );
        // A pipeline newer than every one seen before the pruning is new: counted from 1.
        let fresh = failed(41, 9, "deploy", "stuck_or_timeout_failure");
        jobs.insert_new(fresh.clone());
        assert_eq!(jobs.attempts_of(&fresh), Some(1));
        // So is a pipeline seen in the same sync, before any pruning, whatever the order.
        let older_in_sync = failed(42, 5, "test", "stuck_or_timeout_failure");
        let mut first_sync = complete_jobs();
        first_sync.insert_new(job(43, 6, "test", JobStatus::Success));
        first_sync.insert_new(older_in_sync.clone());
        assert_eq!(first_sync.attempts_of(&older_in_sync), Some(1));
    }
}
