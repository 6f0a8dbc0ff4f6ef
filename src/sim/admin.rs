//! The admin endpoint under `/-/sim/` (outside `/api/v4`: no GitLab auth, no faults, no
//! logging, loopback clients only). It offers over HTTP what [`crate::sim::SimControl`]
//! offers in process; see the module docs of [`crate::sim`] for the routes.

use crate::sim::clock::iso8601;
use crate::sim::control::{JobSpec, PipelineSpec, SimControl};
use crate::sim::faults::FaultConfigWire;
use crate::sim::server::{ConnInfo, Shared, lock};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The admin routes (to be nested under `/-/sim`).
pub(crate) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/counters", get(counters))
        .route("/reset", post(reset))
        .route("/now", get(now))
        .route("/clock/advance", post(advance))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/projects", get(projects).post(create_project))
        .route("/projects/{id}/pipelines", post(create_pipeline))
        .route("/projects/{id}/jobs", get(project_jobs))
        .route("/projects/{id}/jobs/{job_id}", get(job))
        .route("/projects/{id}/jobs/{job_id}/status", post(set_status))
        .route_layer(middleware::from_fn_with_state(shared, loopback_only))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin route") })
}

fn control(shared: &Arc<Shared>) -> SimControl {
    SimControl {
        shared: Arc::clone(shared),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn loopback_only(
    State(_shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    request: Request,
    next: Next,
) -> Response {
    if conn.peer.ip().is_loopback() {
        next.run(request).await
    } else {
        error(
            StatusCode::FORBIDDEN,
            "the admin endpoint answers loopback clients only",
        )
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.log).entries()).into_response()
}

async fn counters(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.log).counters()).into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    let control = control(&shared);
    control.reset_log();
    control.reset_rate_limits();
    StatusCode::NO_CONTENT.into_response()
}

fn now_body(shared: &Shared) -> Response {
    Json(json!({ "now": iso8601(shared.now()) })).into_response()
}

async fn now(State(shared): State<Arc<Shared>>) -> Response {
    now_body(&shared)
}

async fn advance(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let seconds = query.get("seconds").and_then(|s| s.parse::<f64>().ok());
    match seconds {
        Some(s) if s.is_finite() && s >= 0.0 && s < 1e12 => {
            shared.clock.advance(Duration::from_secs_f64(s));
            now_body(&shared)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "seconds must be a non-negative number",
        ),
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(FaultConfigWire::from(lock(&shared.faults).config())).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let wire: FaultConfigWire = match serde_json::from_slice(&body) {
        Ok(wire) => wire,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match wire.into_config() {
        Ok(config) => {
            let echo = FaultConfigWire::from(&config);
            lock(&shared.faults).set(config);
            Json(echo).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn projects(State(shared): State<Arc<Shared>>) -> Response {
    let world = shared.world();
    let list: Vec<_> = world
        .projects
        .values()
        .map(|p| json!({ "id": p.id, "path": p.path }))
        .collect();
    Json(list).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProjectBody {
    path: String,
}

async fn create_project(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let body: NewProjectBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match control(&shared).add_project(&body.path) {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({ "id": id, "path": body.path })),
        )
            .into_response(),
        Err(err) => error(StatusCode::CONFLICT, err.to_string()),
    }
}

fn resolve(shared: &Shared, reference: &str) -> Result<u64, Response> {
    shared.world().resolve_project(reference).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("unknown project {reference}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineBody {
    #[serde(rename = "ref", default = "default_ref")]
    git_ref: String,
    #[serde(default)]
    tag: bool,
    jobs: Vec<JobBody>,
}

fn default_ref() -> String {
    "main".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobBody {
    name: String,
    #[serde(default = "default_stage")]
    stage: String,
    #[serde(default = "default_status")]
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
    /// `on_success` (default) or `manual`.
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    allow_failure: Option<bool>,
    #[serde(default)]
    age_seconds: f64,
    #[serde(default)]
    artifacts_expire_in_seconds: Option<f64>,
    #[serde(default)]
    log: String,
    #[serde(default)]
    tags: Vec<String>,
    /// A trigger job (bridge) instead of a build.
    #[serde(default)]
    bridge: bool,
}

fn default_stage() -> String {
    "test".to_owned()
}

fn default_status() -> String {
    "created".to_owned()
}

fn seconds(value: f64, field: &str) -> Result<Duration, Response> {
    if value.is_finite() && (0.0..1e12).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            format!("{field} must be a non-negative number"),
        ))
    }
}

impl JobBody {
    fn into_spec(self) -> Result<JobSpec, Response> {
        let when_manual = match self.when.as_deref() {
            None | Some("on_success") => false,
            Some("manual") => true,
            Some(other) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unsupported when: {other}"),
                ));
            }
        };
        Ok(JobSpec {
            name: self.name,
            stage: self.stage,
            status: self.status,
            failure_reason: self.failure_reason,
            when_manual,
            allow_failure: self.allow_failure.unwrap_or(when_manual),
            age: seconds(self.age_seconds, "age_seconds")?,
            artifacts_expire_in: self
                .artifacts_expire_in_seconds
                .map(|s| seconds(s, "artifacts_expire_in_seconds"))
                .transpose()?,
            log: self.log,
            tags: self.tags,
            bridge: self.bridge,
        })
    }
}

async fn create_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let project_id = match resolve(&shared, &id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let body: PipelineBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let mut jobs = Vec::with_capacity(body.jobs.len());
    for job in body.jobs {
        match job.into_spec() {
            Ok(spec) => jobs.push(spec),
            Err(response) => return response,
        }
    }
    let spec = PipelineSpec {
        git_ref: body.git_ref,
        tag: body.tag,
        jobs,
    };
    match control(&shared).try_add_pipeline(project_id, spec) {
        Ok(pipeline) => (StatusCode::CREATED, Json(pipeline)).into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

async fn project_jobs(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match resolve(&shared, &id) {
        Ok(project_id) => Json(control(&shared).jobs(project_id)).into_response(),
        Err(response) => response,
    }
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path((id, job_id)): Path<(String, u64)>,
) -> Response {
    let project_id = match resolve(&shared, &id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match control(&shared).job(project_id, job_id) {
        Some(job) => Json(job).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown job {job_id}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
}

async fn set_status(
    State(shared): State<Arc<Shared>>,
    Path((id, job_id)): Path<(String, u64)>,
    body: axum::body::Bytes,
) -> Response {
    let project_id = match resolve(&shared, &id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let body: StatusBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match control(&shared).try_set_job_status(
        project_id,
        job_id,
        &body.status,
        body.failure_reason.as_deref(),
    ) {
        Ok(job) => Json(job).into_response(),
        Err(err @ crate::sim::control::ScenarioError::UnknownStatus(_)) => {
            error(StatusCode::BAD_REQUEST, err.to_string())
        }
        Err(err) => error(StatusCode::NOT_FOUND, err.to_string()),
    }
}
