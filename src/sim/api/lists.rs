//! The three list endpoints: project jobs (offset without counts, or keyset; the `jobs_index`
//! limit), pipeline jobs and pipeline bridges (offset with counts).

use crate::sim::api::errors::ApiError;
use crate::sim::api::pagination::{KeysetRequest, OffsetRequest};
use crate::sim::api::params::Params;
use crate::sim::api::{Call, json, with_headers};
use crate::sim::render;
use crate::sim::server::lock;
use crate::sim::state::{Job, JobKind};
use crate::sim::status::Status;
use axum::http::StatusCode;
use axum::response::Response;

/// `scope`: statuses to keep (`None` = all); an unknown status is Grape's 400.
fn scope(params: &Params) -> Result<Option<Vec<Status>>, ApiError> {
    let Some(values) = params.list("scope") else {
        return Ok(None);
    };
    values
        .iter()
        .map(|v| {
            Status::parse(v).ok_or_else(|| ApiError::param("scope does not have a valid value"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn in_scope(job: &Job, scope: Option<&[Status]>) -> bool {
    scope.is_none_or(|statuses| statuses.contains(&job.status))
}

/// `GET /projects/:id/jobs`: every build of the project (retried attempts included), newest
/// first. Order of checks as in GitLab: parameters (400), the `jobs_index` limit (429), the
/// project (404), keyset ordering (405).
pub(super) fn project_jobs(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let scope = scope(call.params)?;
    let offset = OffsetRequest::parse(call.params)?;
    // GitLab checks the limit first, before it even looks the project up.
    {
        let mut limiter = lock(&call.shared.jobs_index_limit);
        if let Some(key) = call.principal.rate_limit_key()
            && limiter.enabled()
            && limiter.hit(&key, call.now).exceeded()
        {
            return Err(ApiError::jobs_index_throttled());
        }
    }
    let project_id = call.project()?;
    let keyset = KeysetRequest::parse(call.params)?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let ids: Vec<u64> = project
        .jobs
        .values()
        .rev()
        .filter(|j| j.kind == JobKind::Build && in_scope(j, scope.as_deref()))
        .map(|j| j.id)
        .collect();
    let ctx = call.ctx();
    let render_ids = |ids: &[u64]| -> Vec<_> {
        ids.iter()
            .filter_map(|id| project.jobs.get(id))
            .filter_map(|job| render::job(call.world, project, job, ctx))
            .collect()
    };
    if let Some(keyset) = keyset {
        let (page, more) = keyset.page(&ids);
        let body = json(StatusCode::OK, &render_ids(&page));
        let headers = match page.last() {
            Some(last) if more => vec![("link", keyset.next_link(*last, &call.link))],
            _ => Vec::new(),
        };
        return Ok(with_headers(body, headers));
    }
    let range = offset.range(ids.len());
    let body = json(StatusCode::OK, &render_ids(&ids[range]));
    Ok(with_headers(
        body,
        offset.headers(ids.len(), false, &call.link),
    ))
}

/// The pipeline of `:pipeline_id` in the project, with the listing parameters checked first.
fn pipeline_list(call: &mut Call<'_>, kind: JobKind) -> Result<Response, ApiError> {
    let scope = scope(call.params)?;
    let include_retried = match kind {
        JobKind::Build => call.params.boolean("include_retried")?.unwrap_or(false),
        JobKind::Bridge => false,
    };
    let offset = OffsetRequest::parse(call.params)?;
    let pipeline_id = call.resource_id("pipeline_id")?;
    let project_id = call.project()?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let pipeline = pipeline_id
        .and_then(|id| project.pipelines.get(&id))
        .ok_or_else(ApiError::record_not_found)?;
    let mut jobs: Vec<&Job> = pipeline
        .job_ids
        .iter()
        .filter_map(|id| project.jobs.get(id))
        .filter(|j| {
            j.kind == kind && (include_retried || !j.retried) && in_scope(j, scope.as_deref())
        })
        .collect();
    jobs.sort_unstable_by_key(|job| std::cmp::Reverse(job.id));
    let total = jobs.len();
    let page = &jobs[offset.range(total)];
    let ctx = call.ctx();
    let body = match kind {
        JobKind::Build => {
            let rendered: Vec<_> = page
                .iter()
                .filter_map(|job| render::job(call.world, project, job, ctx))
                .collect();
            json(StatusCode::OK, &rendered)
        }
        JobKind::Bridge => {
            let rendered: Vec<_> = page
                .iter()
                .filter_map(|job| render::bridge(project, job, ctx))
                .collect();
            json(StatusCode::OK, &rendered)
        }
    };
    Ok(with_headers(body, offset.headers(total, true, &call.link)))
}

/// `GET /projects/:id/pipelines/:pipeline_id/jobs`: the pipeline's builds, latest attempts
/// only unless `include_retried=true`.
pub(super) fn pipeline_jobs(call: &mut Call<'_>) -> Result<Response, ApiError> {
    pipeline_list(call, JobKind::Build)
}

/// `GET /projects/:id/pipelines/:pipeline_id/bridges`: the pipeline's trigger jobs.
pub(super) fn pipeline_bridges(call: &mut Call<'_>) -> Result<Response, ApiError> {
    pipeline_list(call, JobKind::Bridge)
}
