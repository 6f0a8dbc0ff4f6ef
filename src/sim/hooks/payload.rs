//! The Job Hook body (`Gitlab::DataBuilder::Build`, `docs/gitlab-behaviour.md` §10.2), written with
//! the simulator's own serde types, fields in the data builder's order. Timestamps use the webhook
//! format (`2021-02-23 02:41:37 UTC`), not the REST API's.
//!
//! The build's own fields are the build as it was when it moved; the pipeline's (`commit.status`,
//! its duration and times) and `retries_count` are read when the change that moved it is
//! complete (the end of the API call, scenario step or autopilot catch-up).

use crate::sim::clock::{SimTime, webhook_time};
use crate::sim::hooks::outbox::HookJob;
use crate::sim::render::{avatar_url, email};
use crate::sim::state::{JobKind, Pipeline, Project, World, runner, user};
use crate::sim::status::Status;
use serde::Serialize;

/// The instance's URLs, for the payload's links.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    /// With a trailing slash, e.g. `http://127.0.0.1:8080/`.
    pub base: String,
    /// The host of `git@<host>:<path>.git`.
    pub ssh_host: String,
}

impl Links {
    pub fn new(base: &str) -> Links {
        let ssh_host = url::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_owned());
        Links {
            base: base.to_owned(),
            ssh_host,
        }
    }
}

/// `Gitlab::DataBuilder::Build.build`.
#[derive(Debug, Serialize)]
pub(crate) struct JobHookPayload<'a> {
    object_kind: &'static str,
    #[serde(rename = "ref")]
    git_ref: &'a str,
    tag: bool,
    before_sha: &'a str,
    sha: &'a str,
    retries_count: u64,
    build_id: u64,
    build_name: &'a str,
    build_stage: &'a str,
    build_status: &'static str,
    build_created_at: String,
    build_started_at: Option<String>,
    build_finished_at: Option<String>,
    build_duration: Option<f64>,
    build_queued_duration: Option<f64>,
    build_allow_failure: bool,
    build_failure_reason: Option<&'a str>,
    pipeline_id: u64,
    runner: Option<HookRunner<'a>>,
    project_id: u64,
    project_name: String,
    user: Option<HookUser>,
    commit: HookCommit<'a>,
    repository: HookRepository<'a>,
    project: HookProject<'a>,
    environment: Option<()>,
}

/// `runner_hook_attrs`: the runner, with the build's tags.
#[derive(Debug, Serialize)]
struct HookRunner<'a> {
    id: u64,
    description: &'static str,
    runner_type: &'static str,
    active: bool,
    is_shared: bool,
    tags: Vec<&'a str>,
}

/// `User#hook_attrs` (no user has a public email, so it is redacted).
#[derive(Debug, Serialize)]
struct HookUser {
    id: u64,
    name: &'static str,
    username: &'static str,
    avatar_url: String,
    email: &'static str,
}

/// The pipeline, under the name `commit` (its `id` is the PIPELINE's).
#[derive(Debug, Serialize)]
struct HookCommit<'a> {
    id: u64,
    name: Option<&'a str>,
    sha: &'a str,
    message: &'a str,
    author_name: &'static str,
    author_email: String,
    author_url: String,
    status: &'static str,
    duration: Option<i64>,
    started_at: Option<String>,
    finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct HookRepository<'a> {
    name: &'a str,
    url: String,
    description: Option<&'a str>,
    homepage: String,
    git_http_url: String,
    git_ssh_url: String,
    visibility_level: u8,
}

/// `Project#hook_attrs(backward: false)`.
#[derive(Debug, Serialize)]
struct HookProject<'a> {
    id: u64,
    name: &'a str,
    description: Option<&'a str>,
    web_url: String,
    avatar_url: Option<&'a str>,
    git_ssh_url: String,
    git_http_url: String,
    namespace: &'a str,
    visibility_level: u8,
    path_with_namespace: &'a str,
    default_branch: &'static str,
    ci_config_path: Option<&'a str>,
}

/// `Gitlab::VisibilityLevel::PRIVATE`: every simulated project is private.
const PRIVATE: u8 = 0;

/// The payload of one recorded transition, or `None` when its project or pipeline is gone.
pub(crate) fn render(world: &World, job: &HookJob, links: &Links) -> Option<Vec<u8>> {
    let project = world.projects.get(&job.project_id)?;
    let pipeline = project.pipelines.get(&job.pipeline_id)?;
    let urls = ProjectUrls::of(project, links);
    let payload = JobHookPayload {
        object_kind: "build",
        git_ref: &pipeline.git_ref,
        tag: pipeline.tag,
        before_sha: &pipeline.commit.parent_sha,
        sha: &pipeline.commit.sha,
        retries_count: retries_count(project, job),
        build_id: job.id,
        build_name: &job.name,
        build_stage: &job.stage,
        build_status: job.status.as_str(),
        build_created_at: webhook_time(job.created_at),
        build_started_at: job.started_at.map(webhook_time),
        build_finished_at: job.finished_at.map(webhook_time),
        build_duration: job
            .started_at
            .map(|s| job.finished_at.unwrap_or(job.at).seconds_since(s)),
        build_queued_duration: job
            .queued_at
            .map(|q| job.started_at.unwrap_or(job.at).seconds_since(q)),
        build_allow_failure: job.allow_failure,
        build_failure_reason: job.failure_reason.as_deref(),
        pipeline_id: pipeline.id,
        runner: hook_runner(job),
        project_id: project.id,
        project_name: urls.path.replace('/', " / "),
        user: Some(hook_user(job.user_id)),
        commit: hook_commit(project, pipeline, job.pipeline_id, links),
        repository: urls.repository(),
        project: urls.project(project.id),
        environment: None,
    };
    serde_json::to_vec(&payload).ok()
}

/// The project's path, its parts and its URLs, as the payload's `repository` and `project`
/// show them.
struct ProjectUrls<'a> {
    /// The full path, e.g. `fleet/apps/project-7`.
    path: &'a str,
    /// The last part of the path (the project's name).
    name: &'a str,
    /// The project's own group (the last part of its namespace).
    namespace: &'a str,
    web_url: String,
    http_url: String,
    ssh_url: String,
}

impl<'a> ProjectUrls<'a> {
    /// The paths and URLs of `project` on the instance at `links`.
    fn of(project: &'a Project, links: &Links) -> ProjectUrls<'a> {
        let path = project.path.as_str();
        let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
        let web_url = format!("{}{path}", links.base);
        ProjectUrls {
            path,
            name,
            namespace: namespace.rsplit('/').next().unwrap_or(namespace),
            http_url: format!("{web_url}.git"),
            ssh_url: format!("git@{}:{path}.git", links.ssh_host),
            web_url,
        }
    }

    /// `repository`: the project as a Git repository.
    fn repository(&self) -> HookRepository<'a> {
        HookRepository {
            name: self.name,
            url: self.ssh_url.clone(),
            description: None,
            homepage: self.web_url.clone(),
            git_http_url: self.http_url.clone(),
            git_ssh_url: self.ssh_url.clone(),
            visibility_level: PRIVATE,
        }
    }

    /// `Project#hook_attrs` of the project `id`.
    fn project(self, id: u64) -> HookProject<'a> {
        HookProject {
            id,
            name: self.name,
            description: None,
            web_url: self.web_url,
            avatar_url: None,
            git_ssh_url: self.ssh_url,
            git_http_url: self.http_url,
            namespace: self.namespace,
            visibility_level: PRIVATE,
            path_with_namespace: self.path,
            default_branch: "main",
            ci_config_path: None,
        }
    }
}

/// The build's runner, if it has one, with the build's tags.
fn hook_runner(job: &HookJob) -> Option<HookRunner<'_>> {
    job.runner_id.and_then(runner).map(|r| HookRunner {
        id: r.id,
        description: r.description,
        runner_type: r.runner_type,
        active: true,
        is_shared: r.is_shared,
        tags: job.tag_list.iter().map(|t| &**t).collect(),
    })
}

/// The user who started the build.
fn hook_user(user_id: u64) -> HookUser {
    let u = user(user_id);
    HookUser {
        id: u.id,
        name: u.name,
        username: u.username,
        avatar_url: avatar_url(u),
        email: "[REDACTED]",
    }
}

/// The pipeline under the name `commit`: its commit's message and author, and the pipeline's
/// status, duration and times.
fn hook_commit<'a>(
    project: &Project,
    pipeline: &'a Pipeline,
    pipeline_id: u64,
    links: &Links,
) -> HookCommit<'a> {
    let author = user(pipeline.commit.author_id);
    let (started, finished, status) = pipeline_times(project, pipeline_id);
    HookCommit {
        id: pipeline.id,
        name: None,
        sha: &pipeline.commit.sha,
        message: &pipeline.commit.message,
        author_name: author.name,
        author_email: email(author),
        author_url: format!("{}{}", links.base, author.username),
        status: status.as_str(),
        duration: started
            .zip(finished)
            .map(|(s, f)| (f.0 - s.0).div_euclid(1000)),
        started_at: started.map(webhook_time),
        finished_at: finished.map(webhook_time),
    }
}

/// `Ci::Build#retries_count`: the retried builds of that name in the pipeline.
fn retries_count(project: &Project, job: &HookJob) -> u64 {
    project
        .pipelines
        .get(&job.pipeline_id)
        .into_iter()
        .flat_map(|p| p.job_ids.iter())
        .filter_map(|id| project.jobs.get(id))
        .filter(|j| j.kind == JobKind::Build && j.retried && j.name == job.name)
        .count() as u64
}

/// The pipeline's start (its first job's), its end (once it is completed) and its status.
fn pipeline_times(
    project: &Project,
    pipeline_id: u64,
) -> (Option<SimTime>, Option<SimTime>, Status) {
    let status = project.pipeline_status(pipeline_id);
    let started = project
        .latest_jobs(pipeline_id)
        .filter_map(|j| j.started_at)
        .min();
    let finished = if status.is_completed() {
        project
            .latest_jobs(pipeline_id)
            .filter_map(|j| j.finished_at)
            .max()
    } else {
        None
    };
    (started, finished, status)
}
