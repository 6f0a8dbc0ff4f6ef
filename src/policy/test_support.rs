//! Builders shared by the policy unit tests.

use super::compile::{CompiledPolicy, PolicyKey, compile};
use super::decide::{Budget, Decision, FactRequest, decide, facts_needed};
use super::observation::Observation;
use super::observation::ProjectJobs;
use crate::crd::JobPolicySpec;
use crate::gitlab::models::{JobStatus, ProjectRef};
use crate::gitlab::records::{JobNames, JobRecord, Stamp};
use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;

/// Monday 2026-11-23 12:00 UTC.
pub const NOW: &str = "2026-11-23T12:00:00Z";

pub fn now() -> Timestamp {
    ts(NOW)
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

pub fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

/// A job created an hour before [`NOW`] on `main`, stage `test`; finished jobs finished five
/// minutes after creation.
pub fn job(id: u64, pipeline: u64, name: &str, status: JobStatus) -> JobRecord {
    let created_at = Stamp::new(now() - mins(60));
    let finished_at = status
        .is_completed()
        .then(|| Stamp::new(created_at.get() + mins(5)));
    let mut job = JobRecord::new(
        id,
        pipeline,
        status,
        JobNames::new(name, "test", "main"),
        created_at,
    );
    job.set_pipeline_created_at(Some(created_at));
    job.set_finished_at(finished_at);
    job
}

/// A failed job with a failure reason.
pub fn failed(id: u64, pipeline: u64, name: &str, reason: &str) -> JobRecord {
    let mut j = job(id, pipeline, name, JobStatus::Failed);
    j.set_failure_reason(Some(reason));
    j
}

/// Compiles a policy from the spec YAML after `gitlab` and `projects` (e.g. `rules: [...]`).
pub fn policy(rest: &str) -> CompiledPolicy {
    let yaml = format!(
        "gitlab: {{url: 'http://127.0.0.1:8080', tokenSecretRef: {{name: gitlab, key: token}}}}\nprojects: ['1']\n{rest}"
    );
    let spec: JobPolicySpec = serde_yaml::from_str(&yaml).expect("test spec parses");
    compile(PolicyKey::new("ci", "test"), &spec).expect("test spec compiles")
}

/// One project's state, as GitLab would report it.
pub struct World {
    pub project: ProjectRef,
    pub jobs: ProjectJobs,
    pub pipeline_jobs: HashMap<u64, Vec<JobRecord>>,
    pub log_tails: HashMap<u64, String>,
}

impl World {
    /// A project whose pipeline job lists are all known (derived from `jobs`).
    pub fn new(jobs: Vec<JobRecord>) -> World {
        let mut w = World::without_facts(jobs);
        for j in w.jobs.newest_first() {
            w.pipeline_jobs
                .entry(j.pipeline_id)
                .or_default()
                .push(j.clone());
        }
        w
    }

    /// A project of which only the job list is known.
    pub fn without_facts(jobs: Vec<JobRecord>) -> World {
        World {
            project: ProjectRef::Id(1),
            jobs: jobs.into_iter().collect(),
            pipeline_jobs: HashMap::new(),
            log_tails: HashMap::new(),
        }
    }

    pub fn log(mut self, job_id: u64, text: &str) -> World {
        self.log_tails.insert(job_id, text.into());
        self
    }

    pub fn observation(&self) -> Observation<'_> {
        Observation {
            project: &self.project,
            jobs: &self.jobs,
            pipeline_jobs: &self.pipeline_jobs,
            log_tails: &self.log_tails,
        }
    }
}

pub const UNLIMITED: Budget = Budget {
    remaining_this_run: u32::MAX,
    remaining_this_hour: u32::MAX,
};

/// Decides with an unlimited budget.
pub fn decide_all(policy: &CompiledPolicy, world: &World, at: Timestamp) -> Vec<Decision> {
    decide(policy, &[world.observation()], at, &UNLIMITED)
}

pub fn needed(policy: &CompiledPolicy, world: &World, at: Timestamp) -> Vec<FactRequest> {
    facts_needed(policy, &[world.observation()], at)
}
