//! The admin endpoint under `/-/sim/` (outside `/api/v4`: no GitLab auth, no faults, no
//! logging, loopback clients only). It offers over HTTP what [`crate::sim::SimControl`]
//! offers in process; see the module docs of [`crate::sim`] for the routes.

use crate::sim::clock::iso8601;
use crate::sim::control::{JobSpec, PipelineSpec, ScenarioError, SimControl};
use crate::sim::faults::FaultConfigWire;
use crate::sim::hooks::WebhookConfig;
use crate::sim::server::{ConnInfo, Shared, lock};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Sim = State<Arc<Shared>>;
type AdminResult = Result<Response, AdminError>;

/// The admin routes (to be nested under `/-/sim`).
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/counters", get(counters))
        .route("/reset", post(reset))
        .route("/now", get(now))
        .route("/clock/advance", post(advance))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/groups", get(groups).post(create_group))
        .route("/projects", get(projects).post(create_project))
        .route("/projects/{id}/archive", post(archive))
        .route("/projects/{id}/unarchive", post(unarchive))
        .route("/projects/{id}/pipelines", post(create_pipeline))
        .route("/projects/{id}/jobs", get(project_jobs))
        .route("/projects/{id}/jobs/{job_id}", get(job))
        .route("/projects/{id}/jobs/{job_id}/status", post(set_status))
        .route("/hooks", get(list_hooks).post(add_hook))
        .route("/hooks/{hook_id}", get(get_hook).delete(delete_hook))
        .route("/hooks/{hook_id}/deliveries", get(hook_deliveries))
        .fallback(|| async { AdminError::not_found("no such admin route") })
        .layer(middleware::from_fn(loopback_only))
}

fn control(shared: &Arc<Shared>) -> SimControl {
    SimControl {
        shared: Arc::clone(shared),
    }
}

/// An admin error: `{"error": "..."}` with a status.
#[derive(Debug)]
struct AdminError(StatusCode, String);

impl AdminError {
    fn bad_request(message: impl Into<String>) -> AdminError {
        AdminError(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> AdminError {
        AdminError(StatusCode::NOT_FOUND, message.into())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Parses a JSON body (400 with serde's message when it does not fit).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|err| AdminError::bad_request(err.to_string()))
}

async fn loopback_only(
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    request: Request,
    next: Next,
) -> Response {
    if conn.peer.ip().is_loopback() {
        next.run(request).await
    } else {
        AdminError(
            StatusCode::FORBIDDEN,
            "the admin endpoint answers loopback clients only".to_owned(),
        )
        .into_response()
    }
}

async fn requests(State(shared): Sim) -> Response {
    Json(lock(&shared.log).entries()).into_response()
}

async fn counters(State(shared): Sim) -> Response {
    Json(lock(&shared.log).counters()).into_response()
}

async fn reset(State(shared): Sim) -> Response {
    let control = control(&shared);
    control.reset_log();
    control.reset_rate_limits();
    StatusCode::NO_CONTENT.into_response()
}

fn now_body(shared: &Shared) -> Response {
    Json(json!({ "now": iso8601(shared.now()) })).into_response()
}

async fn now(State(shared): Sim) -> Response {
    now_body(&shared)
}

/// A non-negative number of seconds.
fn seconds(value: f64, field: &str) -> Result<Duration, AdminError> {
    if value.is_finite() && (0.0..1e12).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(AdminError::bad_request(format!(
            "{field} must be a non-negative number"
        )))
    }
}

async fn advance(State(shared): Sim, Query(query): Query<HashMap<String, String>>) -> AdminResult {
    let raw = query
        .get("seconds")
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    control(&shared).advance(seconds(raw, "seconds")?);
    Ok(now_body(&shared))
}

async fn get_faults(State(shared): Sim) -> Response {
    Json(FaultConfigWire::from(lock(&shared.faults).config())).into_response()
}

async fn put_faults(State(shared): Sim, body: Bytes) -> AdminResult {
    let wire: FaultConfigWire = parse(&body)?;
    let config = wire.into_config().map_err(AdminError::bad_request)?;
    let echo = FaultConfigWire::from(&config);
    lock(&shared.faults).set(config);
    Ok(Json(echo).into_response())
}

async fn projects(State(shared): Sim) -> Response {
    Json(control(&shared).projects()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProjectBody {
    /// The full path, or with `group` the project's own path in that group.
    path: String,
    /// An existing group (id or full path) to put the project in.
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    archived: bool,
}

async fn create_project(State(shared): Sim, body: Bytes) -> AdminResult {
    let body: NewProjectBody = parse(&body)?;
    let control = control(&shared);
    let added = match &body.group {
        Some(group) => control.add_project_to_group(group, &body.path),
        None => control.add_project(&body.path),
    };
    let id = added.map_err(|err| match err {
        ScenarioError::UnknownGroup(_) => AdminError::not_found(err.to_string()),
        _ => AdminError(StatusCode::CONFLICT, err.to_string()),
    })?;
    let project = control
        .set_archived(id, body.archived)
        .map_err(|err| AdminError::not_found(err.to_string()))?;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

async fn groups(State(shared): Sim) -> Response {
    Json(control(&shared).groups()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroupBody {
    /// The full path (`fleet/platform/new`); missing ancestors are created.
    path: String,
}

async fn create_group(State(shared): Sim, body: Bytes) -> AdminResult {
    let body: NewGroupBody = parse(&body)?;
    let control = control(&shared);
    let id = control
        .add_group(&body.path)
        .map_err(|err| AdminError(StatusCode::CONFLICT, err.to_string()))?;
    let group = control
        .groups()
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| AdminError::not_found(format!("unknown group {id}")))?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

async fn set_archived(shared: &Arc<Shared>, id: &str, archived: bool) -> AdminResult {
    let project_id = resolve(shared, id)?;
    let project = control(shared)
        .set_archived(project_id, archived)
        .map_err(|err| AdminError::not_found(err.to_string()))?;
    Ok(Json(project).into_response())
}

async fn archive(State(shared): Sim, Path(id): Path<String>) -> AdminResult {
    set_archived(&shared, &id, true).await
}

async fn unarchive(State(shared): Sim, Path(id): Path<String>) -> AdminResult {
    set_archived(&shared, &id, false).await
}

fn resolve(shared: &Shared, reference: &str) -> Result<u64, AdminError> {
    shared
        .world()
        .resolve_project(reference)
        .ok_or_else(|| AdminError::not_found(format!("unknown project {reference}")))
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
    /// Defaults to true for manual jobs, as in GitLab.
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

impl JobBody {
    fn into_spec(self) -> Result<JobSpec, AdminError> {
        let when_manual = match self.when.as_deref() {
            None | Some("on_success") => false,
            Some("manual") => true,
            Some(other) => {
                return Err(AdminError::bad_request(format!(
                    "unsupported when: {other}"
                )));
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

async fn create_pipeline(State(shared): Sim, Path(id): Path<String>, body: Bytes) -> AdminResult {
    let project_id = resolve(&shared, &id)?;
    let body: PipelineBody = parse(&body)?;
    let jobs = body
        .jobs
        .into_iter()
        .map(JobBody::into_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let spec = PipelineSpec {
        git_ref: body.git_ref,
        tag: body.tag,
        jobs,
    };
    let pipeline = control(&shared)
        .try_add_pipeline(project_id, spec)
        .map_err(|err| AdminError::bad_request(err.to_string()))?;
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

async fn project_jobs(State(shared): Sim, Path(id): Path<String>) -> AdminResult {
    let project_id = resolve(&shared, &id)?;
    Ok(Json(control(&shared).jobs(project_id)).into_response())
}

async fn job(State(shared): Sim, Path((id, job_id)): Path<(String, u64)>) -> AdminResult {
    let project_id = resolve(&shared, &id)?;
    let job = control(&shared)
        .job(project_id, job_id)
        .ok_or_else(|| AdminError::not_found(format!("unknown job {job_id}")))?;
    Ok(Json(job).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
}

async fn set_status(
    State(shared): Sim,
    Path((id, job_id)): Path<(String, u64)>,
    body: Bytes,
) -> AdminResult {
    let project_id = resolve(&shared, &id)?;
    let body: StatusBody = parse(&body)?;
    let job = control(&shared)
        .try_set_job_status(
            project_id,
            job_id,
            &body.status,
            body.failure_reason.as_deref(),
        )
        .map_err(|err| match err {
            ScenarioError::UnknownStatus(_) => AdminError::bad_request(err.to_string()),
            _ => AdminError::not_found(err.to_string()),
        })?;
    Ok(Json(job).into_response())
}

async fn list_hooks(State(shared): Sim) -> Response {
    Json(control(&shared).webhooks()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookBody {
    url: String,
    #[serde(default)]
    token: Option<String>,
    /// Absent or null: every project.
    #[serde(default)]
    project_ids: Option<BTreeSet<u64>>,
}

async fn add_hook(State(shared): Sim, body: Bytes) -> AdminResult {
    let body: HookBody = parse(&body)?;
    let control = control(&shared);
    let id = control
        .add_webhook(WebhookConfig {
            url: body.url,
            token: body.token,
            project_ids: body.project_ids,
        })
        .map_err(|err| AdminError::bad_request(err.to_string()))?;
    let hook = control
        .webhook(id)
        .ok_or_else(|| AdminError::not_found(format!("unknown hook {id}")))?;
    Ok((StatusCode::CREATED, Json(hook)).into_response())
}

async fn get_hook(State(shared): Sim, Path(hook_id): Path<u64>) -> AdminResult {
    let hook = control(&shared)
        .webhook(hook_id)
        .ok_or_else(|| AdminError::not_found(format!("unknown hook {hook_id}")))?;
    Ok(Json(hook).into_response())
}

async fn delete_hook(State(shared): Sim, Path(hook_id): Path<u64>) -> AdminResult {
    if control(&shared).remove_webhook(hook_id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(AdminError::not_found(format!("unknown hook {hook_id}")))
    }
}

async fn hook_deliveries(State(shared): Sim, Path(hook_id): Path<u64>) -> AdminResult {
    let deliveries = control(&shared)
        .webhook_deliveries(hook_id)
        .ok_or_else(|| AdminError::not_found(format!("unknown hook {hook_id}")))?;
    Ok(Json(deliveries).into_response())
}
