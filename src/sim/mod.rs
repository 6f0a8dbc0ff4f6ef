//! A simulated GitLab instance serving the Jobs API (`/api/v4`), for tests, the demo and the
//! benchmarks. It is written to be faithful wherever a client could notice: status codes and error
//! bodies, entity fields and their order, pagination and rate-limit headers, retry semantics and
//! the job state machine (see `docs/gitlab-behaviour.md`). It renders JSON with its own types,
//! never the client's models.
//!
//! # Running it
//!
//! In process: [`Simulator::start`] with a [`SimConfig`], then talk HTTP to
//! [`SimHandle::base_url`] and drive the scenario through [`SimHandle::control`]. From the
//! command line: `jobwarden simulate --token T [--projects N --seed S …]`; the first line on
//! stdout is `jobwarden simulator listening on http://<addr>`. With `--tls-cert PATH --tls-key
//! PATH` ([`SimConfig::tls`] in process) it serves the same API over HTTPS, and that line says
//! `https://<addr>`.
//!
//! # The fleet
//!
//! The fleet is a group tree ([`FLEET_GROUPS`], the same for every seed): `fleet`, its
//! subgroups `fleet/platform` (with `tools` and `infra`), `fleet/apps` (with `web` and
//! `mobile`) and `fleet/data`. Projects `1..=N` are `<group>/project-<id>`: projects 1–3 are
//! always in `fleet` (`fleet/project-1` … `fleet/project-3`), every later one in a group drawn
//! from the seed ([`project_group`], [`project_path`]). Each has pipelines on `main`, feature
//! branches and `v1.x.y` tags (stages `build`, `test`, `deploy`; see [`FleetConfig`]).
//! Fleet jobs move on the simulated clock: runners pick pending jobs up (some wait for hours,
//! some are dropped as stuck), running jobs succeed or fail with realistic reasons, manual jobs
//! get played, new pipelines appear. The same seed always gives the same fleet. Pipelines added
//! through [`SimControl::add_pipeline`] never move on their own.
//!
//! # The API
//!
//! | Endpoint | Notes |
//! |---|---|
//! | `GET /projects/:id` | `Entities::Project` (id, full path, `NamespaceBasic` namespace, `archived`…), by id or full path; 404 `Project Not Found` |
//! | `GET /groups/:id` | `Entities::GroupDetail` (with up to 100 of the group's own projects, newest first; `with_projects=false`: `Entities::Group`), by id or full path; 404 `Group Not Found` |
//! | `GET /groups/:id/projects` | the group's projects, with `include_subgroups=true` those of every group below it; `archived` (true: only archived, false: none, unset: both; newer GitLab's `active` too), `simple=true` (`Entities::BasicProjectDetails`, no `archived`), `order_by` (`id`, `name`, `path`, `created_at` = by id, `updated_at`/`last_activity_at`, `similarity` = name, `star_count`) and `sort` (default `created_at` `desc`, `id` tie-breaker), `search` (project name), `visibility`, `starred` (nothing is); `with_shared`, `owned`, `min_access_level` … are checked and change nothing (no project is shared; every one is the administrator's); counted offset pagination (no counts above 10,000), `pagination=keyset` ignored as in GitLab; 404 `Group Not Found` (parameters are checked first) |
//! | `GET /projects/:id/jobs` | builds incl. retried attempts, id desc; `scope` (string, `scope[]`, `scope[k]`); offset pagination without `X-Total`/`X-Total-Pages`/`rel="last"`, or keyset (`pagination=keyset`, `order_by=id`, `sort=desc` only); the `jobs_index` limit |
//! | `GET /projects/:id/pipelines/:pipeline_id/jobs` | latest attempts unless `include_retried=true`; counted offset pagination |
//! | `GET /projects/:id/pipelines/:pipeline_id/bridges` | `Entities::Ci::Bridge` (`downstream_pipeline` is always null) |
//! | `GET /job`, `GET /job/allowed_agents` | CI job token of a running job |
//! | `GET /projects/:id/jobs/:job_id`, `…/trace` | trace: `text/plain`, `Content-Disposition: infile; filename="<id>.log"` |
//! | `POST …/cancel`, `…/retry`, `…/erase` | 201 |
//! | `POST …/play` | 200; `job_variables_attributes` as JSON or `[][key]`/`[][value]` form or query (a plain value is 400 `job_variables_attributes is invalid`) |
//! | `GET …/artifacts`, `GET /projects/:id/jobs/artifacts/:ref_name/download?job=` | a real ZIP archive (stored entries, CRC-32), streamed; by ref: the build of that name in the newest *successful* pipeline of the ref (`search_recent_successful_pipelines=true`: the newest successful build with artifacts in any pipeline of the ref) |
//! | `GET …/artifacts/*path`, `GET /projects/:id/jobs/artifacts/:ref_name/raw/*path?job=` | one file of the archive (`..` → 400) |
//! | `POST …/artifacts/keep` (200), `DELETE …/artifacts` (204) | |
//!
//! Artifacts are a few small files generated from the job's name (`build/info.txt`,
//! `rspec.xml`, `dist/CHANGELOG.md`, …); `metadata.gz` is listed in `artifacts[]` but not served.
//! Authentication: `PRIVATE-TOKEN`, `private_token=`, `access_token=`, `Authorization: Bearer`
//! with the configured token (user 1, `root`); `JOB-TOKEN`/`job_token=` of a running job on the
//! endpoints that allow it, and only for the job's own project. The artifact downloads and
//! the two group endpoints also accept no credentials at all, and then find nothing (every
//! simulated project and group is private: 404 `Project Not Found` / `Group Not Found`).
//! Projects and groups are reachable by id and by URL-encoded full path
//! (`fleet%2Fproject-1`, `fleet%2Fplatform`), case-insensitively. The simulated runners do not
//! cancel gracefully: cancelling a running job cancels it at once (`force` is accepted and
//! checked). An archived project is read-only: cancel, retry, erase, play, keep and delete
//! artifacts answer 403 `{"message":"403 Forbidden"}` (after the project and the job were
//! found), and the autopilot starts no new pipelines in it (those it has still finish).
//!
//! Rate limits, counted on the simulated clock in fixed one-minute windows: the `jobs_index`
//! limit on `GET /projects/:id/jobs` ([`SimConfig::jobs_list_rate_limit_per_minute`], 429
//! `{"message":{"error":…}}` without rate-limit headers) and an instance-wide Rack::Attack
//! throttle ([`SimConfig::authenticated_api_rate_limit_per_minute`]) whose `RateLimit-*`
//! headers are on every authenticated answer and whose 429 is plain-text `Retry later`.
//!
//! Faults ([`FaultConfig`], off by default, `/api/v4` only): 500/502/503 answers, latency,
//! requests held past client timeouts (then served), Rack::Attack 429 bursts, JSON bodies cut
//! in half, connections closed without an answer, state-changing requests carried out after
//! their client was left without an answer. The `hook_*` faults act on webhook deliveries
//! (below).
//!
//! # Job Hooks
//!
//! Webhooks with "Job events" (`docs/gitlab-behaviour.md` §10): [`SimConfig::webhooks`],
//! `--webhook-url` / `--webhook-token` (one hook for every project), [`SimControl::add_webhook`] or
//! `POST /-/sim/hooks`. A hook is a URL, an optional secret token and an optional set of project
//! ids (none: every project, as a group or instance hook).
//!
//! * **What fires**: a build's creation (with the status it was created in: `created` in
//!   GitLab's own pipelines and on retry; a scenario job added as `success` fires one delivery
//!   saying `success`), any move into `pending`, into `running`, and into `success`, `failed`
//!   or `canceled`: so a fleet job usually fires `created`, `pending`, `running`, then its final
//!   status; a retry fires `created` and `pending` for the new job; playing a manual job fires
//!   `pending`; cancelling fires `canceled`. A move to the status a job already has, to
//!   `manual`, `skipped` or back to `created` fires nothing, and bridges never fire.
//!   [`SimControl::set_job_status`] fires like any other move (a forced jump into `running`
//!   from elsewhere than `pending` fires too).
//! * **The payload** is GitLab's Job Hook JSON (`object_kind: "build"`, `build_*`,
//!   `retries_count`, `runner`, `user`, `commit` whose `id` is the PIPELINE id, `repository`,
//!   `project`, `environment: null`), with timestamps in the webhook format
//!   `2026-11-23 10:00:40 UTC` taken from the simulated clock. The build's fields are the build
//!   as it was when it moved; `commit.status` and `retries_count` are read when the change that
//!   moved it is complete.
//! * **Headers**: `Content-Type: application/json`, `User-Agent: GitLab/17.5.0`,
//!   `X-Gitlab-Event: Job Hook`, `X-Gitlab-Token` (only with a token), `X-Gitlab-Instance`
//!   (the instance URL), `X-Gitlab-Webhook-UUID` (new for every request),
//!   `X-Gitlab-Event-UUID` (one per transition, shared by every hook and copy),
//!   `Idempotency-Key` (one per hook and transition, the same on a duplicate). UUIDs are
//!   version 4, drawn from a generator seeded with [`SimConfig::seed`].
//! * **Sending**: nothing is sent while the world is locked and the API never waits for a
//!   delivery. Each hook has a bounded queue ([`SimConfig::webhook_queue_capacity`], default
//!   1000; a delivery that finds it full is discarded and counted) and one task that POSTs in
//!   order, each request bounded by [`SimConfig::webhook_timeout`] (GitLab's `webhook_timeout`,
//!   10 s). A failed delivery (non-2xx, timeout, connection error) is not sent again, as in
//!   GitLab. Without faults a hook receives a job's deliveries in the order of its transitions.
//! * **The autopilot**: fleet jobs move lazily, when their project is looked at. While a hook
//!   covers a fleet project, the simulator also brings that project up to the clock whenever
//!   [`SimControl::advance`] or `/-/sim/clock/advance` moves it, and every 250 ms on its own (a
//!   real clock, or a [`Clock`] advanced directly), so its deliveries follow the clock without
//!   anyone reading the API. A catch-up over a long jump applies each event at its own
//!   simulated time (the payloads show those times) but sends the deliveries at once.
//! * **Faults** ([`FaultConfig`], `--fault-hook-*`): `hook_drop_ratio` (never sent),
//!   `hook_duplicate_ratio` (sent twice: same `Idempotency-Key` and `X-Gitlab-Event-UUID`, a new
//!   `X-Gitlab-Webhook-UUID`), `hook_reorder_ratio` with `hook_reorder_delay` (default 1 s:
//!   held back while later deliveries, e.g. the job's final status, overtake it). They are drawn
//!   in the order of the transitions from the hooks' own seeded generator, so the API's fault
//!   draws do not change when hooks are added.
//! * **Counters** ([`SimControl::webhooks`], `GET /-/sim/hooks`): per hook `triggered`,
//!   `queued`, `queue_full`, `dropped`, `duplicated`, `delayed`, `sent` (HTTP requests),
//!   `delivered` (2xx), `failed`, `pending` (queued, held back or in flight) and `by_status`
//!   (`{"200": 4, "500": 1, "timeout": 2, "error": 1}`); the newest 256 deliveries with their
//!   outcome ([`SimControl::webhook_deliveries`]); [`SimControl::wait_for_webhooks`] waits
//!   until nothing is pending.
//!
//! # The admin endpoint
//!
//! Under `/-/sim/`, outside `/api/v4`: no GitLab authentication, no faults, not logged, and
//! only loopback clients (others get 403). JSON in and out; errors are `{"error": "…"}`.
//!
//! | Route | Does |
//! |---|---|
//! | `GET /-/sim/requests` | the request log, oldest first (the newest 100,000): `[{"method","endpoint","path","query","client","status","at"}]` (`client`: the caller's `ip:port`; `status` 0 = dropped; `at`: when it was received, in milliseconds since the epoch on the simulated clock, like the jobs' timestamps) |
//! | `GET /-/sim/counters` | `{"GET /projects/:id/jobs": 3, …}` |
//! | `POST /-/sim/reset` | clears log, counters and rate-limit counts → 204 (hooks and their counters stay) |
//! | `GET /-/sim/now` | `{"now": "2026-11-23T10:00:00.000Z"}` |
//! | `POST /-/sim/clock/advance?seconds=N` | moves the clock (fractions allowed; fleet projects with hooks catch up at once) → `{"now": …}` |
//! | `GET /-/sim/faults`, `PUT /-/sim/faults` | `{"error_5xx_ratio", "latency_ms", "timeout_ratio", "timeout_hold_ms", "rate_limit_burst_every", "malformed_json_ratio", "drop_connection_ratio", "apply_late_ratio", "apply_late_after_ms", "hook_drop_ratio", "hook_duplicate_ratio", "hook_reorder_ratio", "hook_reorder_delay_ms"}` (missing fields = off) |
//! | `GET /-/sim/groups` | `[{"id", "full_path", "name", "parent_id"}]` ([`SimGroup`]) |
//! | `POST /-/sim/groups` | `{"path": "fleet/platform/new"}` (missing parents are created) → 201 with the group; 409 if a group or project has the path ([`SimControl::add_group`]) |
//! | `GET /-/sim/projects` | `[{"id", "path", "group_id", "archived"}]` ([`SimProject`]) |
//! | `POST /-/sim/projects` | `{"path": "group/sub/project"}` (the groups of the path are created when missing), or `{"group": "fleet/apps", "path": "svc"}` (an existing group, by id or full path; 404 if unknown); `"archived": true` optional → 201 with the project; 409 if the path is taken ([`SimControl::add_project`], [`SimControl::add_project_to_group`]) |
//! | `POST /-/sim/projects/:id/archive`, `…/unarchive` | → the project ([`SimControl::set_archived`]) |
//! | `POST /-/sim/projects/:id/pipelines` | `{"ref": "main", "tag": false, "jobs": [{"name", "stage", "status", "failure_reason", "when": "manual", "allow_failure", "age_seconds", "artifacts_expire_in_seconds", "log", "tags", "bridge": true}]}` → 201 `{"id", "job_ids"}` |
//! | `GET /-/sim/projects/:id/jobs` | snapshots of every job ([`SimJob`], with `token`, `retried`, `variables`) |
//! | `GET /-/sim/projects/:id/jobs/:job_id` | one snapshot |
//! | `POST /-/sim/projects/:id/jobs/:job_id/status` | `{"status": "running", "failure_reason": null}` → the snapshot |
//! | `GET /-/sim/hooks` | `[{"id", "url", "project_ids", "has_token", "stats": {"triggered", "queued", "queue_full", "dropped", "duplicated", "delayed", "sent", "delivered", "failed", "pending", "by_status"}}]` ([`SimWebhook`]; the token is never shown) |
//! | `POST /-/sim/hooks` | `{"url": "http://127.0.0.1:9000/hook", "token": "secret", "project_ids": [1, 2]}` (`token`, `project_ids` optional; no `project_ids` = every project) → 201 with the hook (`id`); 400 for a URL that is not http(s) |
//! | `GET /-/sim/hooks/:hook_id` | one hook with its counters |
//! | `GET /-/sim/hooks/:hook_id/deliveries` | its newest 256 deliveries, oldest first: `[{"job_id", "project_id", "build_status", "event_uuid", "idempotency_key", "webhook_uuid", "outcome", "duplicate", "delayed"}]` (`outcome`: the status code, `timeout`, `error`, or `dropped` / `queue_full` for those never sent) ([`WebhookDelivery`]) |
//! | `DELETE /-/sim/hooks/:hook_id` | → 204 (what it had queued is not sent); 404 if unknown |
//!
//! `:id` is a project id or its URL-encoded path.

mod admin;
mod api;
mod artifacts;
mod autopilot;
mod clock;
mod command;
mod control;
mod faults;
mod fleet;
mod hooks;
mod machine;
mod ops;
mod ratelimit;
mod render;
mod reqlog;
mod server;
mod state;
mod status;
mod tls;
mod trace;

pub use clock::Clock;
pub use command::{SimulateArgs, run_simulate};
pub use control::{
    JobSpec, PipelineSpec, ScenarioError, SimControl, SimGroup, SimJob, SimPipeline, SimProject,
};
pub use faults::FaultConfig;
pub use fleet::{FLEET_GROUPS, FleetConfig, project_group, project_path};
pub use hooks::{RECENT_DELIVERIES, SimWebhook, WebhookConfig, WebhookDelivery, WebhookStats};
pub use reqlog::LoggedRequest;
pub use tls::SimTls;
#[cfg(test)]
pub(crate) use tls::TestPki;

use crate::sim::faults::FaultInjector;
use crate::sim::hooks::{HookHub, HubSettings};
use crate::sim::ratelimit::FixedWindow;
use crate::sim::reqlog::RequestLog;
use crate::sim::server::{ConnInfo, Shared, SimListener};
use crate::sim::state::{World, mix64};
use crate::sim::tls::TlsSimListener;
use axum::Router;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to build and run a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Fleet projects to generate (ids `1..=projects`).
    pub projects: u32,
    /// Seed of everything random (same seed, same fleet).
    pub seed: u64,
    /// The personal access token the API accepts.
    pub token: String,
    /// `jobs_index`: `GET /projects/:id/jobs` requests per user per minute (0 = unlimited).
    pub jobs_list_rate_limit_per_minute: u32,
    /// Rack::Attack `throttle_authenticated_api`: requests per user per minute (0 = off, and
    /// no `RateLimit-*` headers).
    pub authenticated_api_rate_limit_per_minute: u32,
    pub faults: FaultConfig,
    pub clock: Clock,
    pub fleet: FleetConfig,
    /// The instance URL used in `web_url`s and pagination links (default: the listen URL).
    pub base_url_for_links: Option<String>,
    /// Jobs created longer ago than this are archived (not retryable or playable).
    pub archive_jobs_older_than: Option<Duration>,
    /// Job Hooks registered at start (more can be added through [`SimControl::add_webhook`]
    /// or `POST /-/sim/hooks`).
    pub webhooks: Vec<WebhookConfig>,
    /// How long one delivery may take (GitLab's `webhook_timeout`, default 10 s).
    pub webhook_timeout: Duration,
    /// Deliveries each hook may have waiting; beyond that they are discarded and counted
    /// (default 1000).
    pub webhook_queue_capacity: usize,
    /// Serve HTTPS with this certificate and key instead of plain HTTP (default: plain HTTP).
    pub tls: Option<SimTls>,
}

impl SimConfig {
    /// Three projects, seed 1, the real clock, GitLab's default limits (600 job-list requests,
    /// 2000 API requests per minute), no faults.
    pub fn new(token: impl Into<String>) -> Self {
        SimConfig {
            projects: 3,
            seed: 1,
            token: token.into(),
            jobs_list_rate_limit_per_minute: 600,
            authenticated_api_rate_limit_per_minute: 2000,
            faults: FaultConfig::default(),
            clock: Clock::real(1.0),
            fleet: FleetConfig::default(),
            base_url_for_links: None,
            archive_jobs_older_than: None,
            webhooks: Vec::new(),
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            webhook_queue_capacity: 1000,
            tls: None,
        }
    }
}

/// GitLab's default `webhook_timeout`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("projects", &self.projects)
            .field("seed", &self.seed)
            .field("token", &"<redacted>")
            .field(
                "jobs_list_rate_limit_per_minute",
                &self.jobs_list_rate_limit_per_minute,
            )
            .field(
                "authenticated_api_rate_limit_per_minute",
                &self.authenticated_api_rate_limit_per_minute,
            )
            .field("faults", &self.faults)
            .field("clock", &self.clock)
            .field("fleet", &self.fleet)
            .field("base_url_for_links", &self.base_url_for_links)
            .field("archive_jobs_older_than", &self.archive_jobs_older_than)
            .field("webhooks", &self.webhooks)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("webhook_queue_capacity", &self.webhook_queue_capacity)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

/// A running simulator. Dropping it stops the server (like [`SimHandle::shutdown`], without
/// waiting).
pub struct SimHandle {
    base_url: url::Url,
    local_addr: SocketAddr,
    control: SimControl,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// How long [`SimHandle::shutdown`] waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Simulator {
    /// Generates the fleet, binds `listen` (port 0 picks a free port) and serves until the
    /// handle is shut down or dropped.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url =
            url::Url::parse(&format!("{scheme}://{local_addr}/")).map_err(invalid_input)?;
        let links_base = links_base(config.base_url_for_links.as_deref(), &base_url)?;
        let mut world = {
            let (projects, seed, fleet, archive, clock) = (
                config.projects,
                config.seed,
                config.fleet.clone(),
                config.archive_jobs_older_than,
                config.clock.clone(),
            );
            tokio::task::spawn_blocking(move || generate(projects, seed, &fleet, archive, &clock))
                .await
                .map_err(std::io::Error::other)?
        };
        let shutdown = CancellationToken::new();
        let hooks = hook_hub(&config, &links_base, &shutdown, &mut world)?;
        let shared = shared_state(&config, world, links_base, hooks, &shutdown);
        tokio::spawn(hooks::pump_periodically(Arc::clone(&shared)));

        let app = Router::new()
            .nest("/-/sim", admin::router())
            .fallback(api::serve)
            .with_state(Arc::clone(&shared));
        let task = match &config.tls {
            None => serve(SimListener::new(listener), app, shutdown.clone()),
            Some(tls) => serve(
                TlsSimListener::new(listener, local_addr, tls),
                app,
                shutdown.clone(),
            ),
        };
        tracing::info!(url = %base_url, projects = config.projects, seed = config.seed, "simulator started");
        Ok(SimHandle {
            base_url,
            local_addr,
            control: SimControl { shared },
            shutdown,
            task: Some(task),
        })
    }
}

/// An `InvalidInput` I/O error (a bad URL or webhook in the configuration).
fn invalid_input(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
}

/// The base of the links the simulator writes: [`SimConfig::base_url_for_links`] (with a
/// trailing slash), else the URL it serves on.
fn links_base(custom: Option<&str>, base_url: &url::Url) -> std::io::Result<String> {
    let Some(custom) = custom else {
        return Ok(base_url.to_string());
    };
    let text = url::Url::parse(custom).map_err(invalid_input)?.to_string();
    Ok(if text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    })
}

/// The Job Hook hub with the configured webhooks; `world` records the transitions of the
/// projects they cover.
fn hook_hub(
    config: &SimConfig,
    links_base: &str,
    shutdown: &CancellationToken,
    world: &mut World,
) -> std::io::Result<HookHub> {
    let hooks = HookHub::new(
        HubSettings {
            timeout: config.webhook_timeout,
            queue_capacity: config.webhook_queue_capacity,
            seed: config.seed,
            base: links_base.to_owned(),
        },
        tokio::runtime::Handle::current(),
        shutdown.clone(),
    )?;
    for hook in &config.webhooks {
        let (_, scope) = hooks.add(hook.clone()).map_err(invalid_input)?;
        world.hooks.set_scope(scope);
    }
    Ok(hooks)
}

/// The state every request handler shares: the world, the clock and token, the rate limits,
/// the faults, the request log and the webhooks.
fn shared_state(
    config: &SimConfig,
    world: World,
    links_base: String,
    hooks: HookHub,
    shutdown: &CancellationToken,
) -> Arc<Shared> {
    Arc::new(Shared {
        world: Mutex::new(world),
        clock: config.clock.clone(),
        token: config.token.clone(),
        links_base,
        jobs_index_limit: Mutex::new(FixedWindow::new(
            config.jobs_list_rate_limit_per_minute,
            60_000,
        )),
        authenticated_api_limit: Mutex::new(FixedWindow::new(
            config.authenticated_api_rate_limit_per_minute,
            api::THROTTLE_PERIOD_MS,
        )),
        faults: Mutex::new(FaultInjector::new(config.faults.clone(), config.seed)),
        log: Mutex::new(RequestLog::default()),
        shutdown: shutdown.clone(),
        request_seq: AtomicU64::new(1),
        hooks,
    })
}

/// Serves `app` on `listener` (plain HTTP, or HTTPS) until `shutdown` fires.
fn serve<L>(listener: L, app: Router, shutdown: CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    ConnInfo: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await });
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "simulator server stopped");
        }
    })
}

/// Builds the world with its fleet (CPU-bound; run off the async threads).
fn generate(
    projects: u32,
    seed: u64,
    fleet: &FleetConfig,
    archive: Option<Duration>,
    clock: &Clock,
) -> World {
    let mut world = World::new(mix64(seed ^ 0x6a0b_70c3), archive);
    let now = clock.sim_now();
    let count = u64::from(projects);
    // Groups first, then the projects in id order, each made a minute after the one before,
    // all before the fleet's history begins.
    let founded = now
        .minus(fleet.history)
        .minus(Duration::from_secs(60 * (count + 1) + 86_400));
    if count > 0 {
        for group in fleet::FLEET_GROUPS {
            // The tree is fixed and empty at this point: this cannot fail.
            let _ = world.ensure_group(group, founded);
        }
    }
    for id in 1..=count {
        if let Some(project) = world.add_project(id, &fleet::project_path(seed, id)) {
            project.created_at = founded.plus(Duration::from_secs(86_400 + 60 * id));
        }
        autopilot::install(&mut world, id, seed, fleet, now);
    }
    world
}

impl SimHandle {
    /// The GitLab instance URL, e.g. `http://127.0.0.1:41234/` (the API is under `api/v4`).
    pub fn base_url(&self) -> url::Url {
        self.base_url.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// In-process access to the simulator's state.
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    /// Stops accepting connections, ends requests held by faults, and waits (briefly) for the
    /// open connections to close.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
