//! Operations on the world as the API and the test controls perform them: create pipelines,
//! retry, play, cancel, erase, keep and delete artifacts, force a status. Each one applies the
//! state machine, stamps the pipeline and lets the autopilot react.

use crate::sim::autopilot;
use crate::sim::clock::SimTime;
use crate::sim::machine;
use crate::sim::state::{Artifacts, Commit, Job, JobKind, Pipeline, RUNNERS, Trace, World};
use crate::sim::status::{Status, When};
use std::sync::Arc;
use std::time::Duration;

/// A job to create in a new pipeline.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub name: String,
    pub stage: String,
    pub stage_idx: u32,
    pub kind: JobKind,
    pub when: When,
    pub allow_failure: bool,
    pub tags: Vec<String>,
    pub status: Status,
    pub failure_reason: Option<String>,
    pub created_at: SimTime,
    pub queued_at: Option<SimTime>,
    pub started_at: Option<SimTime>,
    pub finished_at: Option<SimTime>,
    pub runner_id: Option<u64>,
    pub artifacts: Option<Artifacts>,
    pub artifacts_expire_in: Option<Duration>,
    pub trace: Option<Trace>,
    pub user_id: u64,
}

/// A pipeline to create.
#[derive(Debug, Clone)]
pub(crate) struct NewPipeline {
    pub git_ref: String,
    pub tag: bool,
    pub source: &'static str,
    pub commit: Commit,
    pub created_at: SimTime,
    pub autopilot: bool,
    pub jobs: Vec<NewJob>,
}

/// Why an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpError {
    #[error("job not found")]
    NotFound,
    #[error("job is not retryable")]
    NotRetryable,
    #[error("job is not playable")]
    Unplayable,
    #[error("job is not erasable")]
    NotErasable,
    #[error("job has no live artifacts")]
    NoArtifacts,
}

/// Creates a pipeline with its jobs; returns its id and its job ids (`None` for an unknown
/// project).
pub(crate) fn create_pipeline(
    world: &mut World,
    project_id: u64,
    new: NewPipeline,
) -> Option<(u64, Vec<u64>)> {
    let pipeline_id = world.allocate_pipeline_id();
    let project = world.projects.get_mut(&project_id)?;
    let iid = project.next_iid;
    project.next_iid += 1;
    // The pipeline was last updated when its latest job last moved.
    let updated_at = new
        .jobs
        .iter()
        .filter_map(|j| j.finished_at.or(j.started_at).or(j.queued_at))
        .max()
        .unwrap_or(new.created_at)
        .max(new.created_at);
    project.pipelines.insert(
        pipeline_id,
        Pipeline {
            id: pipeline_id,
            iid,
            project_id,
            git_ref: new.git_ref,
            tag: new.tag,
            source: new.source,
            commit: new.commit,
            created_at: new.created_at,
            updated_at,
            autopilot: new.autopilot,
            job_ids: Vec::with_capacity(new.jobs.len()),
        },
    );
    let mut job_ids = Vec::with_capacity(new.jobs.len());
    for spec in new.jobs {
        let id = world.allocate_job_id();
        let job = new_job(world, id, project_id, pipeline_id, spec);
        if world.insert_job(job) {
            world.record_transition(project_id, id, None);
            job_ids.push(id);
        }
    }
    Some((pipeline_id, job_ids))
}

/// The job `id` of pipeline `pipeline_id` as `spec` describes it (names and tags interned; a
/// failed job without a reason gets GitLab's `unknown_failure`).
fn new_job(world: &mut World, id: u64, project_id: u64, pipeline_id: u64, spec: NewJob) -> Job {
    let tag_list = world.interner.tags(&spec.tags);
    let name = world.interner.str(&spec.name);
    let stage = world.interner.str(&spec.stage);
    Job {
        id,
        project_id,
        pipeline_id,
        kind: spec.kind,
        name,
        stage,
        stage_idx: spec.stage_idx,
        failure_reason: (spec.status == Status::Failed).then(|| {
            spec.failure_reason
                .unwrap_or_else(|| machine::UNKNOWN_FAILURE.to_owned())
        }),
        status: spec.status,
        when: spec.when,
        allow_failure: spec.allow_failure,
        retried: false,
        user_id: spec.user_id,
        created_at: spec.created_at,
        queued_at: spec.queued_at,
        started_at: spec.started_at,
        finished_at: spec.finished_at,
        erased_at: None,
        updated_at: spec
            .finished_at
            .or(spec.started_at)
            .or(spec.queued_at)
            .unwrap_or(spec.created_at),
        coverage: None,
        runner_id: spec.runner_id,
        tag_list,
        artifacts: spec.artifacts,
        artifacts_expire_in: spec.artifacts_expire_in,
        trace: spec.trace,
        variables: Vec::new(),
        epoch: 0,
        planned_epoch: 0,
    }
}

/// Retries a job as `user_id`: a new job (new id, same name, stage, pipeline, tags, `when`)
/// is created and queued; the old attempts of that name become "retried". Returns the new id.
pub(crate) fn retry(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    user_id: u64,
    variables: Option<Vec<(String, String)>>,
    now: SimTime,
) -> Result<u64, OpError> {
    let old = world
        .job(project_id, job_id)
        .ok_or(OpError::NotFound)?
        .clone();
    if !machine::retryable(&old, world.is_archived(&old, now)) {
        return Err(OpError::NotRetryable);
    }
    let new_id = world.allocate_job_id();
    let mut new = Job {
        id: new_id,
        status: Status::Created,
        failure_reason: None,
        retried: false,
        user_id,
        created_at: now,
        queued_at: None,
        started_at: None,
        finished_at: None,
        erased_at: None,
        updated_at: now,
        coverage: None,
        runner_id: None,
        artifacts: None,
        trace: None,
        variables: variables.unwrap_or_else(|| old.variables.clone()),
        epoch: 0,
        planned_epoch: 0,
        ..old
    };
    let pipeline_id = new.pipeline_id;
    let name = Arc::clone(&new.name);
    let stage_idx = new.stage_idx;
    // The clone is saved as `created` (after_create fires), then queued.
    world.hooks.record(&new, None);
    machine::enqueue(&mut new, now);
    world.hooks.record(&new, Some(Status::Created));

    let project = world
        .projects
        .get_mut(&project_id)
        .ok_or(OpError::NotFound)?;
    let siblings: Vec<u64> = project
        .latest_jobs(pipeline_id)
        .filter(|j| j.name == name)
        .map(|j| j.id)
        .collect();
    for id in siblings {
        if let Some(job) = project.jobs.get_mut(&id) {
            job.retried = true;
            job.updated_at = now;
        }
    }
    // ResetSkippedJobsService: later jobs skipped because of this one get another chance (in
    // scenario pipelines too: there they stay `created`, as nothing drives them further).
    let later_skipped: Vec<u64> = project
        .latest_jobs(pipeline_id)
        .filter(|j| j.stage_idx > stage_idx && j.status == Status::Skipped)
        .map(|j| j.id)
        .collect();
    // (No Job Hook: GitLab fires none on a move back to `created`.)
    for id in later_skipped {
        if let Some(job) = project.jobs.get_mut(&id) {
            machine::enter(job, Status::Created, now, None);
        }
    }
    world.insert_job(new);
    touch(world, project_id, pipeline_id, now);
    Ok(new_id)
}

/// Plays a manual job as `user_id` (a finished `when: manual` job is retried instead).
/// Returns the id of the job that now runs.
pub(crate) fn play(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    user_id: u64,
    variables: Vec<(String, String)>,
    now: SimTime,
) -> Result<u64, OpError> {
    let job = world.job(project_id, job_id).ok_or(OpError::NotFound)?;
    if !machine::playable(job, world.is_archived(job, now)) {
        return Err(OpError::Unplayable);
    }
    let blocked = matches!(job.status, Status::Manual | Status::Scheduled);
    let pipeline_id = job.pipeline_id;
    if !blocked {
        return retry(world, project_id, job_id, user_id, Some(variables), now);
    }
    let job = world.job_mut(project_id, job_id).ok_or(OpError::NotFound)?;
    job.user_id = user_id;
    job.variables = variables;
    let from = job.status;
    machine::enqueue(job, now);
    world.record_transition(project_id, job_id, Some(from));
    touch(world, project_id, pipeline_id, now);
    Ok(job_id)
}

/// Fires the `cancel` event (a finished job stays as it is). Returns whether it changed.
pub(crate) fn cancel(world: &mut World, project_id: u64, job_id: u64, now: SimTime) -> bool {
    let Some(job) = world.job_mut(project_id, job_id) else {
        return false;
    };
    let pipeline_id = job.pipeline_id;
    let from = job.status;
    let changed = machine::cancel(job, now);
    if changed {
        world.record_transition(project_id, job_id, Some(from));
        touch(world, project_id, pipeline_id, now);
    }
    changed
}

/// Erases a job: its artifacts and log are removed and `erased_at` is set.
pub(crate) fn erase(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    now: SimTime,
) -> Result<(), OpError> {
    let job = world.job_mut(project_id, job_id).ok_or(OpError::NotFound)?;
    if !machine::erasable(job) {
        return Err(OpError::NotErasable);
    }
    job.artifacts = None;
    job.trace = None;
    job.erased_at = Some(now);
    job.updated_at = now;
    let pipeline_id = job.pipeline_id;
    touch(world, project_id, pipeline_id, now);
    Ok(())
}

/// Keeps a job's artifacts forever (`artifacts_expire_at` becomes null).
pub(crate) fn keep_artifacts(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    now: SimTime,
) -> Result<(), OpError> {
    let job = world.job_mut(project_id, job_id).ok_or(OpError::NotFound)?;
    if !job.has_live_artifacts(now) {
        return Err(OpError::NoArtifacts);
    }
    job.artifacts = Some(Artifacts { expire_at: None });
    job.updated_at = now;
    Ok(())
}

/// Deletes a job's artifacts (its log stays).
pub(crate) fn delete_artifacts(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    now: SimTime,
) -> Result<(), OpError> {
    let job = world.job_mut(project_id, job_id).ok_or(OpError::NotFound)?;
    job.artifacts = None;
    job.updated_at = now;
    Ok(())
}

/// Puts a job into `status` (test control), applying the timestamp rules. A job entering
/// `running` without a runner gets one; a build that starts gets a log if it had none.
pub(crate) fn force_status(
    world: &mut World,
    project_id: u64,
    job_id: u64,
    status: Status,
    failure_reason: Option<&str>,
    now: SimTime,
) -> Result<(), OpError> {
    let job = world.job_mut(project_id, job_id).ok_or(OpError::NotFound)?;
    let from = job.status;
    machine::enter(job, status, now, failure_reason);
    if status == Status::Running && job.kind == JobKind::Build {
        job.runner_id.get_or_insert(RUNNERS[0].id);
        job.trace.get_or_insert(Trace::Generated);
    }
    let pipeline_id = job.pipeline_id;
    world.record_transition(project_id, job_id, Some(from));
    touch(world, project_id, pipeline_id, now);
    Ok(())
}

/// Stamps the pipeline as updated and lets the autopilot react to the change.
pub(crate) fn touch(world: &mut World, project_id: u64, pipeline_id: u64, now: SimTime) {
    if let Some(pipeline) = world
        .projects
        .get_mut(&project_id)
        .and_then(|p| p.pipelines.get_mut(&pipeline_id))
    {
        pipeline.updated_at = pipeline.updated_at.max(now);
    }
    autopilot::after_change(world, project_id, pipeline_id, now);
}
