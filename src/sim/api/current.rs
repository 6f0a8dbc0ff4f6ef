//! `GET /job` and `GET /job/allowed_agents`: the job a CI job token belongs to.

use crate::sim::api::errors::ApiError;
use crate::sim::api::{Call, auth::Principal, json};
use crate::sim::render;
use axum::http::StatusCode;
use axum::response::Response;

/// The project and job of the calling job token (a personal token has no job: 404).
fn current(call: &Call<'_>) -> Result<(u64, u64), ApiError> {
    match call.principal {
        Principal::Job {
            project_id, job_id, ..
        } => Ok((project_id, job_id)),
        Principal::Token | Principal::Anonymous => Err(ApiError::not_found(Some("Job"))),
    }
}

pub(super) fn job(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = current(call)?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Job")))?;
    let job = project
        .jobs
        .get(&job_id)
        .ok_or_else(|| ApiError::not_found(Some("Job")))?;
    let entity = render::job(call.world, project, job, call.ctx())
        .ok_or_else(|| ApiError::not_found(Some("Job")))?;
    Ok(json(StatusCode::OK, &entity))
}

pub(super) fn allowed_agents(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let (project_id, job_id) = current(call)?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Job")))?;
    let job = project
        .jobs
        .get(&job_id)
        .ok_or_else(|| ApiError::not_found(Some("Job")))?;
    Ok(json(
        StatusCode::OK,
        &render::allowed_agents(project, job, call.ctx()),
    ))
}
