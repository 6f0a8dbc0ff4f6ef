//! GitLab's JSON entities, written with the simulator's own serde types (never the client's
//! models, so a mistake there cannot hide by being mirrored here). Field order follows the
//! Grape entities (`docs/gitlab-behaviour.md` §4): `Entities::Ci::JobBasic`, `Entities::Ci::Job`,
//! `Entities::Ci::Bridge`, `PipelineBasic`, `Commit`, `User`, `Runner`, `RunnerManager`.

use crate::sim::artifacts;
use crate::sim::clock::{SimTime, iso8601, iso8601_with_offset};
use crate::sim::machine;
use crate::sim::state::{Job, JobKind, Pipeline, Project, Runner, User, World, runner, user};
use crate::sim::trace;
use serde::Serialize;
use std::collections::BTreeMap;

/// What every rendering needs besides the data: the instance URL for links and the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The instance URL with a trailing slash, e.g. `http://127.0.0.1:8080/`.
    pub base: &'a str,
    pub now: SimTime,
}

/// The group every fleet project lives in (`/job/allowed_agents` lists it).
const FLEET_GROUP_ID: u64 = 100;

#[derive(Debug, Serialize)]
pub(crate) struct JobBasicEntity<'a> {
    id: u64,
    status: &'static str,
    stage: &'a str,
    name: &'a str,
    #[serde(rename = "ref")]
    git_ref: &'a str,
    tag: bool,
    coverage: Option<f64>,
    allow_failure: bool,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    erased_at: Option<String>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
    user: Option<UserEntity>,
    commit: CommitEntity<'a>,
    pipeline: PipelineBasicEntity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    web_url: String,
    project: ProjectCiEntity,
}

#[derive(Debug, Serialize)]
struct ProjectCiEntity {
    ci_job_token_scope_enabled: bool,
}

/// `Entities::Ci::Job`.
#[derive(Debug, Serialize)]
pub(crate) struct JobEntity<'a> {
    #[serde(flatten)]
    basic: JobBasicEntity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifacts_file: Option<ArtifactsFileEntity>,
    artifacts: Vec<ArtifactEntity>,
    runner: Option<RunnerEntity>,
    /// Absent (not null) when a bridge is presented as a job.
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_manager: Option<Option<RunnerManagerEntity>>,
    artifacts_expire_at: Option<String>,
    archived: bool,
    tag_list: Vec<&'a str>,
}

/// `Entities::Ci::Bridge`.
#[derive(Debug, Serialize)]
pub(crate) struct BridgeEntity<'a> {
    #[serde(flatten)]
    basic: JobBasicEntity<'a>,
    downstream_pipeline: Option<PipelineBasicEntity<'a>>,
}

#[derive(Debug, Serialize)]
struct ArtifactsFileEntity {
    filename: &'static str,
    size: u64,
}

#[derive(Debug, Serialize)]
struct ArtifactEntity {
    file_type: &'static str,
    size: u64,
    filename: &'static str,
    file_format: &'static str,
}

#[derive(Debug, Serialize)]
struct RunnerEntity {
    id: u64,
    description: &'static str,
    ip_address: Option<String>,
    active: bool,
    paused: bool,
    is_shared: bool,
    runner_type: &'static str,
    name: &'static str,
    online: bool,
    status: &'static str,
}

#[derive(Debug, Serialize)]
struct RunnerManagerEntity {
    id: u64,
    system_id: &'static str,
    version: &'static str,
    revision: &'static str,
    platform: &'static str,
    architecture: &'static str,
    created_at: String,
    contacted_at: String,
    ip_address: String,
    status: &'static str,
}

/// `PipelineBasic`.
#[derive(Debug, Serialize)]
pub(crate) struct PipelineBasicEntity<'a> {
    id: u64,
    iid: u64,
    project_id: u64,
    sha: &'a str,
    #[serde(rename = "ref")]
    git_ref: &'a str,
    status: &'static str,
    source: &'static str,
    created_at: String,
    updated_at: String,
    web_url: String,
}

#[derive(Debug, Serialize)]
struct CommitEntity<'a> {
    id: &'a str,
    short_id: &'a str,
    created_at: String,
    parent_ids: [&'a str; 1],
    title: &'a str,
    message: &'a str,
    author_name: &'static str,
    author_email: String,
    authored_date: String,
    committer_name: &'static str,
    committer_email: String,
    committed_date: String,
    trailers: BTreeMap<String, String>,
    extended_trailers: BTreeMap<String, Vec<String>>,
    web_url: String,
}

/// `API::Entities::User` as the jobs endpoints show it.
#[derive(Debug, Serialize)]
struct UserEntity {
    id: u64,
    username: &'static str,
    name: &'static str,
    state: &'static str,
    locked: bool,
    avatar_url: String,
    web_url: String,
    created_at: String,
    bio: &'static str,
    location: &'static str,
    public_email: Option<String>,
    skype: &'static str,
    linkedin: &'static str,
    twitter: &'static str,
    website_url: &'static str,
    organization: &'static str,
    job_title: &'static str,
    pronouns: Option<String>,
    bot: bool,
    work_information: Option<String>,
    followers: u32,
    following: u32,
}

/// `UserBasic` (as `/job/allowed_agents` shows the job's user).
#[derive(Debug, Serialize)]
struct UserBasicEntity {
    id: u64,
    name: &'static str,
    username: &'static str,
    state: &'static str,
    avatar_url: String,
    web_url: String,
}

pub(crate) fn avatar_url(u: &User) -> String {
    format!(
        "https://www.gravatar.com/avatar/{:016x}{:016x}?s=80&d=identicon",
        crate::sim::state::mix64(u.id),
        crate::sim::state::mix64(u.id ^ 0xa5a5)
    )
}

fn user_entity(u: &'static User, ctx: Ctx<'_>) -> UserEntity {
    UserEntity {
        id: u.id,
        username: u.username,
        name: u.name,
        state: "active",
        locked: false,
        avatar_url: avatar_url(u),
        web_url: format!("{}{}", ctx.base, u.username),
        // Users joined on consecutive days of January 2024.
        created_at: iso8601(SimTime(1_704_103_200_000 + (u.id as i64 - 1) * 86_400_000)),
        bio: "",
        location: "",
        public_email: None,
        skype: "",
        linkedin: "",
        twitter: "",
        website_url: "",
        organization: u.organization,
        job_title: u.job_title,
        pronouns: None,
        bot: u.bot,
        work_information: None,
        followers: 0,
        following: 0,
    }
}

fn user_basic(u: &'static User, ctx: Ctx<'_>) -> UserBasicEntity {
    UserBasicEntity {
        id: u.id,
        name: u.name,
        username: u.username,
        state: "active",
        avatar_url: avatar_url(u),
        web_url: format!("{}{}", ctx.base, u.username),
    }
}

pub(crate) fn email(u: &User) -> String {
    format!("{}@fleet.example", u.username)
}

fn commit_entity<'a>(project: &Project, p: &'a Pipeline, ctx: Ctx<'_>) -> CommitEntity<'a> {
    let c = &p.commit;
    let author = user(c.author_id);
    let date = iso8601_with_offset(c.created_at, c.offset_minutes);
    CommitEntity {
        id: &c.sha,
        short_id: c.sha.get(..8).unwrap_or(&c.sha),
        created_at: date.clone(),
        parent_ids: [&c.parent_sha],
        title: &c.title,
        message: &c.message,
        author_name: author.name,
        author_email: email(author),
        authored_date: date.clone(),
        committer_name: author.name,
        committer_email: email(author),
        committed_date: date,
        trailers: BTreeMap::new(),
        extended_trailers: BTreeMap::new(),
        web_url: format!("{}{}/-/commit/{}", ctx.base, project.path, c.sha),
    }
}

/// `PipelineBasic` of a pipeline.
pub(crate) fn pipeline_basic<'a>(
    project: &Project,
    p: &'a Pipeline,
    ctx: Ctx<'_>,
) -> PipelineBasicEntity<'a> {
    PipelineBasicEntity {
        id: p.id,
        iid: p.iid,
        project_id: p.project_id,
        sha: &p.commit.sha,
        git_ref: &p.git_ref,
        status: project.pipeline_status(p.id).as_str(),
        source: p.source,
        created_at: iso8601(p.created_at),
        updated_at: iso8601(p.updated_at),
        web_url: format!("{}{}/-/pipelines/{}", ctx.base, project.path, p.id),
    }
}

fn job_basic<'a>(
    project: &'a Project,
    pipeline: &'a Pipeline,
    job: &'a Job,
    ctx: Ctx<'_>,
) -> JobBasicEntity<'a> {
    JobBasicEntity {
        id: job.id,
        status: job.status.as_str(),
        stage: &job.stage,
        name: &job.name,
        git_ref: &pipeline.git_ref,
        tag: pipeline.tag,
        coverage: job.coverage,
        allow_failure: job.allow_failure,
        created_at: iso8601(job.created_at),
        started_at: job.started_at.map(iso8601),
        finished_at: job.finished_at.map(iso8601),
        erased_at: job.erased_at.map(iso8601),
        duration: machine::duration(job, ctx.now),
        queued_duration: machine::queued_duration(job, ctx.now),
        user: Some(user_entity(user(job.user_id), ctx)),
        commit: commit_entity(project, pipeline, ctx),
        pipeline: pipeline_basic(project, pipeline, ctx),
        failure_reason: if job.status == crate::sim::status::Status::Failed {
            Some(
                job.failure_reason
                    .as_deref()
                    .unwrap_or(machine::UNKNOWN_FAILURE),
            )
        } else {
            None
        },
        web_url: format!("{}{}/-/jobs/{}", ctx.base, project.path, job.id),
        project: ProjectCiEntity {
            ci_job_token_scope_enabled: false,
        },
    }
}

/// `Entities::Ci::Job` of a job (builds, and bridges presented as jobs).
pub(crate) fn job<'a>(
    world: &World,
    project: &'a Project,
    job: &'a Job,
    ctx: Ctx<'_>,
) -> Option<JobEntity<'a>> {
    let pipeline = project.pipelines.get(&job.pipeline_id)?;
    let basic = job_basic(project, pipeline, job, ctx);
    if job.kind == JobKind::Bridge {
        return Some(JobEntity {
            basic,
            artifacts_file: None,
            artifacts: Vec::new(),
            runner: None,
            runner_manager: None,
            artifacts_expire_at: None,
            archived: world.is_archived(job, ctx.now),
            tag_list: Vec::new(),
        });
    }
    let live = job.has_live_artifacts(ctx.now);
    let archive_size = live.then(|| artifacts::zip_size(&artifacts::files(job, &pipeline.git_ref)));
    let runner = job.runner_id.and_then(runner);
    Some(JobEntity {
        basic,
        artifacts_file: archive_size.map(|size| ArtifactsFileEntity {
            filename: "artifacts.zip",
            size,
        }),
        artifacts: artifact_list(job, pipeline, archive_size),
        runner: runner.map(runner_entity),
        runner_manager: Some(runner.map(|r| runner_manager_entity(r, ctx))),
        artifacts_expire_at: job.artifacts.and_then(|a| a.expire_at).map(iso8601),
        archived: world.is_archived(job, ctx.now),
        tag_list: job.tag_list.iter().map(|t| &**t).collect(),
    })
}

/// A build's `artifacts`: the archive and its metadata while they live (`archive_size`), and
/// the log once the build has completed.
fn artifact_list(job: &Job, pipeline: &Pipeline, archive_size: Option<u64>) -> Vec<ArtifactEntity> {
    let mut list = Vec::new();
    if let Some(size) = archive_size {
        list.push(ArtifactEntity {
            file_type: "archive",
            size,
            filename: "artifacts.zip",
            file_format: "zip",
        });
        list.push(ArtifactEntity {
            file_type: "metadata",
            size: 64 + size / 4,
            filename: "metadata.gz",
            file_format: "gzip",
        });
    }
    if job.trace.is_some() && job.status.is_completed() {
        list.push(ArtifactEntity {
            file_type: "trace",
            size: trace::render(job, Some(pipeline)).len() as u64,
            filename: "job.log",
            file_format: "raw",
        });
    }
    list
}

/// `Entities::Ci::Runner` of the runner that ran a build.
fn runner_entity(r: &Runner) -> RunnerEntity {
    RunnerEntity {
        id: r.id,
        description: r.description,
        ip_address: None,
        active: true,
        paused: false,
        is_shared: r.is_shared,
        runner_type: r.runner_type,
        name: "gitlab-runner",
        online: true,
        status: "online",
    }
}

/// `Entities::Ci::RunnerManager` of the runner that ran a build (it contacted GitLab three
/// seconds ago).
fn runner_manager_entity(r: &Runner, ctx: Ctx<'_>) -> RunnerManagerEntity {
    RunnerManagerEntity {
        id: r.manager_id,
        system_id: r.system_id,
        version: "17.5.0",
        revision: "8ec04662",
        platform: "linux",
        architecture: "amd64",
        created_at: iso8601(SimTime(1_704_103_200_000)),
        contacted_at: iso8601(ctx.now.plus_millis(-3_000)),
        ip_address: format!("10.0.0.{}", r.id),
        status: "online",
    }
}

/// `Entities::Ci::Bridge` of a bridge. The simulator does not model downstream pipelines, so
/// `downstream_pipeline` is always null.
pub(crate) fn bridge<'a>(
    project: &'a Project,
    job: &'a Job,
    ctx: Ctx<'_>,
) -> Option<BridgeEntity<'a>> {
    let pipeline = project.pipelines.get(&job.pipeline_id)?;
    Some(BridgeEntity {
        basic: job_basic(project, pipeline, job, ctx),
        downstream_pipeline: None,
    })
}

/// The body of `GET /job/allowed_agents` (agents are not simulated: the list is empty).
#[derive(Debug, Serialize)]
pub(crate) struct AllowedAgentsEntity {
    allowed_agents: [(); 0],
    job: IdEntity,
    pipeline: IdEntity,
    project: ProjectWithGroupsEntity,
    user: UserBasicEntity,
}

#[derive(Debug, Serialize)]
struct IdEntity {
    id: u64,
}

#[derive(Debug, Serialize)]
struct ProjectWithGroupsEntity {
    id: u64,
    groups: [IdEntity; 1],
}

/// `GET /job/allowed_agents` of a running job.
pub(crate) fn allowed_agents(project: &Project, job: &Job, ctx: Ctx<'_>) -> AllowedAgentsEntity {
    AllowedAgentsEntity {
        allowed_agents: [],
        job: IdEntity { id: job.id },
        pipeline: IdEntity {
            id: job.pipeline_id,
        },
        project: ProjectWithGroupsEntity {
            id: project.id,
            groups: [IdEntity { id: FLEET_GROUP_ID }],
        },
        user: user_basic(user(job.user_id), ctx),
    }
}
