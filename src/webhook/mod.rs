//! `POST /webhook`: GitLab Job Hook deliveries, on their own listener (`--webhook-listen`).
//!
//! A delivery is checked and answered within microseconds, and only ever queues work:
//! 1. `Content-Type: application/json` (else 415), `X-Gitlab-Event: Job Hook` (else 400), a body
//!    of at most [`MAX_BODY_BYTES`] (else 413), a Job Hook payload (`object_kind: "build"` with
//!    `project_id` and `build_id`; else 400 with the reason in `{"error": …}`);
//! 2. the `X-Gitlab-Token` secret, compared in constant time with the controller's secret and
//!    with the `webhookSecretRef` secrets of the policies that watch the delivery's project
//!    (missing or wrong: 401, nothing done);
//! 3. the same event delivered again (`X-Gitlab-Event-UUID`, `Idempotency-Key`): 200
//!    `duplicate`, nothing done;
//! 4. a project no policy observes: 200 `ignored`, nothing done (no GitLab call);
//! 5. otherwise 202 `accepted`: the engine queues the job for a re-read and wakes the policies
//!    that watch the project ([`Engine::job_event`]). The payload is never used for a decision:
//!    it only spares the read of a job that no rule could act on now as delivered
//!    ([`crate::policy::delivery_need`]).
//!
//! A standby replica forwards what passed 1 to the leader ([`forward`]) and answers with the
//! leader's status (`forwarded`; `unauthorized` when the leader refused the token), or 503 when
//! the leader cannot be reached: a standby runs no policy, so it does not know the policies' own
//! secrets, and leaves step 2 to the leader. With project
//! sharding, a delivery for a project of another shard is forwarded to that shard's leader
//! ([`route`]); a forwarded delivery (`X-Jobwarden-Forwarded`) is never forwarded again: it is
//! acted on by the leader of the owning shard, and refused (421 `misrouted`) by any other
//! replica.
//!
//! A stranger's junk is logged at debug level only; every delivery is counted in
//! `jobwarden_webhook_deliveries_total{outcome}`.

mod dedupe;
pub mod forward;
pub mod route;

pub use dedupe::RecentDeliveries;
pub use forward::{Forwarder, Leadership, Role};
pub use route::{FixedLeaders, ShardLeaders};

use crate::engine::{Engine, JobEvent};
use crate::gitlab::models::JobStatus;
use crate::policy::{DeliveredFacts, DeliveredMove, JobDelivery};
use crate::server::ConnectionLimits;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// The largest delivery read (a Job Hook is a few KB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The secrets a delivery's `X-Gitlab-Token` may match.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<SecretString>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} secrets)", self.0.len())
    }
}

/// Why the webhook receiver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "--webhook-listen needs a secret token: set the environment variable {0} (the \"Secret token\" of the GitLab webhook)"
    )]
    NoSecret(String),
    #[error("cannot listen for webhooks on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl WebhookSecrets {
    /// The non-empty secrets among `secrets`; an error naming `source` when there is none.
    pub fn new(secrets: Vec<SecretString>, source: &str) -> Result<WebhookSecrets, WebhookError> {
        let secrets: Vec<SecretString> = secrets
            .into_iter()
            .filter(|s| !s.expose_secret().is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(WebhookError::NoSecret(source.to_owned()));
        }
        Ok(WebhookSecrets(secrets))
    }

    /// True when `token` equals one of the secrets.
    fn accepts(&self, token: &[u8]) -> bool {
        equals_any(&self.0, token)
    }
}

/// True when `token` equals one of `secrets`; every comparison takes the same time whatever the
/// bytes (the lengths may still tell).
fn equals_any(secrets: &[SecretString], token: &[u8]) -> bool {
    secrets
        .iter()
        .fold(subtle::Choice::from(0), |any, secret| {
            any | secret.expose_secret().as_bytes().ct_eq(token)
        })
        .into()
}

/// What the receiver needs.
#[derive(Clone)]
pub struct WebhookState {
    engine: Engine,
    secrets: WebhookSecrets,
    recent: Arc<Mutex<RecentDeliveries>>,
    leadership: Leadership,
    forwarder: Option<Forwarder>,
    /// With project sharding: who leads the other shards, to whom the deliveries for their
    /// projects are forwarded.
    shard_leaders: Option<Arc<dyn ShardLeaders>>,
}

impl WebhookState {
    /// A receiver that always acts on deliveries itself (file mode).
    pub fn new(engine: Engine, secrets: WebhookSecrets) -> WebhookState {
        WebhookState {
            engine,
            secrets,
            recent: Arc::new(Mutex::new(RecentDeliveries::default())),
            leadership: Leadership::always_leading(),
            forwarder: None,
            shard_leaders: None,
        }
    }

    /// A receiver that acts while `leadership` says it leads and otherwise forwards to the
    /// leader through `forwarder` (cluster mode).
    pub fn elected(mut self, leadership: Leadership, forwarder: Option<Forwarder>) -> WebhookState {
        self.leadership = leadership;
        self.forwarder = forwarder;
        self
    }

    /// With project sharding (the engine's shard is one of several): a delivery for another
    /// shard's project is forwarded, through the forwarder of [`elected`](Self::elected), to
    /// that shard's leader as `leaders` tells it.
    pub fn routed(mut self, leaders: Arc<dyn ShardLeaders>) -> WebhookState {
        self.shard_leaders = Some(leaders);
        self
    }
}

/// The route `POST /webhook`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhook", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A webhook receiver running in the background.
#[derive(Debug)]
pub struct WebhookHandle {
    /// Where it listens (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WebhookHandle {
    /// Waits until the receiver has stopped (after the shutdown token fired).
    pub async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "webhook receiver stopped with an error"),
            Err(err) => tracing::warn!(error = %err, "webhook receiver task failed"),
        }
    }
}

/// Binds `addr` and receives deliveries in the background until `shutdown` is cancelled.
pub async fn spawn(
    addr: SocketAddr,
    state: WebhookState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<WebhookHandle, WebhookError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let task = tokio::spawn(crate::server::serve_app(
        listener,
        router(state),
        "listening for GitLab Job Hooks (POST /webhook)",
        async move { shutdown.cancelled_owned().await },
        ConnectionLimits::default(),
    ));
    Ok(WebhookHandle { local_addr, task })
}

/// The fields of a Job Hook payload jobwarden reads (GitLab's `Gitlab::DataBuilder::Build`).
/// Only `object_kind`, `project_id` and `build_id` are required; the others are never decided
/// on, they only tell whether the job is worth a read ([`Engine::job_event`]), and one that is
/// missing or not of the expected type is taken as not delivered.
#[derive(Debug, Deserialize)]
struct JobHook {
    object_kind: String,
    project_id: u64,
    build_id: u64,
    #[serde(default)]
    build_status: Option<JobStatus>,
    #[serde(default)]
    build_failure_reason: Lenient<String>,
    #[serde(default)]
    build_name: Lenient<String>,
    #[serde(default)]
    build_stage: Lenient<String>,
    #[serde(rename = "ref", default)]
    git_ref: Lenient<String>,
    #[serde(default)]
    tag: Lenient<bool>,
    #[serde(default)]
    build_allow_failure: Lenient<bool>,
    #[serde(default)]
    build_created_at: Lenient<String>,
    #[serde(default)]
    pipeline_id: Lenient<u64>,
}

/// A field that is `None` when missing, `null` or of another type than `T`.
#[derive(Debug)]
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Lenient(serde_json::from_value(value).ok()))
    }
}

impl JobHook {
    /// What the engine is told of the delivery.
    fn delivery(&self) -> JobDelivery {
        JobDelivery {
            moved: DeliveredMove {
                status: self.build_status,
                failure_reason: self.build_failure_reason.0.clone(),
            },
            facts: DeliveredFacts {
                name: self.build_name.0.clone(),
                stage: self.build_stage.0.clone(),
                git_ref: self.git_ref.0.clone(),
                tag: self.tag.0,
                allow_failure: self.build_allow_failure.0,
                created_at: self.build_created_at.0.as_deref().and_then(hook_time),
                pipeline_id: self.pipeline_id.0,
            },
        }
    }
}

/// A Job Hook timestamp: GitLab's webhook format (`2021-02-23 02:41:37 UTC`) or RFC 3339.
fn hook_time(raw: &str) -> Option<jiff::Timestamp> {
    if let Ok(t) = raw.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let utc = raw.strip_suffix(" UTC")?.replacen(' ', "T", 1);
    format!("{utc}Z").parse().ok()
}

/// How a delivery was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Accepted,
    Duplicate,
    Unauthorized,
    Ignored,
    Invalid,
    /// Passed on to the leader by a standby, or to the owning shard's leader.
    Forwarded,
    /// Could not be passed on (the leader unreachable, unknown, or no longer leading).
    Unforwarded,
    /// A forwarded delivery that reached a replica not leading the owning shard: refused,
    /// never forwarded again.
    Misrouted,
}

impl Delivery {
    fn label(self) -> &'static str {
        match self {
            Delivery::Forwarded => "forwarded",
            Delivery::Unforwarded => "unforwarded",
            Delivery::Misrouted => "misrouted",
            Delivery::Accepted => "accepted",
            Delivery::Duplicate => "duplicate",
            Delivery::Unauthorized => "unauthorized",
            Delivery::Ignored => "ignored",
            Delivery::Invalid => "invalid",
        }
    }
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let (delivery, response) = route(&state, &headers, body).await;
    state
        .engine
        .metrics()
        .count_webhook_delivery(delivery.label());
    response
}

/// Checks a delivery, then acts on it here or passes it on to the replica that acts on it.
async fn route(state: &WebhookState, headers: &HeaderMap, body: Bytes) -> (Delivery, Response) {
    let hook = match parse(headers, &body) {
        Ok(hook) => hook,
        Err(refused) => return refused,
    };
    let forwarded = headers.contains_key(forward::FORWARDED_HEADER);
    let instance = header(headers, "x-gitlab-instance");
    let shard = state.engine.shard();
    if !shard.is_everything()
        && let Some(owner) = state
            .engine
            .owner_shard(instance, hook.project_id)
            .filter(|owner| *owner != shard.index())
    {
        return to_another_shard(state, headers, body, &hook, owner, forwarded).await;
    }
    let role = state.leadership.get();
    if let (Role::Following { leader }, Some(forwarder)) = (&role, &state.forwarder)
        && !forwarded
    {
        // A standby runs no policy, so it knows the controller's secret but not the policies'
        // own (`webhookSecretRef`): the leader checks the token, and its 401 is passed back.
        return pass_on(forwarder, leader, headers, body, || {}).await;
    }
    if let Err(refused) = authenticate(state, headers, &hook) {
        return refused;
    }
    if forwarded && !shard.is_everything() && role != Role::Leading {
        return refuse(
            Delivery::Misrouted,
            StatusCode::MISDIRECTED_REQUEST,
            format!("this replica does not lead shard {shard}"),
        );
    }
    dispatch(state, headers, &hook)
}

/// A delivery for a project of shard `owner`, not this replica's: forwarded to that shard's
/// leader, unless it was forwarded already.
async fn to_another_shard(
    state: &WebhookState,
    headers: &HeaderMap,
    body: Bytes,
    hook: &JobHook,
    owner: u32,
    forwarded: bool,
) -> (Delivery, Response) {
    // This replica does not know which policies watch the project: the controller's secret, or
    // the secret of a policy of the instance, lets the delivery through to the owner, which
    // checks it against the secrets of the policies watching the project. A standby runs no
    // policy and knows none of their secrets: it lets the owner check every delivery.
    let token = token(headers);
    let instance = header(headers, "x-gitlab-instance");
    let knows_policy_secrets = state.leadership.get() == Role::Leading;
    if knows_policy_secrets
        && !state.secrets.accepts(token)
        && !equals_any(&state.engine.webhook_secrets_of_instance(instance), token)
    {
        return unauthorized();
    }
    if forwarded {
        return refuse(
            Delivery::Misrouted,
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "project {} belongs to shard {owner}, not to this replica's shard {}",
                hook.project_id,
                state.engine.shard()
            ),
        );
    }
    let (Some(forwarder), Some(leaders)) = (&state.forwarder, &state.shard_leaders) else {
        // Nowhere to forward to: the owner catches the job at its next run.
        return dispatch(state, headers, hook);
    };
    let Some(leader) = leaders.leader_of(owner).await else {
        let error = format!(
            "no replica is known to lead shard {owner} (its Lease is free, expired or unreadable)"
        );
        tracing::warn!(%error, "a webhook delivery could not be passed to its shard");
        return refuse(
            Delivery::Unforwarded,
            StatusCode::SERVICE_UNAVAILABLE,
            error,
        );
    };
    pass_on(forwarder, &leader, headers, body, || leaders.forget(owner)).await
}

/// Forwards a delivery to `leader` and answers with its status; 503 when it cannot be reached
/// or does not lead (421), after calling `unreached`.
async fn pass_on(
    forwarder: &Forwarder,
    leader: &str,
    headers: &HeaderMap,
    body: Bytes,
    unreached: impl FnOnce(),
) -> (Delivery, Response) {
    let error = match forwarder.forward(leader, headers, body).await {
        Ok(status) if status == StatusCode::MISDIRECTED_REQUEST.as_u16() => {
            format!("the replica {leader} no longer leads the shard of this delivery")
        }
        // The leader refused the token: counted here as it is there.
        Ok(status) if status == StatusCode::UNAUTHORIZED.as_u16() => return unauthorized(),
        Ok(status) => {
            return answered(
                Delivery::Forwarded,
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            );
        }
        Err(error) => error,
    };
    unreached();
    tracing::warn!(%error, "a webhook delivery could not be passed to the leader");
    refuse(
        Delivery::Unforwarded,
        StatusCode::SERVICE_UNAVAILABLE,
        error,
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn token(headers: &HeaderMap) -> &[u8] {
    headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default()
}

fn refuse(delivery: Delivery, status: StatusCode, error: String) -> (Delivery, Response) {
    tracing::debug!(%status, %error, "webhook delivery refused");
    let body = serde_json::json!({ "error": error });
    (delivery, (status, axum::Json(body)).into_response())
}

fn unauthorized() -> (Delivery, Response) {
    refuse(
        Delivery::Unauthorized,
        StatusCode::UNAUTHORIZED,
        "missing or wrong X-Gitlab-Token".to_owned(),
    )
}

fn answered(delivery: Delivery, status: StatusCode) -> (Delivery, Response) {
    let body = serde_json::json!({ "status": delivery.label() });
    (delivery, (status, axum::Json(body)).into_response())
}

/// Checks a delivery and acts on it here.
#[cfg(test)]
fn answer(state: &WebhookState, headers: &HeaderMap, body: &[u8]) -> (Delivery, Response) {
    let hook = match parse(headers, body) {
        Ok(hook) => hook,
        Err(refused) => return refused,
    };
    match authenticate(state, headers, &hook) {
        Ok(()) => dispatch(state, headers, &hook),
        Err(refused) => refused,
    }
}

/// The headers and the payload of a delivery.
#[allow(clippy::result_large_err)] // the refusal is the response itself
fn parse(headers: &HeaderMap, body: &[u8]) -> Result<JobHook, (Delivery, Response)> {
    let content_type = header(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(refuse(
            Delivery::Invalid,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, not {content_type:?}"),
        ));
    }
    let event = header(headers, "x-gitlab-event").unwrap_or("");
    if event != "Job Hook" {
        return Err(refuse(
            Delivery::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "only Job Hook deliveries are accepted (X-Gitlab-Event: Job Hook), not {event:?}: turn the other events off on this webhook"
            ),
        ));
    }
    let hook: JobHook = match serde_json::from_slice(body) {
        Ok(hook) => hook,
        Err(err) => {
            return Err(refuse(
                Delivery::Invalid,
                StatusCode::BAD_REQUEST,
                format!("not a Job Hook payload: {err}"),
            ));
        }
    };
    if hook.object_kind != "build" {
        return Err(refuse(
            Delivery::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "not a Job Hook payload: object_kind is {:?}, not \"build\"",
                hook.object_kind
            ),
        ));
    }
    Ok(hook)
}

/// The secret of a delivery: the controller's, or the secret of a policy that watches the
/// project.
#[allow(clippy::result_large_err)] // the refusal is the response itself
fn authenticate(
    state: &WebhookState,
    headers: &HeaderMap,
    hook: &JobHook,
) -> Result<(), (Delivery, Response)> {
    let token = token(headers);
    let instance = header(headers, "x-gitlab-instance");
    if !state.secrets.accepts(token)
        && !equals_any(
            &state.engine.webhook_secrets_for(instance, hook.project_id),
            token,
        )
    {
        return Err(unauthorized());
    }
    Ok(())
}

/// De-duplicates a checked delivery and hands it to the engine.
fn dispatch(state: &WebhookState, headers: &HeaderMap, hook: &JobHook) -> (Delivery, Response) {
    let ids: Vec<&str> = ["x-gitlab-event-uuid", "idempotency-key"]
        .iter()
        .filter_map(|name| header(headers, name))
        .filter(|id| !id.is_empty())
        .collect();
    let first_time = crate::sync::lock(&state.recent).first_time(&ids);
    if !first_time {
        return answered(Delivery::Duplicate, StatusCode::OK);
    }
    let instance = header(headers, "x-gitlab-instance");
    match state
        .engine
        .job_event(instance, hook.project_id, hook.build_id, &hook.delivery())
    {
        JobEvent::Accepted { .. } => answered(Delivery::Accepted, StatusCode::ACCEPTED),
        JobEvent::Ignored => answered(Delivery::Ignored, StatusCode::OK),
    }
}

#[cfg(test)]
mod tests;
