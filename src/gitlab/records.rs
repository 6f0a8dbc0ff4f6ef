//! Compact job records: the part of a GitLab job that jobwarden's decisions and metrics read.
//!
//! A job as GitLab sends it is a few KB of JSON (user, commit, runner, runner manager, project,
//! artifacts…). The engine keeps jobs for as long as a rule may act on them, for thousands of
//! projects, so it keeps only this record: ids, status, failure reason, name/stage/ref (interned
//! per project, see [`Names`]), timestamps, and four flags. GitLab's JSON is decoded once,
//! straight into a [`JobWire`]; fields nobody reads are skipped by serde and never materialised.

use crate::gitlab::models::{Job, JobStatus};
use crate::gitlab::tokens::Token;
use crate::sync::lock;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
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
            status: job.status,
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

/// A moment to the millisecond (what GitLab renders) in 8 bytes, also as an `Option`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroI64);

/// The Unix epoch plus one millisecond: where the epoch itself is stored.
const ONE_MILLISECOND: NonZeroI64 = NonZeroI64::new(1).expect("1 is not zero");

impl Stamp {
    /// `t`, to the millisecond (the Unix epoch itself, which no job has, reads as 1 ms later).
    pub fn new(t: Timestamp) -> Stamp {
        Stamp::from_millisecond(t.as_millisecond())
    }

    fn from_millisecond(millis: i64) -> Stamp {
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

/// A moment of a job as an offset from the job's creation, in 4 bytes: to the millisecond
/// within about 12 days of it (a start, an end, a wait), to the second further off (a manual
/// job played weeks later, artifacts that expire in a month), up to about 34 years either way
/// (further is read as 34 years: later than any window a rule can name), or none.
///
/// The lowest bit tells the unit: 0 milliseconds, 1 seconds; the other 31 bits are the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Since(i32);

impl Since {
    const NONE: Since = Since(i32::MIN);
    /// The largest offset in either unit (30 bits and a sign).
    const MAX_OFFSET: i64 = (1 << 30) - 1;

    fn new(base: Stamp, moment: Option<Stamp>) -> Since {
        let Some(moment) = moment else {
            return Since::NONE;
        };
        let millis = moment.0.get().saturating_sub(base.0.get());
        let (offset, unit) = if millis.abs() <= Since::MAX_OFFSET {
            (millis, 0)
        } else {
            let seconds = millis.div_euclid(1000);
            (seconds.clamp(-Since::MAX_OFFSET, Since::MAX_OFFSET), 1)
        };
        // |offset| < 2^30, so `offset * 2 + unit` lies within i32 and is never i32::MIN.
        Since(i32::try_from(offset * 2 + unit).unwrap_or(i32::MAX))
    }

    fn get(self, base: Stamp) -> Option<Stamp> {
        if self == Since::NONE {
            return None;
        }
        let offset = i64::from(self.0 >> 1);
        let millis = if self.0 & 1 == 0 {
            offset
        } else {
            offset * 1000
        };
        Some(Stamp::from_millisecond(base.0.get().saturating_add(millis)))
    }
}

/// A job's name, stage and ref, stored once per distinct combination (see [`Names`]): one
/// 8-byte pointer in each record.
#[derive(Clone)]
pub struct JobNames(Arc<[Name; 3]>);

impl JobNames {
    /// The names, not shared with other records (tests and one-off records).
    pub fn new(name: &str, stage: &str, git_ref: &str) -> JobNames {
        JobNames(Arc::new([name.into(), stage.into(), git_ref.into()]))
    }
}

impl PartialEq for JobNames {
    fn eq(&self, other: &JobNames) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::fmt::Debug for JobNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [name, stage, git_ref] = &*self.0;
        write!(f, "{name}@{stage}@{git_ref}")
    }
}

/// What jobwarden keeps of one job (64 bytes): ids, status, failure reason, name/stage/ref,
/// five moments as offsets from the creation, and four flags.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: u64,
    pub pipeline_id: u64,
    created_at: Stamp,
    names: JobNames,
    started_at: Since,
    finished_at: Since,
    /// When the job entered `pending`: GitLab's `queued_duration` counted back from its start,
    /// or, while it still waits, from the moment GitLab answered. So the wait of a pending job
    /// is known at any later time without listing it again.
    queued_at: Since,
    artifacts_expire_at: Since,
    /// When the job's pipeline was created, when GitLab says (it tells whether every attempt of
    /// the pipeline's jobs has been seen: see [`ProjectJobs`](crate::policy::ProjectJobs)).
    pipeline_created_at: Since,
    pub status: JobStatus,
    /// Only set when the job failed; unknown reasons are kept as they come.
    failure_reason: Option<Token>,
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
        let created_at = Stamp::new(wire.created_at);
        let since = |t: Option<Timestamp>| Since::new(created_at, t.map(Stamp::new));
        JobRecord {
            id: wire.id,
            pipeline_id: wire.pipeline.id,
            created_at,
            names: names.intern_job(&wire.name, &wire.stage, &wire.git_ref),
            started_at: since(wire.started_at),
            finished_at: since(wire.finished_at),
            queued_at: since(queued_at),
            artifacts_expire_at: since(wire.artifacts_expire_at),
            pipeline_created_at: since(wire.pipeline.created_at),
            status: wire.status,
            failure_reason: wire.failure_reason.as_deref().map(Token::new),
            tag: wire.tag,
            allow_failure: wire.allow_failure,
            erased: wire.erased_at.is_some(),
            archived: wire.archived == Some(true),
        }
    }

    /// A record with these ids, status and names, created at `created_at`, with no other
    /// moment, reason or flag (tests and one-off records; see the setters).
    pub fn new(
        id: u64,
        pipeline_id: u64,
        status: JobStatus,
        names: JobNames,
        created_at: Stamp,
    ) -> JobRecord {
        JobRecord {
            id,
            pipeline_id,
            created_at,
            names,
            started_at: Since::NONE,
            finished_at: Since::NONE,
            queued_at: Since::NONE,
            artifacts_expire_at: Since::NONE,
            pipeline_created_at: Since::NONE,
            status,
            failure_reason: None,
            tag: false,
            allow_failure: false,
            erased: false,
            archived: false,
        }
    }

    pub fn name(&self) -> &Name {
        &self.names.0[0]
    }

    pub fn stage(&self) -> &Name {
        &self.names.0[1]
    }

    pub fn git_ref(&self) -> &Name {
        &self.names.0[2]
    }

    pub fn failure_reason(&self) -> Option<&'static str> {
        self.failure_reason.map(Token::as_str)
    }

    pub fn created_at(&self) -> Stamp {
        self.created_at
    }

    pub fn started_at(&self) -> Option<Stamp> {
        self.started_at.get(self.created_at)
    }

    pub fn finished_at(&self) -> Option<Stamp> {
        self.finished_at.get(self.created_at)
    }

    /// When the job entered `pending` (see the field).
    pub fn queued_at(&self) -> Option<Stamp> {
        self.queued_at.get(self.created_at)
    }

    pub fn artifacts_expire_at(&self) -> Option<Stamp> {
        self.artifacts_expire_at.get(self.created_at)
    }

    pub fn pipeline_created_at(&self) -> Option<Stamp> {
        self.pipeline_created_at.get(self.created_at)
    }

    /// Moves the creation; the other moments stay where they were.
    pub fn set_created_at(&mut self, created_at: Stamp) {
        let moments = [
            self.started_at(),
            self.finished_at(),
            self.queued_at(),
            self.artifacts_expire_at(),
            self.pipeline_created_at(),
        ];
        self.created_at = created_at;
        let [started, finished, queued, expire, pipeline] = moments;
        self.set_started_at(started);
        self.set_finished_at(finished);
        self.set_queued_at(queued);
        self.set_artifacts_expire_at(expire);
        self.set_pipeline_created_at(pipeline);
    }

    pub fn set_started_at(&mut self, at: Option<Stamp>) {
        self.started_at = Since::new(self.created_at, at);
    }

    pub fn set_finished_at(&mut self, at: Option<Stamp>) {
        self.finished_at = Since::new(self.created_at, at);
    }

    pub fn set_queued_at(&mut self, at: Option<Stamp>) {
        self.queued_at = Since::new(self.created_at, at);
    }

    pub fn set_artifacts_expire_at(&mut self, at: Option<Stamp>) {
        self.artifacts_expire_at = Since::new(self.created_at, at);
    }

    pub fn set_pipeline_created_at(&mut self, at: Option<Stamp>) {
        self.pipeline_created_at = Since::new(self.created_at, at);
    }

    pub fn set_failure_reason(&mut self, reason: Option<&str>) {
        self.failure_reason = reason.map(Token::new);
    }

    /// Replaces the name (the names are then not shared with other records).
    pub fn set_name(&mut self, name: &str) {
        self.names = JobNames::new(name, self.stage(), self.git_ref());
    }

    /// Replaces the stage (the names are then not shared with other records).
    pub fn set_stage(&mut self, stage: &str) {
        self.names = JobNames::new(self.name(), stage, self.git_ref());
    }

    /// Replaces the ref (the names are then not shared with other records).
    pub fn set_git_ref(&mut self, git_ref: &str) {
        self.names = JobNames::new(self.name(), self.stage(), git_ref);
    }

    /// Seconds the job waited for a runner: until it started, or until `now` while it waits.
    pub fn queued_seconds(&self, now: Timestamp) -> Option<f64> {
        let queued_at = self.queued_at()?.get();
        let until = self.started_at().map_or(now, Stamp::get);
        Some(until.duration_since(queued_at).as_secs_f64().max(0.0))
    }

    /// True when this snapshot is older than `held`, which GitLab answered before it (a lagging
    /// replica): a job never loses its start, and never leaves `success`, `failed` or `canceled`
    /// (a retry creates a new job; only a `skipped` job is re-opened).
    pub fn goes_back_from(&self, held: &JobRecord) -> bool {
        let settled = matches!(
            held.status,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
        );
        (settled && self.status != held.status)
            || (held.started_at != Since::NONE && self.started_at == Since::NONE)
    }

    /// True when `newer` describes the same state of the job: nothing a rule or a metric reads
    /// has changed. A pending job's `queued_at` moves by the rounding of each listing, so it is
    /// compared only once the job has started.
    pub fn same_state(&self, newer: &JobRecord) -> bool {
        let queued_same = self.started_at == Since::NONE || self.queued_at == newer.queued_at;
        queued_same
            && JobRecord {
                queued_at: self.queued_at,
                ..newer.clone()
            } == *self
    }
}

/// The strings of jobs, stored once each: a project has a few dozen job names, stages and
/// refs, repeated over thousands of jobs, and most of them (`main`, `build`, `test`) are the
/// same in every project; so are most combinations of a name, a stage and a ref, which are
/// stored once too ([`JobNames`]). A clone shares the set: the engine's observers all use one,
/// so a fleet holds one copy of each string and one set, not a set per project.
#[derive(Debug, Clone, Default)]
pub struct Names {
    shared: Arc<Mutex<NameSet>>,
}

#[derive(Debug, Default)]
struct NameSet {
    set: HashSet<Name>,
    /// The combinations, by the addresses of their three shared strings.
    jobs: HashMap<[usize; 3], JobNames>,
    /// How many strings were left after the last pruning.
    pruned_to: usize,
}

/// The set is pruned once it holds this many strings more than the last pruning left, or
/// twice as many, whichever is more: a pruning walks the whole set, and every observer asks
/// for one after each sync.
const PRUNE_AFTER: usize = 1024;

impl NameSet {
    fn intern(&mut self, s: &str) -> Name {
        if let Some(name) = self.set.get(s) {
            return name.clone();
        }
        let name = Name::from(s);
        self.set.insert(name.clone());
        name
    }
}

impl Names {
    /// The shared copy of a job's name, stage and ref.
    pub fn intern_job(&mut self, name: &str, stage: &str, git_ref: &str) -> JobNames {
        let mut set = lock(&self.shared);
        let names = [set.intern(name), set.intern(stage), set.intern(git_ref)];
        let key = names.each_ref().map(|n| n.as_ptr() as usize);
        set.jobs
            .entry(key)
            .or_insert_with(|| JobNames(Arc::new(names)))
            .clone()
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
        names.jobs.retain(|_, job| Arc::strong_count(&job.0) > 1);
        names.jobs.shrink_to_fit();
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
        assert_eq!(a.failure_reason(), Some("stuck_or_timeout_failure"));
        assert!(
            Arc::ptr_eq(&a.names.0, &b.names.0),
            "one copy of each combination"
        );
        assert_eq!(
            (&**a.name(), &**a.stage(), &**a.git_ref()),
            ("rspec", "test", "main")
        );
        assert_eq!(names.len(), 3);
        assert_eq!(a.queued_seconds(now), Some(99.6));
        drop((a, b));
        names.prune();
        assert_eq!(names.len(), 3, "pruned only once enough strings came");
        names.prune_all();
        assert!(names.is_empty());
    }

    #[test]
    fn a_record_is_small_and_its_moments_keep_milliseconds() {
        assert!(
            std::mem::size_of::<JobRecord>() <= 64,
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
    fn moments_keep_milliseconds_near_the_creation_and_seconds_further_off() {
        let created = Stamp::new("2026-11-23T10:00:00.250Z".parse().unwrap());
        let at = |offset_ms: i64| Stamp::from_millisecond(created.0.get() + offset_ms);
        let day = 86_400_000;
        for offset in [
            0,
            1,
            -1,
            999,
            12 * day,
            -12 * day,
            (1 << 30) - 1,
            -(1 << 30) + 1,
        ] {
            let since = Since::new(created, Some(at(offset)));
            assert_eq!(since.get(created), Some(at(offset)), "{offset} ms");
        }
        // Beyond about 12 days: to the second of the offset, rounded down.
        let month = 30 * day + 1_234;
        assert_eq!(
            Since::new(created, Some(at(month))).get(created),
            Some(at(30 * day + 1_000))
        );
        assert_eq!(
            Since::new(created, Some(at(-month))).get(created),
            Some(at(-30 * day - 2_000))
        );
        // Beyond about 34 years: 34 years.
        let far = Since::new(created, Some(at(100 * 365 * day)))
            .get(created)
            .expect("a moment");
        let years = far.get().duration_since(created.get()).as_secs() / (365 * 86_400);
        assert_eq!(years, 34);
        assert_eq!(Since::new(created, None).get(created), None);
        assert_ne!(Since::new(created, Some(at(-(1 << 30) + 1))), Since::NONE);
    }

    #[test]
    fn moving_the_creation_keeps_the_other_moments() {
        let json = serde_json::json!({
            "id": 9, "status": "failed", "name": "deploy", "created_at": "2026-11-19T00:00:00Z",
            "started_at": "2026-11-19T00:00:05.5Z", "finished_at": "2026-11-19T00:10:00Z",
            "artifacts_expire_at": "2026-12-19T00:00:00Z",
            "pipeline": {"id": 4, "created_at": "2026-11-18T23:59:00Z"}
        });
        let mut job = JobRecord::from_wire(
            wire(json),
            "2026-11-20T00:00:00Z".parse().unwrap(),
            &mut Names::default(),
        );
        let before = [
            job.started_at(),
            job.finished_at(),
            job.artifacts_expire_at(),
            job.pipeline_created_at(),
        ];
        job.set_created_at(Stamp::new("2026-11-15T00:00:00Z".parse().unwrap()));
        let after = [
            job.started_at(),
            job.finished_at(),
            job.artifacts_expire_at(),
            job.pipeline_created_at(),
        ];
        assert_eq!(before, after);
        assert_eq!(
            job.started_at().map(|t| t.get().to_string()),
            Some("2026-11-19T00:00:05.5Z".into())
        );
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
        started.set_started_at(Some(Stamp::new("2026-11-23T04:00:31Z".parse().unwrap())));
        assert!(!first.same_state(&started));
    }
}
