//! What `decide` reads about a project: its jobs as compact records, with the two lookups
//! over them that rules need, kept up to date as jobs come and go (no per-run rebuild, no copy).

use crate::gitlab::models::ProjectRef;
use crate::gitlab::records::{JobRecord, Name};
use std::collections::{BTreeMap, HashMap};

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
/// - the newest attempt seen per `(pipeline, job name)`, so a retried job is known not to be
///   the latest attempt.
///
/// Both lookups remember jobs that are no longer kept: a finished job dropped because no rule
/// can act on it still tells that its pipeline superseded an older one, or that it is a newer
/// attempt. Their entries go when no kept job can ask for them ([`ProjectJobs::retain`]).
#[derive(Debug, Default, Clone)]
pub struct ProjectJobs {
    jobs: BTreeMap<u64, JobRecord>,
    newest_pipeline: HashMap<(bool, Name, Name), u64>,
    newest_attempt: HashMap<(u64, Name), u64>,
}

impl ProjectJobs {
    /// An empty set.
    pub fn new() -> ProjectJobs {
        ProjectJobs::default()
    }

    /// Counts `job` in the lookups without keeping it.
    pub fn note(&mut self, job: &JobRecord) {
        let pipeline = self
            .newest_pipeline
            .entry((job.tag, job.git_ref.clone(), job.name.clone()))
            .or_insert(job.pipeline_id);
        *pipeline = (*pipeline).max(job.pipeline_id);
        let attempt = self
            .newest_attempt
            .entry((job.pipeline_id, job.name.clone()))
            .or_insert(job.id);
        *attempt = (*attempt).max(job.id);
    }

    /// Counts and keeps `job`, replacing an older record of it.
    pub fn insert(&mut self, job: JobRecord) {
        self.note(&job);
        self.jobs.insert(job.id, job);
    }

    /// Forgets a job (it is gone from GitLab).
    pub fn remove(&mut self, id: u64) -> Option<JobRecord> {
        self.jobs.remove(&id)
    }

    /// Keeps the jobs for which `keep` holds, then drops the lookup entries no kept job uses.
    pub fn retain(&mut self, mut keep: impl FnMut(&JobRecord) -> bool) {
        self.jobs.retain(|_, job| keep(job));
        let mut pipeline_keys = HashMap::new();
        let mut attempt_keys = HashMap::new();
        for job in self.jobs.values() {
            pipeline_keys.insert((job.tag, &*job.git_ref, &*job.name), ());
            attempt_keys.insert((job.pipeline_id, &*job.name), ());
        }
        self.newest_pipeline.retain(|(tag, git_ref, name), _| {
            pipeline_keys.contains_key(&(*tag, &**git_ref, &**name))
        });
        self.newest_attempt
            .retain(|(pipeline, name), _| attempt_keys.contains_key(&(*pipeline, &**name)));
    }

    pub fn get(&self, id: u64) -> Option<&JobRecord> {
        self.jobs.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.jobs.contains_key(&id)
    }

    /// The kept jobs, newest (highest id) first.
    pub fn newest_first(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().rev()
    }

    /// The kept jobs with an id of at least `id`, oldest first.
    pub fn from_id(&self, id: u64) -> impl Iterator<Item = &JobRecord> {
        self.jobs.range(id..).map(|(_, job)| job)
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

    /// True when a newer attempt of the job (same name, same pipeline) has been seen.
    pub fn newer_attempt_seen(&self, job: &JobRecord) -> bool {
        self.newest_attempt
            .get(&(job.pipeline_id, job.name.clone()))
            .is_some_and(|id| *id > job.id)
    }
}

impl FromIterator<JobRecord> for ProjectJobs {
    fn from_iter<I: IntoIterator<Item = JobRecord>>(iter: I) -> ProjectJobs {
        let mut jobs = ProjectJobs::new();
        for job in iter {
            jobs.insert(job);
        }
        jobs
    }
}
