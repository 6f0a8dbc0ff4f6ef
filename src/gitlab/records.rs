//! Compact job records: the part of a GitLab job that jobwarden's decisions and metrics read.
//!
//! A job as GitLab sends it is a few KB of JSON (user, commit, runner, runner manager, project,
//! artifacts…). The engine keeps jobs for as long as a rule may act on them, for thousands of
//! projects, so it keeps only this record: ids, status, failure reason, name/stage/ref (interned
//! per project, see [`Names`]), timestamps, and four flags. GitLab's JSON is decoded once,
//! straight into a [`JobWire`]; fields nobody reads are skipped by serde and never materialised.

use crate::gitlab::models::{Job, JobStatus};
use crate::sync::lock;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use std::collections::HashSet;
use std::num::NonZeroI64;
use std::sync::{Arc, Mutex};

/// An interned string (a job name, stage, ref or failure reason): a thin pointer (8 bytes, and
/// 8 as an `Option`) to one shared copy, where `Arc<str>` takes 16.
pub type Name = arcstr::ArcStr;

/// The fields of a GitLab job (`Entities::Ci::Job`, `JobBasic` or `Bridge`) that a record is
/// made of, as decoded from GitLab's JSON. Every other field is skipped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobWire {
    pub id: u64,
    pub status: JobStatus,
    #[serde(default)]
    pub stage: String,
    pub name: String,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub tag: bool,
    #[serde(default)]
    pub allow_failure: bool,
    pub created_at: Timestamp,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub erased_at: Option<Timestamp>,
    /// Seconds from entering `pending` to start, or to the moment GitLab answered.
    #[serde(default)]
    pub queued_duration: Option<f64>,
    #[serde(default)]
    pub pipeline: PipelineWire,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub artifacts_expire_at: Option<Timestamp>,
    #[serde(default)]
    pub archived: Option<bool>,
}

/// The `pipeline` object of a job (`PipelineBasic`), of which the id and the creation time are
/// read. Some documentation examples leave it out; then the id is 0 and the time unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PipelineWire {
    pub id: u64,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

impl From<&Job> for JobWire {
    /// The record fields of a fully decoded job (the answer to a retry, cancel or play).
    fn from(job: &Job) -> JobWire {
        JobWire {
            id: job.id,
            status: job.status.clone(),
            stage: job.stage.clone(),
            name: job.name.clone(),
            git_ref: job.git_ref.clone(),
            tag: job.tag,
            allow_failure: job.allow_failure,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            erased_at: job.erased_at,
            queued_duration: job.queued_duration,
            pipeline: PipelineWire {
                id: job.pipeline.id,
                created_at: job.pipeline.created_at,
            },
            failure_reason: job.failure_reason.clone(),
            artifacts_expire_at: job.artifacts_expire_at,
            archived: job.archived,
        }
    }
}

/// A moment to the millisecond (what GitLab renders) in 8 bytes, also as an `Option`: a job
/// record holds six, where jiff's `Option<Timestamp>` takes 24 bytes each.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroI64);

/// The Unix epoch plus one millisecond: where the epoch itself is stored.
const ONE_MILLISECOND: NonZeroI64 = NonZeroI64::new(1).expect("1 is not zero");

impl Stamp {
    /// `t`, to the millisecond (the Unix epoch itself, which no job has, reads as 1 ms later).
    pub fn new(t: Timestamp) -> Stamp {
        let millis = t.as_millisecond();
        Stamp(NonZeroI64::new(millis).unwrap_or(ONE_MILLISECOND))
    }

    /// The moment as a timestamp.
    pub fn get(self) -> Timestamp {
        Timestamp::from_millisecond(self.0.get()).unwrap_or(Timestamp::MAX)
    }
}

impl From<Timestamp> for Stamp {
    fn from(t: Timestamp) -> Stamp {
        Stamp::new(t)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// What jobwarden keeps of one job (120 bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: u64,
    pub pipeline_id: u64,
    /// When the job's pipeline was created, when GitLab says (it tells whether every attempt of
    /// the pipeline's jobs has been seen: see [`ProjectJobs`](crate::policy::ProjectJobs)).
    pub pipeline_created_at: Option<Stamp>,
    pub status: JobStatus,
    pub name: Name,
    pub stage: Name,
    pub git_ref: Name,
    /// Only set when the job failed; unknown reasons are kept as they come.
    pub failure_reason: Option<Name>,
    pub created_at: Stamp,
    pub started_at: Option<Stamp>,
    pub finished_at: Option<Stamp>,
    /// When the job entered `pending`: GitLab's `queued_duration` counted back from its start,
    /// or, while it still waits, from the moment GitLab answered. So the wait of a pending job
    /// is known at any later time without listing it again.
    pub queued_at: Option<Stamp>,
    pub artifacts_expire_at: Option<Stamp>,
    pub tag: bool,
    pub allow_failure: bool,
    pub erased: bool,
    pub archived: bool,
}

impl JobRecord {
    /// The record of a job GitLab described at `observed_at`, its strings interned in `names`.
    pub fn from_wire(wire: JobWire, observed_at: Timestamp, names: &mut Names) -> JobRecord {
        let queued_at = wire
            .queued_duration
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .and_then(|seconds| SignedDuration::try_from_secs_f64(seconds).ok())
            .and_then(|waited| match wire.started_at {
                Some(started) => started.checked_sub(waited).ok(),
                // Still waiting: counted back from the answer, in whole seconds, so the same
                // wait listed twice gives the same record.
                None => {
                    let at = observed_at.checked_sub(waited).ok()?;
                    Timestamp::from_second(at.as_second()).ok()
                }
            });
        JobRecord {
            id: wire.id,
            pipeline_id: wire.pipeline.id,
            pipeline_created_at: wire.pipeline.created_at.map(Stamp::new),
            status: wire.status,
            name: names.intern(&wire.name),
            stage: names.intern(&wire.stage),
            git_ref: names.intern(&wire.git_ref),
            failure_reason: wire.failure_reason.as_deref().map(|r| names.intern(r)),
            created_at: Stamp::new(wire.created_at),
            started_at: wire.started_at.map(Stamp::new),
            finished_at: wire.finished_at.map(Stamp::new),
            queued_at: queued_at.map(Stamp::new),
            artifacts_expire_at: wire.artifacts_expire_at.map(Stamp::new),
            tag: wire.tag,
            allow_failure: wire.allow_failure,
            erased: wire.erased_at.is_some(),
            archived: wire.archived == Some(true),
        }
    }

    /// Seconds the job waited for a runner: until it started, or until `now` while it waits.
    pub fn queued_seconds(&self, now: Timestamp) -> Option<f64> {
        let queued_at = self.queued_at?.get();
        let until = self.started_at.map_or(now, Stamp::get);
        Some(until.duration_since(queued_at).as_secs_f64().max(0.0))
    }

    /// True when `newer` describes the same state of the job: nothing a rule or a metric reads
    /// has changed. A pending job's `queued_at` moves by the rounding of each listing, so it is
    /// compared only once the job has started.
    pub fn same_state(&self, newer: &JobRecord) -> bool {
        let queued_same = self.started_at.is_none() || self.queued_at == newer.queued_at;
        queued_same
            && JobRecord {
                queued_at: self.queued_at,
                ..newer.clone()
            } == *self
    }
}

/// The strings of jobs, stored once each: a project has a few dozen job names, stages and
/// refs, repeated over thousands of jobs, and most of them (`main`, `build`, `test`, failure
/// reasons) are the same in every project. A clone shares the set: the engine's observers all
/// use one, so a fleet holds one copy of each string and one set, not a set per project.
#[derive(Debug, Clone, Default)]
pub struct Names {
    shared: Arc<Mutex<NameSet>>,
}

#[derive(Debug, Default)]
struct NameSet {
    set: HashSet<Name>,
    /// How many strings were left after the last pruning.
    pruned_to: usize,
}

/// The set is pruned once it holds this many strings more than the last pruning left, or
/// twice as many, whichever is more: a pruning walks the whole set, and every observer asks
/// for one after each sync.
const PRUNE_AFTER: usize = 1024;

impl Names {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Name {
        let mut names = lock(&self.shared);
        if let Some(name) = names.set.get(s) {
            return name.clone();
        }
        let name = Name::from(s);
        names.set.insert(name.clone());
        name
    }

    /// Forgets the strings no record holds any more, when enough have come since the last
    /// pruning (see [`PRUNE_AFTER`]).
    pub fn prune(&mut self) {
        let mut names = lock(&self.shared);
        if names.set.len()
            >= names
                .pruned_to
                .saturating_mul(2)
                .max(names.pruned_to + PRUNE_AFTER)
        {
            Self::prune_now(&mut names);
        }
    }

    /// Forgets the strings no record holds any more, now.
    pub fn prune_all(&mut self) {
        Self::prune_now(&mut lock(&self.shared));
    }

    fn prune_now(names: &mut NameSet) {
        names
            .set
            .retain(|name| Name::strong_count(name).is_none_or(|count| count > 1));
        names.set.shrink_to_fit();
        names.pruned_to = names.set.len();
    }

    /// How many distinct strings are stored.
    pub fn len(&self) -> usize {
        lock(&self.shared).set.len()
    }

    /// True when no string is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: serde_json::Value) -> JobWire {
        serde_json::from_value(json).expect("a job")
    }

    #[test]
    fn decodes_only_what_it_keeps_and_interns_strings() {
        let json = serde_json::json!({
            "id": 7, "status": "failed", "stage": "test", "name": "rspec", "ref": "main",
            "tag": false, "allow_failure": false, "created_at": "2026-11-23T10:00:00Z",
            "started_at": "2026-11-23T10:01:40Z", "finished_at": "2026-11-23T10:05:00Z",
            "queued_duration": 99.6, "failure_reason": "stuck_or_timeout_failure",
            "pipeline": {"id": 3, "sha": "abc", "status": "failed"},
            "user": {"id": 1, "username": "x"}, "runner_manager": {"contacted_at": "now"},
            "artifacts": [{"file_type": "trace"}]
        });
        let mut names = Names::default();
        let now: Timestamp = "2026-11-23T11:00:00Z".parse().unwrap();
        let a = JobRecord::from_wire(wire(json.clone()), now, &mut names);
        let b = JobRecord::from_wire(wire(json), now, &mut names);
        assert_eq!(a.pipeline_id, 3);
        assert_eq!(
            a.failure_reason.as_deref(),
            Some("stuck_or_timeout_failure")
        );
        assert!(Name::ptr_eq(&a.name, &b.name), "one copy of each string");
        assert_eq!(names.len(), 4);
        assert_eq!(a.queued_seconds(now), Some(99.6));
        drop((a, b));
        names.prune();
        assert_eq!(names.len(), 4, "pruned only once enough strings came");
        names.prune_all();
        assert!(names.is_empty());
    }

    #[test]
    fn a_record_is_small_and_its_moments_keep_milliseconds() {
        assert!(
            std::mem::size_of::<JobRecord>() <= 120,
            "{}",
            std::mem::size_of::<JobRecord>()
        );
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
        let t: Timestamp = "2026-11-23T10:01:40.123456Z".parse().unwrap();
        assert_eq!(
            Stamp::new(t).get(),
            "2026-11-23T10:01:40.123Z".parse().unwrap()
        );
        assert_eq!(Stamp::new(Timestamp::UNIX_EPOCH).get().as_millisecond(), 1);
    }

    #[test]
    fn a_pending_job_keeps_its_wait_and_its_state_across_listings() {
        let listed = |queued: f64, at: &str| {
            let json = serde_json::json!({
                "id": 9, "status": "pending", "name": "deploy", "created_at": "2026-11-19T00:00:00Z",
                "queued_duration": queued, "pipeline": {"id": 4}
            });
            JobRecord::from_wire(wire(json), at.parse().unwrap(), &mut Names::default())
        };
        let first = listed(360_000.2, "2026-11-23T04:00:00Z");
        let later = listed(360_030.9, "2026-11-23T04:00:30Z");
        assert!(
            first.same_state(&later),
            "the wait grew, the job did not change"
        );
        let hundred_hours: Timestamp = "2026-11-23T04:00:00Z".parse().unwrap();
        assert_eq!(first.queued_seconds(hundred_hours), Some(360_001.0));
        let mut started = later.clone();
        started.status = JobStatus::Running;
        assert!(!first.same_state(&started));
    }
}
