//! `/api/v4`: the request pipeline every API request goes through, in GitLab's order:
//! faults (the simulator's own), route match, authentication (401), the instance-wide
//! Rack::Attack throttle, then the endpoint (parameter validation 400 → project 404 →
//! `jobs_index` limit 429 → the job). Every request is logged with its route template.

mod artifacts;
pub(crate) mod auth;
mod current;
pub(crate) mod errors;
mod groups;
mod jobs;
mod lists;
pub(crate) mod pagination;
pub(crate) mod params;
mod projects;
pub(crate) mod router;

use crate::sim::autopilot;
use crate::sim::clock::{SimTime, http_date};
use crate::sim::faults::FaultPlan;
use crate::sim::ratelimit::WindowState;
use crate::sim::render::Ctx;
use crate::sim::reqlog::LoggedRequest;
use crate::sim::server::{ConnInfo, Shared, lock};
use crate::sim::state::World;
use auth::Principal;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use errors::{ApiError, ErrorBody};
use pagination::LinkTarget;
use params::Params;
use router::{Endpoint, Route};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The largest request body read.
const MAX_BODY: usize = 1 << 20;
/// Rack::Attack's throttle period for authenticated API traffic, in milliseconds.
pub(crate) const THROTTLE_PERIOD_MS: i64 = 60_000;

/// The handler for every request that is not an admin request.
pub(crate) async fn serve(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(api_path) = path.strip_prefix("/api/v4").map(str::to_owned) else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    let method = request.method().clone();
    let route = router::resolve(&method, &api_path);
    let endpoint = route.as_ref().map_or("unknown", |r| r.endpoint.template());
    let mut entry = LoggedRequest {
        method: method.to_string(),
        endpoint,
        path,
        query,
        client: conn.peer.to_string(),
        status: 0,
        at: shared.now().0,
        applied_late: false,
    };

    let plan = lock(&shared.faults).plan(is_mutation(&method));
    if !shared.sleep(plan.latency).await || plan.drop_connection {
        conn.kill.trigger();
        lock(&shared.log).record(entry);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await;
    let exchange = Exchange {
        shared: shared.clone(),
        plan,
        parts,
        body,
        route,
        api_path,
    };
    if let Some(after) = plan.apply_late {
        // A proxy that gave up: the client gets no answer, and GitLab carries the request out
        // later all the same.
        conn.kill.trigger();
        lock(&shared.log).record(entry.clone());
        tokio::spawn(async move {
            if shared.sleep(after).await {
                let response = exchange.answer().await;
                entry.status = response.status().as_u16();
                entry.at = shared.now().0;
                entry.applied_late = true;
                lock(&shared.log).record(entry);
            }
        });
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // The request runs detached from the connection: a client that gives up on a held request
    // does not stop it, so a held mutation still takes effect, as in GitLab.
    let hold = plan.hold;
    let detached = tokio::spawn(async move {
        if let Some(hold) = hold
            && !shared.sleep(hold).await
        {
            lock(&shared.log).record(entry);
            return None;
        }
        let response = exchange.answer().await;
        entry.status = response.status().as_u16();
        lock(&shared.log).record(entry);
        Some(response)
    });
    match detached.await {
        Ok(Some(response)) => response,
        // Shut down while held (or the task failed): no answer.
        _ => {
            conn.kill.trigger();
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// True for the methods that change GitLab's state.
fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// One request past the connection-level faults, owned so it can outlive its connection.
struct Exchange {
    shared: Arc<Shared>,
    plan: FaultPlan,
    parts: axum::http::request::Parts,
    body: Result<Bytes, axum::Error>,
    route: Option<Route>,
    api_path: String,
}

impl Exchange {
    /// The answer GitLab gives (with the simulator's response faults applied).
    async fn answer(self) -> Response {
        let Exchange {
            shared,
            plan,
            parts,
            body,
            route,
            api_path,
        } = self;
        if let Some(code) = plan.server_error {
            return finish(&shared, server_error(code));
        }
        if plan.throttle {
            let limit = lock(&shared.authenticated_api_limit).limit_or(2000);
            let now = shared.now();
            let window = WindowState {
                limit,
                observed: limit.saturating_add(1),
                reset_at: SimTime(
                    (now.0.div_euclid(THROTTLE_PERIOD_MS) + 1).saturating_mul(THROTTLE_PERIOD_MS),
                ),
            };
            return finish(&shared, rack_attack_throttled(window, now));
        }
        let query = parts.uri.query().unwrap_or("");
        let mut params = Params::from_query(query);
        let response = match body {
            Err(_) => ApiError::param("request body is too large").into_response(),
            Ok(bytes) => match add_body_params(&mut params, &parts.headers, &bytes) {
                Err(err) => err.into_response(),
                Ok(()) => match &route {
                    None => ApiError::no_route().into_response(),
                    Some(route) => {
                        let link = LinkTarget {
                            url: format!("{}api/v4{}", shared.links_base, api_path),
                            pairs: params.pairs().to_vec(),
                        };
                        respond(&shared, route, &parts.headers, &params, link)
                    }
                },
            },
        };
        let mut response = finish(&shared, response);
        if plan.malformed_json {
            response = truncate_json(response).await;
        }
        if parts.method == Method::HEAD {
            *response.body_mut() = Body::empty();
        }
        response
    }
}

fn add_body_params(params: &mut Params, headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        params
            .add_json(body)
            .map_err(|_| ApiError::param("message body does not match declared format"))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        params.add_urlencoded(&String::from_utf8_lossy(body));
        Ok(())
    } else {
        Ok(())
    }
}

/// Authenticates, throttles and runs the endpoint, all under the world lock.
fn respond(
    shared: &Shared,
    route: &Route,
    headers: &HeaderMap,
    params: &Params,
    link: LinkTarget,
) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    let principal = match auth::authenticate(
        &mut world,
        now,
        headers,
        params,
        &shared.token,
        route.endpoint.accepts(),
    ) {
        Ok(principal) => principal,
        Err(err) => return err.into_response(),
    };
    let window = principal.rate_limit_key().and_then(|key| {
        let mut limiter = lock(&shared.authenticated_api_limit);
        limiter.enabled().then(|| limiter.hit(&key, now))
    });
    if let Some(window) = window.filter(WindowState::exceeded) {
        return rack_attack_throttled(window, now);
    }
    let mut call = Call {
        shared,
        world: &mut world,
        now,
        principal,
        route,
        params,
        link,
    };
    let result = match route.endpoint {
        Endpoint::GetProject => projects::get(&mut call),
        Endpoint::GetGroup => groups::get(&mut call),
        Endpoint::ListGroupProjects => groups::projects(&mut call),
        Endpoint::ListProjectJobs => lists::project_jobs(&mut call),
        Endpoint::ListPipelineJobs => lists::pipeline_jobs(&mut call),
        Endpoint::ListPipelineBridges => lists::pipeline_bridges(&mut call),
        Endpoint::CurrentJob => current::job(&mut call),
        Endpoint::CurrentJobAllowedAgents => current::allowed_agents(&mut call),
        Endpoint::GetJob => jobs::get(&mut call),
        Endpoint::Trace => jobs::trace(&mut call),
        Endpoint::Cancel => jobs::cancel(&mut call),
        Endpoint::Retry => jobs::retry(&mut call),
        Endpoint::Erase => jobs::erase(&mut call),
        Endpoint::Play => jobs::play(&mut call),
        Endpoint::DownloadArtifacts => artifacts::download(&mut call),
        Endpoint::DownloadArtifactsByRef => artifacts::download_by_ref(&mut call),
        Endpoint::ArtifactFile => artifacts::file(&mut call),
        Endpoint::ArtifactFileByRef => artifacts::file_by_ref(&mut call),
        Endpoint::KeepArtifacts => artifacts::keep(&mut call),
        Endpoint::DeleteArtifacts => artifacts::delete(&mut call),
    };
    match result {
        Ok(mut response) => {
            if let Some(window) = window {
                add_rate_limit_headers(response.headers_mut(), window);
            }
            response
        }
        // The application limit answers without any rate-limit headers.
        Err(err) if matches!(err.body, ErrorBody::NestedError(_)) => err.into_response(),
        Err(err) => {
            let mut response = err.into_response();
            if let Some(window) = window {
                add_rate_limit_headers(response.headers_mut(), window);
            }
            response
        }
    }
}

/// One endpoint invocation.
pub(crate) struct Call<'a> {
    pub shared: &'a Shared,
    pub world: &'a mut World,
    pub now: SimTime,
    pub principal: Principal,
    pub route: &'a Route,
    pub params: &'a Params,
    pub link: LinkTarget,
}

impl Call<'_> {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            base: &self.shared.links_base,
            now: self.now,
        }
    }

    /// `user_project`: the project of `:id` (404 `Project Not Found`), brought up to date.
    pub fn project(&mut self) -> Result<u64, ApiError> {
        let reference = self.route.project.as_deref().unwrap_or("");
        let project_id = self
            .world
            .resolve_project(reference)
            .ok_or_else(|| ApiError::not_found(Some("Project")))?;
        let visible = match self.principal {
            Principal::Token => true,
            Principal::Job {
                project_id: own, ..
            } => own == project_id,
            // Every simulated project is private.
            Principal::Anonymous => false,
        };
        if !visible {
            return Err(ApiError::not_found(Some("Project")));
        }
        autopilot::advance(self.world, project_id, self.now);
        Ok(project_id)
    }

    /// The `:job_id` / `:pipeline_id` path parameter as Grape's Integer: 400
    /// `"<name> is invalid"` when not an integer, `None` for integers no record can have.
    pub fn resource_id(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let raw = self.route.resource_id.as_deref().unwrap_or("");
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::param(format!("{name} is invalid")));
        }
        Ok(raw.parse::<u64>().ok())
    }
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => server_error(500),
    }
}

/// Adds headers to a response (names must be lowercase).
pub(crate) fn with_headers(
    mut response: Response,
    headers: Vec<(&'static str, String)>,
) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

fn add_rate_limit_headers(headers: &mut HeaderMap, window: WindowState) {
    let values = [
        ("ratelimit-name", "throttle_authenticated_api".to_owned()),
        ("ratelimit-limit", window.limit.to_string()),
        ("ratelimit-observed", window.observed.to_string()),
        ("ratelimit-remaining", window.remaining().to_string()),
        (
            "ratelimit-reset",
            window.reset_at.unix_seconds().to_string(),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Rack::Attack's answer to a throttled request: plain text, with every rate-limit header.
fn rack_attack_throttled(window: WindowState, now: SimTime) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    add_rate_limit_headers(headers, window);
    let retry_after = (window.reset_at.0 - now.0).max(1000).div_euclid(1000);
    for (name, value) in [
        ("ratelimit-resettime", http_date(window.reset_at)),
        ("retry-after", retry_after.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// GitLab-style server errors: JSON from Rails (500, 503), an HTML page from the proxy (502).
fn server_error(code: u16) -> Response {
    match code {
        502 => {
            let page = "<!DOCTYPE html>\n<html>\n<head><title>GitLab is not responding (502)</title></head>\n\
                        <body><h1>502</h1><p>Whoops, GitLab is taking too much time to respond.</p></body>\n</html>\n";
            let mut response = (StatusCode::BAD_GATEWAY, page).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        503 => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "message": "503 Service Unavailable" }),
        ),
        _ => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "message": "500 Internal Server Error" }),
        ),
    }
}

/// Headers GitLab puts on every API answer.
fn finish(shared: &Shared, mut response: Response) -> Response {
    let seq = shared.request_seq.fetch_add(1, Ordering::Relaxed);
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&format!("01SIM{seq:021X}")) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=0, private, must-revalidate"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("SAMEORIGIN"),
    );
    response
}

/// Cuts a JSON body off half-way (the "malformed JSON" fault); other bodies are left alone.
async fn truncate_json(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}
