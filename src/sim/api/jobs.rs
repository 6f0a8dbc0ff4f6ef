//! One job: get, trace, cancel, retry, erase, play.

use crate::sim::api::errors::ApiError;
use crate::sim::api::params::Params;
use crate::sim::api::{Call, json};
use crate::sim::ops::{self, OpError};
use crate::sim::render;
use crate::sim::state::{Job, JobKind};
use crate::sim::trace;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Which jobs an endpoint finds: builds only (`find_build!`) or builds and bridges
/// (`find_job!`, used by retry and play).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finder {
    Build,
    Processable,
}

/// Validates `:job_id`, finds the project, then the job (404 `Not found` if it is not a job of
/// that project). Returns the project and job ids.
pub(super) fn locate(call: &mut Call<'_>, finder: Finder) -> Result<(u64, u64), ApiError> {
    let job_id = call.resource_id("job_id")?;
    let project_id = call.project()?;
    let job = job_id
        .and_then(|id| call.world.job(project_id, id))
        .filter(|job| finder == Finder::Processable || job.kind == JobKind::Build)
        .ok_or_else(ApiError::record_not_found)?;
    Ok((project_id, job.id))
}

/// [`locate`] for the calls that change a job: an archived project is read-only, and
/// `authorize!` answers 403 `Forbidden` (after the project and the job were found).
pub(super) fn locate_for_update(
    call: &mut Call<'_>,
    finder: Finder,
) -> Result<(u64, u64), ApiError> {
    let (project_id, job_id) = locate(call, finder)?;
    if call
        .world
        .projects
        .get(&project_id)
        .is_some_and(|p| p.archived)
    {
        return Err(ApiError::forbidden_bare());
    }
    Ok((project_id, job_id))
}

/// The job rendered as `Entities::Ci::Job` (or `Bridge` when `as_bridge` and it is one).
fn present(
    call: &Call<'_>,
    project_id: u64,
    job_id: u64,
    status: StatusCode,
    as_bridge: bool,
) -> Result<Response, ApiError> {
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let job: &Job = project
        .jobs
        .get(&job_id)
        .ok_or_else(ApiError::record_not_found)?;
    let ctx = call.ctx();
    if as_bridge && job.kind == JobKind::Bridge {
        let entity = render::bridge(project, job, ctx).ok_or_else(ApiError::record_not_found)?;
        return Ok(json(status, &entity));
    }
    let entity =
        render::job(call.world, project, job, ctx).ok_or_else(ApiError::record_not_found)?;
    Ok(json(status, &entity))
}

/// `GET /projects/:id/jobs/:job_id`.
pub(super) fn get(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate(call, Finder::Build)?;
    present(call, project_id, job_id, StatusCode::OK, false)
}

/// `GET /projects/:id/jobs/:job_id/trace`: the log as plain text (empty when none).
pub(super) fn trace(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate(call, Finder::Build)?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let job = project
        .jobs
        .get(&job_id)
        .ok_or_else(ApiError::record_not_found)?;
    let text = trace::render(job, project.pipelines.get(&job.pipeline_id));
    let mut response = (StatusCode::OK, text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("infile; filename=\"{job_id}.log\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// `POST /projects/:id/jobs/:job_id/cancel`: 201 with the job, changed or not.
pub(super) fn cancel(call: &mut Call<'_>) -> Result<Response, ApiError> {
    // `force` is accepted (and validated); the simulated runners cancel at once either way.
    call.params.boolean("force")?;
    let (project_id, job_id) = locate_for_update(call, Finder::Build)?;
    ops::cancel(call.world, project_id, job_id, call.now);
    present(call, project_id, job_id, StatusCode::CREATED, false)
}

/// `POST /projects/:id/jobs/:job_id/retry`: 201 with the NEW job.
pub(super) fn retry(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate_for_update(call, Finder::Processable)?;
    let user_id = call
        .principal
        .user_id()
        .ok_or_else(ApiError::unauthorized)?;
    let new_id = ops::retry(call.world, project_id, job_id, user_id, None, call.now).map_err(
        |err| match err {
            OpError::NotRetryable => ApiError::forbidden("Job is not retryable"),
            _ => ApiError::record_not_found(),
        },
    )?;
    present(call, project_id, new_id, StatusCode::CREATED, false)
}

/// `POST /projects/:id/jobs/:job_id/erase`: 201 with the erased job.
pub(super) fn erase(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = locate_for_update(call, Finder::Build)?;
    ops::erase(call.world, project_id, job_id, call.now).map_err(|err| match err {
        OpError::NotErasable => ApiError::forbidden("Job is not erasable!"),
        _ => ApiError::record_not_found(),
    })?;
    present(call, project_id, job_id, StatusCode::CREATED, false)
}

/// `POST /projects/:id/jobs/:job_id/play`: 200 with the job that runs (a new one when a
/// finished manual job is played again).
pub(super) fn play(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let variables = job_variables(call.params)?;
    let (project_id, job_id) = locate_for_update(call, Finder::Processable)?;
    let user_id = call
        .principal
        .user_id()
        .ok_or_else(ApiError::unauthorized)?;
    let played =
        ops::play(call.world, project_id, job_id, user_id, variables, call.now).map_err(|err| {
            match err {
                OpError::Unplayable => ApiError::bad_request("Unplayable Job"),
                _ => ApiError::record_not_found(),
            }
        })?;
    present(call, project_id, played, StatusCode::OK, true)
}

/// `job_variables_attributes`: each entry needs `key` and `value` (Grape's messages, joined
/// the way Grape joins them).
fn job_variables(params: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let Some(entries) = params.hash_array("job_variables_attributes")? else {
        return Ok(Vec::new());
    };
    let mut missing = Vec::new();
    let mut variables = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = entry.get("key").cloned().flatten();
        let value = entry.get("value").cloned().flatten();
        if key.is_none() {
            missing.push(format!("job_variables_attributes[{i}][key] is missing"));
        }
        if value.is_none() {
            missing.push(format!("job_variables_attributes[{i}][value] is missing"));
        }
        if let (Some(k), Some(v)) = (key, value) {
            variables.push((k, v));
        }
    }
    if missing.is_empty() {
        Ok(variables)
    } else {
        Err(ApiError::param(missing.join(", ")))
    }
}
