//! In-process control of a running simulator, for tests and the demo: the clock, faults, the
//! request log, scenario building (pipelines with jobs in chosen states) and job snapshots.

use crate::sim::autopilot;
use crate::sim::clock::{SimTime, duration_millis};
use crate::sim::faults::FaultConfig;
use crate::sim::hooks::{self, SimWebhook, WebhookConfig, WebhookDelivery};
use crate::sim::ops::{self, NewJob, NewPipeline};
use crate::sim::reqlog::LoggedRequest;
use crate::sim::server::{Shared, lock};
use crate::sim::state::{
    Artifacts, Commit, Job, JobKind, PathError, Project, RUNNERS, Trace, World, mix64,
};
use crate::sim::status::{Status, When};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A handle on a running simulator's state (cheap to clone).
#[derive(Clone)]
pub struct SimControl {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for SimControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimControl")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

/// A pipeline to add to a project, for deterministic test scenarios. Its jobs stay exactly as
/// given until the API or [`SimControl::set_job_status`] moves them (no autopilot).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// The branch or tag.
    pub git_ref: String,
    /// Whether `git_ref` is a tag.
    pub tag: bool,
    pub jobs: Vec<JobSpec>,
}

impl PipelineSpec {
    /// A branch pipeline with these jobs.
    pub fn new(git_ref: impl Into<String>, jobs: Vec<JobSpec>) -> Self {
        PipelineSpec {
            git_ref: git_ref.into(),
            tag: false,
            jobs,
        }
    }
}

/// One job of a [`PipelineSpec`].
///
/// Timestamps follow from `age` and `status`: the job was created `age` ago; a job past
/// `pending` was queued then; a job that ran (`running`, `success`, `failed`, `canceled`,
/// `canceling`) started half-way through its age; a finished one (`success`, `failed`,
/// `canceled`) finished now. A build that ran has runner 11 assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    /// Stages run in the order they first appear in the pipeline's job list.
    pub stage: String,
    /// One of GitLab's 13 statuses (anything else is treated as `created`).
    pub status: String,
    /// Recorded when `status` is `failed` (default `unknown_failure`).
    pub failure_reason: Option<String>,
    /// `when: manual`.
    pub when_manual: bool,
    pub allow_failure: bool,
    /// How long before now the job was created.
    pub age: Duration,
    /// The job has an artifacts archive expiring this long after now.
    pub artifacts_expire_in: Option<Duration>,
    /// The job's log (empty = no log).
    pub log: String,
    /// Runner tags.
    pub tags: Vec<String>,
    /// A trigger job (bridge) rather than a build: listed under the pipeline's bridges, never
    /// with the jobs; it has no runner, and `artifacts_expire_in`, `log` and `tags` are ignored.
    pub bridge: bool,
}

impl JobSpec {
    /// A job with no log, no artifacts, no tags, created now.
    pub fn new(
        name: impl Into<String>,
        stage: impl Into<String>,
        status: impl Into<String>,
    ) -> Self {
        JobSpec {
            name: name.into(),
            stage: stage.into(),
            status: status.into(),
            failure_reason: None,
            when_manual: false,
            allow_failure: false,
            age: Duration::ZERO,
            artifacts_expire_in: None,
            log: String::new(),
            tags: Vec::new(),
            bridge: false,
        }
    }

    /// Makes it a trigger job (bridge).
    pub fn bridge(mut self) -> Self {
        self.bridge = true;
        self
    }

    /// Sets `status: failed` with this reason.
    pub fn failed_with(mut self, reason: impl Into<String>) -> Self {
        self.status = "failed".to_owned();
        self.failure_reason = Some(reason.into());
        self
    }

    /// Makes it a `when: manual` job (allowed to fail, as GitLab defaults manual jobs).
    pub fn manual(mut self) -> Self {
        self.when_manual = true;
        self.allow_failure = true;
        self
    }

    /// Created `age` ago.
    pub fn aged(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// With an artifacts archive expiring `expire_in` from now.
    pub fn with_artifacts(mut self, expire_in: Duration) -> Self {
        self.artifacts_expire_in = Some(expire_in);
        self
    }

    /// With this log.
    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = log.into();
        self
    }
}

/// A group as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimGroup {
    pub id: u64,
    /// `fleet/platform`.
    pub full_path: String,
    /// The display name (`Platform`).
    pub name: String,
    pub parent_id: Option<u64>,
}

/// A project as the simulator holds it (without its pipelines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimProject {
    pub id: u64,
    /// The full path (`fleet/apps/project-9`).
    pub path: String,
    /// The group the project is in (`None` for a path without a namespace).
    pub group_id: Option<u64>,
    pub archived: bool,
}

/// A pipeline that was added: its id and its jobs' ids, in the spec's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimPipeline {
    pub id: u64,
    pub job_ids: Vec<u64>,
}

/// A snapshot of a job as the simulator holds it (including what the API does not show:
/// `retried`, the job token, played variables).
#[derive(Clone, PartialEq, Serialize)]
pub struct SimJob {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub stage: String,
    /// GitLab's status name.
    pub status: String,
    /// Set while the job is failed.
    pub failure_reason: Option<String>,
    /// `on_success` or `manual`.
    pub when: String,
    pub allow_failure: bool,
    /// An older attempt that a retry replaced.
    pub retried: bool,
    /// A trigger job (bridge) rather than a build.
    pub bridge: bool,
    pub git_ref: String,
    pub tag: bool,
    pub user_id: u64,
    pub created_at: jiff::Timestamp,
    pub queued_at: Option<jiff::Timestamp>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub erased_at: Option<jiff::Timestamp>,
    /// Whether an artifacts archive exists (expired or not).
    pub has_artifacts: bool,
    pub artifacts_expire_at: Option<jiff::Timestamp>,
    pub has_trace: bool,
    pub runner_id: Option<u64>,
    pub tag_list: Vec<String>,
    pub coverage: Option<f64>,
    /// The job's CI job token (valid on the API only while the job runs).
    pub token: String,
    /// Variables given when the job was played.
    pub variables: Vec<(String, String)>,
}

impl fmt::Debug for SimJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimJob")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("pipeline_id", &self.pipeline_id)
            .field("name", &self.name)
            .field("stage", &self.stage)
            .field("status", &self.status)
            .field("failure_reason", &self.failure_reason)
            .field("when", &self.when)
            .field("retried", &self.retried)
            .field("bridge", &self.bridge)
            .field("git_ref", &self.git_ref)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("queued_at", &self.queued_at)
            .field("started_at", &self.started_at)
            .field("finished_at", &self.finished_at)
            .field("erased_at", &self.erased_at)
            .field("has_artifacts", &self.has_artifacts)
            .field("artifacts_expire_at", &self.artifacts_expire_at)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why a scenario request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown project {0}")]
    UnknownProject(String),
    #[error("unknown job {0}")]
    UnknownJob(u64),
    #[error("{0:?} is not a GitLab job status")]
    UnknownStatus(String),
    #[error("project path {0:?} is empty or taken")]
    PathTaken(String),
    #[error("invalid webhook: {0}")]
    InvalidWebhook(String),
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("group path {0:?} is invalid or taken")]
    GroupPathTaken(String),
}

fn project_snapshot(project: &Project) -> SimProject {
    SimProject {
        id: project.id,
        path: project.path.clone(),
        group_id: project.group_id,
        archived: project.archived,
    }
}

fn snapshot(world: &World, project: &Project, job: &Job) -> SimJob {
    let pipeline = project.pipelines.get(&job.pipeline_id);
    SimJob {
        id: job.id,
        project_id: job.project_id,
        pipeline_id: job.pipeline_id,
        name: job.name.to_string(),
        stage: job.stage.to_string(),
        status: job.status.as_str().to_owned(),
        failure_reason: job.failure_reason.clone(),
        when: job.when.as_str().to_owned(),
        allow_failure: job.allow_failure,
        retried: job.retried,
        bridge: job.kind == JobKind::Bridge,
        git_ref: pipeline.map(|p| p.git_ref.clone()).unwrap_or_default(),
        tag: pipeline.is_some_and(|p| p.tag),
        user_id: job.user_id,
        created_at: job.created_at.to_timestamp(),
        queued_at: job.queued_at.map(SimTime::to_timestamp),
        started_at: job.started_at.map(SimTime::to_timestamp),
        finished_at: job.finished_at.map(SimTime::to_timestamp),
        erased_at: job.erased_at.map(SimTime::to_timestamp),
        has_artifacts: job.artifacts.is_some(),
        artifacts_expire_at: job
            .artifacts
            .and_then(|a| a.expire_at)
            .map(SimTime::to_timestamp),
        has_trace: job.trace.is_some(),
        runner_id: job.runner_id,
        tag_list: job.tag_list.iter().map(|t| t.to_string()).collect(),
        coverage: job.coverage,
        token: world.job_token(job.id),
        variables: job.variables.clone(),
    }
}

impl SimControl {
    /// The simulated time.
    pub fn now(&self) -> jiff::Timestamp {
        self.shared.clock.now()
    }

    /// Moves the simulated clock forward. Fleet projects that a webhook covers are brought up
    /// to the new time at once, so the autopilot's transitions are delivered now (each with its
    /// own simulated time).
    pub fn advance(&self, d: Duration) {
        self.shared.clock.advance(d);
        if !self.shared.hooks.is_empty() {
            hooks::pump(&self.shared);
        }
    }

    /// Registers a Job Hook; returns its id. Deliveries start with the next transition.
    pub fn add_webhook(&self, config: WebhookConfig) -> Result<u64, ScenarioError> {
        let mut world = self.shared.world();
        let (id, scope) = self
            .shared
            .hooks
            .add(config)
            .map_err(ScenarioError::InvalidWebhook)?;
        world.hooks.set_scope(scope);
        Ok(id)
    }

    /// Removes a Job Hook (what it still had queued is not sent); false if there is none.
    pub fn remove_webhook(&self, id: u64) -> bool {
        let mut world = self.shared.world();
        match self.shared.hooks.remove(id) {
            Some(scope) => {
                world.hooks.set_scope(scope);
                true
            }
            None => false,
        }
    }

    /// Every registered hook with its delivery counters, by id.
    pub fn webhooks(&self) -> Vec<SimWebhook> {
        self.shared.hooks.list()
    }

    /// One hook with its delivery counters.
    pub fn webhook(&self, id: u64) -> Option<SimWebhook> {
        self.shared.hooks.get(id)
    }

    /// A hook's newest deliveries (at most [`hooks::RECENT_DELIVERIES`]), oldest first,
    /// including those never sent (dropped by a fault, or by a full queue).
    pub fn webhook_deliveries(&self, id: u64) -> Option<Vec<WebhookDelivery>> {
        self.shared.hooks.deliveries(id)
    }

    /// Waits (at most `timeout`) until no hook has a delivery queued, held back or being sent;
    /// true if that happened.
    pub async fn wait_for_webhooks(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.webhooks().iter().all(|h| h.stats.pending == 0) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces the fault configuration (takes effect on the next request).
    pub fn set_faults(&self, faults: FaultConfig) {
        lock(&self.shared.faults).set(faults);
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        lock(&self.shared.faults).config().clone()
    }

    /// Every `/api/v4` request answered so far (the newest 100 000), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).entries()
    }

    /// Requests per `"<METHOD> <route template>"`, e.g. `"GET /projects/:id/jobs"`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.log).counters()
    }

    /// Clears the request log and the counters.
    pub fn reset_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// Forgets every rate-limit count (both the `jobs_index` and the instance-wide limit).
    pub fn reset_rate_limits(&self) {
        lock(&self.shared.jobs_index_limit).reset();
        lock(&self.shared.authenticated_api_limit).reset();
    }

    /// Adds a pipeline to a project (a missing project is created as `fleet/project-<id>`).
    /// Statuses that are not GitLab's are treated as `created`; see [`SimControl::try_add_pipeline`].
    pub fn add_pipeline(&self, project_id: u64, spec: PipelineSpec) -> SimPipeline {
        let mut world = self.shared.world();
        if !world.projects.contains_key(&project_id) {
            world.add_project(project_id, &format!("fleet/project-{project_id}"));
        }
        let now = self.shared.now();
        build_pipeline(&mut world, project_id, spec, now, true).unwrap_or(SimPipeline {
            id: 0,
            job_ids: Vec::new(),
        })
    }

    /// Adds a pipeline to an existing project; refuses unknown statuses.
    pub fn try_add_pipeline(
        &self,
        project_id: u64,
        spec: PipelineSpec,
    ) -> Result<SimPipeline, ScenarioError> {
        let mut world = self.shared.world();
        let now = self.shared.now();
        build_pipeline(&mut world, project_id, spec, now, false)
    }

    /// Adds an empty project at the full path `path` (e.g. `group/sub/project`); returns its
    /// id. The groups of its namespace are created when missing.
    pub fn add_project(&self, path: &str) -> Result<u64, ScenarioError> {
        let mut world = self.shared.world();
        let id = world.next_project_id();
        let now = self.shared.now();
        if path.is_empty() || path.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScenarioError::PathTaken(path.to_owned()));
        }
        let project = world
            .add_project(id, path)
            .ok_or_else(|| ScenarioError::PathTaken(path.to_owned()))?;
        project.created_at = now;
        Ok(project.id)
    }

    /// Adds an empty project `path` (one segment, e.g. `api`) to the existing group `group`
    /// (an id or a full path); returns its id.
    pub fn add_project_to_group(&self, group: &str, path: &str) -> Result<u64, ScenarioError> {
        let full_path = {
            let world = self.shared.world();
            let group_id = world
                .resolve_group(group)
                .ok_or_else(|| ScenarioError::UnknownGroup(group.to_owned()))?;
            format!("{}/{path}", world.groups[&group_id].full_path)
        };
        if path.is_empty() || path.contains('/') {
            return Err(ScenarioError::PathTaken(full_path));
        }
        self.add_project(&full_path)
    }

    /// Adds a group at `full_path` (e.g. `fleet/platform/new`), with its missing ancestors;
    /// returns its id. Fails when a group or a project has that path already.
    pub fn add_group(&self, full_path: &str) -> Result<u64, ScenarioError> {
        let now = self.shared.now();
        self.shared
            .world()
            .add_group(full_path, now)
            .map_err(|_: PathError| ScenarioError::GroupPathTaken(full_path.to_owned()))
    }

    /// Every group, by ascending id.
    pub fn groups(&self) -> Vec<SimGroup> {
        self.shared
            .world()
            .groups
            .values()
            .map(|g| SimGroup {
                id: g.id,
                full_path: g.full_path.clone(),
                name: g.name.clone(),
                parent_id: g.parent_id,
            })
            .collect()
    }

    /// Resolves a group id or full path to the id.
    pub fn resolve_group(&self, reference: &str) -> Option<u64> {
        self.shared.world().resolve_group(reference)
    }

    /// A project (its path, group and whether it is archived).
    pub fn project(&self, id: u64) -> Option<SimProject> {
        self.shared.world().projects.get(&id).map(project_snapshot)
    }

    /// Every project, by ascending id.
    pub fn projects(&self) -> Vec<SimProject> {
        self.shared
            .world()
            .projects
            .values()
            .map(project_snapshot)
            .collect()
    }

    /// Archives or unarchives a project. An archived project is listed as such, gets no new
    /// fleet pipelines, and refuses every change to its jobs (403) until it is unarchived.
    pub fn set_archived(
        &self,
        project_id: u64,
        archived: bool,
    ) -> Result<SimProject, ScenarioError> {
        let mut world = self.shared.world();
        // The fleet catches up to now first, so the change takes effect from now on.
        autopilot::advance(&mut world, project_id, self.shared.now());
        let project = world
            .projects
            .get_mut(&project_id)
            .ok_or_else(|| ScenarioError::UnknownProject(project_id.to_string()))?;
        project.archived = archived;
        Ok(project_snapshot(project))
    }

    /// A snapshot of a job (after bringing its project up to date).
    pub fn job(&self, project_id: u64, job_id: u64) -> Option<SimJob> {
        let mut world = self.shared.world();
        autopilot::advance(&mut world, project_id, self.shared.now());
        let project = world.projects.get(&project_id)?;
        let job = project.jobs.get(&job_id)?;
        Some(snapshot(&world, project, job))
    }

    /// Snapshots of every job and bridge of a project, by ascending id.
    pub fn jobs(&self, project_id: u64) -> Vec<SimJob> {
        let mut world = self.shared.world();
        autopilot::advance(&mut world, project_id, self.shared.now());
        let Some(project) = world.projects.get(&project_id) else {
            return Vec::new();
        };
        project
            .jobs
            .values()
            .map(|job| snapshot(&world, project, job))
            .collect()
    }

    /// The pipelines of a project with their job ids, by ascending id.
    pub fn pipelines(&self, project_id: u64) -> Vec<SimPipeline> {
        let mut world = self.shared.world();
        autopilot::advance(&mut world, project_id, self.shared.now());
        world
            .projects
            .get(&project_id)
            .map(|p| {
                p.pipelines
                    .values()
                    .map(|pl| SimPipeline {
                        id: pl.id,
                        job_ids: pl.job_ids.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts a job into `status` now, applying the state machine's timestamp rules (see
    /// [`SimControl::try_set_job_status`]). Returns the new snapshot, `None` if the job or the
    /// status is unknown.
    pub fn set_job_status(
        &self,
        project_id: u64,
        job_id: u64,
        status: &str,
        failure_reason: Option<&str>,
    ) -> Option<SimJob> {
        self.try_set_job_status(project_id, job_id, status, failure_reason)
            .ok()
    }

    /// Puts a job into `status` now: entering `pending` sets `queued_at`, `running` sets
    /// `started_at` (and gives the job a runner and a log), `success`/`failed`/`canceled` set
    /// `finished_at`, `failed` records the reason (`unknown_failure` by default). The move is
    /// not checked against the state machine's events, so tests can set up any state.
    pub fn try_set_job_status(
        &self,
        project_id: u64,
        job_id: u64,
        status: &str,
        failure_reason: Option<&str>,
    ) -> Result<SimJob, ScenarioError> {
        let status =
            Status::parse(status).ok_or_else(|| ScenarioError::UnknownStatus(status.to_owned()))?;
        let mut world = self.shared.world();
        let now = self.shared.now();
        autopilot::advance(&mut world, project_id, now);
        ops::force_status(&mut world, project_id, job_id, status, failure_reason, now)
            .map_err(|_| ScenarioError::UnknownJob(job_id))?;
        let project = world
            .projects
            .get(&project_id)
            .ok_or_else(|| ScenarioError::UnknownProject(project_id.to_string()))?;
        let job = project
            .jobs
            .get(&job_id)
            .ok_or(ScenarioError::UnknownJob(job_id))?;
        Ok(snapshot(&world, project, job))
    }

    /// The ids of all projects, ascending.
    pub fn project_ids(&self) -> Vec<u64> {
        self.shared.world().projects.keys().copied().collect()
    }

    /// A project's full path (e.g. `fleet/project-7`).
    pub fn project_path(&self, id: u64) -> Option<String> {
        self.shared
            .world()
            .projects
            .get(&id)
            .map(|p| p.path.clone())
    }

    /// Resolves a project id or full path to the id.
    pub fn resolve_project(&self, reference: &str) -> Option<u64> {
        self.shared.world().resolve_project(reference)
    }
}

/// Creates a pipeline from a spec. `lenient` treats unknown statuses as `created`.
pub(crate) fn build_pipeline(
    world: &mut World,
    project_id: u64,
    spec: PipelineSpec,
    now: SimTime,
    lenient: bool,
) -> Result<SimPipeline, ScenarioError> {
    if !world.projects.contains_key(&project_id) {
        return Err(ScenarioError::UnknownProject(project_id.to_string()));
    }
    let mut stages: Vec<String> = Vec::new();
    let mut jobs = Vec::with_capacity(spec.jobs.len());
    for job in spec.jobs {
        let status = match Status::parse(&job.status) {
            Some(status) => status,
            None if lenient => {
                tracing::warn!(status = %job.status, "unknown job status in a test pipeline; using created");
                Status::Created
            }
            None => return Err(ScenarioError::UnknownStatus(job.status)),
        };
        let stage_idx = match stages.iter().position(|s| *s == job.stage) {
            Some(i) => i,
            None => {
                stages.push(job.stage.clone());
                stages.len() - 1
            }
        };
        jobs.push(new_job(
            job,
            status,
            u32::try_from(stage_idx).unwrap_or(u32::MAX),
            now,
        ));
    }
    let created_at = jobs.iter().map(|j| j.created_at).min().unwrap_or(now);
    let seed = mix64(world.job_count() as u64 ^ now.0 as u64 ^ project_id);
    let commit = Commit {
        sha: format!(
            "{:016x}{:016x}{:08x}",
            mix64(seed),
            mix64(seed ^ 1),
            mix64(seed ^ 2) as u32
        ),
        parent_sha: format!(
            "{:016x}{:016x}{:08x}",
            mix64(seed ^ 3),
            mix64(seed ^ 4),
            mix64(seed ^ 5) as u32
        ),
        title: "Test scenario".to_owned(),
        message: "Test scenario\n".to_owned(),
        author_id: 2,
        created_at,
        offset_minutes: 0,
    };
    let (id, job_ids) = ops::create_pipeline(
        world,
        project_id,
        NewPipeline {
            git_ref: spec.git_ref,
            tag: spec.tag,
            source: "push",
            commit,
            created_at,
            autopilot: false,
            jobs,
        },
    )
    .ok_or_else(|| ScenarioError::UnknownProject(project_id.to_string()))?;
    Ok(SimPipeline { id, job_ids })
}

fn new_job(spec: JobSpec, status: Status, stage_idx: u32, now: SimTime) -> NewJob {
    let created_at = now.minus(spec.age);
    let half_age = SimTime(created_at.0 + duration_millis(spec.age) / 2);
    let queued = !matches!(
        status,
        Status::Created | Status::Manual | Status::Scheduled | Status::Skipped
    );
    let ran = matches!(
        status,
        Status::Running | Status::Success | Status::Failed | Status::Canceled | Status::Canceling
    );
    let build = !spec.bridge;
    NewJob {
        name: spec.name,
        stage: spec.stage,
        stage_idx,
        kind: if build {
            JobKind::Build
        } else {
            JobKind::Bridge
        },
        when: if spec.when_manual {
            When::Manual
        } else {
            When::OnSuccess
        },
        allow_failure: spec.allow_failure,
        tags: if build { spec.tags } else { Vec::new() },
        status,
        failure_reason: spec.failure_reason,
        created_at,
        queued_at: queued.then_some(created_at),
        started_at: ran.then_some(half_age),
        finished_at: status.sets_finished_at().then_some(now),
        runner_id: (ran && build).then_some(RUNNERS[0].id),
        artifacts: spec
            .artifacts_expire_in
            .filter(|_| build)
            .map(|d| Artifacts {
                expire_at: Some(now.plus(d)),
            }),
        artifacts_expire_in: None,
        trace: (build && !spec.log.is_empty()).then_some(Trace::Custom(spec.log)),
        user_id: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_bridges_are_trigger_jobs_without_runner_artifacts_or_log() {
        let mut world = World::new(7, None);
        world.add_project(1, "group/project");
        let now = SimTime(1_795_000_000_000);
        let spec = PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("build", "build", "success")
                    .with_artifacts(Duration::from_secs(3600))
                    .with_log("built\n"),
                JobSpec::new("trigger-docs", "deploy", "success")
                    .with_artifacts(Duration::from_secs(3600))
                    .with_log("ignored\n")
                    .bridge(),
            ],
        );
        let pipeline = build_pipeline(&mut world, 1, spec, now, false).expect("known project");
        let project = world.projects.get(&1).expect("project");
        let build = project.jobs.get(&pipeline.job_ids[0]).expect("build");
        let bridge = project.jobs.get(&pipeline.job_ids[1]).expect("bridge");
        assert_eq!(build.kind, JobKind::Build);
        assert!(build.runner_id.is_some() && build.artifacts.is_some() && build.trace.is_some());
        assert_eq!(bridge.kind, JobKind::Bridge);
        assert_eq!(bridge.status, Status::Success);
        assert_eq!(bridge.runner_id, None);
        assert_eq!(bridge.artifacts, None);
        assert_eq!(bridge.trace, None);
        assert!(snapshot(&world, project, bridge).bridge);
    }
}
