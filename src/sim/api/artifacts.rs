//! Artifact endpoints: download the archive (by job, or by ref and job name), one file from
//! it, keep it, delete it.

use crate::sim::api::errors::ApiError;
use crate::sim::api::jobs::{Finder, locate, locate_for_update};
use crate::sim::api::{Call, json};
use crate::sim::artifacts::{self, ArtifactFile};
use crate::sim::clock::SimTime;
use crate::sim::ops::{self, OpError};
use crate::sim::render;
use crate::sim::state::{Job, JobKind, Project};
use crate::sim::status::Status;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Characters RFC 5987 lets through unencoded in `filename*`.
const RFC5987_ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// Chunk size of streamed downloads.
const CHUNK: usize = 8 * 1024;

/// The files of a job's live archive (404 `Not Found` when there is none or it expired).
fn live_files(
    call: &Call<'_>,
    project: &Project,
    job: &Job,
) -> Result<Vec<ArtifactFile>, ApiError> {
    if !job.has_live_artifacts(call.now) {
        return Err(ApiError::not_found(None));
    }
    let git_ref = project
        .pipelines
        .get(&job.pipeline_id)
        .map_or("", |p| p.git_ref.as_str());
    Ok(artifacts::files(job, git_ref))
}

fn project_and_job<'w>(
    call: &'w Call<'_>,
    project_id: u64,
    job_id: u64,
) -> Result<(&'w Project, &'w Job), ApiError> {
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let job = project
        .jobs
        .get(&job_id)
        .ok_or_else(ApiError::record_not_found)?;
    Ok((project, job))
}

/// `latest_successful_build_for_ref`: in the newest pipeline of `git_ref` that succeeded, the
/// latest build called `name` that has an artifacts archive.
fn latest_successful_build_for_ref(project: &Project, git_ref: &str, name: &str) -> Option<u64> {
    let pipeline = project
        .pipelines
        .values()
        .rev()
        .find(|p| p.git_ref == git_ref && project.pipeline_status(p.id) == Status::Success)?;
    project
        .latest_jobs(pipeline.id)
        .filter(|job| job.kind == JobKind::Build && &*job.name == name && job.artifacts.is_some())
        .map(|job| job.id)
        .max()
}

/// `latest_with_artifacts_for_ref` (`search_recent_successful_pipelines=true`): the newest
/// successful build called `name` on `git_ref` whose artifacts are still there, in any pipeline.
fn latest_with_artifacts_for_ref(
    project: &Project,
    git_ref: &str,
    name: &str,
    now: SimTime,
) -> Option<u64> {
    project
        .jobs
        .values()
        .rev()
        .find(|job| {
            job.kind == JobKind::Build
                && job.status == Status::Success
                && !job.retried
                && &*job.name == name
                && job.has_live_artifacts(now)
                && project
                    .pipelines
                    .get(&job.pipeline_id)
                    .is_some_and(|p| p.git_ref == git_ref)
        })
        .map(|job| job.id)
}

fn by_ref(call: &mut Call<'_>) -> Result<(u64, u64), ApiError> {
    let name = call
        .params
        .scalar("job")
        .ok_or_else(|| ApiError::param("job is missing"))?;
    let search_recent = call
        .params
        .boolean("search_recent_successful_pipelines")?
        .unwrap_or(false);
    let project_id = call.project()?;
    let git_ref = call.route.ref_name.clone().unwrap_or_default();
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let job_id = if search_recent {
        latest_with_artifacts_for_ref(project, &git_ref, &name, call.now)
            .ok_or_else(|| ApiError::not_found(Some("Job")))?
    } else {
        latest_successful_build_for_ref(project, &git_ref, &name)
            .ok_or_else(ApiError::record_not_found)?
    };
    Ok((project_id, job_id))
}

/// `Gitlab::Ci::Build::Artifacts::Path#valid?`: no NUL bytes, no `..` traversal.
fn valid_artifact_path(path: &str) -> bool {
    !path.contains('\0') && path.split('/').all(|segment| segment != "..")
}

/// A streamed download.
fn stream(bytes: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(CHUNK)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let mut response = (
        StatusCode::OK,
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let safe: String = filename
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(&safe, RFC5987_ATTR);
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{safe}\"; filename*=UTF-8''{encoded}"
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn archive(call: &Call<'_>, project_id: u64, job_id: u64) -> Result<Response, ApiError> {
    let (project, job) = project_and_job(call, project_id, job_id)?;
    let files = live_files(call, project, job)?;
    Ok(stream(
        artifacts::zip(&files),
        "application/zip",
        "artifacts.zip",
    ))
}

fn single_file(call: &Call<'_>, project_id: u64, job_id: u64) -> Result<Response, ApiError> {
    let path = call.route.artifact_path.clone().unwrap_or_default();
    let (project, job) = project_and_job(call, project_id, job_id)?;
    let files = live_files(call, project, job)?;
    if !valid_artifact_path(&path) {
        return Err(ApiError::bad_request_bare());
    }
    let file = files
        .into_iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::not_found(None))?;
    let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    Ok(stream(file.content, artifacts::content_type(&path), &name))
}

/// `GET /projects/:id/jobs/:job_id/artifacts`.
pub(super) fn download(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate(call, Finder::Build)?;
    archive(call, project_id, job_id)
}

/// `GET /projects/:id/jobs/artifacts/:ref_name/download?job=NAME`.
pub(super) fn download_by_ref(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = by_ref(call)?;
    archive(call, project_id, job_id)
}

/// `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`.
pub(super) fn file(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate(call, Finder::Build)?;
    single_file(call, project_id, job_id)
}

/// `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=NAME`.
pub(super) fn file_by_ref(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = by_ref(call)?;
    single_file(call, project_id, job_id)
}

/// `POST /projects/:id/jobs/:job_id/artifacts/keep`: 200 with the job.
pub(super) fn keep(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate_for_update(call, Finder::Build)?;
    ops::keep_artifacts(call.world, project_id, job_id, call.now).map_err(|err| match err {
        OpError::NoArtifacts => ApiError::not_found(None),
        _ => ApiError::record_not_found(),
    })?;
    let (project, job) = project_and_job(call, project_id, job_id)?;
    let entity =
        render::job(call.world, project, job, call.ctx()).ok_or_else(ApiError::record_not_found)?;
    Ok(json(StatusCode::OK, &entity))
}

/// `DELETE /projects/:id/jobs/:job_id/artifacts`: 204.
pub(super) fn delete(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate_for_update(call, Finder::Build)?;
    ops::delete_artifacts(call.world, project_id, job_id, call.now)
        .map_err(|_| ApiError::record_not_found())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
